//! AdamW with exactly `torch.optim.AdamW`'s semantics (bias correction, decoupled weight
//! decay), and gradient clipping by global L2 norm as `torch.nn.utils.clip_grad_norm_`.

use crate::lora::Adapter;

/// Optimizer hyper-parameters (torch's defaults except the learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of every adapter value, and the step count.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub m: Adapter,
    pub v: Adapter,
    pub t: u64,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, params: &Adapter) -> AdamW {
        AdamW {
            cfg,
            m: params.zeros_like(),
            v: params.zeros_like(),
            t: 0,
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut Adapter, grads: &Adapter, lr: f32) {
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        let step_size = lr / bc1;
        let decay = 1.0 - lr * c.weight_decay;
        let k = [c.beta1, c.beta2, step_size, bc2_sqrt, c.eps, decay];
        let update = crate::simd::kernels().ew.adamw;
        // In parallel over layers (allocates nothing); the pairs of a layer in turn.
        use rayon::prelude::*;
        params
            .layers
            .par_iter_mut()
            .zip(grads.layers.par_iter())
            .zip(
                self.m
                    .layers
                    .par_iter_mut()
                    .zip(self.v.layers.par_iter_mut()),
            )
            .for_each(|((pl, gl), (ml, vl))| {
                let pairs = pl.iter_mut().zip(gl).zip(ml.iter_mut().zip(vl.iter_mut()));
                for ((p, g), (m, v)) in pairs {
                    if let (Some(p), Some(g), Some(m), Some(v)) = (p, g, m, v) {
                        update(&mut p.a, &g.a, &mut m.a, &mut v.a, k);
                        update(&mut p.b, &g.b, &mut m.b, &mut v.b, k);
                    }
                }
            });
    }
}

/// The global L2 norm of all gradients (accumulated in f64).
pub fn grad_norm(grads: &Adapter) -> f64 {
    grads
        .pairs()
        .flat_map(|p| p.a.iter().chain(&p.b))
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients by `min(1, max_norm / (norm + 1e-6))`, as clip_grad_norm_ does;
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Adapter, max_norm: f32) -> f64 {
    let norm = grad_norm(grads);
    let coef = (max_norm as f64 / (norm + 1e-6)).min(1.0) as f32;
    if coef < 1.0 {
        for p in grads.pairs_mut() {
            p.a.iter_mut()
                .chain(p.b.iter_mut())
                .for_each(|g| *g *= coef);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, LoraPair, Target};

    fn one_param(v: f32) -> Adapter {
        let mut layer: crate::lora::LayerAdapter = Default::default();
        layer[Target::Q.index()] = Some(LoraPair {
            a: vec![v],
            b: vec![v],
            r: 1,
            in_dim: 1,
            out_dim: 1,
            scale: 1.0,
        });
        Adapter {
            config: LoraConfig::default(),
            layers: vec![layer],
        }
    }

    /// torch.optim.AdamW(lr=0.1, weight_decay=0.01) on one parameter starting at 1.0 with
    /// gradients 0.5, -0.25, 1.0 gives 0.8990000, 0.8714674, 0.8047847 (torch 2.15).
    #[test]
    fn three_steps_match_torch() {
        let mut p = one_param(1.0);
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.01,
                ..AdamWConfig::default()
            },
            &p,
        );
        let want = [0.899f32, 0.871_467_4, 0.804_784_7];
        for (g, w) in [0.5f32, -0.25, 1.0].iter().zip(want) {
            opt.step(&mut p, &one_param(*g), 0.1);
            let got = p.pairs().next().unwrap().a[0];
            assert!((got - w).abs() < 2e-6, "{got} vs {w}");
        }
    }

    #[test]
    fn clipping_scales_only_above_the_limit() {
        let mut g = one_param(3.0); // norm = sqrt(18)
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 18f64.sqrt()).abs() < 1e-9);
        let after = grad_norm(&g);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        let mut small = one_param(0.1);
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small.pairs().next().unwrap().a[0], 0.1);
    }
}
