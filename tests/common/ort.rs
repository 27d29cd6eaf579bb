//! ONNX Runtime for the `idflow` processes the tests spawn: the model operators run on ONNX
//! Runtime by default, so every spawned `idflow` gets `ORT_DYLIB_PATH` (from
//! `tests/py/ort_env.sh`, which installs the pinned wheel into a venv on first use) and an ONNX
//! cache folder inside the cargo target folder (`IDFLOW_CACHE`), never the user's `~/.cache`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The ONNX Runtime library, from `tests/py/ort_env.sh` (run once per test process; the script
/// is idempotent and safe to call from parallel test processes). Panics — the tests fail, they do
/// not skip — when it cannot be had.
pub fn ort_dylib() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = PathBuf::from(format!(
            "{}/tests/py/ort_env.sh",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        ));
        let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(lib.is_file(), "{} printed {}, which is not a file", script.display(), lib.display());
        lib
    })
    .clone()
}

/// The ONNX cache of the tests: `idflow-test-cache` in the cargo target folder (the folder
/// above the one holding the `idflow` binary), shared by all tests — entries are keyed by
/// checkpoint hash and configuration, so sharing is safe and exercises cache hits.
pub fn test_cache() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_idflow"));
    let target = bin.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    target.join("idflow-test-cache")
}

/// A command running the `idflow` binary with ONNX Runtime available, the test cache and
/// `IDFLOW_LOG=warn`.
pub fn idflow_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idflow"));
    c.env("IDFLOW_LOG", "warn").env("ORT_DYLIB_PATH", ort_dylib()).env("IDFLOW_CACHE", test_cache());
    c
}
