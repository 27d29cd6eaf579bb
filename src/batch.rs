//! Record batches as they travel through timely: [`Batch`] wraps an `Arc<RecordBatch>` and
//! serialises as Arrow IPC stream bytes when a batch must cross a process boundary (within one
//! process it moves by pointer, nothing is serialised). Also small typed column accessors used
//! by the operators.

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::DataType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A record batch in flight.
#[derive(Clone, Debug)]
pub struct Batch(pub Arc<RecordBatch>);

impl Batch {
    /// Wraps a batch.
    pub fn new(b: RecordBatch) -> Self {
        Self(Arc::new(b))
    }

    /// The batch (cloned out of the Arc when shared: column data is reference-counted, so this
    /// copies only pointers).
    pub fn into_inner(self) -> RecordBatch {
        Arc::try_unwrap(self.0).unwrap_or_else(|a| (*a).clone())
    }
}

fn to_ipc(b: &RecordBatch) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &b.schema())?;
        w.write(b)?;
        w.finish()?;
    }
    Ok(buf)
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = to_ipc(&self.0).map_err(serde::ser::Error::custom)?;
        serde_bytes::Bytes::new(&bytes).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        let mut r = StreamReader::try_new(std::io::Cursor::new(bytes.into_vec()), None).map_err(serde::de::Error::custom)?;
        let b = r.next().ok_or_else(|| serde::de::Error::custom("empty IPC stream"))?.map_err(serde::de::Error::custom)?;
        Ok(Batch::new(b))
    }
}

/// A column by name, with a clear error when absent.
pub fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    b.column_by_name(name).ok_or_else(|| format!("column `{name}` is missing"))
}

/// A `UInt32` column.
pub fn u32_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array, String> {
    column(b, name)?.as_primitive_opt::<UInt32Type>().ok_or_else(|| format!("column `{name}` is not UInt32"))
}

/// A `UInt64` column.
pub fn u64_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a arrow_array::UInt64Array, String> {
    column(b, name)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| format!("column `{name}` is not UInt64"))
}

/// A `Utf8` column.
pub fn str_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, String> {
    column(b, name)?.as_string_opt::<i32>().ok_or_else(|| format!("column `{name}` is not Utf8"))
}

/// A `Binary` column.
pub fn binary_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray, String> {
    column(b, name)?.as_binary_opt::<i32>().ok_or_else(|| format!("column `{name}` is not Binary"))
}

/// Value `i` of a column that is either UInt32 or UInt64 (identity, sample).
pub fn id_value(a: &dyn Array, i: usize) -> Option<u64> {
    match a.data_type() {
        DataType::UInt32 => Some(a.as_primitive::<UInt32Type>().value(i) as u64),
        DataType::UInt64 => Some(a.as_primitive::<UInt64Type>().value(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{Field, Schema};

    #[test]
    fn ipc_round_trip_keeps_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("identity", DataType::UInt32, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(UInt32Array::from(vec![3, 1, 2]))]).unwrap();
        let bytes = to_ipc(&b).unwrap();
        let back: Batch = {
            let mut r = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
            Batch::new(r.next().unwrap().unwrap())
        };
        assert_eq!(*back.0, b);
    }
}
