//! `listed`: the shape every reader that lists its rows up front shares: this worker's rows
//! held in order, handed on `batch_rows` at a time, each chunk made a record batch by the
//! format's [`RowBatcher`].

use crate::operators::{next_chunk, OpResult, SourceTask};
use arrow_array::RecordBatch;

/// Makes one record batch of a chunk of a reader's listed rows.
pub trait RowBatcher {
    /// One listed row (or a reference to it, such as a record's place in a file).
    type Row;
    /// The batch for `chunk`, rows in order.
    fn batch(&mut self, chunk: &[Self::Row]) -> OpResult<RecordBatch>;
}

/// A source over this worker's listed rows.
pub struct Listed<B: RowBatcher> {
    rows: Vec<B::Row>,
    next: usize,
    batch_rows: usize,
    /// Rows for all workers together.
    total: u64,
    batcher: B,
}

impl<B: RowBatcher> Listed<B> {
    /// This worker's `rows` (of `total` for all workers together), batched by `batcher`.
    pub fn new(rows: Vec<B::Row>, total: u64, batch_rows: usize, batcher: B) -> Self {
        Self { rows, next: 0, batch_rows, total, batcher }
    }
}

impl<B: RowBatcher> super::ListedSource for Listed<B> {
    fn source_rows(&self) -> u64 {
        self.total
    }
}

impl<B: RowBatcher> SourceTask for Listed<B> {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.rows.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        let Some(range) = next_chunk(&mut self.next, self.rows.len(), self.batch_rows) else { return Ok(None) };
        self.batcher.batch(&self.rows[range]).map(Some)
    }
}
