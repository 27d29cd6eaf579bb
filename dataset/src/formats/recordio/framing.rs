//! dmlc-core RecordIO framing.
//!
//! Each part is `u32 magic | u32 lrecord | data | zero padding to 4 bytes`, where
//! `lrecord = cflag << 29 | length`. A payload that contains the magic at a 4-byte-aligned
//! position is split there: parts carry cflag 1 (first), 2 (middle), 3 (last), the magic itself
//! is dropped by the writer and re-inserted by the reader; an unsplit record has cflag 0.

use std::io::Read;
use std::path::Path;

use crate::formats::FormatError;

/// The RecordIO magic number.
pub const MAGIC: u32 = 0xced7_230a;
const LENGTH_MASK: u32 = (1 << 29) - 1;

fn lrec(cflag: u32, len: u32) -> u32 {
    (cflag << 29) | len
}

/// Frames one payload exactly as dmlc-core's `RecordIOWriter::WriteRecord` does.
pub fn encode_record(payload: &[u8]) -> Result<Vec<u8>, String> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= LENGTH_MASK)
        .ok_or_else(|| format!("record of {} bytes exceeds RecordIO's 2^29-byte limit", payload.len()))?;
    let magic = MAGIC.to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    let lower_align = (len as usize) & !3;
    let mut dptr = 0usize;
    let mut i = 0usize;
    while i < lower_align {
        if payload[i..i + 4] == magic {
            out.extend_from_slice(&magic);
            out.extend_from_slice(&lrec(if dptr == 0 { 1 } else { 2 }, (i - dptr) as u32).to_le_bytes());
            out.extend_from_slice(&payload[dptr..i]);
            dptr = i + 4;
        }
        i += 4;
    }
    out.extend_from_slice(&magic);
    out.extend_from_slice(&lrec(if dptr != 0 { 3 } else { 0 }, (payload.len() - dptr) as u32).to_le_bytes());
    out.extend_from_slice(&payload[dptr..]);
    out.resize(out.len() + (4 - payload.len() % 4) % 4, 0);
    Ok(out)
}

/// Reads the (possibly multi-part) record starting at `offset`; `r` must be positioned there.
/// Returns the payload and the number of bytes consumed. `file_len` bounds every length.
pub fn read_record<R: Read>(r: &mut R, path: &Path, offset: u64, file_len: u64) -> Result<(Vec<u8>, u64), FormatError> {
    let mut out = Vec::new();
    let mut pos = offset;
    let mut first = true;
    loop {
        let mut head = [0u8; 8];
        read_full(r, &mut head, path, pos)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic != MAGIC {
            return Err(FormatError::corrupt(path, pos, format!("bad RecordIO magic {magic:#010x} (expected {MAGIC:#010x})")));
        }
        let word = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let cflag = word >> 29;
        let len = u64::from(word & LENGTH_MASK);
        let expected_ok = if first { cflag == 0 || cflag == 1 } else { cflag == 2 || cflag == 3 };
        if !expected_ok {
            return Err(FormatError::corrupt(
                path,
                pos,
                format!("unexpected continuation flag {cflag} ({} part)", if first { "first" } else { "later" }),
            ));
        }
        let padded = (len + 3) & !3;
        if pos + 8 + padded > file_len {
            return Err(FormatError::corrupt(
                path,
                pos,
                format!("record part claims {len} bytes, past the end of the {file_len}-byte file"),
            ));
        }
        let start = out.len();
        out.resize(start + padded as usize, 0);
        read_full(r, &mut out[start..], path, pos)?;
        out.truncate(start + len as usize);
        pos += 8 + padded;
        if cflag == 0 || cflag == 3 {
            return Ok((out, pos - offset));
        }
        out.extend_from_slice(&MAGIC.to_le_bytes());
        first = false;
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8], path: &Path, offset: u64) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::corrupt(path, offset, "truncated RecordIO record")
        } else {
            FormatError::io(path, e)
        }
    })
}

/// Splits an in-memory `.rec` file into `(offset, payload)` records.
pub fn parse_records(data: &[u8], path: &Path) -> Result<Vec<(u64, Vec<u8>)>, FormatError> {
    crate::formats::records::split_records(data, |cursor, at, len| read_record(cursor, path, at, len).map(|(payload, _)| payload))
}
