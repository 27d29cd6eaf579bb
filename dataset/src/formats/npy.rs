//! Plain NumPy `.npy` files of little-endian float32/float64 arrays in C order.
//!
//! Format: magic `\x93NUMPY`, version (1.0: u16 header length; 2.0/3.0: u32), then a Python
//! dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }` padded with spaces
//! and a newline, then the raw data. Hand-written because the only thing needed is this header
//! and the crates that parse it bring an n-d array library along.

use std::path::Path;

use super::atomic::write_file_atomic;
use super::FormatError;

/// The magic string that opens every `.npy` file.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element data of an array.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// `<f4`
    F32(Vec<f32>),
    /// `<f8`
    F64(Vec<f64>),
}

/// A C-ordered array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Shape (empty for a 0-d array).
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: NpyData,
}

impl NpyArray {
    /// The elements as f32 (float64 data is rounded to nearest).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, FormatError> {
    let data = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    parse_npy(&data, path)
}

/// Parses `.npy` bytes; `path` names the file in errors.
pub fn parse_npy(data: &[u8], path: &Path) -> Result<NpyArray, FormatError> {
    if data.len() < 10 || &data[..6] != NPY_MAGIC {
        return Err(FormatError::corrupt(path, 0, "not a .npy file (no \\x93NUMPY magic)"));
    }
    let (major, minor) = (data[6], data[7]);
    let (header_len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([data[8], data[9]])), 10usize),
        2 | 3 => {
            let b = data.get(8..12).ok_or_else(|| FormatError::corrupt(path, 8, "truncated header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12usize)
        }
        _ => {
            return Err(FormatError::unsupported(path, format!(".npy format version {major}.{minor}")));
        }
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| FormatError::corrupt(path, start as u64, "header runs past the end of the file"))?;
    let header = std::str::from_utf8(&data[start..end]).map_err(|_| FormatError::corrupt(path, start as u64, "header is not text"))?;
    let descr =
        dict_value(header, "descr").and_then(quoted).ok_or_else(|| FormatError::corrupt(path, start as u64, "header has no 'descr'"))?;
    let fortran =
        dict_value(header, "fortran_order").ok_or_else(|| FormatError::corrupt(path, start as u64, "header has no 'fortran_order'"))?;
    if fortran.starts_with("True") {
        return Err(FormatError::unsupported(path, "Fortran-ordered array (save it C-contiguous)"));
    }
    if !fortran.starts_with("False") {
        return Err(FormatError::corrupt(path, start as u64, "bad 'fortran_order' value"));
    }
    let shape = dict_value(header, "shape")
        .and_then(parse_shape)
        .ok_or_else(|| FormatError::corrupt(path, start as u64, "header has no valid 'shape' tuple"))?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| FormatError::corrupt(path, start as u64, "shape overflows"))?;
    let size = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(FormatError::unsupported(
                path,
                format!("dtype '{other}' (only little-endian float32 '<f4' and float64 '<f8' are read)"),
            ))
        }
    };
    let body = &data[end..];
    let need = numel.checked_mul(size).filter(|&n| n <= body.len()).ok_or_else(|| {
        FormatError::corrupt(
            path,
            end as u64,
            format!("data is truncated: shape {shape:?} needs {numel}×{size} bytes, {} present", body.len()),
        )
    })?;
    let body = &body[..need];
    let data = if size == 4 {
        NpyData::F32(body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    } else {
        NpyData::F64(body.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` in the header dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}':");
    let pat2 = format!("\"{key}\":");
    let i = header.find(&pat1).map(|i| i + pat1.len()).or_else(|| header.find(&pat2).map(|i| i + pat2.len()))?;
    Some(header[i..].trim_start())
}

fn quoted(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let rest = &s[1..];
    Some(&rest[..rest.find(q)?])
}

fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    inner.split(',').map(str::trim).filter(|t| !t.is_empty()).map(|t| t.trim_end_matches('L').parse::<usize>().ok()).collect()
}

/// Encodes an `(rows, dim)` float32 array as `.npy` version 1.0 bytes.
pub fn encode_npy_f32(rows: usize, dim: usize, values: &[f32]) -> Result<Vec<u8>, String> {
    if rows.checked_mul(dim) != Some(values.len()) {
        return Err(format!("{} values do not form a ({rows}, {dim}) array", values.len()));
    }
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // numpy pads magic + version + length + header + '\n' to a multiple of 64 bytes
    let total = 10 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', total.next_multiple_of(64) - total));
    header.push('\n');
    let hlen = u16::try_from(header.len()).map_err(|_| "header too long".to_string())?;
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes an `(rows, dim)` float32 array (row-major `values`) as `.npy`, atomically.
pub fn write_npy(path: &Path, rows: usize, dim: usize, values: &[f32]) -> Result<(), FormatError> {
    let bytes = encode_npy_f32(rows, dim, values).map_err(|m| FormatError::invalid(path, m))?;
    write_file_atomic(path, &bytes)
}
