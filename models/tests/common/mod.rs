//! Shared helpers of the fixture tests: loading and comparing tensors (the reference fixtures
//! and ONNX Runtime come from [`idflow_testkit`]).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
#[allow(unused_imports)]
pub use idflow_testkit::{ort_dylib, reference};
use std::collections::HashMap;

/// Loads a safetensors fixture into a map.
pub fn load_io(name: &str) -> HashMap<String, Tensor> {
    let p = reference(name);
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
