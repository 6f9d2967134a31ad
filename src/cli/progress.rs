//! The progress bar shared by long-running commands, and the loss sparkline after a run.

use std::path::Path;

use pocketlora::history;
use pocketlora::Result;

/// A bar on stderr: position, elapsed, ETA and a free message; `start` steps already done.
pub fn bar(len: u64, start: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_position(start);
    pb
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The run's training loss in `out/history.jsonl` as a sparkline of about 40 characters,
/// with where the history and its picture are.
pub fn loss_line(out: &Path) -> Result<String> {
    let spark = history::loss_sparkline(&out.join(history::FILE), 40)?;
    Ok(format!(
        "loss {spark}  (per step in {}, drawn in {})",
        out.join(history::FILE).display(),
        out.join(history::SVG).display()
    ))
}
