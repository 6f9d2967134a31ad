//! Several adapters at once, and switching between them without touching the base.
//!
//! Σᵢ wᵢ·sᵢ·Bᵢ·Aᵢ (adapter i's own scale sᵢ and a mixing weight wᵢ) equals one adapter of
//! rank Σ rᵢ at scale 1 with B = [w₁s₁B₁ | w₂s₂B₂ | …] (columns side by side) and
//! A = [A₁; A₂; …] (rows stacked): rank concatenation. [`combine`] builds that adapter, so
//! the block code applies any mix as it applies one adapter; [`AdapterSet`] holds loaded
//! adapters by name and rebuilds the mix only when the selection changes.

use std::sync::{Arc, Mutex};

use super::adapter::{Adapter, LayerAdapter, LoraPair};
use super::config::{LayerSelection, LoraConfig, LoraInit, Target};
use crate::error::{Error, Result};
use crate::model::ModelConfig;

/// One adapter applying Σ wᵢ·(adapter i) — see the module docs. A single adapter is
/// returned as it is (its scales multiplied by w); pairs present in only some adapters
/// take only those. All adapters must have the same number of blocks and matching pair
/// shapes (check each with [`Adapter::check_fits`] first).
pub fn combine(parts: &[(&Adapter, f32)]) -> Result<Adapter> {
    let Some(&(first, _)) = parts.first() else {
        return Err(Error::InvalidArgument("no adapters to combine".into()));
    };
    for (a, w) in parts {
        if !w.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "adapter weight {w} is not finite"
            )));
        }
        if a.layers.len() != first.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "adapters for models of {} and {} blocks cannot be combined",
                first.layers.len(),
                a.layers.len()
            )));
        }
    }
    if let [(a, w)] = parts {
        let mut out = (*a).clone();
        for p in out.pairs_mut() {
            p.scale *= w;
        }
        return Ok(out);
    }
    let mut layers: Vec<LayerAdapter> = Vec::with_capacity(first.layers.len());
    let mut targets = Vec::new();
    let mut on = Vec::with_capacity(first.layers.len());
    let mut max_r = 0;
    for l in 0..first.layers.len() {
        let mut layer: LayerAdapter = Default::default();
        for t in Target::EVERY {
            let present: Vec<(&LoraPair, f32)> = parts
                .iter()
                .filter_map(|(a, w)| a.layers[l][t.index()].as_ref().map(|p| (p, *w)))
                .collect();
            if present.is_empty() {
                continue;
            }
            let pair = concat(&present)
                .map_err(|e| Error::InvalidArgument(format!("block {l} {}: {e}", t.hf_module())))?;
            max_r = max_r.max(pair.r);
            layer[t.index()] = Some(pair);
            targets.push(t);
        }
        on.push(layer.iter().any(Option::is_some));
        layers.push(layer);
    }
    targets.sort();
    targets.dedup();
    let config = LoraConfig {
        r: max_r.max(1),
        // α = r makes the config's own scale 1, as every pair's is.
        alpha: max_r.max(1) as f32,
        rslora: false,
        dropout: 0.0,
        targets,
        layers: if on.iter().all(|&b| b) {
            LayerSelection::All
        } else {
            LayerSelection::List((0..on.len()).filter(|&i| on[i]).collect())
        },
        init: LoraInit::Kaiming,
        seed: 0,
    };
    Ok(Adapter { config, layers })
}

/// Rank-concatenates pairs of the same target: A stacked, B side by side times w·scale.
fn concat(present: &[(&LoraPair, f32)]) -> std::result::Result<LoraPair, String> {
    let (in_dim, out_dim) = (present[0].0.in_dim, present[0].0.out_dim);
    if let Some((p, _)) = present
        .iter()
        .find(|(p, _)| (p.in_dim, p.out_dim) != (in_dim, out_dim))
    {
        return Err(format!(
            "shapes {}×{} and {}×{} differ",
            out_dim, in_dim, p.out_dim, p.in_dim
        ));
    }
    let r: usize = present.iter().map(|(p, _)| p.r).sum();
    let mut a = Vec::with_capacity(r * in_dim);
    for (p, _) in present {
        a.extend_from_slice(&p.a);
    }
    let mut b = vec![0f32; out_dim * r];
    let mut col = 0;
    for (p, w) in present {
        let s = p.scale * w;
        for o in 0..out_dim {
            let src = &p.b[o * p.r..(o + 1) * p.r];
            for (d, v) in b[o * r + col..o * r + col + p.r].iter_mut().zip(src) {
                *d = v * s;
            }
        }
        col += p.r;
    }
    Ok(LoraPair {
        a,
        b,
        r,
        in_dim,
        out_dim,
        scale: 1.0,
    })
}

/// A mix: (adapter index, weight bits) per part.
type Selection = Vec<(usize, u32)>;

/// Adapters loaded once for one base model, by name, and the mix currently in use.
///
/// ```no_run
/// # use pocketlora::internals::{lora::{peft, AdapterSet}, model::Model, infer::*};
/// # fn main() -> pocketlora::Result<()> {
/// let model = Model::open("base.gguf", 0)?;
/// let mut set = AdapterSet::new(&model.cfg);
/// set.insert("legal", peft::load("legal".as_ref(), &model.cfg)?)?;
/// set.insert("tone", peft::load("tone".as_ref(), &model.cfg)?)?;
/// # let (prompt, params) = (vec![1u32], GenerateParams { max_new: 8, sampler: SamplerConfig::default(), stop_ids: vec![] });
/// // Per request: a mix (built once, reused while the selection stays the same) …
/// let mix = set.mix(&[("legal", 1.0), ("tone", 0.5)])?;
/// generate_with(&model, Some(&mix), &prompt, &params, |_| true)?;
/// // … or one adapter as loaded, or none — the base is never reloaded.
/// generate_with(&model, set.get("tone").map(|a| &**a), &prompt, &params, |_| true)?;
/// generate_with(&model, None, &prompt, &params, |_| true)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AdapterSet {
    cfg: ModelConfig,
    adapters: Vec<(String, Arc<Adapter>)>,
    /// The last mix built.
    last: Mutex<Option<(Selection, Arc<Adapter>)>>,
}

impl AdapterSet {
    /// An empty set for a model of configuration `cfg`.
    pub fn new(cfg: &ModelConfig) -> AdapterSet {
        AdapterSet {
            cfg: cfg.clone(),
            adapters: Vec::new(),
            last: Mutex::new(None),
        }
    }

    /// Adds (or replaces) adapter `name`, after checking that it fits the model.
    pub fn insert(&mut self, name: impl Into<String>, adapter: Adapter) -> Result<()> {
        adapter.check_fits(&self.cfg)?;
        let name = name.into();
        let a = Arc::new(adapter);
        match self.adapters.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = a,
            None => self.adapters.push((name, a)),
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Removes adapter `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.adapters.len();
        self.adapters.retain(|(n, _)| n != name);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.adapters.len() != before
    }

    /// Adapter `name` as loaded.
    pub fn get(&self, name: &str) -> Option<&Arc<Adapter>> {
        self.adapters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// The names, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.adapters.iter().map(|(n, _)| n.as_str())
    }

    /// The adapter applying Σ weight·adapter over `selection` ([`combine`]); the same
    /// selection as the previous call returns the same `Arc` without rebuilding.
    pub fn mix(&self, selection: &[(&str, f32)]) -> Result<Arc<Adapter>> {
        let mut key = Vec::with_capacity(selection.len());
        for (name, w) in selection {
            let i = self
                .adapters
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("no adapter named {name:?} is loaded"))
                })?;
            key.push((i, w.to_bits()));
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, a)) = last.as_ref() {
            if *k == key {
                return Ok(Arc::clone(a));
            }
        }
        let parts: Vec<(&Adapter, f32)> = key
            .iter()
            .map(|&(i, w)| (&*self.adapters[i].1, f32::from_bits(w)))
            .collect();
        let mixed = Arc::new(combine(&parts)?);
        *last = Some((key, Arc::clone(&mixed)));
        Ok(mixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig::dense(&crate::model::arch::LLAMA, 10, 8, 2, 2, 1, 12, 16)
    }

    fn adapter(r: usize, targets: &[Target], layers: LayerSelection, seed: u64) -> Adapter {
        let mut a = Adapter::new(
            &cfg(),
            LoraConfig {
                r,
                alpha: 3.0,
                targets: targets.to_vec(),
                layers,
                seed,
                ..LoraConfig::default()
            },
        )
        .unwrap();
        for (k, p) in a.pairs_mut().enumerate() {
            for (j, v) in p.b.iter_mut().enumerate() {
                *v = ((j * 7 + k * 3 + seed as usize) % 11) as f32 / 10.0 - 0.5;
            }
        }
        a
    }

    /// s·B·A of a pair, (out, in), in f64.
    fn delta(p: &LoraPair) -> Vec<f64> {
        let mut d = vec![0f64; p.out_dim * p.in_dim];
        for o in 0..p.out_dim {
            for i in 0..p.in_dim {
                d[o * p.in_dim + i] = (0..p.r)
                    .map(|k| p.b[o * p.r + k] as f64 * p.a[k * p.in_dim + i] as f64)
                    .sum::<f64>()
                    * p.scale as f64;
            }
        }
        d
    }

    #[test]
    fn rank_concatenation_sums_the_weighted_products() {
        let x = adapter(2, &[Target::Q, Target::Down], LayerSelection::All, 1);
        let y = adapter(3, &[Target::Q, Target::V], LayerSelection::List(vec![1]), 2);
        let m = combine(&[(&x, 1.0), (&y, -0.5)]).unwrap();
        assert!(m.check_fits(&cfg()).is_ok());
        for l in 0..2 {
            for t in Target::EVERY {
                let (px, py) = (&x.layers[l][t.index()], &y.layers[l][t.index()]);
                let pm = &m.layers[l][t.index()];
                match (px, py) {
                    (None, None) => assert!(pm.is_none()),
                    _ => {
                        let pm = pm.as_ref().unwrap();
                        let want: Vec<f64> = match (px, py) {
                            (Some(a), Some(b)) => delta(a)
                                .iter()
                                .zip(delta(b))
                                .map(|(u, v)| u - 0.5 * v)
                                .collect(),
                            (Some(a), None) => delta(a),
                            (None, Some(b)) => delta(b).iter().map(|v| -0.5 * v).collect(),
                            _ => unreachable!(),
                        };
                        let got = delta(pm);
                        for (g, w) in got.iter().zip(&want) {
                            assert!((g - w).abs() < 1e-6, "block {l} {t:?}: {g} vs {w}");
                        }
                        let r = px.as_ref().map_or(0, |p| p.r) + py.as_ref().map_or(0, |p| p.r);
                        assert_eq!((pm.r, pm.scale), (r, 1.0));
                    }
                }
            }
        }
        // A single adapter keeps its pairs and scales its scale.
        let one = combine(&[(&y, 2.0)]).unwrap();
        let (p0, p1) = (
            y.layers[1][Target::V.index()].as_ref().unwrap(),
            one.layers[1][Target::V.index()].as_ref().unwrap(),
        );
        assert_eq!(
            (p1.a.clone(), p1.b.clone(), p1.scale),
            (p0.a.clone(), p0.b.clone(), 2.0 * p0.scale)
        );
        assert!(combine(&[]).is_err());
    }

    #[test]
    fn sets_rebuild_only_when_the_selection_changes() {
        let mut set = AdapterSet::new(&cfg());
        set.insert("x", adapter(2, &[Target::Q], LayerSelection::All, 1))
            .unwrap();
        set.insert("y", adapter(2, &[Target::K], LayerSelection::All, 2))
            .unwrap();
        let m1 = set.mix(&[("x", 1.0), ("y", 0.5)]).unwrap();
        let m2 = set.mix(&[("x", 1.0), ("y", 0.5)]).unwrap();
        assert!(Arc::ptr_eq(&m1, &m2));
        let m3 = set.mix(&[("x", 1.0), ("y", 0.25)]).unwrap();
        assert!(!Arc::ptr_eq(&m1, &m3));
        assert!(set
            .mix(&[("z", 1.0)])
            .unwrap_err()
            .to_string()
            .contains("\"z\""));
        let wide = ModelConfig {
            n_embd: 16,
            ..cfg()
        };
        let e = set
            .insert("w", Adapter::new(&wide, LoraConfig::default()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("another base model"), "{e}");
        assert_eq!(set.names().collect::<Vec<_>>(), ["x", "y"]);
        assert!(set.remove("x") && !set.remove("x"));
    }
}
