//! `contexts`: identity context files (IDiff-Face's dict `.npy`, plain `(N, D)` `.npy`), each
//! row L2-normalised by the formats layer (the number of rows that needed it is logged).

use super::listed::{Listed, RowBatcher};
use crate::operators::{OpResult, Partition};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::formats::contexts::read_contexts;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The `context` column type for width `dim`.
pub fn context_field(dim: usize) -> Field {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Field::new("context", DataType::FixedSizeList(item, dim as i32), false)
        .with_metadata(HashMap::from([("shape".to_string(), format!("[{dim}]"))]))
}

/// Rows of a context file.
pub fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("identity_name", DataType::Utf8, false),
        context_field(dim),
    ]))
}

/// This worker's identities with their contexts; contexts in the file, for all workers together,
/// are the source's total.
pub type ContextsTask = Listed<ContextRows>;

/// Makes batches of `(identity, name, context)` rows of width `dim`.
pub struct ContextRows {
    dim: usize,
}

impl ContextsTask {
    /// Reads the file (checking its width) and keeps this worker's identities.
    pub fn open(path: &Path, dim: usize, part: &Partition, batch_rows: usize) -> Result<Self, String> {
        let c = read_contexts(path).map_err(|e| e.to_string())?;
        if c.dim != dim {
            return Err(format!("{}: contexts have width {}, but the node says `dim: {dim}`", path.display(), c.dim));
        }
        if c.renormalised > 0 && part.worker == 0 {
            tracing::info!("{}: {} of {} contexts were not unit-norm and were normalised", path.display(), c.renormalised, c.len());
        }
        let rows: Vec<_> = (0..c.len())
            .filter(|&i| part.owns(i as u64))
            .map(|i| (i as u32, c.names[i].clone(), c.values[i * dim..(i + 1) * dim].to_vec()))
            .collect();
        Ok(Listed::new(rows, c.len() as u64, batch_rows, ContextRows { dim }))
    }
}

impl RowBatcher for ContextRows {
    type Row = (u32, String, Vec<f32>);

    fn batch(&mut self, chunk: &[Self::Row]) -> OpResult<RecordBatch> {
        let values: Vec<f32> = chunk.iter().flat_map(|r| r.2.iter().copied()).collect();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::try_new(item, self.dim as i32, Arc::new(Float32Array::from(values)), None)?;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.1.as_str()))),
            Arc::new(list),
        ];
        Ok(RecordBatch::try_new(schema(self.dim), cols)?)
    }
}
