//! Adapter weights: for each adapted block and target, A (r, in) and B (out, r), with the
//! target's scale. Stored in GGUF row order (B's rows line up with the base tensor's rows);
//! the PEFT reader/writer converts q/k rows to Hugging Face order.

use super::config::{LoraConfig, LoraInit, Target, N_TARGETS};
use crate::error::{Error, Result};
use crate::kernels::{LoraRef, Real};
use crate::model::ModelConfig;
use crate::util::rng::SplitMix64;

/// One target's low-rank pair.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair<F = f32> {
    /// (r, in_dim)
    pub a: Vec<F>,
    /// (out_dim, r)
    pub b: Vec<F>,
    pub r: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    /// α/r (or α/√r); per target so that per-module ranks and alphas can differ.
    pub scale: f32,
}

impl<F: Real> LoraPair<F> {
    /// A pair of zeros.
    pub fn zeros(r: usize, in_dim: usize, out_dim: usize, scale: f32) -> Self {
        LoraPair {
            a: vec![F::ZERO; r * in_dim],
            b: vec![F::ZERO; out_dim * r],
            r,
            in_dim,
            out_dim,
            scale,
        }
    }

    /// A borrowed view for the kernels.
    pub fn view(&self) -> LoraRef<'_, F> {
        LoraRef {
            a: &self.a,
            b: &self.b,
            r: self.r,
            scale: F::from_f32(self.scale),
        }
    }
}

/// The adapter of one block: a pair per target, where adapted.
pub type LayerAdapter<F = f32> = [Option<LoraPair<F>>; N_TARGETS];

/// A LoRA adapter for a whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter<F = f32> {
    pub config: LoraConfig,
    /// One entry per block of the model.
    pub layers: Vec<LayerAdapter<F>>,
}

/// (out, in) of a target in a model.
pub fn target_shape(cfg: &ModelConfig, t: Target) -> (usize, usize) {
    let (c, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    match t {
        Target::Q => (q, c),
        Target::K | Target::V => (kv, c),
        Target::O => (c, q),
        Target::Gate | Target::Up => (ff, c),
        Target::Down => (c, ff),
        Target::Qkv => (q + 2 * kv, c),
        Target::GateUp => (2 * ff, c),
        Target::ConvIn => (3 * c, c),
        Target::ConvOut => (c, c),
    }
}

impl<F: Real> Adapter<F> {
    /// A fresh adapter: A initialised as `config.init` says (seeded), B = 0.
    pub fn new(model: &ModelConfig, config: LoraConfig) -> Result<Adapter<F>> {
        config.validate()?;
        let targets = config.targets_for(model.arch)?;
        let config = LoraConfig {
            targets: targets.clone(),
            ..config
        };
        let on = config.layers.resolve(model.n_layer)?;
        let mut rng = SplitMix64::new(config.seed);
        let scale = config.scale();
        let r = config.r;
        let mut layers = Vec::with_capacity(model.n_layer);
        for &adapted in &on {
            let mut layer: LayerAdapter<F> = Default::default();
            if adapted {
                let l = layers.len();
                for &t in targets.iter().filter(|&&t| model.layer_has(l, t)) {
                    let (out, inp) = target_shape(model, t);
                    let mut p = LoraPair::zeros(r, inp, out, scale);
                    init_a(&mut p.a, inp, r, config.init, &mut rng);
                    layer[t.index()] = Some(p);
                }
            }
            layers.push(layer);
        }
        Ok(Adapter { config, layers })
    }

    /// An adapter of the same shape with every value zero (gradients, optimizer moments).
    pub fn zeros_like(&self) -> Adapter<F> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.clone()
                    .map(|p| p.map(|p| LoraPair::zeros(p.r, p.in_dim, p.out_dim, p.scale)))
            })
            .collect();
        Adapter {
            config: self.config.clone(),
            layers,
        }
    }

    /// Sets every value to zero, keeping the memory.
    pub fn fill_zero(&mut self) {
        for p in self.pairs_mut() {
            p.a.fill(F::ZERO);
            p.b.fill(F::ZERO);
        }
    }

    /// The lowest adapted block (backward stops there), if any block is adapted.
    pub fn lowest_layer(&self) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.iter().any(|p| p.is_some()))
    }

    /// Every pair, block by block, in target order.
    pub fn pairs(&self) -> impl Iterator<Item = &LoraPair<F>> {
        self.layers.iter().flat_map(|l| l.iter().flatten())
    }

    pub fn pairs_mut(&mut self) -> impl Iterator<Item = &mut LoraPair<F>> {
        self.layers.iter_mut().flat_map(|l| l.iter_mut().flatten())
    }

    /// Every (layer, target, pair).
    pub fn entries(&self) -> impl Iterator<Item = (usize, Target, &LoraPair<F>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            l.iter()
                .enumerate()
                .filter_map(move |(t, p)| p.as_ref().map(|p| (i, Target::EVERY[t], p)))
        })
    }

    /// Trainable values (A and B of every pair).
    pub fn n_params(&self) -> usize {
        self.pairs().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// Checks that every pair fits `model` (shapes and block count).
    pub fn check_fits(&self, model: &ModelConfig) -> Result<()> {
        if self.layers.len() != model.n_layer {
            return Err(Error::InvalidArgument(format!(
                "the adapter has {} blocks but the model has {} — trained for another base model?",
                self.layers.len(),
                model.n_layer
            )));
        }
        for (i, t, p) in self.entries() {
            if !model.layer_has(i, t) {
                return Err(Error::InvalidArgument(format!(
                    "adapter block {i} {}: the model's block {i} has no such projection ({}) — trained for another base model?",
                    t.hf_module(),
                    if model.layers[i].conv { "a short-convolution block" } else { "an attention block" }
                )));
            }
            let (out, inp) = target_shape(model, t);
            if (p.out_dim, p.in_dim) != (out, inp)
                || p.a.len() != p.r * inp
                || p.b.len() != out * p.r
            {
                return Err(Error::InvalidArgument(format!(
                    "adapter block {i} {}: shape {}×{} (rank {}) does not fit the model's {out}×{inp} — trained for another base model?",
                    t.hf_module(),
                    p.out_dim,
                    p.in_dim,
                    p.r
                )));
            }
        }
        Ok(())
    }

    /// Converts every value to another float type.
    pub fn cast<G: Real>(&self) -> Adapter<G> {
        let conv = |v: &[F]| v.iter().map(|x| G::from_f64(x.to_f64())).collect();
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.clone().map(|p| {
                    p.map(|p| LoraPair {
                        a: conv(&p.a),
                        b: conv(&p.b),
                        r: p.r,
                        in_dim: p.in_dim,
                        out_dim: p.out_dim,
                        scale: p.scale,
                    })
                })
            })
            .collect();
        Adapter {
            config: self.config.clone(),
            layers,
        }
    }
}

/// Where an adapter-shaped tensor set (weights, gradients, moments) holds a value that is
/// NaN or infinite: see [`Adapter::find_non_finite`].
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// The block (`blk.N`).
    pub layer: usize,
    pub target: Target,
    /// `"lora_a"` or `"lora_b"`.
    pub tensor: &'static str,
    /// Index of the first bad value in that tensor, and the value.
    pub index: usize,
    pub value: f64,
    /// How many of the adapter's tensors hold a non-finite value.
    pub n_tensors: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blk.{}.{}.{}[{}] = {} ({} tensor(s) affected)",
            self.layer,
            self.target.gguf_tensor(),
            self.tensor,
            self.index,
            self.value,
            self.n_tensors
        )
    }
}

impl<F: Real> Adapter<F> {
    /// The non-finite values of this adapter, if any: the first one met scanning blocks
    /// from the last to the first (the order of the backward pass, so for gradients the
    /// block where it appeared), targets in [`Target::EVERY`] order, B before A.
    pub fn find_non_finite(&self) -> Option<NonFinite> {
        let mut found: Option<NonFinite> = None;
        let mut n_tensors = 0;
        for (layer, la) in self.layers.iter().enumerate().rev() {
            for t in Target::EVERY {
                let Some(p) = &la[t.index()] else { continue };
                for (tensor, v) in [("lora_b", &p.b), ("lora_a", &p.a)] {
                    if let Some((index, value)) = first_non_finite(v) {
                        n_tensors += 1;
                        found.get_or_insert(NonFinite {
                            layer,
                            target: t,
                            tensor,
                            index,
                            value,
                            n_tensors: 0,
                        });
                    }
                }
            }
        }
        found.map(|f| NonFinite { n_tensors, ..f })
    }
}

/// The first value of `v` that is NaN or infinite, with its index.
pub fn first_non_finite<F: Real>(v: &[F]) -> Option<(usize, f64)> {
    v.iter()
        .position(|x| !x.to_f64().is_finite())
        .map(|i| (i, v[i].to_f64()))
}

/// Fills A (r, in): Kaiming-uniform U(−1/√in, 1/√in) (PEFT's default, kaiming_uniform_
/// with a = √5) or Gaussian N(0, 1/r²) (PEFT's "gaussian").
fn init_a<F: Real>(a: &mut [F], inp: usize, r: usize, init: LoraInit, rng: &mut SplitMix64) {
    match init {
        LoraInit::Kaiming => {
            let bound = 1.0 / (inp as f64).sqrt();
            for v in a.iter_mut() {
                *v = F::from_f64((rng.next_f64() * 2.0 - 1.0) * bound);
            }
        }
        LoraInit::Gaussian => {
            let std = 1.0 / r as f64;
            for v in a.iter_mut() {
                // Box–Muller; 1 − u keeps the logarithm finite.
                let (u1, u2) = (1.0 - rng.next_f64(), rng.next_f64());
                *v =
                    F::from_f64(std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::config::LayerSelection;

    fn model() -> ModelConfig {
        ModelConfig::dense(&crate::model::arch::LLAMA, 10, 64, 3, 4, 2, 96, 32)
    }

    #[test]
    fn fresh_adapters_have_zero_b_and_bounded_seeded_a() {
        let cfg = LoraConfig {
            r: 4,
            targets: vec![Target::Q, Target::Down],
            layers: LayerSelection::Last(2),
            ..LoraConfig::default()
        };
        let a: Adapter = Adapter::new(&model(), cfg.clone()).unwrap();
        assert_eq!(a.lowest_layer(), Some(1));
        assert!(a.layers[0].iter().all(|p| p.is_none()));
        let q = a.layers[1][Target::Q.index()].as_ref().unwrap();
        assert_eq!(
            (q.out_dim, q.in_dim, q.a.len(), q.b.len()),
            (64, 64, 256, 256)
        );
        let d = a.layers[2][Target::Down.index()].as_ref().unwrap();
        assert_eq!((d.out_dim, d.in_dim), (64, 96));
        assert!(q.b.iter().all(|&v| v == 0.0));
        let bound = 1.0 / 8.0;
        assert!(
            q.a.iter().all(|&v| v.abs() <= bound) && q.a.iter().any(|&v| v.abs() > bound * 0.9)
        );
        assert_eq!(
            a,
            Adapter::new(&model(), cfg.clone()).unwrap(),
            "same seed, same adapter"
        );
        assert_ne!(
            a,
            Adapter::new(&model(), LoraConfig { seed: 1, ..cfg }).unwrap()
        );
        assert_eq!(a.n_params(), 2 * (256 + 256) + 2 * (4 * 96 + 64 * 4));
    }

    #[test]
    fn gaussian_init_has_standard_deviation_one_over_r() {
        // 5760 draws: the standard errors are 0.0033 (mean) and 0.0023 (sd).
        let cfg = LoraConfig {
            r: 4,
            init: LoraInit::Gaussian,
            ..LoraConfig::default()
        };
        let a: Adapter<f64> = Adapter::new(&model(), cfg).unwrap();
        let vals: Vec<f64> = a.pairs().flat_map(|p| p.a.iter().copied()).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let sd =
            (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64).sqrt();
        assert_eq!(vals.len(), 5760);
        assert!(
            mean.abs() < 0.015 && (sd - 0.25).abs() < 0.01,
            "mean {mean} sd {sd}"
        );
    }

    #[test]
    fn shape_checks_name_the_mismatch() {
        let a: Adapter = Adapter::new(&model(), LoraConfig::default()).unwrap();
        assert!(a.check_fits(&model()).is_ok());
        let other = ModelConfig {
            n_ff: 128,
            ..model()
        };
        let e = a.check_fits(&other).unwrap_err().to_string();
        assert!(
            e.contains("gate_proj") && e.contains("another base model"),
            "{e}"
        );
        let e = a
            .check_fits(&ModelConfig {
                n_layer: 2,
                ..model()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 blocks"), "{e}");
    }
}
