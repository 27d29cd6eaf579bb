//! Run statistics: per-node counters shared by the workers of a process, the `--report` JSON
//! and the one-screen summary table printed at the end of a run.

use crate::operators::TaskCounters;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Counters of one node, summed over the workers of this process.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Rows received.
    pub rows_in: AtomicU64,
    /// Rows emitted downstream.
    pub rows_out: AtomicU64,
    /// Batches emitted downstream.
    pub batches_out: AtomicU64,
    /// Nanoseconds spent inside the operator's own code.
    pub busy_ns: AtomicU64,
    /// Rows this node's sources expect to emit (for progress totals), when known.
    pub expected_rows: AtomicU64,
    /// Whether `expected_rows` is known.
    pub expected_known: std::sync::atomic::AtomicBool,
    /// Counters the task bumps itself.
    pub task: Arc<TaskCounters>,
}

/// One node's line in the report.
#[derive(Debug, Serialize, Clone)]
pub struct NodeReport {
    /// Node id.
    pub node: String,
    /// Operator name.
    pub op: String,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted.
    pub rows_out: u64,
    /// Batches emitted.
    pub batches: u64,
    /// Seconds inside the operator (all workers of this process).
    pub busy_seconds: f64,
    /// Rows skipped under `on_error: skip`.
    pub skipped: u64,
    /// Seconds inside model forward calls (`diffuse`'s denoiser, `embed`'s encoder; 0 for
    /// operators without a model), all workers of this process. Part of `busy_seconds`.
    pub model_seconds: f64,
}

/// The `--report` file.
#[derive(Debug, Serialize, Clone)]
pub struct RunReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file.
    pub file: String,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// This process.
    pub process_id: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Peak resident set size of this process, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the run succeeded.
    pub ok: bool,
    /// Errors, when it failed.
    pub errors: Vec<String>,
    /// Per-node figures (this process only).
    pub operators: Vec<NodeReport>,
}

impl NodeStats {
    /// A snapshot for the report.
    pub fn snapshot(&self, node: &str, op: &str) -> NodeReport {
        NodeReport {
            node: node.to_string(),
            op: op.to_string(),
            rows_in: self.rows_in.load(Relaxed),
            rows_out: self.rows_out.load(Relaxed),
            batches: self.batches_out.load(Relaxed),
            busy_seconds: Duration::from_nanos(self.busy_ns.load(Relaxed)).as_secs_f64(),
            skipped: self.task.skipped.load(Relaxed),
            model_seconds: Duration::from_nanos(self.task.model_ns.load(Relaxed)).as_secs_f64(),
        }
    }
}

/// Peak resident set size (VmHWM) of this process, on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The end-of-run summary table.
pub fn summary_table(r: &RunReport) -> String {
    let mut s = String::new();
    let w = r.operators.iter().map(|o| o.node.len()).max().unwrap_or(4).max(4);
    s.push_str(&format!(
        "{:<w$}  {:<14} {:>10} {:>10} {:>8} {:>9} {:>10}\n",
        "node", "op", "rows in", "rows out", "skipped", "busy s", "rows/s"
    ));
    for o in &r.operators {
        let rate = if o.busy_seconds > 0.0 { format!("{:.0}", o.rows_out as f64 / o.busy_seconds) } else { "-".into() };
        s.push_str(&format!(
            "{:<w$}  {:<14} {:>10} {:>10} {:>8} {:>9.2} {:>10}\n",
            o.node, o.op, o.rows_in, o.rows_out, o.skipped, o.busy_seconds, rate
        ));
    }
    let rss = r.peak_rss_bytes.map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)).unwrap_or_else(|| "n/a".into());
    s.push_str(&format!(
        "{} in {:.2} s on {} worker(s) x {} process(es); peak RSS {}\n",
        if r.ok { "finished" } else { "FAILED" },
        r.wall_seconds,
        r.workers,
        r.processes,
        rss
    ));
    s
}
