//! The insightface verification `.bin` pair sets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, …).
//!
//! A `.bin` is a pickle of `(bins, issame_list)`: `bins` holds 2N encoded images (pair `i` is
//! images `2i` and `2i+1`), `issame_list` N booleans. Files written by Python 3 store the images
//! as `bytes` (protocol 3+) or `_codecs.encode(…, 'latin1')` (protocol 2); the historical files
//! were written by Python 2 with `str` images. All spellings read here, through the restricted
//! pickle VM, so a hostile `.bin` cannot run code. The writer emits protocol 2 the way Python 3
//! does, which `pickle.load(f, encoding='bytes')` (insightface) and plain `pickle.load(f)` read.

use std::path::Path;

use super::atomic::write_file_atomic;
use super::pickle::{self, AllowList, BytesStyle, Value};
use super::FormatError;

/// Globals a verification `.bin` may reference: byte-string spellings and numpy bool scalars.
pub const BIN_GLOBALS: &[&str] = &[
    "_codecs.encode",
    "builtins.bytes",
    "builtins.bytearray",
    "__builtin__.bytes",
    "__builtin__.bytearray",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
];

/// The content of a verification `.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationBin {
    /// 2N encoded images (JPEG/PNG bytes); pair `i` is `images[2i]`, `images[2i+1]`.
    pub images: Vec<Vec<u8>>,
    /// N flags: true when pair `i` shows the same identity.
    pub issame: Vec<bool>,
}

impl VerificationBin {
    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.issame.len()
    }
}

/// Reads a `.bin` file.
pub fn read_bin(path: &Path) -> Result<VerificationBin, FormatError> {
    let data = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    parse_bin(&data, path)
}

/// Parses the bytes of a `.bin` file; `path` names it in errors.
pub fn parse_bin(data: &[u8], path: &Path) -> Result<VerificationBin, FormatError> {
    let root = pickle::load(data, path, &AllowList::new(BIN_GLOBALS))?;
    let parts = root
        .as_seq()
        .ok_or_else(|| FormatError::invalid(path, format!("top-level object is a {}, not (bins, issame_list)", root.type_name())))?;
    let [bins, issame] = parts else {
        return Err(FormatError::invalid(path, format!("top-level sequence has {} items, expected 2 (bins, issame_list)", parts.len())));
    };
    let bins = bins.as_seq().ok_or_else(|| FormatError::invalid(path, format!("bins is a {}, not a list", bins.type_name())))?;
    let images = bins
        .iter()
        .enumerate()
        .map(|(i, b)| {
            pickle::value_bytes(b).ok_or_else(|| FormatError::invalid(path, format!("bins[{i}] is a {}, not a byte string", b.type_name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let flags =
        issame.as_seq().ok_or_else(|| FormatError::invalid(path, format!("issame_list is a {}, not a list", issame.type_name())))?;
    let issame = flags
        .iter()
        .enumerate()
        .map(|(i, f)| as_bool(f).ok_or_else(|| FormatError::invalid(path, format!("issame_list[{i}] is a {}, not a bool", f.type_name()))))
        .collect::<Result<Vec<_>, _>>()?;
    if images.len() != 2 * issame.len() {
        return Err(FormatError::invalid(
            path,
            format!("{} images for {} pairs (expected exactly 2 per pair)", images.len(), issame.len()),
        ));
    }
    Ok(VerificationBin { images, issame })
}

/// A Python bool, 0/1 int, or numpy bool scalar (`scalar(dtype('bool'), b'\x01')`).
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::Object(o)
            if o.callable.is_global("numpy.core.multiarray", "scalar") || o.callable.is_global("numpy._core.multiarray", "scalar") =>
        {
            let raw = pickle::value_bytes(o.args.as_seq()?.get(1)?)?;
            match raw.as_slice() {
                [b] => Some(*b != 0),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Serialises a `.bin` (protocol 2, bytes spelled as Python 3 does) without writing it.
pub fn encode_bin(images: &[Vec<u8>], issame: &[bool], style: BytesStyle) -> Result<Vec<u8>, String> {
    if images.len() != 2 * issame.len() {
        return Err(format!("{} images for {} pairs (need exactly 2 per pair)", images.len(), issame.len()));
    }
    let v = Value::Tuple(vec![
        Value::List(images.iter().map(|b| Value::Bytes(b.clone())).collect()),
        Value::List(issame.iter().map(|&b| Value::Bool(b)).collect()),
    ]);
    pickle::dumps(&v, style).map_err(|e| e.to_string())
}

/// Writes a `.bin` atomically (temporary file + rename).
pub fn write_bin(path: &Path, images: &[Vec<u8>], issame: &[bool]) -> Result<(), FormatError> {
    write_bin_with_style(path, images, issame, BytesStyle::CodecsEncode)
}

/// [`write_bin`] choosing how byte strings are spelled ([`BytesStyle::Py2Str`] reproduces the
/// historical Python 2 files).
pub fn write_bin_with_style(path: &Path, images: &[Vec<u8>], issame: &[bool], style: BytesStyle) -> Result<(), FormatError> {
    let bytes = encode_bin(images, issame, style).map_err(|m| FormatError::invalid(path, m))?;
    write_file_atomic(path, &bytes)
}
