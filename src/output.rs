//! Output locations a run owns, and how they change hands safely.
//!
//! Every node that writes an output (a dataset folder, a report folder, a report file) goes
//! through a [`StagedOutput`]:
//!
//! - **One writer.** [`OutputLock`] holds an exclusive `flock` on a hidden sibling
//!   (`.<name>.idflow-lock`) for the life of the run; a second run gets an error naming the
//!   folder and the holder (pid, host, start time). The kernel drops the lock when the holder
//!   dies, so a stale lock of a killed run never blocks.
//! - **Staged work.** The run writes into a hidden sibling (`.<name>.idflow-staging`) that
//!   carries the plan's fingerprint in [`RUN_STAMP`]; readers that glob `<name>/*.parquet` never
//!   see it. A killed run leaves only the staging folder, which the next run of the same plan
//!   resumes and a run of another plan discards.
//! - **Atomic publish.** Only when the whole run succeeded does the engine publish: the staging
//!   folder is swapped with the published one in one `renameat2(RENAME_EXCHANGE)` (two renames
//!   where the file system lacks it), then the previous output is removed. Until that moment the
//!   previous output stays complete and readable.
//!
//! Written here rather than taken from a crate: the pieces (flock, renameat2) are single system
//! calls, and no crate offers the staging/publish protocol itself.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File in a staging or published folder that records which plan wrote it.
pub const RUN_STAMP: &str = ".idflow-run.json";

/// Why an output location cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Another run holds the output.
    #[error("output {path} is being written by another idflow run ({holder}); wait for it to finish, or write to another path")]
    Locked {
        /// The output location.
        path: PathBuf,
        /// Who holds it (pid, host, start time), as far as the lock file tells.
        holder: String,
    },
    /// The output holds a finished output of a different plan.
    #[error(
        "output {path} holds the finished output of another plan ({what}); rerun with --overwrite to replace it once this run \
         succeeds, or choose a new path"
    )]
    OtherPlan {
        /// The output location.
        path: PathBuf,
        /// What is there (pipeline name and when it was written).
        what: String,
    },
    /// The output folder holds files idflow did not write.
    #[error("output {path} holds `{entry}`, which idflow did not write; choose an empty or new folder (nothing was changed)")]
    Foreign {
        /// The output location.
        path: PathBuf,
        /// The first foreign entry.
        entry: String,
    },
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("cannot create", "cannot rename", ...).
        what: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OutputError + 'a {
    move |source| OutputError::Io { what, path: path.to_path_buf(), source }
}

/// A hidden sibling of `target`: `<parent>/.<name><suffix>`.
fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    target.with_file_name(format!(".{name}{suffix}"))
}

/// An exclusive lock on an output location, held until dropped (or the process ends).
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `target`, or says who holds it.
    pub fn acquire(target: &Path, pipeline: &str) -> Result<Self, OutputError> {
        let path = sibling(target, ".idflow-lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("cannot open", &path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = if holder.trim().is_empty() { "holder unknown".to_string() } else { holder.trim().to_string() };
                    return Err(OutputError::Locked { path: target.to_path_buf(), holder });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &path)(e)),
            }
            // The holder before us may have removed the file between our open and our lock:
            // then we hold a lock on a deleted file, and must lock the new one instead.
            if !same_file(&file, &path) {
                continue;
            }
            let mut lock = Self { file, path };
            lock.write_holder(pipeline).map_err(io("cannot write", &lock.path.clone()))?;
            return Ok(lock);
        }
    }

    fn write_holder(&mut self, pipeline: &str) -> std::io::Result<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into());
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let text = format!("pipeline `{pipeline}`, pid {} on {host}, since unix time {since}", std::process::id());
        self.file.set_len(0)?;
        self.file.write_all(text.as_bytes())?;
        self.file.flush()
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock; a waiter that opened it before checks
        // the inode after locking and retries.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The plan stamp of a staging or published folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// The plan fingerprint.
    pub fingerprint: String,
    /// The pipeline name.
    pub pipeline: String,
    /// The node that owns the output.
    pub node: String,
}

/// Reads the stamp in `dir`, if any.
pub fn read_stamp(dir: &Path) -> Option<Stamp> {
    std::fs::read(dir.join(RUN_STAMP)).ok().and_then(|t| serde_json::from_slice(&t).ok())
}

/// What [`StagedOutput::begin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// A fresh, empty staging folder.
    Fresh,
    /// The staging folder of an interrupted run of this plan, kept for resuming.
    Resumed,
}

/// A folder output written through a staging folder and published atomically.
#[derive(Debug, Clone)]
pub struct StagedOutput {
    target: PathBuf,
    staging: PathBuf,
    stamp: Stamp,
    /// A single JSON file (published from `<staging>/<name>`, its stamp is its `fingerprint`
    /// field) rather than a folder.
    file: bool,
}

impl StagedOutput {
    /// The output at `target` for the plan described by `stamp`.
    pub fn new(target: &Path, stamp: Stamp) -> Self {
        Self { target: target.to_path_buf(), staging: sibling(target, ".idflow-staging"), stamp, file: false }
    }

    /// A single JSON report file at `target` whose `fingerprint` field names the plan; the run
    /// writes it (and anything it needs to resume) into the staging folder.
    pub fn json_file(target: &Path, stamp: Stamp) -> Self {
        Self { file: true, ..Self::new(target, stamp) }
    }

    /// Where the run writes a file output before it is published.
    pub fn staged_file(&self) -> PathBuf {
        self.staging.join(self.target.file_name().unwrap_or_default())
    }

    /// The fingerprint of the plan that wrote the published output, if any.
    fn published_fingerprint(&self) -> Option<String> {
        if self.file {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.target).ok()?).ok()?;
            v["fingerprint"].as_str().map(String::from)
        } else {
            read_stamp(&self.target).map(|s| s.fingerprint)
        }
    }

    /// The published location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where this run writes.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Whether the published output was written by this very plan and nothing is staged.
    pub fn is_published(&self) -> bool {
        !self.staging.exists() && self.published_fingerprint().is_some_and(|f| f == self.stamp.fingerprint)
    }

    /// Checks the published location before a run: a finished output of another plan needs
    /// `overwrite`; entries that `ours` does not recognise are never replaced.
    pub fn check_target(&self, overwrite: bool, ours: &dyn Fn(&str) -> bool) -> Result<(), OutputError> {
        if self.file {
            return match (self.target.is_dir(), self.target.exists(), self.published_fingerprint()) {
                (true, _, _) => Err(OutputError::Foreign { path: self.target.clone(), entry: "(a folder, not a file)".into() }),
                (_, false, _) => Ok(()),
                (_, true, Some(f)) if f == self.stamp.fingerprint || overwrite => Ok(()),
                (_, true, None) if !overwrite => {
                    Err(OutputError::OtherPlan { path: self.target.clone(), what: "no plan fingerprint".into() })
                }
                (_, true, None) => Ok(()),
                (_, true, Some(_)) => Err(OutputError::OtherPlan { path: self.target.clone(), what: "another fingerprint".into() }),
            };
        }
        let entries = match std::fs::read_dir(&self.target) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(OutputError::Foreign { path: self.target.clone(), entry: "(a file, not a folder)".into() })
            }
            Err(e) => return Err(io("cannot read", &self.target)(e)),
        };
        let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        if let Some(entry) = names.iter().find(|n| n.as_str() != RUN_STAMP && !ours(n)) {
            return Err(OutputError::Foreign { path: self.target.clone(), entry: entry.clone() });
        }
        if names.is_empty() || overwrite {
            return Ok(());
        }
        match read_stamp(&self.target) {
            Some(s) if s.fingerprint == self.stamp.fingerprint => Ok(()),
            Some(s) => Err(OutputError::OtherPlan { path: self.target.clone(), what: format!("pipeline `{}`", s.pipeline) }),
            None => Err(OutputError::OtherPlan { path: self.target.clone(), what: "written without a plan stamp".into() }),
        }
    }

    /// Opens the staging folder: resumes one of this plan when `resume` allows, otherwise
    /// discards what is there, starts empty and lets `populate` fill it before stamping it.
    pub fn begin(&self, resume: bool, populate: &dyn Fn(&Path) -> Result<(), String>) -> Result<Begun, OutputError> {
        let staged = read_stamp(&self.staging);
        if resume && staged.as_ref().is_some_and(|s| s.fingerprint == self.stamp.fingerprint) {
            // Files a killed run was still writing are not part of what it finished.
            remove_temporary_files(&self.staging)?;
            return Ok(Begun::Resumed);
        }
        if self.staging.exists() {
            if staged.is_some_and(|s| s.fingerprint != self.stamp.fingerprint) {
                tracing::info!("discarding the unfinished output of another plan in {}", self.staging.display());
            }
            remove_dir(&self.staging)?;
        }
        std::fs::create_dir_all(&self.staging).map_err(io("cannot create", &self.staging))?;
        populate(&self.staging).map_err(|e| OutputError::Io {
            what: "cannot prepare",
            path: self.staging.clone(),
            source: std::io::Error::other(e),
        })?;
        // The stamp comes last: a staging folder with this plan's stamp is complete as it stands.
        let text = serde_json::to_vec_pretty(&self.stamp).unwrap_or_default();
        crate::fsutil::atomic_write(&self.staging.join(RUN_STAMP), &text).map_err(io("cannot write", &self.staging.join(RUN_STAMP)))?;
        Ok(Begun::Fresh)
    }

    /// [`begin`](Self::begin) on process 0 of a cluster run; the other processes (which share
    /// the file system) wait until process 0 has stamped the staging folder and then use it as
    /// it is ([`Begun::Resumed`]: whatever it holds is done).
    pub fn open(&self, process_id: usize, resume: bool, populate: &dyn Fn(&Path) -> Result<(), String>) -> Result<Begun, OutputError> {
        if process_id == 0 {
            return self.begin(resume, populate);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while read_stamp(&self.staging).is_none_or(|s| s.fingerprint != self.stamp.fingerprint) {
            if std::time::Instant::now() > deadline {
                return Err(OutputError::Io {
                    what: "process 0 did not open the staging folder",
                    path: self.staging.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Begun::Resumed)
    }

    /// Whether a staging folder exists (an unfinished run, or one not yet published).
    pub fn is_staged(&self) -> bool {
        self.staging.join(RUN_STAMP).exists()
    }

    /// Swaps the staging folder into place and removes what it replaced.
    pub fn publish(&self) -> Result<(), OutputError> {
        if !self.staging.exists() {
            return Ok(());
        }
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        if self.file {
            let staged = self.staged_file();
            std::fs::rename(&staged, &self.target).map_err(io("cannot publish to", &self.target))?;
            return remove_dir(&self.staging);
        }
        if !self.target.exists() {
            return std::fs::rename(&self.staging, &self.target).map_err(io("cannot publish to", &self.target));
        }
        match exchange(&self.staging, &self.target) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(code) if code == libc_einval() || code == libc_enosys()) => {
                // No atomic exchange on this file system: two renames.
                let old = sibling(&self.target, ".idflow-old");
                if old.exists() {
                    remove_dir(&old)?;
                }
                std::fs::rename(&self.target, &old).map_err(io("cannot move aside", &self.target))?;
                std::fs::rename(&self.staging, &self.target).map_err(io("cannot publish to", &self.target))?;
                return remove_dir(&old);
            }
            Err(e) => return Err(io("cannot publish to", &self.target)(e)),
        }
        // The staging path now holds the previous output.
        remove_dir(&self.staging)
    }
}

/// Removes every `*.tmp` file below `dir` (temporary names of unfinished writes).
fn remove_temporary_files(dir: &Path) -> Result<(), OutputError> {
    for entry in std::fs::read_dir(dir).map_err(io("cannot read", dir))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_temporary_files(&path)?;
        } else if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path).map_err(io("cannot remove", &path))?;
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), OutputError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("cannot remove", dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(target_os = "linux")]
fn libc_einval() -> i32 {
    libc::EINVAL
}
#[cfg(target_os = "linux")]
fn libc_enosys() -> i32 {
    libc::ENOSYS
}
#[cfg(not(target_os = "linux"))]
fn libc_einval() -> i32 {
    22
}
#[cfg(not(target_os = "linux"))]
fn libc_enosys() -> i32 {
    38
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// No atomic exchange outside Linux: reported as unsupported, so the caller renames twice.
#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc_enosys()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(f: &str) -> Stamp {
        Stamp { fingerprint: f.into(), pipeline: "p".into(), node: "n".into() }
    }

    #[test]
    fn publish_swaps_and_removes_the_previous_output() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        let a = StagedOutput::new(&target, stamp("a"));
        assert_eq!(a.begin(true, &|_| Ok(())).unwrap(), Begun::Fresh);
        std::fs::write(a.staging().join("x"), b"1").unwrap();
        a.publish().unwrap();
        assert!(a.is_published());
        let b = StagedOutput::new(&target, stamp("b"));
        assert!(matches!(b.check_target(false, &|n| n == "x"), Err(OutputError::OtherPlan { .. })));
        b.check_target(true, &|n| n == "x").unwrap();
        b.begin(true, &|_| Ok(())).unwrap();
        std::fs::write(b.staging().join("y"), b"2").unwrap();
        // until published, the old output is intact
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        b.publish().unwrap();
        assert!(!target.join("x").exists());
        assert_eq!(std::fs::read(target.join("y")).unwrap(), b"2");
        assert!(!b.staging().exists());
        assert!(b.is_published() && !a.is_published());
    }

    #[test]
    fn foreign_files_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("notes.txt"), b"mine").unwrap();
        let o = StagedOutput::new(&target, stamp("a"));
        let e = o.check_target(true, &|n| n.ends_with(".parquet")).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("did not write"), "{e}");
    }

    #[test]
    fn resume_keeps_only_the_same_plan() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        let a = StagedOutput::new(&target, stamp("a"));
        a.begin(true, &|_| Ok(())).unwrap();
        std::fs::write(a.staging().join("part"), b"1").unwrap();
        std::fs::create_dir_all(a.staging().join(".replay")).unwrap();
        std::fs::write(a.staging().join(".replay/.part.tmp"), b"half").unwrap();
        assert_eq!(a.begin(true, &|_| Ok(())).unwrap(), Begun::Resumed);
        assert!(a.staging().join("part").exists());
        assert!(!a.staging().join(".replay/.part.tmp").exists(), "a killed write's temporary file is dropped");
        let b = StagedOutput::new(&target, stamp("b"));
        assert_eq!(b.begin(true, &|_| Ok(())).unwrap(), Begun::Fresh);
        assert!(!b.staging().join("part").exists());
    }

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_frees_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        let first = OutputLock::acquire(&target, "first").unwrap();
        let e = OutputLock::acquire(&target, "second").unwrap_err().to_string();
        assert!(e.contains("pipeline `first`") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        OutputLock::acquire(&target, "second").unwrap();
    }
}
