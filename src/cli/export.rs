//! `pocketlora export`: write an adapter (PEFT directory or llama.cpp GGUF adapter; several
//! `--adapter`s are combined first) as a llama.cpp GGUF adapter or a PEFT directory.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::adapters::load_all;
use pocketlora::Dtype;
use pocketlora::GgmlType;
use pocketlora::GgufFile;
use pocketlora::ModelConfig;
use pocketlora::{gguf_adapter, peft};
use pocketlora::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// llama.cpp LoRA adapter (`llama-cli --lora A.gguf`).
    Gguf,
    /// Hugging Face PEFT directory (`PeftModel.from_pretrained`).
    Peft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportDtype {
    F32,
    F16,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The base GGUF model the adapter belongs to.
    #[arg(long)]
    model: PathBuf,
    /// Adapter to export: PEFT directory or GGUF adapter, optionally PATH:WEIGHT; repeat to
    /// export the weighted sum of several as one.
    #[arg(long, required = true)]
    adapter: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Gguf)]
    format: Format,
    /// Output file (gguf) or directory (peft).
    #[arg(long)]
    out: PathBuf,
    /// Tensor type.
    #[arg(long, value_enum, default_value_t = ExportDtype::F32)]
    dtype: ExportDtype,
    /// `general.name` of a GGUF adapter (default: the output file's stem).
    #[arg(long)]
    name: Option<String>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let file = GgufFile::open(&a.model)?;
    let cfg = ModelConfig::from_gguf(&file)?;
    let Some(adapter) = load_all(&a.adapter, &cfg)? else {
        return Err(Error::InvalidArgument("give at least one --adapter".into()));
    };
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    match a.format {
        Format::Gguf => {
            let arch = file.get_str("general.architecture")?;
            let name = a.name.clone().unwrap_or_else(|| {
                a.out
                    .file_stem()
                    .map_or("adapter".into(), |s| s.to_string_lossy().into_owned())
            });
            let dtype = match a.dtype {
                ExportDtype::F32 => GgmlType::F32,
                ExportDtype::F16 => GgmlType::F16,
            };
            let s = gguf_adapter::save(&adapter, &cfg, arch, &name, dtype, &a.out)?;
            writeln!(
                out,
                "wrote {}: {} tensors, {dtype}, adapter.lora.alpha = {}{}",
                a.out.display(),
                s.n_tensors,
                s.alpha,
                if s.folded.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} pairs with their scale folded into lora_b (alpha_pattern, rank_pattern or a combination)",
                        s.folded.len()
                    )
                }
            )
            .map_err(io)?;
        }
        Format::Peft => {
            let base = a
                .model
                .file_name()
                .map_or(String::new(), |s| s.to_string_lossy().into_owned());
            let dtype = match a.dtype {
                ExportDtype::F32 => Dtype::F32,
                ExportDtype::F16 => Dtype::F16,
            };
            peft::save(&adapter, &cfg, &a.out, &base, dtype)?;
            writeln!(
                out,
                "wrote {} ({} pairs)",
                a.out.display(),
                adapter.pairs().count()
            )
            .map_err(io)?;
        }
    }
    Ok(())
}
