//! Row labels: how operator errors name the row they are about.

use crate::batch::id_value;
use arrow_array::{Array, RecordBatch};

/// "identity I sample S" for row `i` when the batch has those columns, else "row i".
pub fn row_label(b: &RecordBatch, i: usize) -> String {
    let get = |name: &str| b.column_by_name(name).and_then(|c| (i < c.len()).then(|| id_value(c.as_ref(), i)).flatten());
    match (get("identity"), get("sample")) {
        (Some(id), Some(s)) => format!("identity {id} sample {s}"),
        (Some(id), None) => format!("identity {id}"),
        _ => format!("row {i}"),
    }
}
