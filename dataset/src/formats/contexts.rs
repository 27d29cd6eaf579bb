//! Identity context files: the embeddings that condition IDiff-Face sampling.
//!
//! Two layouts are read, told apart by their magic bytes:
//! * IDiff-Face's dict format — a `torch.save` zip archive despite its `.npy` extension — holding
//!   `{name: float32[512] numpy array}` pickled inline through
//!   `numpy.core.multiarray._reconstruct` (numpy 1.x) or `numpy._core.multiarray._reconstruct`
//!   (numpy 2.x); torch tensors as values are accepted too. Key order is kept, as
//!   `list(contexts.keys())` does.
//! * ADMIS's plain `.npy` `(N, D)` array; rows are named `"0"…"N-1"`.
//!
//! Rows are L2-normalised as ADMIS does (float32 `row / np.linalg.norm(row)`, with numpy's
//! pairwise float32 summation reproduced bit for bit); rows whose norm is already 1 within
//! [`UNIT_NORM_TOLERANCE`] are kept unchanged and not counted in [`Contexts::renormalised`].

use std::io::{Read, Seek};
use std::path::Path;

use super::npy::{parse_npy, NPY_MAGIC};
use super::pickle::{self, AllowList, Value};
use super::torch_zip::{DType, TensorResolver, TorchArchive, STATE_DICT_GLOBALS};
use super::FormatError;

/// A row whose float32 norm is within this distance of 1 counts as already normalised.
pub const UNIT_NORM_TOLERANCE: f32 = 1e-5;

/// Globals an IDiff-Face context dict may reference (on top of the torch state-dict ones).
pub const CONTEXT_GLOBALS: &[&str] =
    &["numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype", "_codecs.encode"];

/// Identity contexts, one row per identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Contexts {
    /// Identity names (dict keys, or row numbers for a plain array), in file order.
    pub names: Vec<String>,
    /// Context width (512 for ArcFace-style embeddings).
    pub dim: usize,
    /// `names.len() × dim` values, row-major, every row L2-normalised.
    pub values: Vec<f32>,
    /// How many rows were not unit-norm in the file and had to be normalised.
    pub renormalised: usize,
}

impl Contexts {
    /// Number of identities.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no identities.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The context of identity `i`.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.values.get(i * self.dim..(i + 1) * self.dim)
    }
}

/// Reads a context file, detecting the layout from its first bytes.
pub fn read_contexts(path: &Path) -> Result<Contexts, FormatError> {
    let data = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    parse_contexts(data, path)
}

/// Parses the bytes of a context file; `path` names it in errors.
pub fn parse_contexts(data: Vec<u8>, path: &Path) -> Result<Contexts, FormatError> {
    if data.starts_with(b"PK\x03\x04") {
        let mut archive = TorchArchive::from_bytes(data, path)?;
        dict_contexts(&mut archive, path)
    } else if data.starts_with(NPY_MAGIC) {
        let arr = parse_npy(&data, path)?;
        let (rows, dim) = match arr.shape.as_slice() {
            [r, d] => (*r, *d),
            [d] => (1, *d),
            other => return Err(FormatError::invalid(path, format!("context array has shape {other:?}, expected (N, D)"))),
        };
        let names = (0..rows).map(|i| i.to_string()).collect();
        finish(path, names, dim, arr.to_f32())
    } else {
        Err(FormatError::corrupt(path, 0, "not a context file: neither a torch zip archive (PK) nor a .npy array (\\x93NUMPY)"))
    }
}

fn dict_contexts<R: Read + Seek>(archive: &mut TorchArchive<R>, path: &Path) -> Result<Contexts, FormatError> {
    let allow = AllowList::new(STATE_DICT_GLOBALS).with(CONTEXT_GLOBALS);
    let root = archive.load_pickle(&allow)?;
    let pkl = archive.member_path("data.pkl");
    let items =
        root.as_mapping().ok_or_else(|| FormatError::invalid(&pkl, format!("top-level object is a {}, not a dict", root.type_name())))?;
    let mut resolver = TensorResolver::new(archive);
    let mut names = Vec::with_capacity(items.len());
    let mut values = Vec::new();
    let mut dim = None;
    for (k, v) in items {
        let name = match k {
            Value::Int(i) => i.to_string(),
            other => other.as_str().ok_or_else(|| FormatError::invalid(&pkl, format!("dict key is a {}", other.type_name())))?.to_string(),
        };
        let row = match numpy_array(v) {
            Some(r) => r.map_err(|m| FormatError::invalid(&pkl, format!("context '{name}': {m}")))?,
            None => match resolver.tensor(&name, v)? {
                Some(t) => tensor_values(&t.dtype, &t.data)
                    .ok_or_else(|| FormatError::invalid(&pkl, format!("context '{name}': dtype {:?}", t.dtype)))?,
                None => {
                    return Err(FormatError::invalid(&pkl, format!("context '{name}' is a {}, not a numpy array or tensor", v.type_name())))
                }
            },
        };
        match dim {
            None => dim = Some(row.len()),
            Some(d) if d != row.len() => {
                return Err(FormatError::invalid(&pkl, format!("context '{name}' has {} values, earlier ones have {d}", row.len())))
            }
            _ => {}
        }
        names.push(name);
        values.extend(row);
    }
    finish(path, names, dim.unwrap_or(0), values)
}

fn tensor_values(dtype: &DType, data: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        DType::F32 => Some(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::F64 => {
            Some(data.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect())
        }
        _ => None,
    }
}

/// Decodes a pickled numpy array: `None` if the value is not a `_reconstruct` call,
/// `Some(Err)` if it is one this reader cannot use.
pub fn numpy_array(v: &Value) -> Option<Result<Vec<f32>, String>> {
    let o = v.as_object()?;
    if !(o.callable.is_global("numpy.core.multiarray", "_reconstruct") || o.callable.is_global("numpy._core.multiarray", "_reconstruct")) {
        return None;
    }
    Some((|| {
        let state = o.state.as_ref().and_then(Value::as_seq).ok_or("array has no (version, shape, dtype, …) state")?;
        let [_version, shape, dtype, fortran, raw] = state else {
            return Err(format!("array state has {} items, expected 5", state.len()));
        };
        let shape: Vec<usize> = shape
            .as_seq()
            .ok_or("array shape is not a tuple")?
            .iter()
            .map(|d| d.as_int().and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<_>>()
            .ok_or("array shape holds a non-integer")?;
        if shape.len() > 1 && matches!(fortran, Value::Bool(true)) {
            return Err("Fortran-ordered array".to_string());
        }
        let d = dtype.as_object().ok_or("array dtype is not a numpy.dtype")?;
        if !d.callable.is_global("numpy", "dtype") {
            return Err("array dtype is not a numpy.dtype".to_string());
        }
        let code = d.args.as_seq().and_then(|a| a.first()).and_then(Value::as_str).ok_or("dtype has no type code")?;
        let order = d.state.as_ref().and_then(Value::as_seq).and_then(|s| s.get(1)).and_then(Value::as_str).unwrap_or("<");
        if order == ">" {
            return Err("big-endian array".to_string());
        }
        let size = match code.trim_start_matches(['<', '=', '|']) {
            "f4" => 4,
            "f8" => 8,
            other => return Err(format!("dtype '{other}' is not float32/float64")),
        };
        let bytes = pickle::value_bytes(raw).ok_or("array data is not a byte string")?;
        let numel = shape.iter().try_fold(1usize, |a, &x| a.checked_mul(x)).ok_or("shape overflows")?;
        if numel.checked_mul(size) != Some(bytes.len()) {
            return Err(format!("shape {shape:?} needs {} bytes, array data has {}", numel.saturating_mul(size), bytes.len()));
        }
        Ok(if size == 4 {
            tensor_values(&DType::F32, &bytes).unwrap_or_default()
        } else {
            tensor_values(&DType::F64, &bytes).unwrap_or_default()
        })
    })())
}

fn finish(path: &Path, names: Vec<String>, dim: usize, mut values: Vec<f32>) -> Result<Contexts, FormatError> {
    if names.is_empty() {
        return Err(FormatError::invalid(path, "context file holds no identities"));
    }
    if dim == 0 {
        return Err(FormatError::invalid(path, "contexts have zero width"));
    }
    let renormalised = normalise_rows(&mut values, dim)
        .map_err(|row| FormatError::invalid(path, format!("context '{}' (row {row}) has zero or non-finite norm", names[row])))?;
    Ok(Contexts { names, dim, values, renormalised })
}

/// L2-normalises each `dim`-wide row in place (float32, `row / norm`) unless it is already unit
/// norm; returns how many rows changed, or the index of a row with zero / non-finite norm.
pub fn normalise_rows(values: &mut [f32], dim: usize) -> Result<usize, usize> {
    let mut changed = 0;
    for (i, row) in values.chunks_mut(dim).enumerate() {
        let norm = numpy_l2_norm_f32(row);
        if !norm.is_finite() || norm == 0.0 {
            return Err(i);
        }
        if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
            for x in row.iter_mut() {
                *x /= norm;
            }
            changed += 1;
        }
    }
    Ok(changed)
}

/// `np.linalg.norm(row)` for a float32 row: `sqrt(add.reduce(row * row))` in float32 with
/// numpy's pairwise summation (8 accumulators, blocks of 128), so results match bit for bit.
pub fn numpy_l2_norm_f32(row: &[f32]) -> f32 {
    let squares: Vec<f32> = row.iter().map(|x| x * x).collect();
    pairwise_sum_f32(&squares).sqrt()
}

/// numpy's `pairwise_sum` for float32 (`numpy/_core/src/umath/loops_utils.h.src`).
pub fn pairwise_sum_f32(a: &[f32]) -> f32 {
    crate::metrics::numeric::pairwise_sum_in(a)
}
