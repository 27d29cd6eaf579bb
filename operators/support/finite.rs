//! Non-finite values (NaN, ±infinity) are refused by the node that produced or read them.
//!
//! A NaN embedding or latent passed on fails much later, in another node, with nothing to say
//! where it came from. Every node that computes or reads float tensors checks its output rows
//! here: a row holding a non-finite value is a bad row ([`TaskContext::bad_row`]) named by the
//! node, its identity / sample / path, the column and the first offending value — it fails the
//! run, or under `on_error: skip` it is dropped and counted.

use super::columns::tensor_rows;
use crate::operators::{OpError, OpResult, TaskContext};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;

/// Describes the first non-finite value of `row` (`NaN at index 3`), or `None` when every
/// value is finite.
pub fn first_non_finite(row: &[f32]) -> Option<String> {
    let (i, v) = row.iter().enumerate().find(|(_, v)| !v.is_finite())?;
    Some(format!("{} at index {i}", if v.is_nan() { "NaN".to_string() } else { v.to_string() }))
}

/// Names row `i` of `batch` for an error: identity and sample when present, the `path` when
/// present, else the row number.
pub fn row_name(batch: &RecordBatch, i: usize) -> String {
    let label = super::rows::row_label(batch, i);
    match crate::batch::str_column(batch, "path") {
        Ok(paths) if i < paths.len() => format!("{label} ({})", paths.value(i)),
        _ => label,
    }
}

/// Checks the float tensor column `column` of `batch` row by row. A row with a NaN or an
/// infinity is a bad row of node `node`: the error fails the task, or under `on_error: skip`
/// the row is dropped and counted. Returns the batch without the dropped rows.
pub fn finite_rows(ctx: &TaskContext, node: &str, batch: RecordBatch, column: &str) -> OpResult<RecordBatch> {
    let (values, width) = tensor_rows(&batch, column).map_err(|e| OpError::new(format!("node `{node}`: {e}")))?;
    if values.iter().all(|v| v.is_finite()) {
        return Ok(batch);
    }
    let mut keep = Vec::with_capacity(batch.num_rows());
    for (i, row) in values.chunks(width.max(1)).enumerate() {
        match first_non_finite(row) {
            None => keep.push(true),
            Some(what) => {
                let name = row_name(&batch, i);
                ctx.bad_row(OpError::new(format!("node `{node}`: {name}: `{column}` is not finite ({what})")))?;
                keep.push(false);
            }
        }
    }
    Ok(arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))?)
}

/// [`finite_rows`] for every `FixedSizeList<Float32>` column of `batch` (a source's output).
pub fn finite_tensor_columns(ctx: &TaskContext, node: &str, mut batch: RecordBatch) -> OpResult<RecordBatch> {
    let tensors: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32))
        .map(|f| f.name().clone())
        .collect();
    for name in tensors {
        batch = finite_rows(ctx, node, batch, &name)?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::support::columns::{tensor_array, tensor_field};
    use crate::operators::{Partition, ResumeSet, TaskCounters};
    use crate::spec::OnError;
    use arrow_array::{ArrayRef, UInt32Array};
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn ctx(on_error: OnError) -> TaskContext {
        TaskContext {
            partition: Partition { worker: 0, peers: 1 },
            on_error,
            counters: Arc::new(TaskCounters::default()),
            resume: Arc::new(ResumeSet::default()),
            local_workers: 1,
        }
    }

    fn batch(values: Vec<f32>) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("identity", DataType::UInt32, false), tensor_field("embedding", &[2])]);
        let rows = values.len() / 2;
        let cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from_iter_values(0..rows as u32)), Arc::new(tensor_array(values, 2).unwrap())];
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    #[test]
    fn names_the_first_non_finite_value() {
        assert_eq!(first_non_finite(&[1.0, 2.0]), None);
        assert_eq!(first_non_finite(&[1.0, f32::NAN]).as_deref(), Some("NaN at index 1"));
        assert_eq!(first_non_finite(&[f32::NEG_INFINITY]).as_deref(), Some("-inf at index 0"));
    }

    #[test]
    fn a_non_finite_row_fails_or_is_skipped_and_counted() {
        let b = batch(vec![0.6, 0.8, f32::NAN, 1.0, 1.0, 0.0]);
        let err = finite_rows(&ctx(OnError::Fail), "emb", b.clone(), "embedding").unwrap_err();
        assert_eq!(err.to_string(), "node `emb`: identity 1: `embedding` is not finite (NaN at index 0)");
        let skip = ctx(OnError::Skip);
        let kept = finite_rows(&skip, "emb", b, "embedding").unwrap();
        assert_eq!(kept.num_rows(), 2);
        assert_eq!(skip.counters.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
        let ok = batch(vec![0.6, 0.8]);
        assert_eq!(finite_tensor_columns(&ctx(OnError::Fail), "emb", ok).unwrap().num_rows(), 1);
    }
}
