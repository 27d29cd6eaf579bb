//! ONNX Runtime for the tests and the `idflow` processes they spawn: the model operators run on
//! ONNX Runtime by default, so every spawned `idflow` gets `ORT_DYLIB_PATH` (from
//! `tests/py/ort_env.sh`, which installs the pinned wheel into a venv in the cargo target folder
//! on first use) and an ONNX cache folder inside the cargo target folder (`IDFLOW_CACHE`), never
//! the user's `~/.cache`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::fixtures::workspace_root;

/// The ONNX Runtime library, from `tests/py/ort_env.sh` (run once per test process; the script
/// is idempotent and safe to call from parallel test processes).
///
/// # Panics
///
/// When the library cannot be had: the tests fail, they do not skip.
pub fn ort_dylib() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = workspace_root().join("tests/py/ort_env.sh");
        let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed ({}): {}", script.display(), out.status, String::from_utf8_lossy(&out.stderr));
        let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(lib.is_file(), "{} printed {}, which is not a file", script.display(), lib.display());
        lib
    })
    .clone()
}

/// The ONNX cache of the tests: `idflow-test-cache` in the cargo target folder (the folder above
/// the one holding the `idflow` binary `bin`), shared by all tests — entries are keyed by
/// checkpoint hash and configuration, so sharing is safe and exercises cache hits.
pub fn test_cache(bin: &Path) -> PathBuf {
    let target = bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    target.join("idflow-test-cache")
}

/// A command running the `idflow` binary `bin` with ONNX Runtime available, the test cache and
/// `IDFLOW_LOG=warn`.
pub fn idflow_command(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("IDFLOW_LOG", "warn").env("ORT_DYLIB_PATH", ort_dylib()).env("IDFLOW_CACHE", test_cache(bin));
    c
}

/// Runs `bin` with `args` in `dir` (see [`idflow_command`]).
///
/// # Panics
///
/// When the process cannot be started.
pub fn run(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    idflow_command(bin).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs `bin` with `args` in `dir` and asserts that it succeeds (the failure shows its stderr).
pub fn run_ok(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    let out = run(bin, dir, args);
    assert!(out.status.success(), "idflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_lives_in_the_target_folder() {
        assert_eq!(test_cache(Path::new("/t/debug/idflow")), Path::new("/t/idflow-test-cache"));
    }
}
