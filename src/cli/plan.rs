//! `pocketlora plan`: the memory plan a training run would get — the size table and the
//! choices — without training. Takes the same flags as `train` (`--out` is not needed).

use std::io::Write;

use pocketlora::{Error, Result};

use super::train::{in_flags, load_into, open_session, with_config_file, TrainArgs};

pub fn run(a: TrainArgs) -> Result<()> {
    let a = with_config_file(a)?;
    let model_path = a
        .model
        .clone()
        .ok_or_else(|| Error::InvalidArgument("plan needs --model".into()))?;
    if a.budget.is_none() {
        return Err(Error::InvalidArgument(
            "plan needs --budget (e.g. 256M)".into(),
        ));
    }
    let mut session = open_session(&a, &model_path).map_err(in_flags)?;
    if let Some(d) = &a.data {
        load_into(&mut session, d, &a, false, true)?;
    }
    if let Some(v) = &a.valid {
        load_into(&mut session, v, &a, true, true)?;
    }
    let Some(plan) = session.plan()?.cloned() else {
        return Err(Error::InvalidArgument("plan needs --budget".into()));
    };
    let file_len = session.model().weights.file().file_len();
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
            file_len
        )
        .map_err(io)?;
    }
    Ok(())
}
