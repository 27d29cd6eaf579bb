//! `bin`: a verification pair file (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, or the toy ones):
//! two rows per pair (`member` 0 and 1), pairs split among workers by pair number.

use super::listed::{Listed, RowBatcher};
use crate::operators::{OpResult, Partition};
use arrow_array::{ArrayRef, BinaryArray, BooleanArray, RecordBatch, UInt32Array, UInt8Array};
use arrow_schema::{DataType, SchemaRef};
use idflow_dataset::formats::verification_bin::read_bin;
use std::path::Path;
use std::sync::Arc;

/// Rows of a verification file.
pub fn schema() -> SchemaRef {
    super::required_columns(&[
        ("pair", DataType::UInt32),
        ("member", DataType::UInt8),
        ("issame", DataType::Boolean),
        ("image", DataType::Binary),
    ])
}

/// This worker's pairs, already in memory (verification files are small); rows (two per pair)
/// for all workers together are the source's total.
pub type BinTask = Listed<BinRows>;

/// Makes batches of `(pair, member, issame, image)` rows.
pub struct BinRows;

impl BinTask {
    /// Reads the file and keeps this worker's pairs.
    pub fn open(path: &Path, part: &Partition, batch_rows: usize) -> Result<Self, String> {
        let bin = read_bin(path).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut images = bin.images.into_iter();
        for (pair, &same) in bin.issame.iter().enumerate() {
            let (Some(a), Some(b)) = (images.next(), images.next()) else {
                return Err(format!("{}: {} pairs but fewer images", path.display(), bin.issame.len()));
            };
            if part.owns(pair as u64) {
                let pair = pair as u32;
                rows.push((pair, 0, same, a));
                rows.push((pair, 1, same, b));
            }
        }
        Ok(Listed::new(rows, 2 * bin.issame.len() as u64, batch_rows, BinRows))
    }
}

impl RowBatcher for BinRows {
    type Row = (u32, u8, bool, Vec<u8>);

    fn batch(&mut self, chunk: &[Self::Row]) -> OpResult<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.0))),
            Arc::new(UInt8Array::from_iter_values(chunk.iter().map(|r| r.1))),
            Arc::new(BooleanArray::from(chunk.iter().map(|r| r.2).collect::<Vec<_>>())),
            Arc::new(BinaryArray::from_iter_values(chunk.iter().map(|r| r.3.as_slice()))),
        ];
        Ok(RecordBatch::try_new(schema(), cols)?)
    }
}
