//! Splits an in-memory file of framed records into `(offset, payload)` pairs, for the framings
//! ([`super::tfrecord`], [`super::recordio`]) that read one record at a time from a cursor.

use std::io::Cursor;

use super::FormatError;

/// Reads records back to back from `data` with `read_one(cursor, offset, data_len)`, which
/// returns the payload of the record at `offset` and leaves the cursor after it.
pub(crate) fn split_records<F>(data: &[u8], mut read_one: F) -> Result<Vec<(u64, Vec<u8>)>, FormatError>
where
    F: FnMut(&mut Cursor<&[u8]>, u64, u64) -> Result<Vec<u8>, FormatError>,
{
    let mut cursor = Cursor::new(data);
    let len = data.len() as u64;
    let mut out = Vec::new();
    while cursor.position() < len {
        let at = cursor.position();
        let payload = read_one(&mut cursor, at, len)?;
        out.push((at, payload));
    }
    Ok(out)
}
