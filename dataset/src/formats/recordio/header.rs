//! MXNet's `IRHeader` (`struct.pack('IfQQ', flag, label, id, id2)`, 24 bytes, little-endian).
//! When `flag > 0` the scalar label is replaced by `flag` float32 labels that follow the header.

use std::path::Path;

use crate::formats::FormatError;

/// Size of the fixed header.
pub const IR_HEADER_SIZE: usize = 24;

/// A record header.
#[derive(Clone, Debug, PartialEq)]
pub struct IrHeader {
    /// 0 for a scalar label, else the number of float labels.
    pub flag: u32,
    /// The label(s): one value when `flag == 0`, `flag` values otherwise.
    pub label: Vec<f32>,
    /// Record id.
    pub id: u64,
    /// Second id.
    pub id2: u64,
}

/// `mx.recordio.pack`: header (+ labels) + payload.
pub fn pack(header: &IrHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IR_HEADER_SIZE + 4 * header.label.len() + payload.len());
    let multi = header.label.len() != 1;
    out.extend_from_slice(&(if multi { header.label.len() as u32 } else { 0 }).to_le_bytes());
    out.extend_from_slice(&(if multi { 0.0f32 } else { header.label[0] }).to_le_bytes());
    out.extend_from_slice(&header.id.to_le_bytes());
    out.extend_from_slice(&header.id2.to_le_bytes());
    if multi {
        for l in &header.label {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// `mx.recordio.unpack`: splits a record payload into header and image bytes.
pub fn unpack<'a>(record: &'a [u8], path: &Path, offset: u64) -> Result<(IrHeader, &'a [u8]), FormatError> {
    let h = record
        .get(..IR_HEADER_SIZE)
        .ok_or_else(|| FormatError::corrupt(path, offset, format!("record of {} bytes is shorter than an IRHeader", record.len())))?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let flag = u32_at(0);
    let scalar = f32::from_bits(u32_at(4));
    let (id, id2) = (u64_at(8), u64_at(16));
    let rest = &record[IR_HEADER_SIZE..];
    if flag == 0 {
        return Ok((IrHeader { flag, label: vec![scalar], id, id2 }, rest));
    }
    let n = flag as usize;
    let labels = n
        .checked_mul(4)
        .and_then(|b| rest.get(..b))
        .ok_or_else(|| FormatError::corrupt(path, offset, format!("IRHeader flag {flag} promises more labels than the record holds")))?;
    let label = labels.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((IrHeader { flag, label, id, id2 }, &rest[n * 4..]))
}
