//! State dicts: reading official PyTorch checkpoints and idflow's safetensors files, and loading
//! them into models with PyTorch's strict-loading rules.
//!
//! A model is built from a candle [`VarBuilder`] whose paths equal the official state-dict keys.
//! [`load_model`] backs that builder with a [`StateDict`] and records which keys the model asked
//! for, so after building it can report — as `torch.nn.Module.load_state_dict(strict=True)` does —
//! the *missing* keys (requested, absent), the *unexpected* keys (present under the model's
//! prefix, never requested) and shape mismatches. A partial load is refused unless
//! [`LoadOptions::strict`] is `false`; shape mismatches are always refused.
//!
//! Prefixes: checkpoints store the same weights as bare keys, under `eps_model.` (IDiff-Face's
//! diffusion wrapper), `module.` (DataParallel) or `first_stage_model.` (a full LDM). The prefix is
//! detected from the first key the model requests, or fixed with [`LoadOptions::prefix`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{checkpoint_error, ModelError, Result};

/// Prefixes tried, in this order, when [`LoadOptions::prefix`] is `None`.
pub const KNOWN_PREFIXES: [&str; 6] = ["", "eps_model.", "module.", "first_stage_model.", "module.eps_model.", "model."];

/// Named tensors in file order, plus where they came from.
#[derive(Clone, Debug)]
pub struct StateDict {
    source: String,
    entries: Vec<(String, Tensor)>,
}

impl StateDict {
    /// A state dict from named tensors; `source` names it in error messages.
    pub fn new(source: impl Into<String>, entries: Vec<(String, Tensor)>) -> Self {
        Self { source: source.into(), entries }
    }

    /// Reads a PyTorch checkpoint (`.ckpt`, `.pt`, `.pth`: a zip archive with `data.pkl`).
    ///
    /// A top-level `state_dict` entry (Lightning checkpoints) is unwrapped when present.
    pub fn from_torch_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let entries = crate::io::torch_file::read_torch_state_dict(path)?;
        Ok(Self::new(path.display().to_string(), entries))
    }

    /// Reads a safetensors file (idflow's own weight format).
    pub fn from_safetensors_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| ModelError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })?;
        let sorted: BTreeMap<String, Tensor> = map.into_iter().collect();
        Ok(Self::new(path.display().to_string(), sorted.into_iter().collect()))
    }

    /// Reads a checkpoint, choosing the reader by extension (`.safetensors` or torch zip).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::from_safetensors_file(path),
            _ => Self::from_torch_file(path),
        }
    }

    /// Writes all tensors to a safetensors file.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let map: HashMap<String, Tensor> = self.entries.iter().cloned().collect();
        candle_core::safetensors::save(&map, path)
            .map_err(|e| ModelError::Checkpoint { path: path.to_path_buf(), reason: format!("cannot write safetensors: {e}") })
    }

    /// Where the tensors came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[(String, Tensor)] {
        &self.entries
    }

    /// Collects a model's parameters (e.g. a `VarMap`'s) into a state dict.
    pub fn from_named(source: impl Into<String>, named: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        let sorted: BTreeMap<String, Tensor> = named.into_iter().collect();
        Self::new(source, sorted.into_iter().collect())
    }
}

/// How [`load_model`] matches a state dict against a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Refuse missing or unexpected keys (PyTorch's `strict=True`). Shape mismatches are always refused.
    pub strict: bool,
    /// Key prefix of the model's parameters; `None` detects one of [`KNOWN_PREFIXES`].
    pub prefix: Option<String>,
    /// Data type the parameters are converted to.
    pub dtype: DType,
    /// Device the parameters are placed on.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { strict: true, prefix: None, dtype: DType::F32, device: Device::Cpu }
    }
}

/// What a load consumed and what it did not.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The prefix the model's keys were found under.
    pub prefix: String,
    /// Full keys (with prefix) the model read.
    pub consumed: Vec<String>,
    /// Keys (without prefix) the model requested that the state dict lacks; filled with zeros
    /// when loading non-strictly.
    pub missing: Vec<String>,
    /// Full keys under the prefix that the model never requested.
    pub unexpected: Vec<String>,
    /// Full keys outside the prefix (e.g. the diffusion schedule next to `eps_model.*`); not an error.
    pub outside_prefix: Vec<String>,
}

#[derive(Default)]
struct Tracker {
    prefix: Option<String>,
    consumed: HashSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

struct TrackingBackend {
    tensors: HashMap<String, Tensor>,
    candidates: Vec<String>,
    tracker: Arc<Mutex<Tracker>>,
}

impl TrackingBackend {
    fn resolve(&self, name: &str) -> Option<String> {
        let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prefix) = &tracker.prefix {
            let full = format!("{prefix}{name}");
            return self.tensors.contains_key(&full).then_some(full);
        }
        let found = self.candidates.iter().find(|p| self.tensors.contains_key(&format!("{p}{name}")))?.clone();
        tracker.prefix = Some(found.clone());
        Some(format!("{found}{name}"))
    }

    fn take(&self, name: &str, shape: Option<&Shape>, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(full) = self.resolve(name) else {
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            tracker.missing.push(name.to_string());
            return match shape {
                Some(s) => Tensor::zeros(s, dtype, dev),
                None => candle_core::bail!("missing tensor {name}"),
            };
        };
        let tensor = &self.tensors[&full];
        let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        tracker.consumed.insert(full.clone());
        if let Some(s) = shape {
            if tensor.shape() != s {
                tracker.mismatched.push(format!("{full}: model {:?} vs stored {:?}", s.dims(), tensor.dims()));
                return Tensor::zeros(s, dtype, dev);
            }
        }
        tensor.to_device(dev)?.to_dtype(dtype)
    }
}

impl SimpleBackend for TrackingBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        match &tracker.prefix {
            Some(p) => self.tensors.contains_key(&format!("{p}{name}")),
            None => self.candidates.iter().any(|p| self.tensors.contains_key(&format!("{p}{name}"))),
        }
    }
}

/// Builds a model from a state dict with strict-loading checks.
///
/// `build` receives a [`VarBuilder`] rooted at the model (paths are the bare official keys).
pub fn load_model<M>(
    dict: &StateDict,
    options: &LoadOptions,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
) -> Result<(M, LoadReport)> {
    let candidates = match &options.prefix {
        Some(p) => vec![p.clone()],
        None => KNOWN_PREFIXES.iter().map(|s| s.to_string()).collect(),
    };
    let tracker = Arc::new(Mutex::new(Tracker { prefix: options.prefix.clone(), ..Tracker::default() }));
    let backend = TrackingBackend { tensors: dict.entries.iter().cloned().collect(), candidates, tracker: tracker.clone() };
    let vb = VarBuilder::from_backend(Box::new(backend), options.dtype, options.device.clone());
    let built = build(vb);
    let tracker = std::mem::take(&mut *tracker.lock().unwrap_or_else(|p| p.into_inner()));
    let model = match built {
        Ok(m) => m,
        Err(e) if tracker.missing.is_empty() && tracker.mismatched.is_empty() => return Err(e.into()),
        Err(_) => {
            return Err(ModelError::KeyMismatch {
                source_name: dict.source.clone(),
                missing: tracker.missing,
                unexpected: vec![],
                mismatched: tracker.mismatched,
            })
        }
    };
    let prefix = tracker.prefix.clone().unwrap_or_default();
    let mut report = LoadReport { prefix: prefix.clone(), missing: tracker.missing, ..LoadReport::default() };
    for (key, _) in &dict.entries {
        if tracker.consumed.contains(key) {
            report.consumed.push(key.clone());
        } else if key.starts_with(&prefix) {
            report.unexpected.push(key.clone());
        } else {
            report.outside_prefix.push(key.clone());
        }
    }
    let refuse = !tracker.mismatched.is_empty() || (options.strict && (!report.missing.is_empty() || !report.unexpected.is_empty()));
    if refuse {
        return Err(ModelError::KeyMismatch {
            source_name: dict.source.clone(),
            missing: report.missing,
            unexpected: report.unexpected,
            mismatched: tracker.mismatched,
        });
    }
    Ok((model, report))
}

/// A backend that hands out zero-cost broadcast tensors and records every requested shape:
/// used to count parameters of a full-size model without allocating its weights.
struct ShapeRecorder {
    shapes: Arc<Mutex<Vec<(String, Shape)>>>,
}

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.shapes.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), s.clone()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder cannot serve an unshaped tensor {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// Every tensor a model requests while being built, with its shape, in request order; the
/// weights are never allocated (each is a broadcast scalar).
pub fn parameter_shapes<M>(build: impl FnOnce(VarBuilder) -> candle_core::Result<M>) -> Result<Vec<(String, Shape)>> {
    let shapes = Arc::new(Mutex::new(Vec::new()));
    let vb = VarBuilder::from_backend(Box::new(ShapeRecorder { shapes: shapes.clone() }), DType::F32, Device::Cpu);
    build(vb)?;
    let out = std::mem::take(&mut *shapes.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(out)
}

/// The largest safetensors header read (the format's own limit is 100 MB).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Every tensor's key and shape of a checkpoint, read from its header alone: the safetensors
/// JSON header (8-byte length + JSON), or a torch zip's pickle. No tensor data is read.
pub fn stored_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<usize>)>> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => safetensors_shapes(path),
        _ => {
            let headers =
                idflow_dataset::formats::torch_zip::read_state_dict_shapes(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
            Ok(headers.into_iter().map(|h| (h.name, h.shape)).collect())
        }
    }
}

/// The shapes in a safetensors header, sorted by key.
fn safetensors_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| checkpoint_error(path, format!("no safetensors header length: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_SAFETENSORS_HEADER {
        return Err(checkpoint_error(path, format!("safetensors header claims {len} bytes")));
    }
    let mut header = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut header).map_err(|e| checkpoint_error(path, e.to_string()))?;
    if header.len() as u64 != len {
        return Err(checkpoint_error(path, format!("safetensors header is truncated: {} of {len} bytes", header.len())));
    }
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| checkpoint_error(path, format!("bad safetensors header: {e}")))?;
    let sorted: BTreeMap<String, Vec<usize>> = metadata.tensors().into_iter().map(|(k, info)| (k, info.shape.clone())).collect();
    Ok(sorted.into_iter().collect())
}

/// How a checkpoint's stored shapes disagree with the shapes a model requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShapeMismatches {
    /// `(key, expected shape, stored shape)` in the model's request order; `None` when the key
    /// is missing.
    pub mismatched: Vec<(String, Vec<usize>, Option<Vec<usize>>)>,
    /// Tensors the model requests.
    pub requested: usize,
}

impl ShapeMismatches {
    /// Whether every requested tensor is stored with its shape.
    pub fn is_empty(&self) -> bool {
        self.mismatched.is_empty()
    }
}

impl std::fmt::Display for ShapeMismatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((key, expected, found)) = self.mismatched.first() else { return write!(f, "all {} tensors fit", self.requested) };
        let found = found.as_ref().map_or("no such tensor".to_string(), |s| format!("{s:?}"));
        write!(
            f,
            "{} of {} tensors do not fit the configuration; first `{key}`: expected {expected:?}, found {found}",
            self.mismatched.len(),
            self.requested
        )
    }
}

/// Compares the shapes a model requests (from [`parameter_shapes`]) with a checkpoint's
/// stored ones (from [`stored_shapes`]), finding the key prefix as [`load_model`] does.
pub fn shape_mismatches(requested: &[(String, Shape)], stored: &[(String, Vec<usize>)]) -> ShapeMismatches {
    let stored: HashMap<&str, &Vec<usize>> = stored.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let prefix = requested
        .iter()
        .find_map(|(name, _)| KNOWN_PREFIXES.iter().find(|p| stored.contains_key(format!("{p}{name}").as_str())))
        .copied()
        .unwrap_or("");
    let mismatched = requested
        .iter()
        .filter_map(|(name, shape)| {
            let found = stored.get(format!("{prefix}{name}").as_str()).map(|s| s.to_vec());
            (found.as_deref() != Some(shape.dims())).then(|| (name.clone(), shape.dims().to_vec(), found))
        })
        .collect();
    ShapeMismatches { mismatched, requested: requested.len() }
}

/// Reads a checkpoint file and builds a model from it in one call.
pub fn load_model_from_file<M>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
) -> Result<(M, LoadReport)> {
    let dict = StateDict::from_file(path)?;
    load_model(&dict, options, build)
}
