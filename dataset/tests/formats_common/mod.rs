//! Helpers shared by the `formats_*` integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The reference fixture directory (`IDFLOW_REFERENCE_DIR` overrides).
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("IDFLOW_REFERENCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(format!(
            "{}/../../shared/fixtures/reference",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        )),
    }
}

/// Path of one reference fixture; panics (fails the test) with a clear message when missing.
pub fn fixture(name: &str) -> PathBuf {
    let p = reference_dir().join(name);
    assert!(
        p.is_file(),
        "reference fixture {} is missing (set IDFLOW_REFERENCE_DIR to the folder holding the reference fixtures)",
        p.display()
    );
    p
}

/// Decodes a hex string.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Reads one tensor of a safetensors file as (dtype, shape, raw bytes).
pub fn safetensor(path: &std::path::Path, key: &str) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
    let data = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{}: no tensor {key}: {e}", path.display()));
    (t.dtype(), t.shape().to_vec(), t.data().to_vec())
}

/// Little-endian f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
