//! Shared helpers of the fixture tests: locating the reference data and comparing tensors.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// The reference fixture folder (`IDFLOW_REFERENCE_DIR` overrides the default beside the clone).
pub fn reference_dir() -> PathBuf {
    std::env::var_os("IDFLOW_REFERENCE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}/../../shared/fixtures/reference",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        ))
    })
}

/// Path of a fixture file; panics with a clear message when it is missing.
pub fn fixture(name: &str) -> PathBuf {
    let p = reference_dir().join(name);
    assert!(
        p.is_file(),
        "reference fixture {} is missing (set IDFLOW_REFERENCE_DIR to the folder holding the reference data)",
        p.display()
    );
    p
}

/// Loads a safetensors fixture into a map.
pub fn load_io(name: &str) -> HashMap<String, Tensor> {
    let p = fixture(name);
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A tensor of a fixture map, by key.
pub fn get<'a>(io: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    io.get(key).unwrap_or_else(|| panic!("fixture has no key {key}"))
}

/// Maximum absolute difference of two tensors of equal shape (compared in f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Asserts `max |a − b| ≤ tol`, naming the quantity.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
    eprintln!("{what}: max abs diff {d:e}");
}
