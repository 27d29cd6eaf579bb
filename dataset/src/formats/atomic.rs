//! Atomic file output: write to a temporary file beside the target, then rename over it.
//!
//! A reader (or a crashed run) therefore never sees a half-written shard, index or `.bin`.
//! If the writer is dropped without [`AtomicFile::commit`], the temporary file is removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FormatError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A buffered file that appears at its final path only when committed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
    written: u64,
    sync: bool,
}

impl AtomicFile {
    /// Creates the temporary file `.<name>.<pid>.<n>.tmp` in the target's directory.
    pub fn create(target: &Path) -> Result<Self, FormatError> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name =
            target.file_name().ok_or_else(|| FormatError::invalid(target, "output path has no file name"))?.to_string_lossy().into_owned();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let file = File::create(&temp).map_err(|e| FormatError::io(&temp, e))?;
        Ok(Self { target: target.to_path_buf(), temp, writer: Some(BufWriter::with_capacity(1 << 20, file)), written: 0, sync: true })
    }

    /// Skips the `fsync` before the rename: the file still appears atomically to readers and
    /// after a process crash, but may be lost on power failure. For many small files (images).
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let w = self.writer.as_mut().ok_or_else(|| FormatError::invalid(&self.target, "write after commit"))?;
        w.write_all(bytes).map_err(|e| FormatError::io(&self.temp, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Number of bytes written so far (the offset the next write lands at).
    pub fn position(&self) -> u64 {
        self.written
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames the temporary file onto the target path. On failure the
    /// temporary file is removed and the target is left as it was.
    pub fn commit(mut self) -> Result<(), FormatError> {
        let result = self.flush_and_rename();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        result
    }

    fn flush_and_rename(&mut self) -> Result<(), FormatError> {
        if let Some(w) = self.writer.take() {
            let file = w.into_inner().map_err(|e| FormatError::io(&self.temp, e.into_error()))?;
            if self.sync {
                file.sync_all().map_err(|e| FormatError::io(&self.temp, e))?;
            }
        }
        std::fs::rename(&self.temp, &self.target).map_err(|e| FormatError::io(&self.target, e))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// [`write_file_atomic`] without the `fsync` (see [`AtomicFile::without_sync`]).
pub fn write_file_atomic_nosync(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    let mut f = AtomicFile::create(path)?.without_sync();
    f.write_all(bytes)?;
    f.commit()
}

/// Writes `bytes` to the caller-named temporary file `temp`, syncs it and renames it onto
/// `target`, with plain I/O errors; on failure `temp` is removed and `target` is left as it was.
pub fn write_via_temp(temp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = (|| {
        let mut f = File::create(temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}
