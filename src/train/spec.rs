//! What a training run is configured by, in one value: where the adapter starts, the
//! optimizer and its schedule, how long, the loop, the memory budget and the data shape
//! (sequence length, packing, validation split). Every front end (command line, C ABI,
//! bindings) fills a [`TrainSpec`] and hands it to a [`super::Session`]; the settings that
//! define a run's result are recorded from it in one place ([`TrainSpec::recorded`]) and a
//! resumed run is checked against them in one place ([`check_agrees`]).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::schedule::Schedule;
use super::trainer::TrainConfig;
use super::AdamWConfig;
use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use crate::model::backward::SavedDtype;

/// Where the adapter starts.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterInit {
    /// A new adapter: A random, B zero.
    New(LoraConfig),
    /// An existing one: a PEFT directory or a llama.cpp GGUF adapter file (its rank, alpha
    /// and targets are used).
    From(PathBuf),
}

/// How long a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// This many optimizer steps.
    Steps(usize),
    /// This many passes over the training records.
    Epochs(usize),
}

impl Length {
    /// Optimizer steps for `records` training records taken `per_step` at a time.
    pub fn steps(self, records: usize, per_step: usize) -> usize {
        match self {
            Length::Steps(n) => n,
            Length::Epochs(e) => (records * e).div_ceil(per_step.max(1)).max(1),
        }
    }
}

/// Everything a training run is configured by.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    pub adapter: AdapterInit,
    /// Peak learning rate.
    pub lr: f32,
    pub schedule: Schedule,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Clip the global gradient norm to this (0 = off).
    pub clip: f32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    pub length: Length,
    /// Records per micro-batch, micro-batches per optimizer step.
    pub batch: usize,
    pub grad_accum: usize,
    /// Reshuffle the records every epoch.
    pub shuffle: bool,
    /// Seeds the initialisation, shuffling, the validation split and dropout.
    pub seed: u64,
    /// Records are cut to this many tokens (`None`: the model's context); with a budget
    /// and `None`, the plan may choose a shorter length.
    pub seq_len: Option<usize>,
    /// Pack short records into sequences of the sequence length (document masking).
    pub pack: bool,
    /// Hold out this fraction of the training records (seeded) for validation.
    pub valid_split: Option<f64>,
    /// Validate every N steps (`None`: ten times per run), and at the end.
    pub eval_every: Option<usize>,
    /// Stop after this many validations without improvement; keep the best adapter.
    pub patience: Option<usize>,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Where the adapter, its record and the checkpoints go (`None`: nowhere; the adapter
    /// is taken from the run).
    pub out: Option<PathBuf>,
    /// The memory budget the run is planned to stay inside (`None`: unplanned, plain
    /// buffers sized to the longest record).
    pub budget: Option<u64>,
    /// Saved-activation storage (`None`: f32 unless the budget needs less).
    pub saved: Option<SavedDtype>,
    /// Skip (and count) batches whose loss or gradient is not finite.
    pub skip_nonfinite: bool,
    /// The base model's name, written into the adapter's configuration and recorded.
    pub base_name: String,
    /// Replace a non-empty output directory (at the end of the run; see
    /// [`super::outdir`]); or, resuming from an older checkpoint in place, discard the
    /// newer ones. Without it such directories are refused before the first step.
    pub overwrite: bool,
    /// Resume even though the data differ from the checkpointed run's.
    pub allow_data_change: bool,
    /// Allow a sequence length above the model's trained context.
    pub allow_long_context: bool,
    /// The caller chose neither the length nor the learning rate: for small data
    /// ([`SMALL_DATA`] training records or fewer) the session picks ones that learn the
    /// records ([`TrainSpec::for_small_data`]) and says what it chose.
    pub auto_small_data: bool,
    /// How the front end was invoked (its flags, say), recorded but not compared, so a run
    /// can be resumed from its record alone.
    pub invocation: Option<Value>,
    /// The front end's own settings that define the result (data files, how text was
    /// encoded): recorded and checked on resume with the rest.
    pub extra: Map<String, Value>,
}

impl Default for TrainSpec {
    fn default() -> Self {
        let t = TrainConfig::default();
        TrainSpec {
            adapter: AdapterInit::New(LoraConfig::default()),
            lr: t.lr,
            schedule: t.schedule,
            warmup: 0,
            clip: t.clip,
            weight_decay: 0.0,
            length: Length::Epochs(1),
            batch: 4,
            grad_accum: 1,
            shuffle: false,
            seed: 0,
            seq_len: None,
            pack: false,
            valid_split: None,
            eval_every: None,
            patience: None,
            save_every: 0,
            out: None,
            budget: None,
            saved: None,
            skip_nonfinite: false,
            base_name: String::new(),
            overwrite: false,
            allow_data_change: false,
            allow_long_context: false,
            invocation: None,
            auto_small_data: false,
            extra: Map::new(),
        }
    }
}

impl TrainSpec {
    /// Refuses settings no run can have, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, msg: String| Err(Error::Setting { setting, msg });
        for (v, what) in [
            (self.lr, "lr"),
            (self.clip, "clip"),
            (self.weight_decay, "weight_decay"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(what, format!("is {v}: must be a number ≥ 0"));
            }
        }
        if self.batch == 0 {
            return bad("batch", "is 0: must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "is 0: must be at least 1".into());
        }
        if self.length == Length::Epochs(0) {
            return bad("epochs", "is 0: give at least 1".into());
        }
        if self.length == Length::Steps(0) {
            return bad("steps", "is 0: give at least 1".into());
        }
        if let Some(s) = self.seq_len {
            if s < 2 {
                return bad("seq_len", format!("{s} is too short: give at least 2"));
            }
        }
        if let Some(f) = self.valid_split {
            if !(f > 0.0 && f < 1.0) {
                return bad("valid_split", format!("{f} must be between 0 and 1"));
            }
        }
        if let AdapterInit::New(l) = &self.adapter {
            l.validate()?;
        }
        Ok(())
    }

    /// The optimizer settings for a run of `total_steps`.
    pub fn train_config(&self, total_steps: usize) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            schedule: self.schedule,
            warmup: self.warmup,
            total_steps,
            clip: self.clip,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            seed: self.seed,
        }
    }

    /// The settings that define a run's result, as recorded in its checkpoints and beside
    /// its adapter; `threads` and `precision` are the model's. A resumed run must agree
    /// with them ([`check_agrees`]; only the length may grow).
    pub fn recorded(&self, threads: usize, precision: &str) -> Value {
        let adapter = match &self.adapter {
            AdapterInit::New(l) => json!({
                "rank": l.r, "alpha": l.alpha, "rslora": l.rslora, "dropout": l.dropout,
                "targets": l.targets.iter().map(|t| t.short()).collect::<Vec<_>>(),
                "layers": format!("{:?}", l.layers), "init": format!("{:?}", l.init), "seed": l.seed,
            }),
            AdapterInit::From(p) => json!({ "from": p.display().to_string() }),
        };
        let (steps, epochs) = match self.length {
            Length::Steps(n) => (Some(n), None),
            Length::Epochs(e) => (None, Some(e)),
        };
        let mut v = json!({
            "model": self.base_name, "adapter": adapter, "lr": self.lr,
            "schedule": format!("{:?}", self.schedule).to_lowercase(), "warmup": self.warmup,
            "clip": self.clip, "weight_decay": self.weight_decay, "steps": steps, "epochs": epochs,
            "batch": self.batch, "grad_accum": self.grad_accum, "shuffle": self.shuffle,
            "seed": self.seed, "seq_len": self.seq_len, "pack": self.pack,
            "valid_split": self.valid_split, "eval_every": self.eval_every,
            "patience": self.patience,
            "saved_activations": self.saved.map(|s| format!("{s:?}").to_lowercase()),
            "threads": threads, "precision": precision,
        });
        if let Some(o) = v.as_object_mut() {
            for (k, x) in &self.extra {
                o.insert(k.clone(), x.clone());
            }
            if let Some(i) = &self.invocation {
                o.insert(INVOCATION.into(), i.clone());
            }
        }
        v
    }
}

/// The first recorded setting a resumed run differs in.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub setting: String,
    pub now: Value,
    pub was: Value,
}

/// Data sets of at most this many training records are "small" for
/// [`TrainSpec::auto_small_data`].
pub const SMALL_DATA: usize = 200;

impl TrainSpec {
    /// With [`TrainSpec::auto_small_data`] and `records` ≤ [`SMALL_DATA`]: a learning rate
    /// of 2e-3 and enough passes to learn the records (about 1,500 records' worth, 8 to 30
    /// epochs), so that a few personal facts are recalled after training rather than
    /// barely touched. Measured: with these, 10 one-line facts are recalled verbatim from
    /// their first three words, 10 of 10, on aidreams260K and on SmolLM2-135M-Instruct;
    /// the general defaults (one epoch at 2e-4) recall none. Returns what it chose, to
    /// tell the user (`None`: nothing changed).
    pub fn for_small_data(&mut self, records: usize) -> Option<String> {
        if !self.auto_small_data || records == 0 || records > SMALL_DATA {
            return None;
        }
        let epochs = 1500usize.div_ceil(records).clamp(8, 30);
        self.lr = 2e-3;
        self.length = Length::Epochs(epochs);
        Some(format!(
            "{records} training records is a small data set: training {epochs} epochs at learning rate 2e-3 so that the adapter learns them (give --epochs/--steps or --lr to choose)"
        ))
    }
}

/// The recorded key of [`TrainSpec::invocation`] (never compared).
pub const INVOCATION: &str = "invocation";

/// The recorded settings that describe the data (counts, content hashes, file names).
pub const DATA_SETTINGS: [&str; 7] = [
    "records",
    "valid_records",
    "target_tokens",
    "data_hash",
    "valid_hash",
    "data",
    "valid",
];

/// Compares the settings of a run being resumed (`now`) with the recorded ones; the length
/// (`steps`, `epochs`) may differ, and with `data_may_change` the [`DATA_SETTINGS`].
/// Returns the first setting that does not agree.
pub fn check_agrees(
    recorded: &Value,
    now: &Value,
    data_may_change: bool,
) -> std::result::Result<(), Mismatch> {
    let (Some(r), Some(n)) = (recorded.as_object(), now.as_object()) else {
        return Ok(());
    };
    for (k, v) in n {
        if k == "steps"
            || k == "epochs"
            || k == INVOCATION
            || (data_may_change && DATA_SETTINGS.contains(&k.as_str()))
        {
            continue;
        }
        let was = r.get(k).unwrap_or(&Value::Null);
        if was != v {
            return Err(Mismatch {
                setting: k.clone(),
                now: v.clone(),
                was: was.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_data_gets_a_length_and_rate_that_learn_it_only_when_nothing_was_chosen() {
        let mut s = TrainSpec {
            auto_small_data: true,
            ..TrainSpec::default()
        };
        assert!(s.for_small_data(10).unwrap().contains("30 epochs"));
        assert_eq!((s.lr, s.length), (2e-3, Length::Epochs(30)));
        let mut s = TrainSpec {
            auto_small_data: true,
            ..TrainSpec::default()
        };
        assert!(s.for_small_data(150).is_some());
        assert_eq!(s.length, Length::Epochs(10));
        let mut big = TrainSpec {
            auto_small_data: true,
            ..TrainSpec::default()
        };
        assert!(big.for_small_data(SMALL_DATA + 1).is_none());
        assert_eq!(
            big,
            TrainSpec {
                auto_small_data: true,
                ..TrainSpec::default()
            }
        );
        let mut chosen = TrainSpec::default();
        assert!(chosen.for_small_data(10).is_none());
        assert_eq!(chosen, TrainSpec::default());
    }

    #[test]
    fn epochs_become_steps_rounding_up() {
        assert_eq!(Length::Epochs(1).steps(10, 4), 3);
        assert_eq!(Length::Epochs(2).steps(10, 4), 5);
        assert_eq!(Length::Epochs(1).steps(0, 4), 1);
        assert_eq!(Length::Steps(7).steps(10, 4), 7);
    }

    #[test]
    fn a_changed_setting_is_named_and_the_length_may_grow() {
        let spec = TrainSpec::default();
        let rec = spec.recorded(2, "exact");
        let longer = TrainSpec {
            length: Length::Steps(100),
            ..spec.clone()
        };
        assert!(check_agrees(&rec, &longer.recorded(2, "exact"), false).is_ok());
        let other = TrainSpec {
            lr: 1e-3,
            ..spec.clone()
        };
        let m = check_agrees(&rec, &other.recorded(2, "exact"), false).unwrap_err();
        assert_eq!(m.setting, "lr");
        let m = check_agrees(&rec, &spec.recorded(1, "exact"), false).unwrap_err();
        assert_eq!(m.setting, "threads");
    }

    #[test]
    fn impossible_settings_are_refused_by_name() {
        let e = |s: TrainSpec| s.validate().unwrap_err().to_string();
        assert!(e(TrainSpec {
            batch: 0,
            ..TrainSpec::default()
        })
        .contains("batch"));
        assert!(e(TrainSpec {
            lr: f32::NAN,
            ..TrainSpec::default()
        })
        .contains("lr"));
        assert!(e(TrainSpec {
            valid_split: Some(1.0),
            ..TrainSpec::default()
        })
        .contains("valid_split"));
        assert!(e(TrainSpec {
            seq_len: Some(1),
            ..TrainSpec::default()
        })
        .contains("seq_len"));
        assert!(TrainSpec::default().validate().is_ok());
    }
}
