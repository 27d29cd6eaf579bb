//! The failure state a process shares between its workers, and the abort marker that tells the
//! commit steps of other processes that this one failed.

use crate::batch::Batch;
use crate::operators::OpError;
use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Column name of the abort marker sent on commit channels.
pub(super) const ABORT_MARKER: &str = "__idflow_abort__";

/// An abort marker naming the process it comes from.
pub(super) fn abort_marker(process: usize) -> Batch {
    let schema = Arc::new(Schema::new(vec![Field::new(ABORT_MARKER, DataType::Utf8, false)]));
    Batch::new(RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![process.to_string()]))]).expect("static schema"))
}

/// Shared failure state of one process.
#[derive(Default)]
pub(super) struct Failure {
    /// Raised by the first error; sources stop and tasks abort.
    pub(super) abort: AtomicBool,
    /// Every distinct error message.
    pub(super) errors: Mutex<Vec<String>>,
    /// This process's index (named in the abort markers it sends).
    pub(super) process: usize,
}

impl Failure {
    /// Records an error once (every worker of a node tends to fail the same way) and raises
    /// the abort flag.
    pub(super) fn record(&self, node: &str, op: &str, e: OpError) {
        let msg = if e.0.contains("node `") { e.0 } else { format!("node `{node}` ({op}): {}", e.0) };
        if let Ok(mut v) = self.errors.lock() {
            if !v.contains(&msg) {
                v.push(msg);
            }
        }
        self.abort.store(true, Relaxed);
    }
}
