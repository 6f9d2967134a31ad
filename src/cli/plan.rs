//! `pocketlora plan`: the memory plan a training run would get — the size table and the
//! choices — without training. Takes the same flags as `train` (`--out` is not needed).

use std::io::Write;

use crate::error::{Error, Result};
use crate::lora::{peft, LayerSelection, LoraConfig, LoraInit, Target};
use crate::memory::heap;
use crate::memory::plan::{plan_training, TrainRequest};
use crate::model::backward::SavedDtype;
use crate::model::Model;

use super::train::{load_records, with_config_file, TrainArgs};

pub fn run(a: TrainArgs) -> Result<()> {
    let a = with_config_file(a)?;
    let model_path = a
        .model
        .clone()
        .ok_or_else(|| Error::InvalidArgument("plan needs --model".into()))?;
    let budget = a
        .budget
        .ok_or_else(|| Error::InvalidArgument("plan needs --budget (e.g. 256M)".into()))?;
    let saved = a
        .saved_activations
        .as_deref()
        .map(SavedDtype::parse)
        .transpose()?;
    let h0 = heap::current();
    let model = Model::open(&model_path, a.threads)?;
    let h1 = heap::current();
    let seq_cap = a.seq_len.unwrap_or(model.cfg.n_ctx);
    let (longest, data_bytes, validation) = match &a.data {
        Some(d) => {
            let records = load_records(d, &model, &a, seq_cap, true)?;
            let longest = records.iter().map(|r| r.ids.len()).max().unwrap_or(1);
            (
                longest,
                heap::current().saturating_sub(h1) as u64,
                a.valid.is_some() || a.valid_split.is_some(),
            )
        }
        None => (seq_cap, 0, a.valid.is_some() || a.valid_split.is_some()),
    };
    let lora = match &a.init_adapter {
        Some(dir) => peft::load(dir, &model.cfg)?.config,
        None => LoraConfig {
            r: a.rank,
            alpha: a.alpha,
            rslora: a.rslora,
            dropout: a.dropout,
            targets: Target::parse_list(&a.targets)?,
            layers: LayerSelection::parse(&a.layers)?,
            init: LoraInit::parse(&a.init)?,
            seed: a.seed,
        },
    };
    let req = TrainRequest {
        model: &model.cfg,
        lora: &lora,
        seq_len: a.seq_len.map(|s| s.min(longest)),
        max_seq_len: longest,
        threads: model.threads(),
        budget,
        tokenizer_bytes: h1.saturating_sub(h0) as u64,
        data_bytes,
        validation,
        keep_best: a.patience.is_some(),
        saved,
        precision: a.precision,
    };
    let plan = plan_training(&req)?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    if a.json {
        writeln!(out, "{}", plan.to_json()).map_err(io)?;
    } else {
        write!(
            out,
            "memory plan for {}:\n{}",
            model_path.display(),
            plan.to_text()
        )
        .map_err(io)?;
        writeln!(
            out,
            "  (the model file, {} bytes, is memory-mapped and not part of the budget)",
            model.weights.file().file_len()
        )
        .map_err(io)?;
    }
    Ok(())
}
