//! Weights for the ONNX trace: tensors looked up in a [`StateDict`] by their official key, with the
//! same prefix detection and strictness as the native loader, added to the graph as initializers.

use std::cell::RefCell;
use std::collections::HashSet;

use candle_core::DType;

use super::builder::{GraphBuilder, Value};
use super::OnnxError;
use crate::io::checkpoint::{StateDict, KNOWN_PREFIXES};

/// A state dict seen through a key prefix, recording which keys the trace consumed.
pub struct Weights<'a> {
    dict: &'a StateDict,
    prefix: String,
    used: RefCell<HashSet<String>>,
}

impl<'a> Weights<'a> {
    /// Uses `prefix` when given, otherwise the first of [`KNOWN_PREFIXES`] under which `probe`
    /// (a key every model of the kind has, e.g. `conv1.weight`) exists.
    pub fn new(dict: &'a StateDict, prefix: Option<&str>, probe: &str) -> Result<Self, OnnxError> {
        let prefix = match prefix {
            Some(p) => p.to_string(),
            None => KNOWN_PREFIXES.iter().find(|p| dict.get(&format!("{p}{probe}")).is_some()).map(|p| p.to_string()).ok_or_else(|| {
                OnnxError::Weight {
                    source_name: dict.source().into(),
                    key: probe.into(),
                    reason: format!("not found under any known prefix {KNOWN_PREFIXES:?}"),
                }
            })?,
        };
        Ok(Self { dict, prefix, used: RefCell::new(HashSet::new()) })
    }

    /// The detected key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `key` (without prefix) exists.
    pub fn contains(&self, key: &str) -> bool {
        self.dict.get(&format!("{}{key}", self.prefix)).is_some()
    }

    /// The values of `key` as f32, checking the stored shape against `shape`.
    pub fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, OnnxError> {
        let full = format!("{}{key}", self.prefix);
        let err = |reason: String| OnnxError::Weight { source_name: self.dict.source().into(), key: full.clone(), reason };
        let t = self.dict.get(&full).ok_or_else(|| err("missing from the state dict".into()))?;
        if t.dims() != shape {
            return Err(err(format!("shape {:?} in the file, the configuration needs {shape:?}", t.dims())));
        }
        self.used.borrow_mut().insert(full.clone());
        t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(|e| err(e.to_string()))
    }

    /// Adds `key` (checked against `shape`) as an initializer named after the key, laid out as
    /// `dims` (same element count; e.g. a GroupNorm weight `[C]` stored as `[C, 1, 1]`).
    pub fn param_as(&self, g: &mut GraphBuilder, key: &str, shape: &[usize], dims: &[usize]) -> Result<Value, OnnxError> {
        let v = self.values(key, shape)?;
        g.initializer(key, dims, &v)
    }

    /// Adds `key` (checked against `shape`) as an initializer of that shape.
    pub fn param(&self, g: &mut GraphBuilder, key: &str, shape: &[usize]) -> Result<Value, OnnxError> {
        self.param_as(g, key, shape, shape)
    }

    /// Marks an optional bookkeeping key (BatchNorm's `num_batches_tracked`) as consumed if present.
    pub fn touch(&self, key: &str) {
        let full = format!("{}{key}", self.prefix);
        if self.dict.get(&full).is_some() {
            self.used.borrow_mut().insert(full);
        }
    }

    /// Strict check: every key under the prefix was consumed (PyTorch's `strict=True`); keys outside
    /// the prefix (e.g. the diffusion schedule beside `eps_model.*`) are ignored.
    pub fn check_all_used(&self) -> Result<(), OnnxError> {
        let used = self.used.borrow();
        let unexpected: Vec<String> =
            self.dict.keys().filter(|k| k.starts_with(&self.prefix) && !used.contains(*k)).map(str::to_string).collect();
        if unexpected.is_empty() {
            Ok(())
        } else {
            Err(OnnxError::Weight {
                source_name: self.dict.source().into(),
                key: unexpected.join(", "),
                reason: format!("{} key(s) not used by the configured model", unexpected.len()),
            })
        }
    }
}
