//! The training history, for people to look at: `OUT/history.jsonl`, one JSON object per
//! optimizer step — `step`, `epoch`, `loss`, `lr`, `grad_norm`, `tokens_per_s`,
//! `heap_bytes` (`null` when the process does not count its heap) and `valid_loss` (`null`
//! except on the steps where validation ran) — and `OUT/loss.svg`, train and validation
//! loss against step drawn from it. [`Run`](super::run::Run) keeps both for every run with
//! an output directory, so every front end has them; the command line also prints a
//! [`sparkline`] of the loss at the end.
//!
//! Robustness. A step's line is appended in one write as the step ends (after its
//! validation, before its checkpoint), so the history holds every step of the newest
//! checkpoint. The first time a run records, it cuts the file back to the step it starts
//! from ([`History::start`]): a resumed run to its checkpoint's step, so steps redone after
//! a kill are not recorded twice, a fresh run to nothing. A last line torn by a kill
//! mid-write (no newline) is dropped then; any other line that is not a record is an
//! [`Error::Data`]. Every rewrite (the cut, the end-of-run validation added to the last
//! step's line) streams the file into a temporary renamed over it ([`write_atomic`]), and
//! so does the picture, drawn at every checkpoint and so at the end of every run.
//!
//! Memory. Nothing is kept per step: the picture and the sparkline stream the file and
//! average it down to a bounded number of points (`Thin`).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::trainer::StepStats;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// The history's file name in the output directory.
pub const FILE: &str = "history.jsonl";
/// The picture's file name in the output directory.
pub const SVG: &str = "loss.svg";

/// Points of each curve the picture draws at most (longer histories are averaged down).
const MAX_POINTS: usize = 1024;
/// The keys of a line, in order.
const KEYS: [&str; 8] = [
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "heap_bytes",
    "valid_loss",
];
/// The eight levels of a sparkline, lowest first.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One optimizer step, as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    /// 1-based step number.
    pub step: usize,
    pub epoch: u64,
    /// Mean training loss of the step (NaN when it had no target tokens: `null` in JSON).
    pub loss: f64,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens per second since the current stretch of steps began.
    pub tokens_per_s: f64,
    /// Heap bytes in use after the step, when the process counts them
    /// ([`crate::heap::installed`]).
    pub heap_bytes: Option<usize>,
    /// Validation loss, on the steps where validation ran.
    pub valid_loss: Option<f64>,
}

impl Record {
    /// The record of a step the trainer just took.
    pub fn of_step(
        stats: &StepStats,
        epoch: u64,
        tokens_per_s: f64,
        valid_loss: Option<f64>,
    ) -> Record {
        let heap = crate::memory::heap::installed().then(crate::memory::heap::current);
        Record {
            step: stats.step,
            epoch,
            loss: stats.loss,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            tokens_per_s,
            heap_bytes: heap,
            valid_loss,
        }
    }

    /// The record as one JSON object (non-finite numbers as `null`).
    pub fn to_json(&self) -> Value {
        // The learning rate as the f32 it is (0.005, not 0.004999999888241291).
        let lr = self.lr.to_string().parse::<f64>().unwrap_or(f64::NAN);
        json!({"step": self.step, "epoch": self.epoch, "loss": self.loss, "lr": lr,
               "grad_norm": self.grad_norm, "tokens_per_s": self.tokens_per_s,
               "heap_bytes": self.heap_bytes, "valid_loss": self.valid_loss})
    }

    /// Reads a record back from its JSON object.
    pub fn from_json(v: &Value) -> std::result::Result<Record, String> {
        let step = v
            .get("step")
            .and_then(Value::as_u64)
            .ok_or("no \"step\" (a whole number)")?;
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        Ok(Record {
            step: step as usize,
            epoch: v.get("epoch").and_then(Value::as_u64).unwrap_or(0),
            loss: num("loss"),
            lr: num("lr") as f32,
            grad_norm: num("grad_norm"),
            tokens_per_s: num("tokens_per_s"),
            heap_bytes: v
                .get("heap_bytes")
                .and_then(Value::as_u64)
                .map(|b| b as usize),
            valid_loss: v.get("valid_loss").and_then(Value::as_f64),
        })
    }

    /// The record's line, its keys in the order of the fields (step first, to read).
    fn line(&self) -> String {
        let v = self.to_json();
        let mut s = String::from("{");
        for k in KEYS {
            let sep = if s.len() > 1 { "," } else { "" };
            let _ = write!(s, "{sep}\"{k}\":{}", v[k]);
        }
        s.push_str("}\n");
        s
    }
}

/// The history of a run in an output directory.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    svg: PathBuf,
    /// Whether the file was cut back to this run's starting step yet.
    started: bool,
}

impl History {
    /// The history in `out` (nothing is touched until the run records).
    pub fn new(out: &Path) -> History {
        History {
            path: out.join(FILE),
            svg: out.join(SVG),
            started: false,
        }
    }

    /// `OUT/history.jsonl`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `OUT/loss.svg`.
    pub fn svg_path(&self) -> &Path {
        &self.svg
    }

    /// Once per run, before it records: cuts the file back to the steps up to `from` (the
    /// step the run starts at: a resumed run's checkpoint step, 0 for a fresh run),
    /// creating the output directory if need be. Later calls do nothing.
    pub fn start(&mut self, from: usize) -> Result<()> {
        if self.started {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        rewrite(&self.path, from, None)?;
        self.started = true;
        Ok(())
    }

    /// Appends a step's line (in one write, so a kill can tear only this line).
    pub fn append(&mut self, r: &Record) -> Result<()> {
        self.start(r.step.saturating_sub(1))?;
        let io = |e| Error::io(&self.path, e);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(r.line().as_bytes()).map_err(io)?;
        f.flush().map_err(io)
    }

    /// Adds a validation loss to the line of `step`, the last one (the validation at the
    /// end of a run comes after its last step was recorded).
    pub fn set_valid_loss(&mut self, step: usize, loss: f64) -> Result<()> {
        rewrite(&self.path, step, Some((step, loss)))?;
        self.started = true;
        Ok(())
    }

    /// Draws the steps up to `upto` into `OUT/loss.svg` (written atomically).
    pub fn draw(&self, upto: usize) -> Result<()> {
        let (train, valid) = curves(&self.path, upto)?;
        let text = svg(&train, &valid);
        write_atomic(&self.svg, |w| w.write_all(text.as_bytes()))
    }
}

/// Calls `f` with each record of the history at `path` and its line, in order (nothing for
/// a missing file). A last line without a newline (torn by a kill) is skipped; any other
/// line that is not a record is an [`Error::Data`].
fn scan(path: &Path, mut f: impl FnMut(Record, &[u8]) -> io::Result<()>) -> Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut rd = BufReader::new(file);
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        if rd
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?
            == 0
        {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| Record::from_json(&v));
        match parsed {
            Ok(r) => f(r, line).map_err(|e| Error::io(path, e))?,
            Err(_) if !complete => break,
            Err(msg) => {
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    line: n,
                    msg: format!("not a history record ({msg}); delete or repair the line"),
                })
            }
        }
    }
    Ok(())
}

/// The records of the history at `path` (none for a missing file).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    scan(path, |r, _| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// Rewrites the history at `path` without the steps after `upto` (and without a torn last
/// line), with `valid_loss` set on the step `amend` names. A missing file stays missing.
fn rewrite(path: &Path, upto: usize, amend: Option<(usize, f64)>) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut failed = None;
    let written = write_atomic(path, |w| {
        scan(path, |mut r, line| {
            if r.step > upto {
                return Ok(());
            }
            match amend {
                Some((step, loss)) if step == r.step => {
                    r.valid_loss = Some(loss);
                    w.write_all(r.line().as_bytes())
                }
                _ => {
                    w.write_all(line)?;
                    w.write_all(b"\n")
                }
            }
        })
        .map_err(|e| {
            let msg = e.to_string();
            failed = Some(e);
            io::Error::other(msg)
        })
    });
    match (failed, written) {
        (Some(e), _) => Err(e),
        (None, r) => r,
    }
}

/// A point of a curve: (step, loss).
pub type Point = (f64, f64);

/// Means of consecutive runs of points, at most `cap` (even) of them: when all are taken,
/// neighbours merge and each later run is twice as long. Non-finite values count for the
/// run's length but not its mean.
#[derive(Debug)]
struct Thin {
    cap: usize,
    per: usize,
    /// (points, finite points, sum of their x, sum of their y)
    runs: Vec<(usize, usize, f64, f64)>,
}

impl Thin {
    fn new(cap: usize) -> Thin {
        Thin {
            cap: cap.max(2) & !1,
            per: 1,
            runs: Vec::new(),
        }
    }

    fn push(&mut self, x: f64, y: f64) {
        let full = self.runs.last().is_none_or(|r| r.0 >= self.per);
        if full && self.runs.len() == self.cap {
            let merged = self
                .runs
                .chunks(2)
                .map(|p| {
                    p.iter().fold((0, 0, 0.0, 0.0), |a, r| {
                        (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3)
                    })
                })
                .collect();
            self.runs = merged;
            self.per *= 2;
        }
        if self.runs.last().is_none_or(|r| r.0 >= self.per) {
            self.runs.push((0, 0, 0.0, 0.0));
        }
        if let Some(r) = self.runs.last_mut() {
            r.0 += 1;
            if y.is_finite() {
                r.1 += 1;
                r.2 += x;
                r.3 += y;
            }
        }
    }

    /// (mean x, mean y) of each run with a finite value.
    fn points(&self) -> Vec<Point> {
        self.runs
            .iter()
            .filter(|r| r.1 > 0)
            .map(|r| (r.2 / r.1 as f64, r.3 / r.1 as f64))
            .collect()
    }
}

/// The train and validation curves of the steps up to `upto`: (step, loss) points, each
/// curve averaged down to at most [`MAX_POINTS`].
fn curves(path: &Path, upto: usize) -> Result<(Vec<Point>, Vec<Point>)> {
    let (mut train, mut valid) = (Thin::new(MAX_POINTS), Thin::new(MAX_POINTS));
    scan(path, |r, _| {
        if r.step <= upto {
            train.push(r.step as f64, r.loss);
            if let Some(v) = r.valid_loss {
                valid.push(r.step as f64, v);
            }
        }
        Ok(())
    })?;
    Ok((train.points(), valid.points()))
}

/// A one-line sparkline of the training loss in the history at `path`, about `width`
/// characters wide (empty for an empty history).
pub fn loss_sparkline(path: &Path, width: usize) -> Result<String> {
    let (train, _) = curves(path, usize::MAX)?;
    let losses: Vec<f64> = train.iter().map(|p| p.1).collect();
    Ok(sparkline(&losses, width))
}

/// `values` as a line of at most `width` block characters `▁▂▃▄▅▆▇█`, lowest to highest
/// (runs of values averaged into one character when there are more than `width`; a blank
/// where a run has no finite value).
pub fn sparkline(values: &[f64], width: usize) -> String {
    let n = values.len();
    let width = width.max(1).min(n);
    let means: Vec<f64> = (0..width)
        .map(|i| {
            let run = &values[i * n / width..(i + 1) * n / width];
            let finite: Vec<f64> = run.iter().copied().filter(|v| v.is_finite()).collect();
            if finite.is_empty() {
                f64::NAN
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            }
        })
        .collect();
    let finite = means.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    means
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                ' '
            } else if hi - lo <= f64::EPSILON * hi.abs() {
                BLOCKS[3]
            } else {
                let level = ((v - lo) / (hi - lo) * 7.0).round() as usize;
                BLOCKS[level.min(7)]
            }
        })
        .collect()
}

/// A round tick spacing (1, 2 or 5 × 10^k) of about `span / ticks`.
fn tick_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// An axis over `lo..hi`: its ends widened to whole ticks, the tick spacing and the
/// decimals its labels need. At least one unit (`min_step`) per tick.
fn axis(lo: f64, hi: f64, min_step: f64) -> (f64, f64, f64, usize) {
    let (lo, hi) = if hi - lo > 1e-12 * hi.abs().max(1.0) {
        (lo, hi)
    } else {
        let pad = (hi.abs() * 0.1).max(min_step);
        let pad = if pad > 0.0 { pad } else { 1.0 };
        (lo - pad, hi + pad)
    };
    let step = tick_step(hi - lo, 6.0).max(min_step);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (
        (lo / step).floor() * step,
        (hi / step).ceil() * step,
        step,
        decimals,
    )
}

/// The picture: train loss (and validation loss, when there is some) against step, with
/// a title, labelled axes with ticks and numbers, grid lines and a legend, as SVG text.
pub fn svg(train: &[Point], valid: &[Point]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 72.0;
    const RIGHT: f64 = 24.0;
    const TOP: f64 = 56.0;
    const BOTTOM: f64 = 56.0;
    const TRAIN: &str = "#1f77b4";
    const VALID: &str = "#d62728";
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let all = || {
        train
            .iter()
            .chain(valid)
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (mut x1, mut y0, mut y1) = (f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all() {
        (x1, y0, y1) = (x1.max(x), y0.min(y), y1.max(y));
    }
    let empty = all().next().is_none();
    if empty {
        (x1, y0, y1) = (10.0, 0.0, 1.0);
    }
    // Steps from 0, so a resumed run's curve sits where it belongs.
    let (x0, x1, xs, xd) = axis(0.0, x1, 1.0);
    let (y0, y1, ys, yd) = axis(y0, y1, 0.0);
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let label = |v: f64, d: usize| format!("{:.*}", d, v + 0.0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12" fill="#333">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##);
    // Title and a line of figures.
    let steps = train.last().map_or(0.0, |p| p.0);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="24" font-size="16" font-weight="bold" fill="#111">Training loss</text>"##
    );
    let mut figures = format!("{steps:.0} steps");
    if let Some(&(_, l)) = train.last() {
        let _ = write!(figures, " · last train loss {l:.4}");
    }
    if let Some(best) = valid.iter().map(|p| p.1).reduce(f64::min) {
        let _ = write!(figures, " · best validation loss {best:.4}");
    }
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="42" fill="#555">{figures}</text>"##
    );
    // Grid, ticks and numbers.
    let _ = writeln!(s, r##"<g stroke="#e4e4e4" stroke-width="1">"##);
    let ticks = |lo: f64, hi: f64, step: f64| {
        let n = ((hi - lo) / step).round() as usize;
        (0..=n).map(move |i| lo + i as f64 * step)
    };
    for x in ticks(x0, x1, xs) {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}"/>"#,
            px(x),
            TOP + ph
        );
    }
    for y in ticks(y0, y1, ys) {
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}"/>"#,
            py(y),
            LEFT + pw
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g stroke="#666" stroke-width="1">"##);
    for x in ticks(x0, x1, xs) {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}"/>"#,
            px(x),
            TOP + ph,
            TOP + ph + 5.0
        );
    }
    for y in ticks(y0, y1, ys) {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{LEFT}" y2="{1:.1}"/>"#,
            LEFT - 5.0,
            py(y)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g text-anchor="middle">"#);
    for x in ticks(x0, x1, xs) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            px(x),
            TOP + ph + 19.0,
            label(x, xd)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g text-anchor="end">"#);
    for y in ticks(y0, y1, ys) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT - 9.0,
            py(y) + 4.0,
            label(y, yd)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#666"/>"##
    );
    // Axis titles.
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">step</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle" font-size="13">loss</text>"#,
        TOP + ph / 2.0
    );
    // The curves.
    let polyline = |pts: &[Point], color: &str, width: f64| {
        let mut p = String::new();
        for &(x, y) in pts.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(p, "{:.1},{:.1} ", px(x), py(y));
        }
        format!(
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round" stroke-linecap="round"/>"#,
            p.trim_end()
        )
    };
    let _ = writeln!(s, "{}", polyline(train, TRAIN, 1.5));
    if !valid.is_empty() {
        let _ = writeln!(s, "{}", polyline(valid, VALID, 2.0));
        let _ = writeln!(s, r#"<g fill="{VALID}">"#);
        if valid.len() <= 200 {
            for &(x, y) in valid.iter().filter(|p| p.1.is_finite()) {
                let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3"/>"#, px(x), py(y));
            }
        }
        let _ = writeln!(s, "</g>");
    }
    if empty {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14" fill="#888">no steps recorded yet</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    // The legend, right of the title: outside the plot, so it never hides a curve.
    let entries: &[(&str, &str)] = if valid.is_empty() {
        &[("train loss", TRAIN)]
    } else {
        &[("train loss", TRAIN), ("validation loss", VALID)]
    };
    let lx = W - RIGHT - 130.0;
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = 22.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.5"/>"#,
            y - 4.0,
            lx + 24.0,
            y - 4.0
        );
        let _ = writeln!(s, r#"<text x="{:.1}" y="{y:.1}">{name}</text>"#, lx + 32.0);
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: usize, loss: f64) -> Record {
        Record {
            step,
            epoch: 0,
            loss,
            lr: 0.005,
            grad_norm: 1.5,
            tokens_per_s: 100.0,
            heap_bytes: None,
            valid_loss: None,
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut r = rec(3, 2.5);
        r.valid_loss = Some(2.75);
        r.heap_bytes = Some(1234);
        let line = r.line();
        assert!(line.contains("\"lr\":0.005"), "{line}");
        assert!(
            line.starts_with("{\"step\":3,\"epoch\":0,\"loss\":2.5,"),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(Record::from_json(&v).unwrap(), r);
        let nan = rec(4, f64::NAN).to_json();
        assert!(nan["loss"].is_null() && nan["valid_loss"].is_null());
        assert!(Record::from_json(&nan).unwrap().loss.is_nan());
        assert!(Record::from_json(&json!({"loss": 1.0})).is_err());
    }

    #[test]
    fn the_cut_drops_later_steps_and_a_torn_line_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("plora-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut h = History::new(&dir);
        for s in 1..=5 {
            h.append(&rec(s, 5.0 - s as f64)).unwrap();
        }
        let mut text = std::fs::read_to_string(h.path()).unwrap();
        text.push_str("{\"step\": 6, \"lo");
        std::fs::write(h.path(), &text).unwrap();
        let mut again = History::new(&dir);
        again.start(3).unwrap();
        let steps: Vec<usize> = read(h.path()).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3]);
        again.append(&rec(4, 0.5)).unwrap();
        again.set_valid_loss(4, 0.75).unwrap();
        let all = read(h.path()).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!((all[3].loss, all[3].valid_loss), (0.5, Some(0.75)));
        std::fs::write(h.path(), "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let e = History::new(&dir).start(1).unwrap_err();
        assert!(matches!(e, Error::Data { line: 2, .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thin_keeps_a_bounded_number_of_means() {
        let mut t = Thin::new(8);
        for i in 0..100 {
            t.push(i as f64, if i == 50 { f64::NAN } else { 1.0 });
        }
        let p = t.points();
        assert!(p.len() <= 8 && p.len() >= 4, "{p:?}");
        assert!(p.iter().all(|&(_, y)| y == 1.0));
        let mut small = Thin::new(8);
        for i in 0..5 {
            small.push(i as f64, i as f64);
        }
        assert_eq!(small.points().len(), 5);
    }

    #[test]
    fn sparklines_span_the_blocks() {
        let falling: Vec<f64> = (0..100).map(|i| 100.0 - i as f64).collect();
        let s = sparkline(&falling, 40);
        assert_eq!(s.chars().count(), 40);
        assert!(s.starts_with('█') && s.ends_with('▁'), "{s}");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0], 40), "▁▅█");
        assert_eq!(sparkline(&[2.0, 2.0], 40), "▄▄");
        assert_eq!(sparkline(&[1.0, f64::NAN, 2.0], 40), "▁ █");
        assert_eq!(sparkline(&[], 40), "");
    }

    #[test]
    fn axes_take_round_ticks() {
        assert_eq!(axis(1.0, 150.0, 1.0), (0.0, 160.0, 20.0, 0));
        assert_eq!(axis(0.52, 4.31, 0.0), (0.5, 4.5, 0.5, 1));
        let (lo, hi, _, _) = axis(3.0, 3.0, 0.0);
        assert!(lo < 3.0 && hi > 3.0);
        let s = svg(&[], &[]);
        assert!(s.contains("no steps recorded yet") && s.ends_with("</svg>\n"));
    }
}
