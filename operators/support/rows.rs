//! Rows: how operator errors name the row they are about, and the per-row pass over an
//! encoded-image column that drops (or fails on) the rows it cannot use.

use crate::batch::{binary_column, id_value};
use crate::operators::{OpError, OpResult, TaskContext};
use arrow_array::{Array, BooleanArray, RecordBatch};

/// "identity I sample S" for row `i` when the batch has those columns, else "row i".
pub fn row_label(b: &RecordBatch, i: usize) -> String {
    let get = |name: &str| b.column_by_name(name).and_then(|c| (i < c.len()).then(|| id_value(c.as_ref(), i)).flatten());
    match (get("identity"), get("sample")) {
        (Some(id), Some(s)) => format!("identity {id} sample {s}"),
        (Some(id), None) => format!("identity {id}"),
        _ => format!("row {i}"),
    }
}

/// Runs `f` on the bytes of each row of the binary column `column`. A null row, or one `f`
/// refuses, is a bad row of node `node` (named by `label`): it fails the task, or under
/// `on_error: skip` it is dropped and counted. Returns the batch without the dropped rows and
/// `f`'s values for the kept ones, in order.
pub fn map_image_rows<T>(
    ctx: &TaskContext,
    node: &str,
    batch: RecordBatch,
    column: &str,
    label: impl Fn(&RecordBatch, usize) -> String,
    mut f: impl FnMut(&[u8]) -> Result<T, String>,
) -> OpResult<(RecordBatch, Vec<T>)> {
    let images = binary_column(&batch, column).map_err(|e| OpError::new(format!("node `{node}`: {e}")))?;
    let mut values = Vec::with_capacity(batch.num_rows());
    let mut keep = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let res = if images.is_null(i) { Err("image is null".to_string()) } else { f(images.value(i)) };
        match res {
            Ok(v) => {
                values.push(v);
                keep.push(true);
            }
            Err(e) => {
                ctx.bad_row(OpError::new(format!("node `{node}`: {}: {e}", label(&batch, i))))?;
                keep.push(false);
            }
        }
    }
    let batch = if keep.iter().all(|k| *k) { batch } else { arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))? };
    Ok((batch, values))
}
