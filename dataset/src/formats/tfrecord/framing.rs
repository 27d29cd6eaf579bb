//! TFRecord framing: `u64 LE length | u32 masked CRC-32C(length bytes) | payload |
//! u32 masked CRC-32C(payload)`; the mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::formats::FormatError;

/// Bytes of framing around each payload (8 + 4 + 4).
pub const RECORD_OVERHEAD: u64 = 16;

/// TFRecord's masked CRC-32C.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames one payload as a TFRecord record.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + RECORD_OVERHEAD as usize);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

/// Reads and checks the record starting at `offset`; returns its payload.
/// `file_len` bounds the length field so a damaged length never triggers a huge allocation.
fn read_record<R: Read>(r: &mut R, path: &Path, offset: u64, file_len: u64) -> Result<Vec<u8>, FormatError> {
    let mut head = [0u8; 12];
    read_full(r, &mut head, path, offset, "record header")?;
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&head[..8]);
    let stored = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let computed = masked_crc32c(&len_bytes);
    if stored != computed {
        return Err(FormatError::Checksum { path: path.to_path_buf(), offset, what: "length", stored, computed });
    }
    let len = u64::from_le_bytes(len_bytes);
    let remaining = file_len.saturating_sub(offset + 12);
    if len.saturating_add(4) > remaining {
        return Err(FormatError::corrupt(
            path,
            offset,
            format!("record claims {len} payload bytes but only {remaining} bytes follow (truncated file?)"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    read_full(r, &mut payload, path, offset, "record payload")?;
    let mut crc = [0u8; 4];
    read_full(r, &mut crc, path, offset, "payload CRC")?;
    let stored = u32::from_le_bytes(crc);
    let computed = masked_crc32c(&payload);
    if stored != computed {
        return Err(FormatError::Checksum { path: path.to_path_buf(), offset, what: "payload", stored, computed });
    }
    Ok(payload)
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8], path: &Path, offset: u64, what: &str) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::corrupt(path, offset, format!("truncated record: file ends inside the {what}"))
        } else {
            FormatError::io(path, e)
        }
    })
}

/// Random access: reads the record at `offset` of an open shard.
pub fn read_record_at(file: &mut File, path: &Path, offset: u64) -> Result<Vec<u8>, FormatError> {
    let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if offset >= file_len {
        return Err(FormatError::corrupt(path, offset, format!("offset is past the end of the {file_len}-byte file")));
    }
    file.seek(SeekFrom::Start(offset)).map_err(|e| FormatError::io(path, e))?;
    read_record(file, path, offset, file_len)
}

/// Sequential reader over one shard, yielding `(offset, payload)`.
pub struct TfRecordReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    file_len: u64,
    failed: bool,
}

impl TfRecordReader {
    /// Opens a shard.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        Ok(Self { path: path.to_path_buf(), reader: BufReader::with_capacity(1 << 20, file), offset: 0, file_len, failed: false })
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Iterator for TfRecordReader {
    type Item = Result<(u64, Vec<u8>), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.file_len {
            return None;
        }
        let at = self.offset;
        match read_record(&mut self.reader, &self.path, at, self.file_len) {
            Ok(p) => {
                self.offset += p.len() as u64 + RECORD_OVERHEAD;
                Some(Ok((at, p)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Splits an in-memory shard into `(offset, payload)` records, checking every CRC.
pub fn parse_records(data: &[u8], path: &Path) -> Result<Vec<(u64, Vec<u8>)>, FormatError> {
    crate::formats::records::split_records(data, |cursor, at, len| read_record(cursor, path, at, len))
}
