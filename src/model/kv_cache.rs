//! The KV cache of inference: keys and values of every layer for the positions seen so
//! far. A full-attention layer keeps every position; a sliding-window layer keeps only
//! what its window can still see — its rows hold the last `window − 1` positions plus one
//! call's tokens, and when a call would run past the end, the rows still inside the window
//! move to the front (so a long generation on Gemma 3 holds 512 + 511 positions on its
//! local layers, whatever the context). Keys carry their RoPE already, so where a key sits
//! does not matter; the attention's lower bound (`starts`) hides the rows that fell out of
//! the window.

use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::memory::sizes::Sizer;

/// Most tokens one forward call may bring to a cache whose sliding-window layers do not
/// hold the whole context (generation and evaluation read prompts in chunks of at most
/// this many).
pub const WINDOWED_CALL: usize = 512;

/// One layer's keys and values (or a conv layer's input rows, in `k`).
#[derive(Debug)]
struct LayerKv {
    /// Keys, then values: (rows, width) each.
    k: Vec<f32>,
    v: Vec<f32>,
    /// kv_dim, or n_embd for a conv layer.
    width: usize,
    rows: usize,
    /// The sliding window, if the layer has one.
    window: Option<usize>,
    /// The position held in row 0.
    base: usize,
}

/// Keys and values of every layer for positions `0 .. len`, room for `capacity`.
#[derive(Debug)]
pub struct KvCache {
    capacity: usize,
    len: usize,
    layers: Vec<LayerKv>,
}

/// Where a forward call's keys and values go in one layer, and what its attention reads.
pub(crate) struct LayerView<'a> {
    /// The layer's key and value rows `0 .. pos0 + t` are the ones attention reads.
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    /// The row of the call's first token.
    pub pos0: usize,
    /// The sliding window: keys before row `pos0 + i + 1 − window` are outside query `i`'s.
    pub window: Option<usize>,
}

impl KvCache {
    /// An empty cache for `capacity` positions. Callers that follow the model's training
    /// context (generation) cap it at `n_ctx`; evaluation may go past it.
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Result<KvCache> {
        capacity
            .checked_mul(cfg.kv_dim().max(cfg.n_embd))
            .filter(|n| n.checked_mul(8 * cfg.n_layer).is_some())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a KV cache of {capacity} positions does not fit in memory"
                ))
            })?;
        Ok(KvCache::build(cfg, capacity, &mut Sizer::allocating()))
    }

    /// The window a layer's rows must cover: its sliding window, or a conv layer's taps.
    fn window_of(cfg: &ModelConfig, layer: usize) -> Option<usize> {
        if cfg.layers[layer].conv {
            Some(cfg.conv_taps)
        } else {
            cfg.window_of(layer)
        }
    }

    /// Rows a layer holds: every position, or for a window what it can still see plus one
    /// call's tokens.
    fn rows_of(cfg: &ModelConfig, layer: usize, capacity: usize) -> usize {
        match KvCache::window_of(cfg, layer) {
            Some(w) => capacity.min(w - 1 + WINDOWED_CALL),
            None => capacity,
        }
    }

    /// The cache's one size list.
    fn build(cfg: &ModelConfig, capacity: usize, s: &mut Sizer) -> KvCache {
        let mut l = 0;
        let layers = s.each(cfg.n_layer, |s| {
            let rows = KvCache::rows_of(cfg, l, capacity);
            let window = KvCache::window_of(cfg, l);
            let conv = cfg.layers[l].conv;
            let width = if conv { cfg.n_embd } else { cfg.kv_dim() };
            l += 1;
            LayerKv {
                k: s.zeros(rows * width),
                v: s.zeros(if conv { 0 } else { rows * width }),
                width,
                rows,
                window,
                base: 0,
            }
        });
        KvCache {
            capacity,
            len: 0,
            layers,
        }
    }

    /// Bytes a cache of `capacity` positions holds (its per-layer buffers; the small
    /// vector of them included).
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize) -> usize {
        Sizer::bytes_of(|s| KvCache::build(cfg, capacity, s))
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
        for l in &mut self.layers {
            l.base = 0;
        }
    }

    /// Drops positions from `len` on, so a prefix can be reused. A sliding-window layer
    /// that no longer holds the window before `len` cannot go back that far: then the
    /// cache is left as it was and an error says so.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        let len = self.len.min(len);
        for l in &self.layers {
            if let Some(w) = l.window {
                if len.saturating_sub(w - 1) < l.base {
                    return Err(Error::InvalidArgument(format!(
                        "the KV cache's sliding-window layers no longer hold the positions before {len} (they start at {})",
                        l.base
                    )));
                }
            }
        }
        self.len = len;
        Ok(())
    }

    /// Checks that a call of `t` tokens fits every layer.
    pub(crate) fn check_call(&self, t: usize) -> Result<()> {
        for l in &self.layers {
            if let Some(w) = l.window {
                if l.rows < self.capacity && w - 1 + t > l.rows {
                    return Err(Error::InvalidArgument(format!(
                        "{t} tokens in one call: a cache with sliding-window layers takes at most {WINDOWED_CALL} at a time"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The rows of layer `l` for a call of `t` tokens at positions `pos0 ..` (after
    /// [`KvCache::check_call`]): a sliding-window layer first moves the rows its window still
    /// needs to the front when the call would run past its end.
    pub(crate) fn layer_for(&mut self, l: usize, pos0: usize, t: usize) -> LayerView<'_> {
        let lk = &mut self.layers[l];
        let kvd = lk.width;
        if let Some(w) = lk.window {
            if pos0 - lk.base + t > lk.rows {
                let keep = pos0.min(w - 1);
                let from = pos0 - keep - lk.base;
                lk.k.copy_within(from * kvd..(from + keep) * kvd, 0);
                if !lk.v.is_empty() {
                    lk.v.copy_within(from * kvd..(from + keep) * kvd, 0);
                }
                lk.base = pos0 - keep;
            }
        }
        LayerView {
            k: &mut lk.k,
            v: &mut lk.v,
            pos0: pos0 - lk.base,
            window: lk.window,
        }
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
