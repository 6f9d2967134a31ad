//! A run's output directory, claimed before the first step so that no work is lost to it
//! and nothing saved in it is lost by accident:
//!
//! - it is created (or found to be a directory) and written to up front, so an unusable
//!   path fails before training, not after;
//! - a lock (`.pocketlora.lock`, an OS file lock the kernel releases when the process dies,
//!   the holder's pid written in it, removed when the run lets go) makes a second
//!   concurrent run into it fail at once, naming that pid;
//! - a fresh run refuses a directory that is not empty; with `overwrite` the new run is
//!   built in a hidden sibling (`.NAME.pocketlora-new`) and swapped in only at the end:
//!   `OUT` is renamed to `.NAME.pocketlora-old`, the new one into place, the old removed.
//!   A crash at any point leaves a state [`recover`] finishes or undoes at the next claim.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file inside a claimed directory.
pub const LOCK: &str = ".pocketlora.lock";

/// How a run may use its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new run: the directory must be missing or empty.
    Fresh,
    /// A new run replacing whatever is there, at the end.
    Overwrite,
    /// This run's own directory (resuming it): its contents are the run's.
    Continue,
}

/// A claimed output directory: locked for as long as it lives.
#[derive(Debug)]
pub struct OutDir {
    /// Where the result ends up.
    path: PathBuf,
    /// A staging sibling the run writes into, swapped into place by [`OutDir::commit`]
    /// (`None`: the run writes into `path`).
    staging: Option<PathBuf>,
    /// What was recovered from an earlier, killed replacement.
    recovered: Vec<String>,
    /// The locks held: the directory each lock file is in, and the file.
    locks: Vec<(PathBuf, File)>,
}

impl Drop for OutDir {
    /// Removes the lock files, then lets go of the locks (a run that opens a lock file
    /// meanwhile finds it gone from the directory when it checks, and tries again).
    fn drop(&mut self) {
        for (dir, _) in &self.locks {
            let _ = fs::remove_file(dir.join(LOCK));
        }
    }
}

/// The hidden siblings of `path` a replacement uses (new, old).
fn siblings(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let Some(name) = path.file_name() else {
        return Err(Error::InvalidArgument(format!(
            "{}: not a usable output directory name",
            path.display()
        )));
    };
    let name = name.to_string_lossy();
    Ok((
        path.with_file_name(format!(".{name}.pocketlora-new")),
        path.with_file_name(format!(".{name}.pocketlora-old")),
    ))
}

/// Finishes or undoes a replacement of `path` that a crash interrupted; says what it did.
pub fn recover(path: &Path) -> Result<Vec<String>> {
    let (new, old) = siblings(path)?;
    let mut said = Vec::new();
    let rm = |p: &Path| fs::remove_dir_all(p).map_err(|e| Error::io(p, e));
    match (path.exists(), new.exists(), old.exists()) {
        // Killed between the two renames: the new run was complete; finish the swap.
        (false, true, true) => {
            fs::rename(&new, path).map_err(|e| Error::io(path, e))?;
            rm(&old)?;
            said.push(format!(
                "{}: finished replacing it with the run that had completed before a crash",
                path.display()
            ));
        }
        // Killed before the swap: the replacing run never finished; the old one stands.
        (_, true, _) => {
            rm(&new)?;
            said.push(format!(
                "{}: removed {}, left by a replacing run that did not finish",
                path.display(),
                new.display()
            ));
        }
        _ => {}
    }
    if old.exists() && path.exists() {
        rm(&old)?;
    }
    Ok(said)
}

/// Creates `dir` if needed and takes its lock (the pid written in it), or says who holds it.
fn lock(dir: &Path) -> Result<File> {
    // A lock file removed by its holder between our open and our lock is not the
    // directory's lock any more: try again with the new one.
    for _ in 0..8 {
        let f = lock_once(dir)?;
        if same_file(&f, &dir.join(LOCK)) {
            return Ok(f);
        }
    }
    Err(Error::InvalidArgument(format!(
        "{}: its lock file keeps changing; is another training run starting there?",
        dir.display()
    )))
}

/// Whether the open `f` is the file at `p` now.
#[cfg(unix)]
fn same_file(f: &File, p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(p)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, p: &Path) -> bool {
    p.exists()
}

fn lock_once(dir: &Path) -> Result<File> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: exists and is not a directory; give a directory for the output",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = dir.join(LOCK);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Error::InvalidArgument(format!(
                "{} is in use by another training run{}; wait for it to end or choose another output directory",
                dir.display(),
                if pid.is_empty() { String::new() } else { format!(" (pid {pid})") }
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&p, e)),
    }
    let wrote = f
        .set_len(0)
        .and_then(|()| f.seek(SeekFrom::Start(0)))
        .and_then(|_| write!(f, "{}", std::process::id()))
        .and_then(|()| f.sync_all());
    wrote.map_err(|e| Error::io(&p, e))?;
    Ok(f)
}

/// What is in `dir` besides the lock, for a refusal: (entries, one of them, whether it
/// holds a training run).
fn contents(dir: &Path) -> Result<(usize, Option<String>, bool)> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK)
        .collect();
    let run = names
        .iter()
        .any(|n| n == "checkpoints" || n == "pocketlora_config.json");
    Ok((names.len(), names.into_iter().min(), run))
}

impl OutDir {
    /// Claims `path` for a run: recovers an interrupted replacement, creates and locks the
    /// directory, and checks it may be used as `how` says.
    pub fn claim(path: &Path, how: Claim) -> Result<OutDir> {
        let recovered = recover(path)?;
        let main_lock = lock(path)?;
        let (n, example, is_run) = contents(path)?;
        let mut out = OutDir {
            path: path.to_path_buf(),
            staging: None,
            recovered,
            locks: vec![(path.to_path_buf(), main_lock)],
        };
        match how {
            Claim::Continue => {}
            Claim::Fresh if n > 0 => {
                let what = if is_run {
                    "holds a training run (resume it, or replace it with --overwrite)".to_string()
                } else {
                    format!(
                        "is not empty ({n} entries, e.g. '{}'); nothing in it is touched without --overwrite",
                        example.unwrap_or_default()
                    )
                };
                return Err(Error::InvalidArgument(format!(
                    "{} {what}, or choose another output directory",
                    path.display()
                )));
            }
            Claim::Fresh => {}
            Claim::Overwrite if n == 0 => {}
            Claim::Overwrite => {
                let (new, _) = siblings(path)?;
                out.locks.push((new.clone(), lock(&new)?));
                out.staging = Some(new);
            }
        }
        Ok(out)
    }

    /// Where the result ends up.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the run writes until [`OutDir::commit`].
    pub fn write_to(&self) -> &Path {
        self.staging.as_deref().unwrap_or(&self.path)
    }

    /// What the claim recovered from a replacement a crash had interrupted.
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// Puts a replacing run in place of the old directory (nothing to do otherwise). Each
    /// step is a rename or a removal that [`recover`] completes after a crash.
    pub fn commit(&mut self) -> Result<()> {
        let Some(new) = self.staging.take() else {
            return Ok(());
        };
        let (_, old) = siblings(&self.path)?;
        fs::rename(&self.path, &old).map_err(|e| Error::io(&self.path, e))?;
        fs::rename(&new, &self.path).map_err(|e| Error::io(&self.path, e))?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        // The old directory's lock goes with it; the new one's, moved into place, stays.
        self.locks.remove(0);
        if let Some(l) = self.locks.first_mut() {
            l.0 = self.path.clone();
        }
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plora-outdir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fresh_claim_refuses_a_non_empty_directory_and_a_file() {
        let d = tmp("fresh");
        let out = d.join("run");
        drop(OutDir::claim(&out, Claim::Fresh).unwrap());
        // Only the lock is there: still a fresh directory.
        drop(OutDir::claim(&out, Claim::Fresh).unwrap());
        fs::write(out.join("notes.txt"), b"mine").unwrap();
        let e = OutDir::claim(&out, Claim::Fresh).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("notes.txt"), "{e}");
        fs::create_dir_all(out.join("checkpoints")).unwrap();
        let e = OutDir::claim(&out, Claim::Fresh).unwrap_err().to_string();
        assert!(e.contains("holds a training run"), "{e}");
        assert_eq!(fs::read(out.join("notes.txt")).unwrap(), b"mine");
        fs::write(d.join("file.txt"), b"x").unwrap();
        let e = OutDir::claim(&d.join("file.txt"), Claim::Fresh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_claim_fails_naming_the_holder() {
        let d = tmp("lock");
        let out = d.join("run");
        let held = OutDir::claim(&out, Claim::Fresh).unwrap();
        let e = OutDir::claim(&out, Claim::Continue)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("in use by another training run")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(
            !out.join(LOCK).exists(),
            "the lock file is removed with the claim"
        );
        assert!(OutDir::claim(&out, Claim::Continue).is_ok());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_overwrite_replaces_only_at_commit_and_recovers_from_a_crash_at_each_point() {
        let d = tmp("over");
        let out = d.join("run");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("adapter"), b"old").unwrap();
        let (new, old) = siblings(&out).unwrap();
        // Killed during the replacing run: the old directory stands, the staging goes.
        let o = OutDir::claim(&out, Claim::Overwrite).unwrap();
        fs::write(o.write_to().join("adapter"), b"new").unwrap();
        drop(o);
        let o = OutDir::claim(&out, Claim::Continue).unwrap();
        assert_eq!(fs::read(out.join("adapter")).unwrap(), b"old");
        assert!(!new.exists());
        assert_eq!(o.recovered().len(), 1);
        drop(o);
        // Killed between the renames: the completed new run is put in place.
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("adapter"), b"new").unwrap();
        fs::rename(&out, &old).unwrap();
        let o = OutDir::claim(&out, Claim::Continue).unwrap();
        assert_eq!(fs::read(out.join("adapter")).unwrap(), b"new");
        assert!(!old.exists() && !new.exists());
        drop(o);
        // Killed before the old one was removed.
        fs::create_dir_all(&old).unwrap();
        drop(OutDir::claim(&out, Claim::Continue).unwrap());
        assert!(!old.exists());
        // A whole replacement.
        let mut o = OutDir::claim(&out, Claim::Overwrite).unwrap();
        assert_ne!(o.write_to(), out.as_path());
        fs::write(o.write_to().join("adapter"), b"newer").unwrap();
        assert_eq!(fs::read(out.join("adapter")).unwrap(), b"new");
        o.commit().unwrap();
        assert_eq!(o.write_to(), out.as_path());
        assert_eq!(fs::read(out.join("adapter")).unwrap(), b"newer");
        // Still locked after the swap.
        assert!(OutDir::claim(&out, Claim::Continue).is_err());
        drop(o);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}
