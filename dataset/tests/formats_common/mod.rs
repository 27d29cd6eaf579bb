//! Helpers shared by the `formats_*` integration tests (the reference fixtures come from
//! [`idflow_testkit`]).
#![allow(dead_code)]

#[allow(unused_imports)]
pub use idflow_testkit::reference;

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
