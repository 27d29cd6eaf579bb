//! Runs a [`Plan`] on timely dataflow.
//!
//! Every worker builds the same dataflow: a timely input per source node, and per other node
//! one operator that calls the node's [`Task`](crate::operators::Task) on each arriving batch (inputs are concatenated
//! and tagged with their port). Sources emit only the identities their worker owns, so rows
//! stay where their identity lives and the output does not depend on the worker count; nodes
//! with [`Routing::Single`](crate::operators::Routing::Single) receive everything on worker 0. A task may also hand rows to a
//! given worker ([`Emit::rows_to`](crate::operators::Emit::rows_to)): a node that gathered everything on worker 0 sends each
//! identity back to the worker that owns it, so the nodes after it run on every worker again.
//! Sink commit rows travel to worker 0, whose commit step runs once every worker has finished.
//!
//! Memory is bounded: each source batch is its own timestamp (epoch), and a source may run at
//! most `max_in_flight` epochs ahead of what the whole dataflow has finished.
//!
//! Errors: a failing task records its error and raises the process-wide abort flag; sources
//! stop, every task is told to `abort` (removing temporary files), and the commit step is
//! skipped — also on worker 0 of another process, which learns of the failure through an
//! abort marker on the commit channel.

mod failure;
mod resume;
mod task;
mod worker;

use crate::batch::Batch;
use crate::plan::Plan;
use crate::report::{peak_rss_bytes, NodeStats, RunReport};
use failure::Failure;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes (timely cluster); 1 for a local run.
    pub processes: usize,
    /// This process's index.
    pub process_id: usize,
    /// File with one `host:port` per process (required when `processes > 1`).
    pub hostfile: Option<PathBuf>,
    /// Show progress.
    pub progress: bool,
    /// How many source batches may be in flight per source.
    pub max_in_flight: usize,
    /// Replace finished outputs of another plan (they stay readable until this run publishes).
    pub overwrite: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { workers: 1, processes: 1, process_id: 0, hostfile: None, progress: false, max_in_flight: 4, overwrite: false }
    }
}

/// How a successful run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The plan ran and its outputs were published.
    Ran,
    /// Every output of this plan was already published: nothing was run or written.
    UpToDate,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Timely could not start (bad hostfile, ports in use, ...).
    #[error("cannot start the dataflow: {0}")]
    Startup(String),
    /// One or more nodes failed.
    #[error("{}", .0.join("\n"))]
    Failed(Vec<String>),
}

/// Where a batch on an edge goes: [`HERE`] (the worker that made it, or worker 0 for
/// [`Routing::Single`] nodes), [`COMMIT`] (the node's commit step), or a worker index.
type Dest = u64;
/// The batch stays on the worker that made it.
const HERE: Dest = u64::MAX - 1;
/// A commit row.
const COMMIT: Dest = u64::MAX;

/// A batch on its way into a task: input port, destination, rows.
type Tagged = (u32, Dest, Batch);
/// A batch a task emitted: destination, rows.
type Out = (Dest, Batch);

fn timely_config(opts: &RunOptions) -> Result<timely::Config, RunError> {
    let communication = if opts.processes > 1 {
        let hostfile = opts.hostfile.as_ref().ok_or_else(|| RunError::Startup("--processes > 1 needs --hostfile".into()))?;
        let text = std::fs::read_to_string(hostfile)
            .map_err(|e| RunError::Startup(format!("cannot read hostfile {}: {e}", hostfile.display())))?;
        let addresses: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).take(opts.processes).map(String::from).collect();
        if addresses.len() < opts.processes {
            return Err(RunError::Startup(format!(
                "hostfile {} lists {} addresses, but --processes is {}",
                hostfile.display(),
                addresses.len(),
                opts.processes
            )));
        }
        if opts.process_id >= opts.processes {
            return Err(RunError::Startup(format!("--process-id {} must be below --processes {}", opts.process_id, opts.processes)));
        }
        timely::CommunicationConfig::Cluster { threads: opts.workers, process: opts.process_id, addresses, report: false, zerocopy: false }
    } else if opts.workers > 1 {
        timely::CommunicationConfig::Process(opts.workers)
    } else {
        timely::CommunicationConfig::Thread
    };
    Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
}

/// Whether every output of the plan was already published by this very plan (at least one
/// node has outputs, and each such node says so).
pub fn up_to_date(plan: &Plan) -> bool {
    let states: Vec<bool> = plan.nodes.iter().filter_map(|n| n.op.complete()).collect();
    !states.is_empty() && states.iter().all(|&c| c)
}

/// Publishes every node's staged outputs, in plan order (process 0, after a successful run).
fn publish(plan: &Plan) -> Result<(), RunError> {
    for &i in &plan.order {
        let n = &plan.nodes[i];
        n.op.publish().map_err(|e| RunError::Failed(vec![format!("{} (nothing after this node was published)", e.0)]))?;
    }
    Ok(())
}

/// Runs the plan; returns the report of this process (also when the run failed).
pub fn run(plan: Arc<Plan>, opts: &RunOptions) -> (RunReport, Result<Outcome, RunError>) {
    let started = Instant::now();
    let stats: Arc<Vec<Arc<NodeStats>>> = Arc::new(plan.nodes.iter().map(|_| Arc::new(NodeStats::default())).collect());
    let failure = Arc::new(Failure { process: opts.process_id, ..Failure::default() });
    if up_to_date(&plan) {
        let result = Ok(Outcome::UpToDate);
        return (run_report(&plan, opts, &stats, started, &result), result);
    }
    let progress = crate::progress::Progress::start(
        plan.nodes.iter().zip(stats.iter()).map(|(n, s)| (n.spec.id.clone(), n.info.name.to_string(), s.clone())).collect(),
        opts.progress,
    );
    let result = (|| {
        let resume = Arc::new(resume::prepare(&plan, opts)?);
        let config = timely_config(opts)?;
        let (p, s, f, max_in_flight) = (plan.clone(), stats.clone(), failure.clone(), opts.max_in_flight.max(1) as u64);
        let local_workers = opts.workers.max(1);
        let guards = timely::execute(config, move |worker| worker::run_worker(worker, &p, &s, &f, &resume, max_in_flight, local_workers))
            .map_err(RunError::Startup)?;
        for r in guards.join() {
            if let Err(e) = r {
                failure.errors.lock().map(|mut v| v.push(format!("worker failed: {e}"))).ok();
            }
        }
        let errors = failure.errors.lock().map(|v| v.clone()).unwrap_or_default();
        if !errors.is_empty() {
            return Err(RunError::Failed(errors));
        }
        if opts.process_id == 0 {
            publish(&plan)?;
        }
        Ok(Outcome::Ran)
    })();
    progress.finish();
    let report = run_report(&plan, opts, &stats, started, &result);
    (report, result)
}

/// The report of this process's part of a run.
fn run_report(plan: &Plan, opts: &RunOptions, stats: &[Arc<NodeStats>], started: Instant, result: &Result<Outcome, RunError>) -> RunReport {
    RunReport {
        pipeline: plan.spec.name.clone(),
        file: plan.spec.file.display().to_string(),
        workers: opts.workers,
        processes: opts.processes,
        process_id: opts.process_id,
        wall_seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        ok: result.is_ok(),
        errors: match result {
            Err(RunError::Failed(v)) => v.clone(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        },
        operators: plan.nodes.iter().zip(stats.iter()).map(|(n, s)| s.snapshot(&n.spec.id, n.info.name)).collect(),
    }
}
