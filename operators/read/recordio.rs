//! `recordio`: insightface's MXNet RecordIO (`train.rec`, `train.idx`, `property`) with random
//! access through the index; identities are split among workers.

use super::listed::{Listed, RowBatcher};
use crate::operators::{OpError, OpResult, Partition};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use idflow_dataset::formats::recordio::{FaceRecord, RecordIoReader};
use std::path::Path;
use std::sync::Arc;

/// Rows of a RecordIO dataset.
pub fn schema() -> SchemaRef {
    super::required_columns(&[("identity", DataType::UInt32), ("sample", DataType::UInt32), ("image", DataType::Binary)])
}

/// Reads this worker's identities; records in the index, for all workers together, are the
/// source's total.
pub type RecordIoTask = Listed<RecordIoRows>;

/// Reads a chunk's images through the index and makes their batch.
pub struct RecordIoRows {
    reader: RecordIoReader,
    node: String,
}

impl RecordIoTask {
    /// Opens `root` (a folder with `train.rec` + `train.idx`).
    pub fn open(root: &Path, part: &Partition, batch_rows: usize, node: String) -> Result<Self, String> {
        let mut reader = RecordIoReader::open_dir(root).map_err(|e| e.to_string())?;
        let all = reader.records().map_err(|e| e.to_string())?;
        let total = all.len() as u64;
        let records: Vec<_> = all.into_iter().filter(|r| part.owns(r.identity as u64)).collect();
        Ok(Listed::new(records, total, batch_rows, RecordIoRows { reader, node }))
    }
}

impl RowBatcher for RecordIoRows {
    type Row = FaceRecord;

    fn batch(&mut self, chunk: &[FaceRecord]) -> OpResult<RecordBatch> {
        let (mut ids, mut samples, mut images) = (Vec::new(), Vec::new(), Vec::new());
        for r in chunk {
            let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
            let (_, image) = self.reader.read_image(r.key).map_err(|e| fail(e.to_string()))?;
            ids.push(u32::try_from(r.identity).map_err(|_| fail(format!("identity {} is not a u32", r.identity)))?);
            samples.push(u32::try_from(r.sample).map_err(|_| fail(format!("sample {} is not a u32", r.sample)))?);
            images.push(image);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(UInt32Array::from(samples)),
            Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))),
        ];
        Ok(RecordBatch::try_new(schema(), cols)?)
    }
}
