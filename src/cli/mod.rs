//! The `pocketlora` command line: one file per subcommand. Every failure becomes one line
//! on stderr and a non-zero exit status (see `main.rs`).

pub mod args;
mod bench;
mod eval;
mod generate;
mod inspect;
mod tokenize;
mod train;

use clap::{Parser, Subcommand};

use crate::error::Result;

#[derive(Parser, Debug)]
#[command(
    name = "pocketlora",
    version,
    about = "Fine-tune language models on the device that uses them."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a GGUF model's architecture, shapes, tensors and special tokens.
    Inspect(inspect::InspectArgs),
    /// Continue a prompt (text, a chat message or token ids) with the model.
    Generate(generate::GenerateArgs),
    /// Text to token ids with the model's tokenizer (ids space-separated on one line).
    Tokenize(tokenize::TokenizeArgs),
    /// Mean cross-entropy of token records ({"ids": [...], "mask": [...]} per line).
    Eval(eval::EvalArgs),
    /// Fine-tune a LoRA adapter on token records; the base model stays frozen.
    Train(train::TrainArgs),
    /// Speed and memory on this machine: FMA peak, kernels, prompt processing, training,
    /// generation.
    Bench(bench::BenchArgs),
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Train(a) => train::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
