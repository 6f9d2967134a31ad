//! The `pocketlora` command line: one file per subcommand. Every failure becomes one line
//! on stderr and a non-zero exit status (see `main.rs`).

mod adapters;
pub mod args;
mod bench;
mod config_file;
mod demo;
mod eval;
mod export;
mod generate;
mod inspect;
mod interrupt;
mod merge;
mod plan;
mod progress;
mod tokenize;
mod train;

use clap::{Parser, Subcommand};

use pocketlora::Result;

#[derive(Parser, Debug)]
#[command(
    name = "pocketlora",
    version,
    about = "Fine-tune language models on the device that uses them.",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune the bundled model on a few facts and show what changed (start here).
    Demo(demo::DemoArgs),
    /// Show a GGUF model's architecture, shapes, tensors and special tokens.
    Inspect(inspect::InspectArgs),
    /// Continue a prompt (text, a chat message or token ids) with the model.
    Generate(generate::GenerateArgs),
    /// Text to token ids with the model's tokenizer (ids space-separated on one line).
    Tokenize(tokenize::TokenizeArgs),
    /// Loss and perplexity of records in any training format; --compare adapters side by side.
    Eval(eval::EvalArgs),
    /// The memory plan a `train` run with these flags would get (needs --budget).
    Plan(Box<train::TrainArgs>),
    /// Fine-tune a LoRA adapter on token records; the base model stays frozen.
    Train(Box<train::TrainArgs>),
    /// Write an adapter as a llama.cpp GGUF adapter or a PEFT directory.
    Export(export::ExportArgs),
    /// Merge an adapter into the base model's weights (or take it out with --unmerge).
    Merge(merge::MergeArgs),
    /// Speed and memory on this machine: FMA peak, kernels, prompt processing, training,
    /// generation.
    Bench(bench::BenchArgs),
}

/// Parses the process arguments and runs the chosen subcommand.
impl Cli {
    /// Parses `argv` (program name first) without exiting on errors.
    pub fn try_parse_from_args(argv: &[String]) -> std::result::Result<Command, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(argv).map(|c| c.command)
    }
}

/// Runs the subcommand; returns the process's exit status.
pub fn run(cli: Cli) -> Result<i32> {
    let done = match cli.command {
        Command::Train(a) => return train::run(*a),
        Command::Demo(a) => demo::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Plan(a) => plan::run(*a),
        Command::Export(a) => export::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Bench(a) => bench::run(a),
    };
    done.map(|()| 0)
}
