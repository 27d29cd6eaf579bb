//! Small file-system helpers: atomic writes (temp file + fsync + rename) and file hashing.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Writes `data` to `path` atomically: a temporary sibling is written, synced and renamed.
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per process and thread: several writers may race for the same target.
    let tid = format!("{:?}", std::thread::current().id()).chars().filter(char::is_ascii_digit).collect::<String>();
    let tmp = path.with_file_name(format!(".{name}.{}-{tid}.tmp", std::process::id()));
    idflow_dataset::formats::atomic::write_via_temp(&tmp, path, data)
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
