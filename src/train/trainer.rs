//! The training step: a batch of records through forward and backward (each record on its
//! own, gradients accumulated), the loss as the mean over every target token of the batch
//! (token-weighted across records and micro-batches), clipping, the learning-rate schedule,
//! and an AdamW update of A and B only.
//!
//! A step can be cancelled from another thread ([`Trainer::set_cancel_flag`]): the flag is
//! checked before each record's forward and backward pass (one micro-step), and a raised
//! flag ends the step with [`Error::Cancelled`] before the update — adapter, optimizer
//! state and step count stay as they were after the previous step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::adamw::{clip_grad_norm, AdamW, AdamWConfig};
use super::schedule::Schedule;
use crate::data::TokenRecord;
use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::model::backward::{
    forward_backward_packed, AdapterGeometry, TrainWorkspace, WorkspaceShape,
};
use crate::model::Model;

/// Optimizer and schedule settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lr: f32,
    pub schedule: Schedule,
    pub warmup: usize,
    /// Total optimizer steps (for the schedule).
    pub total_steps: usize,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub clip: f32,
    pub adamw: AdamWConfig,
    /// Seeds dropout masks.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 2e-4,
            schedule: Schedule::Cosine,
            warmup: 0,
            total_steps: 1,
            clip: 1.0,
            adamw: AdamWConfig::default(),
            seed: 0,
        }
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// 1-based step number.
    pub step: usize,
    /// Mean cross-entropy over the step's target tokens (NaN when it had none).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens scored.
    pub tokens: usize,
    /// Tokens run through the model (targets or not).
    pub seen_tokens: usize,
    /// Learning rate used.
    pub lr: f32,
}

/// Owns an adapter, its gradients and optimizer state, and the workspace of its passes.
pub struct Trainer {
    model: Arc<Model>,
    adapter: Adapter,
    grads: Adapter,
    opt: AdamW,
    cfg: TrainConfig,
    ws: TrainWorkspace<f32>,
    step: usize,
    cancel: Option<Arc<AtomicBool>>,
}

impl Trainer {
    /// A trainer for sequences of up to `max_len` tokens, with plain (unchunked, exact)
    /// buffers.
    pub fn new(
        model: Arc<Model>,
        adapter: Adapter,
        cfg: TrainConfig,
        max_len: usize,
    ) -> Result<Trainer> {
        Trainer::with_shape(model, adapter, cfg, WorkspaceShape::plain(max_len.max(1)))
    }

    /// A trainer whose buffers have the given shape (chunking and checkpoint storage, as a
    /// memory plan chose them).
    pub fn with_shape(
        model: Arc<Model>,
        adapter: Adapter,
        cfg: TrainConfig,
        shape: WorkspaceShape,
    ) -> Result<Trainer> {
        adapter.check_fits(&model.cfg)?;
        if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "learning rate {} must be a non-negative number",
                cfg.lr
            )));
        }
        if !(cfg.clip.is_finite() && cfg.clip >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--clip {} must be ≥ 0",
                cfg.clip
            )));
        }
        let ws = TrainWorkspace::with_shape(&model, &adapter, shape);
        // Every worker's kernel scratch, as planned, now: steps then allocate nothing.
        let shape = ws.shape();
        model.reserve_scratch(crate::memory::plan::kernel_scratch_need(
            &model.cfg,
            AdapterGeometry::of(&model.cfg, &adapter).max_rank,
            shape.chunk,
            shape.capacity,
            shape.loss_rows,
            model.precision(),
            true,
        ));
        let grads = adapter.zeros_like();
        let opt = AdamW::new(cfg.adamw, &adapter);
        Ok(Trainer {
            model,
            adapter,
            grads,
            opt,
            cfg,
            ws,
            step: 0,
            cancel: None,
        })
    }

    /// A flag that, once raised (from any thread), makes the current or next [`Trainer::step`]
    /// return [`Error::Cancelled`] before its next record, without updating anything. The
    /// trainer never lowers it; its owner does.
    pub fn set_cancel_flag(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.cancel = flag;
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// One optimizer step over `batch` (all the records of the step: batch × grad-accum).
    /// Returns [`Error::Cancelled`], having changed nothing but the gradient buffers, when
    /// the cancel flag is raised before or during the step, and [`Error::Numeric`] naming
    /// the block and tensor, also without an update (adapter, optimizer state and step count
    /// stay as they were), when the loss or a gradient is not finite.
    pub fn step(&mut self, batch: &[&TokenRecord]) -> Result<StepStats> {
        if self.cancelled() {
            return Err(Error::Cancelled);
        }
        let n: usize = batch.iter().map(|r| r.n_targets()).sum();
        let lr = self.cfg.schedule.lr(
            self.cfg.lr,
            self.step,
            self.cfg.warmup,
            self.cfg.total_steps,
        );
        let step = self.step + 1;
        let seen = batch.iter().map(|r| r.ids.len()).sum();
        if n == 0 {
            self.step = step;
            return Ok(StepStats {
                step,
                loss: f64::NAN,
                grad_norm: 0.0,
                tokens: 0,
                seen_tokens: seen,
                lr,
            });
        }
        self.grads.fill_zero();
        let mut loss = 0f64;
        for (k, r) in batch.iter().enumerate() {
            if r.n_targets() == 0 {
                continue;
            }
            if self.cancelled() {
                return Err(Error::Cancelled);
            }
            let key = self.cfg.seed
                ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ ((k as u64) << 20);
            loss += forward_backward_packed(
                &self.model,
                &self.adapter,
                &mut self.grads,
                &r.ids,
                &r.targets,
                &r.doc_starts,
                1.0 / n as f64,
                key,
                &mut self.ws,
            )?;
        }
        let grad_norm = if self.cfg.clip > 0.0 {
            clip_grad_norm(&mut self.grads, self.cfg.clip)
        } else {
            super::adamw::grad_norm(&self.grads)
        };
        let loss = loss / n as f64;
        if !(loss.is_finite() && grad_norm.is_finite()) {
            return Err(Error::Numeric(non_finite_message(
                step,
                loss,
                grad_norm,
                &self.grads,
            )));
        }
        let (opt, adapter, grads) = (&mut self.opt, &mut self.adapter, &self.grads);
        self.model.install(|| opt.step(adapter, grads, lr));
        self.step = step;
        Ok(StepStats {
            step,
            loss,
            grad_norm,
            tokens: n,
            seen_tokens: seen,
            lr,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The adapter being trained.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Gradients of the last step (after clipping).
    pub fn grads(&self) -> &Adapter {
        &self.grads
    }

    pub fn into_adapter(self) -> Adapter {
        self.adapter
    }

    /// The optimizer state (moments and step count).
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Replaces adapter, optimizer state and step count with a checkpoint's.
    pub fn restore(&mut self, adapter: Adapter, opt: AdamW, step: usize) -> Result<()> {
        adapter.check_fits(&self.model.cfg)?;
        let same = |a: &Adapter, b: &Adapter| {
            a.layers.len() == b.layers.len()
                && a.pairs()
                    .zip(b.pairs())
                    .all(|(x, y)| x.a.len() == y.a.len() && x.b.len() == y.b.len())
        };
        if !same(&adapter, &self.adapter)
            || !same(&opt.m, &self.adapter)
            || !same(&opt.v, &self.adapter)
        {
            return Err(Error::InvalidArgument(
                "the checkpoint's adapter does not have this run's shape".into(),
            ));
        }
        self.adapter = adapter;
        self.opt = opt;
        self.step = step;
        Ok(())
    }

    /// Optimizer steps taken.
    pub fn steps_done(&self) -> usize {
        self.step
    }
}

/// The text of [`Error::Numeric`] for a step whose loss or gradient norm is not finite.
fn non_finite_message(step: usize, loss: f64, grad_norm: f64, grads: &Adapter) -> String {
    let at = match grads.find_non_finite() {
        Some(nf) => format!("first non-finite gradient (in backward order) at {nf}"),
        None => "every gradient is finite; the loss itself (output logits) is not".into(),
    };
    format!(
        "step {step}: the loss is {loss} and the gradient norm {grad_norm}; {at}; the update was not applied (lower the learning rate, or --skip-nonfinite)"
    )
}
