//! `--adapter PATH[:WEIGHT]` arguments shared by the subcommands: each a PEFT directory or a
//! llama.cpp GGUF adapter, several combined into one (see `pocketlora::combine`).

use std::path::{Path, PathBuf};

use pocketlora::ModelConfig;
use pocketlora::{combine, lora_load, Adapter};
use pocketlora::{Error, Result};

/// Splits `PATH[:WEIGHT]`: a trailing `:number` is the weight (default 1); any other colon
/// belongs to the path.
pub fn parse_spec(s: &str) -> Result<(PathBuf, f32)> {
    if let Some((path, w)) = s.rsplit_once(':') {
        if let Ok(w) = w.trim().parse::<f32>() {
            if !w.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "--adapter {s:?}: the weight must be a finite number"
                )));
            }
            if path.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "--adapter {s:?}: no path before the weight"
                )));
            }
            return Ok((PathBuf::from(path), w));
        }
    }
    Ok((PathBuf::from(s), 1.0))
}

/// Loads every `--adapter` and combines them (`None` when there are none). One adapter of
/// weight 1 comes back exactly as loaded.
pub fn load_all(specs: &[String], cfg: &ModelConfig) -> Result<Option<Adapter>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut loaded = Vec::with_capacity(specs.len());
    for s in specs {
        let (path, w) = parse_spec(s)?;
        loaded.push((load_one(&path, cfg)?, w));
    }
    if let [(a, w)] = &loaded[..] {
        if *w == 1.0 {
            return Ok(Some(a.clone()));
        }
    }
    let parts: Vec<(&Adapter, f32)> = loaded.iter().map(|(a, w)| (a, *w)).collect();
    combine(&parts).map(Some)
}

fn load_one(path: &Path, cfg: &ModelConfig) -> Result<Adapter> {
    let a = lora_load(path, cfg)?;
    a.check_fits(cfg)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_a_trailing_weight_only() {
        assert_eq!(parse_spec("a").unwrap(), (PathBuf::from("a"), 1.0));
        assert_eq!(
            parse_spec("dir/b:0.5").unwrap(),
            (PathBuf::from("dir/b"), 0.5)
        );
        assert_eq!(parse_spec("c:-1").unwrap(), (PathBuf::from("c"), -1.0));
        assert_eq!(
            parse_spec("C:\\x\\y").unwrap(),
            (PathBuf::from("C:\\x\\y"), 1.0)
        );
        assert!(parse_spec(":2").is_err());
        assert!(parse_spec("a:inf").is_err());
    }
}
