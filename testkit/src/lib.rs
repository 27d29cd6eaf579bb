//! Test support shared by the idflow test suites (a dev-dependency only, never published):
//!
//! * [`fixtures`] — the one locator of the reference fixtures (`tests/fixtures/reference` in the
//!   repository); a missing fixture fails the test, it never skips;
//! * [`process`] — ONNX Runtime for tests (`tests/py/ort_env.sh`) and running the `idflow`
//!   binary with it (the binary path comes from the caller: only the root crate's integration
//!   tests know `CARGO_BIN_EXE_idflow`);
//! * [`parquet`] (feature `parquet`) — reading the shards `write-records` writes back into rows.

pub mod fixtures;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod process;

pub use fixtures::{reference, reference_dir, workspace_root};
pub use process::ort_dylib;
