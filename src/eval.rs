//! Evaluation: the mean cross-entropy of each record's target tokens, and over all target
//! tokens of all records (Hugging Face's batch mean).

use crate::data::TokenRecord;
use crate::error::{ModelError, Result};
use crate::infer::generate::PROMPT_CHUNK;
use crate::kernels::loss::cross_entropy;
use crate::lora::Adapter;
use crate::model::{Activations, KvCache, Model};

/// Rows of logits computed at once.
pub const LOGIT_ROWS: usize = 64;

/// Losses of an evaluation run.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Mean cross-entropy of each record (NaN for a record without targets).
    pub per_record: Vec<f64>,
    /// Mean over every target token of every record.
    pub loss: f64,
    /// Target tokens scored.
    pub n_targets: usize,
}

/// Scores every record independently (each from an empty cache). Records longer than the
/// model's training context are scored as they are (as Hugging Face does); quality past the
/// training context is the model's business.
pub fn evaluate(model: &Model, records: &[TokenRecord]) -> Result<EvalReport> {
    evaluate_with(model, model.adapter().map(|a| &**a), records)
}

/// [`evaluate`] with an explicit adapter (or none) instead of the model's own.
pub fn evaluate_with(
    model: &Model,
    adapter: Option<&Adapter>,
    records: &[TokenRecord],
) -> Result<EvalReport> {
    let cfg = &model.cfg;
    let longest = records.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    for r in records {
        if let Some(&bad) = r.ids.iter().find(|&&t| t as usize >= cfg.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                token: bad,
                vocab: cfg.n_vocab,
            }
            .into());
        }
    }
    let mut act = Activations::for_adapter(cfg, adapter, PROMPT_CHUNK.min(longest.max(1)));
    let mut cache = KvCache::new(cfg, longest)?;
    let mut rows = vec![0f32; LOGIT_ROWS * cfg.n_embd];
    let mut logits = vec![0f32; LOGIT_ROWS * cfg.n_vocab];
    let (mut total, mut n_total) = (0f64, 0usize);
    let mut per_record = Vec::with_capacity(records.len());
    for r in records {
        cache.clear();
        let (mut sum, mut n) = (0f64, 0usize);
        for (ci, chunk) in r.ids.chunks(act.capacity()).enumerate() {
            let base = ci * act.capacity();
            model.forward_with(chunk, &mut cache, &mut act, adapter)?;
            // Position p of this chunk predicts token base+p+1.
            let preds: Vec<(usize, u32)> = (0..chunk.len())
                .filter(|&p| r.targets.get(base + p + 1).copied().unwrap_or(false))
                .map(|p| (p, r.ids[base + p + 1]))
                .collect();
            for group in preds.chunks(LOGIT_ROWS) {
                let c = cfg.n_embd;
                for (j, &(p, _)) in group.iter().enumerate() {
                    rows[j * c..(j + 1) * c].copy_from_slice(&act.hidden()[p * c..(p + 1) * c]);
                }
                let lg = &mut logits[..group.len() * cfg.n_vocab];
                model.logits(&rows[..group.len() * c], lg);
                for (j, &(_, tgt)) in group.iter().enumerate() {
                    sum += cross_entropy(&lg[j * cfg.n_vocab..(j + 1) * cfg.n_vocab], tgt as usize);
                }
                n += group.len();
            }
        }
        per_record.push(if n > 0 { sum / n as f64 } else { f64::NAN });
        total += sum;
        n_total += n;
    }
    let loss = if n_total > 0 {
        total / n_total as f64
    } else {
        f64::NAN
    };
    Ok(EvalReport {
        per_record,
        loss,
        n_targets: n_total,
    })
}
