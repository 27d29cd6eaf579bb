//! Model state for training: keyed (reproducible) initialisation of a `VarMap`, loading saved
//! tensors back into it, an exponential moving average of its variables, and safetensors
//! encoding with string metadata into memory (so the caller can write the file atomically).
//!
//! candle's own `safetensors::save` only writes to a path and its initialisers draw from an
//! unseeded generator; training must be reproducible and resumable, hence this module.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use idflow_dataset::rng::KeyedRng;

use crate::error::{ModelError, Result};

/// The variables of a `VarMap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Re-draws every randomly initialised variable from `KeyedRng(seed, var index)` with PyTorch's
/// default layer initialisation: weights of rank ≥ 2 `U(±1/√fan_in)` (margin-head `kernel`s
/// `N(0, 0.01)`), biases `U(±1/√fan_in)` of their layer's weight. Constant-initialised
/// variables (BatchNorm, PReLU, zero-initialised layers) keep their values.
pub fn keyed_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = named_vars(varmap);
    let shapes: HashMap<String, Vec<usize>> = vars.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    for (i, (name, var)) in vars.iter().enumerate() {
        let flat: Vec<f32> = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let Some(first) = flat.first() else { continue };
        if flat.iter().all(|v| v == first) {
            continue;
        }
        let mut rng = KeyedRng::new(&[seed, 0x1417, i as u64]);
        let dims = var.dims();
        let values: Vec<f32> = if name.ends_with("kernel") {
            (0..flat.len()).map(|_| (0.01 * rng.normal()) as f32).collect()
        } else {
            let fan_in = if dims.len() >= 2 {
                dims[1..].iter().product::<usize>()
            } else {
                let module = name.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
                shapes.get(&format!("{module}.weight")).filter(|s| s.len() >= 2).map(|s| s[1..].iter().product()).unwrap_or(dims[0])
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..flat.len()).map(|_| rng.range(-bound, bound) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Sets every variable of `varmap` from `entries[prefix + name]`; every variable must be present.
pub fn load_into(varmap: &VarMap, entries: &BTreeMap<String, Tensor>, prefix: &str, source: &str) -> Result<()> {
    for (name, var) in named_vars(varmap) {
        let key = format!("{prefix}{name}");
        let t =
            entries.get(&key).ok_or_else(|| ModelError::Checkpoint { path: source.into(), reason: format!("missing tensor `{key}`") })?;
        if t.dims() != var.dims() {
            return Err(ModelError::Checkpoint {
                path: source.into(),
                reason: format!("`{key}` has shape {:?}, the model expects {:?}", t.dims(), var.dims()),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// An exponential moving average of a model's variables (parameters and buffers).
#[derive(Debug)]
pub struct Ema {
    shadow: BTreeMap<String, Tensor>,
    updates: u64,
}

impl Ema {
    /// Starts from a copy of the model.
    pub fn new(varmap: &VarMap) -> Result<Self> {
        let shadow = named_vars(varmap).into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?.detach()))).collect::<Result<_>>()?;
        Ok(Self { shadow, updates: 0 })
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// `shadow = decay·shadow + (1 − decay)·model` for every variable.
    pub fn update(&mut self, varmap: &VarMap, decay: f64) -> Result<()> {
        for (name, var) in named_vars(varmap) {
            let cur = var.as_tensor().detach();
            // detached: the shadow must not record the op that made it, or every update would
            // keep the previous shadow (and so the whole history) alive through the graph
            let next = match self.shadow.get(&name) {
                Some(s) => ((s * decay)? + (cur * (1.0 - decay))?)?.detach(),
                None => cur.copy()?.detach(),
            };
            self.shadow.insert(name, next);
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged tensors by variable name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.shadow
    }

    /// Restores from saved tensors (`prefix + name` for every shadow entry) and update count.
    pub fn load(&mut self, entries: &BTreeMap<String, Tensor>, prefix: &str, updates: u64, source: &str) -> Result<()> {
        for (name, t) in self.shadow.iter_mut() {
            let key = format!("{prefix}{name}");
            let saved = entries
                .get(&key)
                .ok_or_else(|| ModelError::Checkpoint { path: source.into(), reason: format!("missing EMA tensor `{key}`") })?;
            if saved.dims() != t.dims() {
                return Err(ModelError::Checkpoint {
                    path: source.into(),
                    reason: format!("EMA tensor `{key}` has shape {:?}", saved.dims()),
                });
            }
            *t = saved.clone();
        }
        self.updates = updates;
        Ok(())
    }
}

/// A tensor as raw little-endian bytes for the safetensors writer.
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw(t: &Tensor) -> Result<RawTensor> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let (dtype, data) = match t.dtype() {
        DType::I64 => (safetensors::Dtype::I64, flat.to_vec1::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U32 => (safetensors::Dtype::U32, flat.to_vec1::<u32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U8 => (safetensors::Dtype::U8, flat.to_vec1::<u8>()?),
        _ => (safetensors::Dtype::F32, flat.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
    };
    Ok(RawTensor { dtype, shape, data })
}

/// Serialises named tensors (f32 unless i64/u32/u8) plus string metadata as safetensors bytes.
pub fn encode_safetensors(entries: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let raws: Vec<(String, RawTensor)> = entries.iter().map(|(k, t)| Ok((k.clone(), raw(t)?))).collect::<Result<_>>()?;
    safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), Some(metadata))
        .map_err(|e| ModelError::Checkpoint { path: "<memory>".into(), reason: format!("cannot encode safetensors: {e}") })
}

/// Reads tensors and string metadata from safetensors bytes; `source` names the file in errors.
pub fn decode_safetensors(bytes: &[u8], source: &str) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let err = |e: String| ModelError::Checkpoint { path: source.into(), reason: e };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| err(e.to_string()))?;
    Ok((tensors.into_iter().collect(), meta.metadata().clone().unwrap_or_default()))
}
