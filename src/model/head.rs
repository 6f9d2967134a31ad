//! The training pass's output head: final norm, head matmul, cross-entropy and their
//! backward, fused and chunked over target rows, so that the T × V logits never exist.
//!
//! Only target rows go through the final norm, the head and the loss; their gradients flow
//! straight back into d(x). Per group of `loss_rows` rows the head is read once, in panels
//! of [`HEAD_PANEL`] vocabulary rows, with an online softmax (as flash attention does over
//! keys): each panel's logits become `e^(z − m)` with each row's running max `m`, which are
//! multiplied back through the panel into `u` after `u` is scaled by `e^(m_old − m)`. At
//! the end `u / Σ e^(z − m)` is `Σ_v softmax_v · W_v`, and the target's row of W is
//! subtracted: `scale · (softmax − onehot) · W`.
//!
//! With final-logit soft-capping (`c = cap · tanh(z / cap)`), the softmax runs over `c`,
//! and each panel's `e^(c − m)` is multiplied by `dc/dz = 1 − (c/cap)²` before it goes
//! back through the panel; the target's row of W is weighed by its own `dc/dz`.

use super::config::ModelConfig;
use super::forward::Model;
use crate::kernels::loss::lse_exp_update_rows;
use crate::kernels::{matmul_backward_input, matmul_forward, rmsnorm_backward, rmsnorm_forward};
use crate::kernels::{QMatrix, Real};
use crate::memory::sizes::Sizer;

/// Target rows formed at once by the fused head + loss, unless a plan says fewer.
pub const LOSS_ROWS: usize = 256;
/// Vocabulary rows per panel of the fused head + loss: the logits that exist at once are
/// (loss rows) × HEAD_PANEL, whatever the vocabulary.
pub const HEAD_PANEL: usize = 2048;

/// The fused head's buffers for `rows` target rows at once.
#[derive(Debug)]
pub(crate) struct HeadBuffers<F> {
    /// Reciprocal RMS of the final norm, per row of the group.
    rstd: Vec<F>,
    /// The group's final-normed hidden rows, then the target rows of W, (rows, C).
    rows: Vec<F>,
    /// One vocabulary panel of the group's logits, (rows, HEAD_PANEL).
    logits: Vec<F>,
    /// The rows' accumulator `u`, then their gradients, (rows, C).
    drows: Vec<F>,
    /// Per row: running max (then log-sum-exp), sum, target logit, rescale factor.
    row_max: Vec<F>,
    row_sum: Vec<f64>,
    row_target: Vec<F>,
    row_corr: Vec<F>,
    /// Soft-capping only: `dc/dz` of one panel's logits, (rows, HEAD_PANEL), and of each
    /// row's target, (rows).
    panel_slope: Vec<F>,
    row_target_slope: Vec<F>,
}

impl<F: Real> HeadBuffers<F> {
    /// The buffers' one size list.
    pub(crate) fn build(cfg: &ModelConfig, rows: usize, s: &mut Sizer) -> Self {
        let c = cfg.n_embd;
        let capped = cfg.final_softcap.is_some();
        HeadBuffers {
            rstd: s.zeros(rows),
            rows: s.zeros(rows * c),
            logits: s.zeros(rows * HEAD_PANEL.min(cfg.n_vocab)),
            drows: s.zeros(rows * c),
            row_max: s.zeros(rows),
            row_sum: s.zeros(rows),
            row_target: s.zeros(rows),
            row_corr: s.zeros(rows),
            panel_slope: s.zeros(if capped {
                rows * HEAD_PANEL.min(cfg.n_vocab)
            } else {
                0
            }),
            row_target_slope: s.zeros(if capped { rows } else { 0 }),
        }
    }
}

/// The fused head, loss and backward over the target rows `preds` ((row, target token)
/// pairs) of the last block's output `x` (T, C): overwrites `dx` (T, C) with
/// `loss_scale · ∂(Σ cross-entropy)/∂x` and returns the sum of the cross-entropies
/// (unscaled). `loss_rows` target rows at a time.
pub(crate) fn head_loss_backward<F: Real>(
    model: &Model,
    preds: &[(usize, usize)],
    x: &[F],
    dx: &mut [F],
    hb: &mut HeadBuffers<F>,
    loss_rows: usize,
    loss_scale: f64,
) -> f64 {
    let cfg = &model.cfg;
    let c = cfg.n_embd;
    let head = model
        .weights
        .matrix(&model.weights.output)
        .with_precision(model.precision());
    let norm_w = &model.weights.output_norm;
    let HeadBuffers {
        rstd,
        rows,
        logits,
        drows,
        row_max,
        row_sum,
        row_target,
        row_corr,
        panel_slope,
        row_target_slope,
    } = hb;
    dx.fill(F::ZERO);
    let mut loss = 0f64;
    for group in preds.chunks(loss_rows.max(1)) {
        let n = group.len();
        for (j, &(i, _)) in group.iter().enumerate() {
            let (xr, row) = (&x[i * c..(i + 1) * c], &mut rows[j * c..(j + 1) * c]);
            rmsnorm_forward(row, &mut rstd[j..j + 1], xr, norm_w, cfg.rms_eps);
        }
        let (m, s, zt) = (&mut row_max[..n], &mut row_sum[..n], &mut row_target[..n]);
        let dr = &mut drows[..n * c];
        let stats = RowStats {
            max: m,
            sum: s,
            target: zt,
            corr: &mut row_corr[..n],
            target_slope: &mut row_target_slope[..],
        };
        let normed = &rows[..n * c];
        online_softmax_through_head(model, &head, group, normed, dr, stats, logits, panel_slope);
        let (m, s, zt) = (&row_max[..n], &row_sum[..n], &row_target[..n]);
        for (j, &(_, tgt)) in group.iter().enumerate() {
            loss += m[j].to_f64() + s[j].ln() - zt[j].to_f64();
            // scale · (u / s − W[target]); the target's row of W goes where this row's
            // normed input was (no longer needed).
            let wt = &mut rows[j * c..(j + 1) * c];
            head.dequantize_rows(tgt, wt);
            let k = F::from_f64(loss_scale / s[j]);
            let ls = match row_target_slope.get(j) {
                Some(&d) => F::from_f64(loss_scale) * d,
                None => F::from_f64(loss_scale),
            };
            for (d, &w) in dr[j * c..(j + 1) * c].iter_mut().zip(wt.iter()) {
                *d = *d * k - ls * w;
            }
        }
        let dr = &*dr;
        for (j, &(i, _)) in group.iter().enumerate() {
            let (dxr, xr) = (&mut dx[i * c..(i + 1) * c], &x[i * c..(i + 1) * c]);
            rmsnorm_backward(dxr, &dr[j * c..(j + 1) * c], xr, norm_w, &rstd[j..j + 1]);
        }
    }
    loss
}

/// Per-row running statistics of one group: max (then log-sum-exp), sum of
/// `e^(z − max)`, target logit, and the last panel's rescale factor.
struct RowStats<'a, F> {
    max: &'a mut [F],
    sum: &'a mut [f64],
    target: &'a mut [F],
    corr: &'a mut [F],
    /// Soft-capping only (else empty): the target logit's `dc/dz`.
    target_slope: &'a mut [F],
}

/// One pass over the head's vocabulary panels for the group's normed rows: leaves each
/// row's max and sum of `e^(z − max)` and its target logit in `st`, and
/// `u = Σ_v e^(z_v − max) · W_v` in `u`. `logits` holds one panel's logits at a time.
/// With soft-capping, `z` is the capped logit and each term is weighed by its `dc/dz`
/// (`slope`, one panel's).
#[allow(clippy::too_many_arguments)]
fn online_softmax_through_head<F: Real>(
    model: &Model,
    head: &QMatrix<'_>,
    group: &[(usize, usize)],
    normed: &[F],
    u: &mut [F],
    st: RowStats<'_, F>,
    logits: &mut [F],
    slope: &mut [F],
) {
    let c = model.cfg.n_embd;
    let n = group.len();
    let v_n = model.cfg.n_vocab;
    let panel = HEAD_PANEL.min(v_n).max(1);
    st.max.fill(F::NEG_INFINITY);
    st.sum.fill(0.0);
    u.fill(F::ZERO);
    let mut v0 = 0;
    while v0 < v_n {
        let vp = panel.min(v_n - v0);
        let sub = head.rows_range(v0, v0 + vp);
        let lg = &mut logits[..n * vp];
        matmul_forward(lg, normed, &sub);
        let capped = model.cfg.final_softcap.map(|cap| {
            let slope = &mut slope[..n * vp];
            softcap_with_slope(lg, slope, cap);
            &*slope
        });
        for (j, &(_, tgt)) in group.iter().enumerate() {
            if (v0..v0 + vp).contains(&tgt) {
                st.target[j] = lg[j * vp + tgt - v0];
                if let Some(sl) = capped {
                    st.target_slope[j] = sl[j * vp + tgt - v0];
                }
            }
        }
        lse_exp_update_rows(lg, (n, vp, vp), st.max, st.sum, st.corr, model.precision());
        if let Some(sl) = capped {
            lg.iter_mut().zip(sl).for_each(|(e, &d)| *e *= d);
        }
        if v0 > 0 {
            for (ur, &k) in u.chunks_exact_mut(c).zip(st.corr.iter()) {
                if k != F::ONE {
                    ur.iter_mut().for_each(|x| *x *= k);
                }
            }
        }
        matmul_backward_input(u, lg, &sub);
        v0 += vp;
    }
}

/// `z ← cap · tanh(z / cap)` in place, and `slope ← dc/dz = 1 − (c / cap)²`.
fn softcap_with_slope<F: Real>(z: &mut [F], slope: &mut [F], cap: f32) {
    let cap = F::from_f32(cap);
    for (v, d) in z.iter_mut().zip(slope.iter_mut()) {
        let t = (*v / cap).tanh();
        *v = cap * t;
        *d = F::ONE - t * t;
    }
}
