//! Reader for `torch.save` zip archives (checkpoints `.ckpt` / `.pt` / `.pth`, and IDiff-Face's
//! dict context files) without Python and without executing the embedded pickle.
//!
//! Layout: one top-level folder of any name holding `data.pkl` (the pickled object graph),
//! `data/<key>` (raw little-endian storages) and bookkeeping records (`byteorder`, `version`,
//! `.format_version`, `.data/serialization_id`, …) that are ignored. `data.pkl` is loaded with
//! the restricted [`pickle`] VM under an allow-list; tensors are the recorded
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` calls whose storage is a
//! persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
//! The legacy (pre-1.6, non-zip) format is detected and refused with a clear error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use super::pickle::{self, AllowList, Value};
use super::FormatError;

/// Globals a plain state-dict checkpoint may reference.
pub const STATE_DICT_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.*Storage",
    "torch.storage.UntypedStorage",
];

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool (one byte)
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The dtype of a `torch.<Name>Storage` class.
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype name as PyTorch prints it (`float32`, `int64`, …).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Dotted state-dict key (nested dicts flattened with `.`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Strides in elements, as stored (the data below is always C-contiguous).
    pub strides: Vec<usize>,
    /// Element offset into the storage, as stored.
    pub storage_offset: usize,
    /// The tensor's elements in C (row-major) order, little-endian.
    pub data: Vec<u8>,
}

impl NamedTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as f32 (only for [`DType::F32`]).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32).then(|| self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// A tensor's key, element type and shape as the pickle records them (no storage data read).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorHeader {
    /// Dotted state-dict key (nested dicts flattened with `.`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
}

/// The arguments of one `torch._utils._rebuild_tensor*` call.
struct Rebuild<'v> {
    storage: &'v Value,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// An opened torch zip archive, over a file or (for in-memory data) a byte buffer.
pub struct TorchArchive<R: Read + Seek = File> {
    path: PathBuf,
    zip: zip::ZipArchive<R>,
    prefix: String,
    file_len: u64,
}

impl TorchArchive<File> {
    /// Opens `path`, checks it is a torch zip archive and finds its `data.pkl`.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        Self::from_reader(file, file_len, path)
    }
}

impl TorchArchive<Cursor<Vec<u8>>> {
    /// An archive held in memory; `path` names it in errors.
    pub fn from_bytes(data: Vec<u8>, path: &Path) -> Result<Self, FormatError> {
        let len = data.len() as u64;
        Self::from_reader(Cursor::new(data), len, path)
    }
}

impl<R: Read + Seek> TorchArchive<R> {
    /// Opens an archive from a seekable reader of `file_len` bytes; `path` names it in errors.
    pub fn from_reader(mut file: R, file_len: u64, path: &Path) -> Result<Self, FormatError> {
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| FormatError::io(path, e))?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(|e| FormatError::io(path, e))?;
        if n < 4 || &magic != b"PK\x03\x04" {
            if n >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
                return Err(FormatError::unsupported(
                    path,
                    "this is the legacy (pre-1.6, non-zip) torch serialization format; re-save it \
                     with a recent torch (torch.save uses the zip format by default)",
                ));
            }
            return Err(FormatError::corrupt(path, 0, "not a torch zip archive (no PK\\x03\\x04 magic)"));
        }
        let zip = zip::ZipArchive::new(file).map_err(|e| FormatError::invalid(path, format!("unreadable zip archive: {e}")))?;
        let mut prefix = None;
        for name in zip.file_names() {
            let Ok(name) = name else { continue };
            if name == "data.pkl" {
                prefix = Some(String::new());
                break;
            }
            if let Some(p) = name.strip_suffix("/data.pkl") {
                if !p.contains('/') {
                    prefix = Some(format!("{p}/"));
                    break;
                }
            }
        }
        let prefix = prefix.ok_or_else(|| FormatError::invalid(path, "zip archive has no <folder>/data.pkl: not a torch.save file"))?;
        Ok(Self { path: path.to_path_buf(), zip, prefix, file_len })
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a record `<folder>/<name>` fully (bounded by the archive size).
    pub fn read_record(&mut self, name: &str) -> Result<Vec<u8>, FormatError> {
        let full = format!("{}{name}", self.prefix);
        let path = self.path.clone();
        let member = self.member_path(name);
        let entry = self.zip.by_name(&full).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => FormatError::invalid(&path, format!("archive has no record '{full}'")),
            zip::result::ZipError::UnsupportedArchive(m) => {
                FormatError::unsupported(&member, format!("{m} (torch stores records uncompressed; this archive was re-compressed)"))
            }
            other => FormatError::invalid(&member, format!("unreadable zip record: {other}")),
        })?;
        let declared = entry.size();
        // Uncompressed records cannot exceed the archive; compressed ones are refused above.
        if declared > self.file_len {
            return Err(FormatError::invalid(
                &member,
                format!("record claims {declared} bytes, more than the {}-byte archive", self.file_len),
            ));
        }
        let mut out = Vec::with_capacity(declared as usize);
        entry.take(declared).read_to_end(&mut out).map_err(|e| FormatError::io(&member, e))?;
        if out.len() as u64 != declared {
            return Err(FormatError::corrupt(&member, out.len() as u64, format!("record is truncated: {} of {declared} bytes", out.len())));
        }
        Ok(out)
    }

    /// `archive/<folder>/<record>` for error messages.
    pub fn member_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{}{name}", self.prefix))
    }

    /// Loads `data.pkl` with the restricted pickle VM.
    pub fn load_pickle(&mut self, allow: &AllowList) -> Result<Value, FormatError> {
        let data = self.read_record("data.pkl")?;
        pickle::load(&data, &self.member_path("data.pkl"), allow)
    }
}

fn read_up_to<R: Read>(f: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Reads every tensor of a state-dict checkpoint, in file order, nested dicts flattened with `.`.
/// Non-tensor entries (epoch counters, strings, …) are skipped.
pub fn read_state_dict(path: &Path) -> Result<Vec<NamedTensor>, FormatError> {
    read_state_dict_with(path, &AllowList::new(STATE_DICT_GLOBALS))
}

/// [`read_state_dict`] with a caller-supplied allow-list (it must admit the torch rebuild globals).
pub fn read_state_dict_with(path: &Path, allow: &AllowList) -> Result<Vec<NamedTensor>, FormatError> {
    let mut archive = TorchArchive::open(path)?;
    state_dict_from_archive(&mut archive, allow)
}

/// Reads a state dict from in-memory archive bytes; `path` names it in errors.
pub fn parse_state_dict(data: Vec<u8>, path: &Path) -> Result<Vec<NamedTensor>, FormatError> {
    let mut archive = TorchArchive::from_bytes(data, path)?;
    state_dict_from_archive(&mut archive, &AllowList::new(STATE_DICT_GLOBALS))
}

fn state_dict_from_archive<R: Read + Seek>(archive: &mut TorchArchive<R>, allow: &AllowList) -> Result<Vec<NamedTensor>, FormatError> {
    let root = archive.load_pickle(allow)?;
    walk_state_dict(archive, &root, TensorResolver::tensor)
}

/// Every tensor's key, type and shape of a state-dict checkpoint, in file order, from the pickle
/// alone: no tensor data is read, so this costs a fraction of [`read_state_dict`].
pub fn read_state_dict_shapes(path: &Path) -> Result<Vec<TensorHeader>, FormatError> {
    let mut archive = TorchArchive::open(path)?;
    let root = archive.load_pickle(&AllowList::new(STATE_DICT_GLOBALS))?;
    walk_state_dict(&mut archive, &root, TensorResolver::header)
}

/// A bare tensor, or the tensors of a (nested) dict, each turned into a `T` by `leaf`.
fn walk_state_dict<'a, R: Read + Seek, T>(
    archive: &'a mut TorchArchive<R>,
    root: &Value,
    leaf: Leaf<'a, R, T>,
) -> Result<Vec<T>, FormatError> {
    let pkl = archive.member_path("data.pkl");
    let mut loader = TensorResolver::new(archive);
    let mut out = Vec::new();
    if let Some(t) = leaf(&mut loader, "", root)? {
        // a bare tensor saved on its own
        out.push(t);
    } else if root.as_mapping().is_some() {
        loader.flatten("", root, &mut out, leaf)?;
    } else {
        return Err(FormatError::invalid(&pkl, format!("top-level object is a {}, not a dict of tensors", root.type_name())));
    }
    Ok(out)
}

/// Turns one pickled value into a `T` (a tensor, a header) or `None` when it is not a tensor.
type Leaf<'a, R, T> = fn(&mut TensorResolver<'a, R>, &str, &Value) -> Result<Option<T>, FormatError>;

/// Removes the first matching prefix (e.g. `module.`, `eps_model.`, `first_stage_model.`) from
/// each tensor name; names without any of the prefixes are kept unchanged.
pub fn strip_prefixes(tensors: Vec<NamedTensor>, prefixes: &[&str]) -> Vec<NamedTensor> {
    tensors
        .into_iter()
        .map(|mut t| {
            if let Some(rest) = prefixes.iter().find_map(|p| t.name.strip_prefix(p)) {
                t.name = rest.to_string();
            }
            t
        })
        .collect()
}

/// Turns recorded `torch._utils._rebuild_*` calls of an archive's pickle into tensors, caching
/// storages shared by several views.
pub struct TensorResolver<'a, R: Read + Seek = File> {
    archive: &'a mut TorchArchive<R>,
    storages: HashMap<String, (DType, std::rc::Rc<Vec<u8>>)>,
    /// Bytes materialised so far, bounded to stop stride-0 expansion bombs.
    produced: u64,
}

impl<'a, R: Read + Seek> TensorResolver<'a, R> {
    /// A resolver reading storages from `archive`.
    pub fn new(archive: &'a mut TorchArchive<R>) -> Self {
        Self { archive, storages: HashMap::new(), produced: 0 }
    }

    fn bad(&self, name: &str, message: impl std::fmt::Display) -> FormatError {
        FormatError::invalid(&self.archive.member_path("data.pkl"), format!("tensor '{name}': {message}"))
    }

    fn flatten<T>(&mut self, prefix: &str, v: &Value, out: &mut Vec<T>, leaf: Leaf<'a, R, T>) -> Result<(), FormatError> {
        let Some(items) = v.as_mapping() else {
            return Ok(());
        };
        // Objects that are tensors themselves have no dict items; only real mappings recurse.
        for (k, val) in items {
            let key = match k {
                Value::Int(i) => i.to_string(),
                other => match other.as_str() {
                    Some(s) => s.to_string(),
                    None => continue,
                },
            };
            let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
            if let Some(t) = leaf(self, &name, val)? {
                out.push(t);
            } else if val.as_mapping().is_some() {
                self.flatten(&name, val, out, leaf)?;
            }
        }
        Ok(())
    }

    /// The tensor a value rebuilds, or `None` if it is not a tensor rebuild call; `name` labels
    /// the tensor (and errors).
    pub fn tensor(&mut self, name: &str, v: &Value) -> Result<Option<NamedTensor>, FormatError> {
        let Some(r) = self.rebuild(name, v)? else { return Ok(None) };
        let (dtype, storage) = self.storage(name, r.storage)?;
        let data = self.gather(name, dtype, &storage, r.offset, &r.shape, &r.strides)?;
        Ok(Some(NamedTensor { name: name.to_string(), dtype, shape: r.shape, strides: r.strides, storage_offset: r.offset, data }))
    }

    /// The key, type and shape of the tensor a value rebuilds, without reading its storage.
    pub fn header(&mut self, name: &str, v: &Value) -> Result<Option<TensorHeader>, FormatError> {
        let Some(r) = self.rebuild(name, v)? else { return Ok(None) };
        let (dtype, _) = self.storage_id(name, r.storage)?;
        Ok(Some(TensorHeader { name: name.to_string(), dtype, shape: r.shape }))
    }

    /// The arguments of a tensor rebuild call, or `None` if `v` is not one.
    fn rebuild<'v>(&self, name: &str, v: &'v Value) -> Result<Option<Rebuild<'v>>, FormatError> {
        let Some(o) = v.as_object() else {
            return Ok(None);
        };
        let Value::Global { module, name: func } = &o.callable else {
            return Ok(None);
        };
        if module != "torch._utils" {
            return Ok(None);
        }
        let args = o.args.as_seq().unwrap_or(&[]);
        match func.as_str() {
            "_rebuild_parameter" | "_rebuild_parameter_with_state" => match args.first() {
                Some(inner) => self.rebuild(name, inner),
                None => Err(self.bad(name, "_rebuild_parameter without arguments")),
            },
            "_rebuild_tensor" | "_rebuild_tensor_v2" => {
                if args.len() < 4 {
                    return Err(self.bad(name, format!("{func} with {} arguments", args.len())));
                }
                let offset = non_negative(&args[1]).ok_or_else(|| self.bad(name, "bad storage offset"))?;
                let shape = usize_seq(&args[2]).ok_or_else(|| self.bad(name, "bad size tuple"))?;
                let strides = usize_seq(&args[3]).ok_or_else(|| self.bad(name, "bad stride tuple"))?;
                if shape.len() != strides.len() {
                    return Err(self.bad(name, "size and stride have different lengths"));
                }
                Ok(Some(Rebuild { storage: &args[0], offset, shape, strides }))
            }
            _ => Ok(None),
        }
    }

    /// The element type and record key of a storage persistent id.
    fn storage_id(&self, name: &str, v: &Value) -> Result<(DType, String), FormatError> {
        let Value::PersistentId(pid) = v else {
            return Err(self.bad(name, "storage is not a persistent id"));
        };
        let parts = pid.as_seq().ok_or_else(|| self.bad(name, "persistent id is not a tuple"))?;
        if parts.len() < 3 || parts[0].as_str() != Some("storage") {
            return Err(self.bad(name, "persistent id is not ('storage', type, key, …)"));
        }
        let dtype = match &parts[1] {
            Value::Global { module, name: cls } if module == "torch" => {
                DType::from_storage_class(cls).ok_or_else(|| self.bad(name, format!("unsupported storage type torch.{cls}")))?
            }
            other => return Err(self.bad(name, format!("storage type {} is not a torch.*Storage class", other.type_name()))),
        };
        let key = match &parts[2] {
            Value::Int(i) => i.to_string(),
            other => other.as_str().ok_or_else(|| self.bad(name, "storage key is not a string"))?.to_string(),
        };
        if key.is_empty() || key.contains('/') || key.contains("..") {
            return Err(self.bad(name, format!("storage key '{key}' is not a plain record name")));
        }
        Ok((dtype, key))
    }

    fn storage(&mut self, name: &str, v: &Value) -> Result<(DType, std::rc::Rc<Vec<u8>>), FormatError> {
        let (dtype, key) = self.storage_id(name, v)?;
        if let Some((d, bytes)) = self.storages.get(&key) {
            if *d != dtype {
                return Err(self.bad(name, format!("storage {key} is used with two dtypes")));
            }
            return Ok((dtype, bytes.clone()));
        }
        let bytes = std::rc::Rc::new(self.archive.read_record(&format!("data/{key}"))?);
        if bytes.len() % dtype.size() != 0 {
            return Err(self.bad(name, format!("storage data/{key} has {} bytes, not a multiple of {}", bytes.len(), dtype.size())));
        }
        self.storages.insert(key, (dtype, bytes.clone()));
        Ok((dtype, bytes))
    }

    fn gather(
        &mut self,
        name: &str,
        dtype: DType,
        storage: &[u8],
        offset: usize,
        shape: &[usize],
        strides: &[usize],
    ) -> Result<Vec<u8>, FormatError> {
        let es = dtype.size();
        let n_storage = storage.len() / es;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let numel = numel.ok_or_else(|| self.bad(name, "shape overflows"))?;
        if numel == 0 {
            return Ok(Vec::new());
        }
        // highest element index touched
        let mut last = offset;
        for (&d, &s) in shape.iter().zip(strides) {
            last = (d - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or_else(|| self.bad(name, "strides overflow"))?;
        }
        if last >= n_storage {
            return Err(self.bad(name, format!("view reaches element {last} but its storage has {n_storage} elements")));
        }
        let bytes = (numel as u64).saturating_mul(es as u64);
        let limit = 4 * self.archive.file_len + (64 << 20);
        self.produced = self.produced.saturating_add(bytes);
        if self.produced > limit {
            return Err(self.bad(name, "tensors expand to far more data than the archive holds"));
        }
        let contiguous = {
            let mut expect = 1usize;
            let mut ok = true;
            for (&d, &s) in shape.iter().zip(strides).rev() {
                if d != 1 && s != expect {
                    ok = false;
                }
                expect = expect.saturating_mul(d);
            }
            ok
        };
        if contiguous {
            return Ok(storage[offset * es..(offset + numel) * es].to_vec());
        }
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..numel {
            let e: usize = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[e * es..(e + 1) * es]);
            for ax in (0..shape.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Ok(out)
    }
}

fn non_negative(v: &Value) -> Option<usize> {
    v.as_int().and_then(|i| usize::try_from(i).ok())
}

fn usize_seq(v: &Value) -> Option<Vec<usize>> {
    v.as_seq()?.iter().map(non_negative).collect()
}
