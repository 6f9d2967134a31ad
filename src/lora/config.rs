//! LoRA hyper-parameters: rank, alpha and scale (α/r or rsLoRA's α/√r), dropout on the
//! LoRA input path, which linear layers are adapted (targets) and in which blocks, and how
//! A is initialised.

use crate::error::{Error, Result};

/// A linear layer of a transformer block that can carry an adapter. The order is the index
/// used throughout (`Target::EVERY[i]`). `Qkv` and `GateUp` are the fused projections of
/// architectures that store q/k/v, or gate/up, as one matrix (phi3): there they replace
/// Q, K, V and Gate, Up (see [`crate::model::Arch::targets`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    /// q, k and v in one matrix: rows q, then k, then v.
    Qkv,
    /// gate and up in one matrix: rows gate, then up.
    GateUp,
    /// A short-convolution block's input projection (lfm2: `in_proj`, n_embd → 3·n_embd,
    /// the gates B and C and the input x).
    ConvIn,
    /// A short-convolution block's output projection (lfm2: `out_proj`).
    ConvOut,
}

/// Adapter slots per block: one per [`Target`].
pub const N_TARGETS: usize = 11;

impl Target {
    /// Every target, in index order.
    pub const EVERY: [Target; N_TARGETS] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
        Target::Qkv,
        Target::GateUp,
        Target::ConvIn,
        Target::ConvOut,
    ];

    /// The seven separate projections of a llama-like block (`all-linear` before it is
    /// resolved against a model's architecture).
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// Position in [`Target::EVERY`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name used on the command line.
    pub fn short(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
            Target::Qkv => "qkv",
            Target::GateUp => "gate_up",
            Target::ConvIn => "conv_in",
            Target::ConvOut => "conv_out",
        }
    }

    /// The Hugging Face module name (`q_proj`, …, `down_proj`).
    pub fn hf_module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
            Target::Qkv => "qkv_proj",
            Target::GateUp => "gate_up_proj",
            Target::ConvIn => "in_proj",
            Target::ConvOut => "out_proj",
        }
    }

    /// The Hugging Face parent module (`self_attn` or `mlp`).
    pub fn hf_parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O | Target::Qkv => "self_attn",
            Target::ConvIn | Target::ConvOut => "conv",
            _ => "mlp",
        }
    }

    /// The GGUF tensor of the base weight (`attn_q`, …, `ffn_down`).
    pub fn gguf_tensor(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
            Target::Qkv => "attn_qkv",
            // phi3 stores gate and up fused in the tensor llama-like files call ffn_up.
            Target::GateUp => "ffn_up",
            Target::ConvIn => "shortconv.in_proj",
            Target::ConvOut => "shortconv.out_proj",
        }
    }

    /// Whether this is a fused projection ([`Target::Qkv`], [`Target::GateUp`]).
    pub fn is_fused(self) -> bool {
        matches!(self, Target::Qkv | Target::GateUp)
    }

    /// Accepts `q`, `q_proj`, `attn_q`, …, `qkv`, `qkv_proj`, `gate_up`, … (any case;
    /// `ffn_up` is the separate up projection).
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.trim().to_ascii_lowercase();
        Target::EVERY
            .into_iter()
            .find(|t| s == t.short() || s == t.hf_module() || s == t.gguf_tensor())
    }

    /// `all-linear` (every target) or a comma-separated list; sorted, without repeats.
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        if s.trim().eq_ignore_ascii_case("all-linear") || s.trim().eq_ignore_ascii_case("all") {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let t = Target::parse(part).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown LoRA target {part:?}; use all-linear or a list of q, k, v, o, gate, up, down (qkv, gate_up where the model fuses them)"
                ))
            })?;
            out.push(t);
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument("no LoRA targets given".into()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Which transformer blocks carry adapters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSelection {
    All,
    /// The last N blocks.
    Last(usize),
    /// These block indices.
    List(Vec<usize>),
}

impl LayerSelection {
    /// `all`, `last:N` or `0,3,5`.
    pub fn parse(s: &str) -> Result<LayerSelection> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(LayerSelection::All);
        }
        if let Some(n) = s.strip_prefix("last:") {
            let n: usize = n.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!("--layers {s:?}: N in last:N must be a number"))
            })?;
            return Ok(LayerSelection::Last(n));
        }
        let list: std::result::Result<Vec<usize>, _> =
            s.split(',').map(|p| p.trim().parse::<usize>()).collect();
        match list {
            Ok(mut l) if !l.is_empty() => {
                l.sort_unstable();
                l.dedup();
                Ok(LayerSelection::List(l))
            }
            _ => Err(Error::InvalidArgument(format!(
                "--layers {s:?}: expected all, last:N or a list like 0,3,5"
            ))),
        }
    }

    /// Per block: whether it is adapted, for a model of `n_layer` blocks.
    pub fn resolve(&self, n_layer: usize) -> Result<Vec<bool>> {
        let mut on = vec![false; n_layer];
        match self {
            LayerSelection::All => on.fill(true),
            LayerSelection::Last(n) => {
                if *n == 0 || *n > n_layer {
                    return Err(Error::InvalidArgument(format!(
                        "last:{n} needs 1 ≤ N ≤ {n_layer} (the model's blocks)"
                    )));
                }
                on[n_layer - n..].fill(true);
            }
            LayerSelection::List(l) => {
                for &i in l {
                    if i >= n_layer {
                        return Err(Error::InvalidArgument(format!(
                            "layer {i} does not exist: the model has blocks 0..{}",
                            n_layer - 1
                        )));
                    }
                    on[i] = true;
                }
            }
        }
        Ok(on)
    }
}

/// How A is initialised (B always starts at zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraInit {
    /// PEFT's default: Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in).
    Kaiming,
    /// The LoRA paper's Gaussian, N(0, 1/r²) as PEFT's `init_lora_weights="gaussian"`.
    Gaussian,
}

impl LoraInit {
    pub fn parse(s: &str) -> Result<LoraInit> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kaiming" => Ok(LoraInit::Kaiming),
            "gaussian" => Ok(LoraInit::Gaussian),
            other => Err(Error::InvalidArgument(format!(
                "--init {other:?}: expected kaiming or gaussian"
            ))),
        }
    }
}

/// The largest LoRA rank accepted, from the command line or from an adapter file (a rank is
/// an allocation size: A is r × in and B out × r per target and block).
pub const MAX_RANK: usize = 4096;

/// Everything that defines an adapter's shape and starting point.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// Scale α/√r (rank-stabilised LoRA) instead of α/r.
    pub rslora: bool,
    /// Dropout probability on the LoRA input path (training only).
    pub dropout: f32,
    pub targets: Vec<Target>,
    pub layers: LayerSelection,
    pub init: LoraInit,
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            rslora: false,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
            layers: LayerSelection::All,
            init: LoraInit::Kaiming,
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// α/r, or α/√r with rsLoRA.
    pub fn scale(&self) -> f32 {
        scale_for(self.alpha, self.r, self.rslora)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 || self.r > MAX_RANK {
            return Err(Error::InvalidArgument(format!(
                "rank {} must be between 1 and {MAX_RANK}",
                self.r
            )));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "alpha {} must be a number above 0 (the adapter's scale is alpha/r: at 0 it does nothing, below 0 it trains backwards)",
                self.alpha
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!(
                "dropout {} must be in [0, 1)",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidArgument("no LoRA targets".into()));
        }
        Ok(())
    }
}

impl LoraConfig {
    /// The targets as a model of architecture `arch` has them: on an architecture with
    /// fused projections, `all-linear` (the seven separate ones) becomes its own list
    /// (qkv, o, gate_up, down), and asking for part of a fused projection is an error that
    /// names the fused one; on others, a fused target is an error.
    pub fn targets_for(&self, arch: &crate::model::Arch) -> Result<Vec<Target>> {
        let have = arch.targets;
        if self.targets == Target::ALL {
            return Ok(have.to_vec());
        }
        for &t in &self.targets {
            if !have.contains(&t) {
                let fused = have
                    .iter()
                    .find(|f| f.is_fused() && arch.fused_parts(**f).contains(&t));
                return Err(Error::InvalidArgument(match fused {
                    Some(f) => format!(
                        "LoRA target {}: {} fuses it with others into one projection; target {} (or all-linear)",
                        t.short(),
                        arch.name,
                        f.short()
                    ),
                    None => format!(
                        "LoRA target {} does not exist in {}; its targets are {}",
                        t.short(),
                        arch.name,
                        have.iter().map(|t| t.short()).collect::<Vec<_>>().join(", ")
                    ),
                }));
            }
        }
        Ok(self.targets.clone())
    }
}

/// The LoRA scale for a rank and alpha.
pub fn scale_for(alpha: f32, r: usize, rslora: bool) -> f32 {
    if rslora {
        alpha / (r as f32).sqrt()
    } else {
        alpha / r as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_every_spelling() {
        assert_eq!(
            Target::parse_list("all-linear").unwrap(),
            Target::ALL.to_vec()
        );
        assert_eq!(
            Target::parse_list("v,q_proj,attn_q,down").unwrap(),
            vec![Target::Q, Target::V, Target::Down]
        );
        assert!(Target::parse_list("q,lm_head")
            .unwrap_err()
            .to_string()
            .contains("lm_head"));
        assert!(Target::parse_list(",").is_err());
    }

    #[test]
    fn targets_resolve_against_fused_architectures() {
        use crate::model::arch::{LLAMA, PHI3};
        let all = LoraConfig::default();
        assert_eq!(all.targets_for(&LLAMA).unwrap(), Target::ALL.to_vec());
        assert_eq!(
            all.targets_for(&PHI3).unwrap(),
            vec![Target::O, Target::Down, Target::Qkv, Target::GateUp]
        );
        let q = LoraConfig {
            targets: vec![Target::Q, Target::O],
            ..LoraConfig::default()
        };
        let e = q.targets_for(&PHI3).unwrap_err().to_string();
        assert!(e.contains("qkv") && e.contains("phi3"), "{e}");
        let fused = LoraConfig {
            targets: Target::parse_list("qkv,gate_up_proj").unwrap(),
            ..LoraConfig::default()
        };
        assert_eq!(
            fused.targets_for(&PHI3).unwrap(),
            vec![Target::Qkv, Target::GateUp]
        );
        assert!(fused.targets_for(&LLAMA).is_err());
        assert_eq!(Target::parse("ffn_up"), Some(Target::Up));
    }

    #[test]
    fn layer_selections_resolve_and_refuse_out_of_range() {
        assert_eq!(
            LayerSelection::parse("all").unwrap().resolve(3).unwrap(),
            vec![true; 3]
        );
        assert_eq!(
            LayerSelection::parse("last:2").unwrap().resolve(4).unwrap(),
            vec![false, false, true, true]
        );
        assert_eq!(
            LayerSelection::parse("3, 0").unwrap().resolve(4).unwrap(),
            vec![true, false, false, true]
        );
        assert!(LayerSelection::parse("last:5").unwrap().resolve(4).is_err());
        assert!(LayerSelection::parse("0,9")
            .unwrap()
            .resolve(4)
            .unwrap_err()
            .to_string()
            .contains("layer 9"));
        assert!(LayerSelection::parse("first:2").is_err());
    }

    #[test]
    fn scales_follow_lora_and_rslora() {
        let c = LoraConfig {
            r: 16,
            alpha: 32.0,
            ..LoraConfig::default()
        };
        assert_eq!(c.scale(), 2.0);
        assert_eq!(
            LoraConfig {
                rslora: true,
                ..c.clone()
            }
            .scale(),
            8.0
        );
        assert!(LoraConfig {
            dropout: 1.0,
            ..c.clone()
        }
        .validate()
        .is_err());
        for alpha in [0.0, -16.0, f32::NAN] {
            let e = LoraConfig { alpha, ..c.clone() }
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("above 0"), "{e}");
        }
        assert!(LoraConfig { r: 0, ..c }.validate().is_err());
    }
}
