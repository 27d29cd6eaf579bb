//! `contexts`: identity context files (IDiff-Face's dict `.npy`, plain `(N, D)` `.npy`), each
//! row L2-normalised by the formats layer (the number of rows that needed it is logged).

use crate::operators::{next_chunk, OpResult, Partition, SourceTask};
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

/// This worker's identities with their contexts.
pub struct ContextsTask {
    rows: Vec<(u32, String, Vec<f32>)>,
    dim: usize,
    next: usize,
    batch_rows: usize,
    /// Contexts in the file, for all workers together.
    total: u64,
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
        let rows = (0..c.len())
            .filter(|&i| part.owns(i as u64))
            .map(|i| (i as u32, c.names[i].clone(), c.values[i * dim..(i + 1) * dim].to_vec()))
            .collect();
        Ok(Self { rows, dim, next: 0, batch_rows, total: c.len() as u64 })
    }
}

impl super::ListedSource for ContextsTask {
    fn source_rows(&self) -> u64 {
        self.total
    }
}

impl SourceTask for ContextsTask {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.rows.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        let Some(range) = next_chunk(&mut self.next, self.rows.len(), self.batch_rows) else { return Ok(None) };
        let chunk = &self.rows[range];
        let values: Vec<f32> = chunk.iter().flat_map(|r| r.2.iter().copied()).collect();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::try_new(item, self.dim as i32, Arc::new(Float32Array::from(values)), None)?;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.1.as_str()))),
            Arc::new(list),
        ];
        Ok(Some(RecordBatch::try_new(schema(self.dim), cols)?))
    }
}
