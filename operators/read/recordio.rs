//! `recordio`: insightface's MXNet RecordIO (`train.rec`, `train.idx`, `property`) with random
//! access through the index; identities are split among workers.

use crate::operators::{next_chunk, OpError, OpResult, Partition, SourceTask};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::formats::recordio::{FaceRecord, RecordIoReader};
use std::path::Path;
use std::sync::Arc;

/// Rows of a RecordIO dataset.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("sample", DataType::UInt32, false),
        Field::new("image", DataType::Binary, false),
    ]))
}

/// Reads this worker's identities.
pub struct RecordIoTask {
    reader: RecordIoReader,
    records: Vec<FaceRecord>,
    next: usize,
    batch_rows: usize,
    node: String,
    /// Records in the index, for all workers together.
    total: u64,
}

impl RecordIoTask {
    /// Opens `root` (a folder with `train.rec` + `train.idx`).
    pub fn open(root: &Path, part: &Partition, batch_rows: usize, node: String) -> Result<Self, String> {
        let mut reader = RecordIoReader::open_dir(root).map_err(|e| e.to_string())?;
        let all = reader.records().map_err(|e| e.to_string())?;
        let total = all.len() as u64;
        let records = all.into_iter().filter(|r| part.owns(r.identity as u64)).collect();
        Ok(Self { reader, records, next: 0, batch_rows, node, total })
    }
}

impl super::ListedSource for RecordIoTask {
    fn source_rows(&self) -> u64 {
        self.total
    }
}

impl SourceTask for RecordIoTask {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.records.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        let Some(range) = next_chunk(&mut self.next, self.records.len(), self.batch_rows) else { return Ok(None) };
        let (mut ids, mut samples, mut images) = (Vec::new(), Vec::new(), Vec::new());
        for r in &self.records[range] {
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
        Ok(Some(RecordBatch::try_new(schema(), cols)?))
    }
}
