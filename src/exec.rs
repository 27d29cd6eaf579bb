//! Runs a [`Plan`] on timely dataflow.
//!
//! Every worker builds the same dataflow: a timely input per source node, and per other node
//! one operator that calls the node's [`Task`] on each arriving batch (inputs are concatenated
//! and tagged with their port). Sources emit only the identities their worker owns, so rows
//! stay where their identity lives and the output does not depend on the worker count; nodes
//! with [`Routing::Single`] receive everything on worker 0. A task may also hand rows to a
//! given worker ([`Emit::rows_to`]): a node that gathered everything on worker 0 sends each
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

use crate::batch::Batch;
use crate::operators::Partition;
use crate::operators::{Emit, OpError, OpResult, PrepareContext, Resume, ResumeSet, SourceTask, Started, Task, TaskContext};
use crate::plan::Plan;
use crate::report::{peak_rss_bytes, NodeStats, RunReport};
use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Input, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

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

type Tagged = (u32, Dest, Batch);

/// Gives an [`Emit`]'s rows (counted) and commit rows to an output session.
macro_rules! emit_into {
    ($session:expr, $emit:expr, $st:expr) => {{
        let emit: Emit = $emit;
        let routed = emit.rows.into_iter().map(|b| (HERE, b)).chain(emit.rows_to.into_iter().map(|(w, b)| (w as Dest, b)));
        for (dest, b) in routed {
            $st.rows_out.fetch_add(b.num_rows() as u64, Relaxed);
            $st.batches_out.fetch_add(1, Relaxed);
            $session.give((dest, Batch::new(b)));
        }
        for b in emit.commit {
            $session.give((COMMIT, Batch::new(b)));
        }
    }};
}
type Out = (Dest, Batch);

/// Column name of the abort marker sent on commit channels.
const ABORT_MARKER: &str = "__idflow_abort__";

/// An abort marker naming the process it comes from.
fn abort_marker(process: usize) -> Batch {
    let schema = Arc::new(Schema::new(vec![Field::new(ABORT_MARKER, DataType::Utf8, false)]));
    Batch::new(RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![process.to_string()]))]).expect("static schema"))
}

/// Shared failure state of one process.
#[derive(Default)]
struct Failure {
    abort: AtomicBool,
    errors: Mutex<Vec<String>>,
    /// This process's index (named in the abort markers it sends).
    process: usize,
}

impl Failure {
    /// Records an error once (every worker of a node tends to fail the same way) and raises
    /// the abort flag.
    fn record(&self, node: &str, op: &str, e: OpError) {
        let msg = if e.0.contains("node `") { e.0 } else { format!("node `{node}` ({op}): {}", e.0) };
        if let Ok(mut v) = self.errors.lock() {
            if !v.contains(&msg) {
                v.push(msg);
            }
        }
        self.abort.store(true, Relaxed);
    }
}

/// A task standing in for a node that could not start: consumes and drops its input.
struct Drain;
impl Task for Drain {
    fn process(&mut self, _: usize, _: RecordBatch, _: &mut Emit) -> Result<(), OpError> {
        Ok(())
    }
}

struct SourceSlot {
    node: usize,
    handle: Option<InputHandle<u64, CapacityContainerBuilder<Vec<Batch>>>>,
    task: Box<dyn SourceTask>,
    epoch: u64,
}

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

/// Runs every node's `prepare`, then works out per node which `(identity, sample)` keys it need
/// not produce, walking the plan from its ends back to its sources:
///
/// - a sink that resumes (its written keys `W`) needs only what is not in `W`, whatever is below
///   it (it replays its kept rows downstream);
/// - a node that writes outputs but does not resume them, or has no consumers, needs everything;
/// - any other node needs what any of its consumers needs (the intersection of their done keys);
/// - a node that decided keys `X` for good (the filter's final rejections) adds `X`: nothing
///   below it will ever see those.
fn prepare(plan: &Plan, opts: &RunOptions) -> Result<Vec<Arc<ResumeSet>>, RunError> {
    let ctx = PrepareContext { process_id: opts.process_id, overwrite: opts.overwrite };
    let mut said: Vec<Option<Resume>> = Vec::with_capacity(plan.nodes.len());
    for n in &plan.nodes {
        let resume = n.op.prepare(&ctx).map_err(|e| {
            let msg = if e.0.contains("node `") { e.0 } else { format!("node `{}` ({}): {}", n.spec.id, n.info.name, e.0) };
            RunError::Failed(vec![msg])
        })?;
        match &resume {
            Some(Resume::Written(w)) if !w.is_empty() => {
                tracing::info!("node `{}`: resuming; {} samples already written", n.spec.id, w.len())
            }
            Some(Resume::Decided(d)) if !d.is_empty() => {
                tracing::info!("node `{}`: resuming; {} samples already decided", n.spec.id, d.len())
            }
            _ => {}
        }
        said.push(resume);
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); plan.nodes.len()];
    for (i, n) in plan.nodes.iter().enumerate() {
        for &u in &n.inputs {
            consumers[u].push(i);
        }
    }
    // `None`: the node must produce every key.
    let mut done: Vec<Option<ResumeSet>> = (0..plan.nodes.len()).map(|_| None).collect();
    for &i in plan.order.iter().rev() {
        let below = if consumers[i].is_empty() { None } else { ResumeSet::intersection(consumers[i].iter().map(|&c| done[c].as_ref())) };
        done[i] = match said[i].take() {
            Some(Resume::Written(w)) => Some(w),
            Some(Resume::Decided(x)) => {
                let mut d = below.unwrap_or_default();
                d.extend(x);
                Some(d)
            }
            // a node that writes outputs from scratch needs every key
            None if !plan.nodes[i].op.outputs().is_empty() => None,
            None => below,
        };
    }
    Ok(done.into_iter().map(|d| Arc::new(d.unwrap_or_default())).collect())
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
        let resume = Arc::new(prepare(&plan, opts)?);
        let config = timely_config(opts)?;
        let (p, s, f, max_in_flight) = (plan.clone(), stats.clone(), failure.clone(), opts.max_in_flight.max(1) as u64);
        let local_workers = opts.workers.max(1);
        let guards = timely::execute(config, move |worker| run_worker(worker, &p, &s, &f, &resume, max_in_flight, local_workers))
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

fn run_worker(
    worker: &mut timely::worker::Worker,
    plan: &Plan,
    stats: &[Arc<NodeStats>],
    failure: &Arc<Failure>,
    resume: &Arc<Vec<Arc<ResumeSet>>>,
    max_in_flight: u64,
    local_workers: usize,
) {
    let index = worker.index();
    let partition = Partition { worker: index, peers: worker.peers() };
    let probe = ProbeHandle::<u64>::new();
    let mut sources: Vec<SourceSlot> = Vec::new();

    worker.dataflow::<u64, _, _>(|scope| {
        let mut streams: Vec<Option<StreamVec<'_, u64, (Dest, Batch)>>> = vec![None; plan.nodes.len()];
        for &i in &plan.order {
            let node = &plan.nodes[i];
            let (id, op_name) = (node.spec.id.clone(), node.info.name);
            let st = stats[i].clone();
            let ctx = TaskContext {
                partition: partition.clone(),
                on_error: node.spec.on_error,
                counters: st.task.clone(),
                resume: resume[i].clone(),
                local_workers,
            };
            let started = node.op.start(&ctx).unwrap_or_else(|e| {
                failure.record(&id, op_name, e);
                if node.inputs.is_empty() {
                    Started::Source(Box::new(EmptySource))
                } else {
                    Started::Task(Box::new(Drain))
                }
            });
            let stream = match started {
                Started::Source(task) => {
                    if let Some(n) = task.expected_rows() {
                        st.expected_rows.fetch_add(n, Relaxed);
                        st.expected_known.store(true, Relaxed);
                    }
                    let (handle, stream) = scope.new_input::<Vec<Batch>>();
                    sources.push(SourceSlot { node: i, handle: Some(handle), task, epoch: 0 });
                    stream.map(|b| (HERE, b))
                }
                Started::Task(task) => {
                    let tagged: Vec<StreamVec<'_, u64, Tagged>> = node
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(port, &up)| {
                            let s = streams[up].clone().expect("inputs are built first");
                            s.map(move |(dest, b)| (port as u32, dest, b))
                        })
                        .collect();
                    let merged: StreamVec<'_, u64, Tagged> = scope.concatenate(tagged);
                    let fixed = node.op.routing().target(partition.peers).map(|w| w as u64);
                    let target = move |dest: Dest| match (fixed, dest) {
                        (Some(w), _) => w,
                        (None, HERE) => index as u64,
                        (None, w) => w,
                    };
                    let out = task_operator(merged, target, task, id.clone(), op_name, st, failure.clone());
                    if node.op.has_commit() {
                        let op = node.op.clone();
                        let fail = failure.clone();
                        let (cid, cop) = (id.clone(), op_name);
                        out.clone()
                            .flat_map(|(dest, b)| (dest == COMMIT).then_some(b))
                            .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                                Exchange::new(|_: &Batch| 0u64),
                                &format!("{id}/commit"),
                                move |_cap, _info| {
                                    let mut rows: Vec<RecordBatch> = Vec::new();
                                    let mut remote_abort: Option<String> = None;
                                    let mut done = false;
                                    move |(input, frontier), _output| {
                                        input.for_each(|_cap, data| {
                                            for b in data.drain(..) {
                                                if let Some(c) = b.0.column_by_name(ABORT_MARKER) {
                                                    let from = c.as_any().downcast_ref::<StringArray>().map(|a| a.value(0).to_string());
                                                    remote_abort = remote_abort.take().or(from);
                                                } else {
                                                    rows.push(b.into_inner());
                                                }
                                            }
                                        });
                                        if frontier.frontier().is_empty() && !done {
                                            done = true;
                                            if index == 0 && remote_abort.is_none() && !fail.abort.load(Relaxed) {
                                                if let Err(e) = op.commit(std::mem::take(&mut rows)) {
                                                    fail.record(&cid, cop, e);
                                                }
                                            } else if index == 0 && !fail.abort.load(Relaxed) {
                                                // Only an abort from another process: this one had no error to tell.
                                                let from = remote_abort.as_deref().unwrap_or("?");
                                                fail.record(
                                                    &cid,
                                                    cop,
                                                    OpError::new(format!(
                                                        "process {from} failed (its own output names the error); nothing was published"
                                                    )),
                                                );
                                            }
                                        }
                                    }
                                },
                            )
                            .probe_with(&probe);
                    }
                    out.flat_map(|(dest, b)| (dest != COMMIT).then_some((dest, b)))
                }
            };
            if node.consumers.is_empty() {
                streams[i] = Some(stream.probe_with(&probe));
            } else {
                streams[i] = Some(stream);
            }
        }
    });

    loop {
        let aborted = failure.abort.load(Relaxed);
        let frontier: Option<u64> = probe.with_frontier(|f| f.first().copied());
        let mut pushed = false;
        for s in sources.iter_mut() {
            let Some(handle) = s.handle.as_mut() else { continue };
            if aborted {
                s.task.abort();
                s.handle = None;
                continue;
            }
            if frontier.is_some_and(|f| s.epoch >= f + max_in_flight) {
                continue;
            }
            let node = &plan.nodes[s.node];
            let st = &stats[s.node];
            let t0 = Instant::now();
            let res = s.task.next_batch();
            st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
            match res {
                Ok(Some(b)) => {
                    st.rows_out.fetch_add(b.num_rows() as u64, Relaxed);
                    st.batches_out.fetch_add(1, Relaxed);
                    handle.send(Batch::new(b));
                    s.epoch += 1;
                    handle.advance_to(s.epoch);
                    pushed = true;
                }
                Ok(None) => s.handle = None,
                Err(e) => {
                    failure.record(&node.spec.id, node.info.name, e);
                    s.task.abort();
                    s.handle = None;
                }
            }
        }
        if sources.iter().all(|s| s.handle.is_none()) && probe.done() {
            break;
        }
        if pushed {
            worker.step();
        } else {
            worker.step_or_park(Some(Duration::from_millis(2)));
        }
    }
}

struct EmptySource;
impl SourceTask for EmptySource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, OpError> {
        Ok(None)
    }
}

/// The timely operator around one [`Task`].
fn task_operator<'s>(
    merged: StreamVec<'s, u64, Tagged>,
    target: impl Fn(Dest) -> u64 + 'static,
    mut task: Box<dyn Task>,
    id: String,
    op_name: &'static str,
    st: Arc<NodeStats>,
    failure: Arc<Failure>,
) -> StreamVec<'s, u64, Out> {
    let name = id.clone();
    let scope = merged.scope();
    merged.unary_frontier::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
        Exchange::new(move |t: &Tagged| target(t.1)),
        &name,
        move |cap, info| {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            let mut held = Some(cap);
            let mut failed = false;
            // a finish running on its own thread: its result, and how long it took
            let mut pending: Option<FinishSlot> = None;
            move |(input, frontier), output| {
                if failure.abort.load(Relaxed) && !failed {
                    failed = true;
                    task.abort();
                }
                input.for_each(|icap, data| {
                    let Some(c) = icap.retain_least(0) else { return };
                    let mut session = output.session(&c);
                    for (port, _dest, batch) in data.drain(..) {
                        if failed {
                            continue;
                        }
                        let batch = batch.into_inner();
                        st.rows_in.fetch_add(batch.num_rows() as u64, Relaxed);
                        let mut emit = Emit::default();
                        let t0 = Instant::now();
                        let res = task.process(port as usize, batch, &mut emit);
                        st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
                        match res {
                            Ok(()) => emit_into!(session, emit, st),
                            Err(e) => {
                                failed = true;
                                task.abort();
                                failure.record(&id, op_name, e);
                                session.give((COMMIT, abort_marker(failure.process)));
                            }
                        }
                    }
                });
                // A finish's result: its rows go downstream, an error fails the run.
                macro_rules! settle {
                    ($cap:expr, $res:expr) => {{
                        let mut session = output.session($cap);
                        match $res {
                            Ok(emit) => emit_into!(session, emit, st),
                            Err(e) => {
                                task.abort();
                                failure.record(&id, op_name, e);
                                session.give((COMMIT, abort_marker(failure.process)));
                            }
                        }
                    }};
                }
                let f = frontier.frontier();
                if f.is_empty() && pending.is_none() {
                    if let Some(c) = held.take() {
                        if failed || failure.abort.load(Relaxed) {
                            if !failed {
                                task.abort();
                            }
                            output.session(&c).give((COMMIT, abort_marker(failure.process)));
                        } else if let Some(job) = task.finish_in_background() {
                            // The capability stays held until the job's rows are out. A run that
                            // fails meanwhile waits for the job: it cannot be interrupted.
                            match spawn_finish(&id, job, activator.clone()) {
                                Ok(slot) => {
                                    pending = Some(slot);
                                    held = Some(c);
                                }
                                Err(e) => settle!(&c, Err(e)),
                            }
                        } else {
                            let mut emit = Emit::default();
                            let t0 = Instant::now();
                            let res = task.finish(&mut emit).map(|()| emit);
                            st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
                            settle!(&c, res);
                        }
                    }
                } else if let (Some(c), Some(t), None) = (held.as_mut(), f.first(), &pending) {
                    if c.time() < t {
                        c.downgrade(t);
                    }
                }
                if let Some((res, took)) = pending.as_ref().and_then(|slot| slot.lock().ok().and_then(|mut r| r.take())) {
                    pending = None;
                    st.busy_ns.fetch_add(took.as_nanos() as u64, Relaxed);
                    if let Some(c) = held.take() {
                        settle!(&c, res);
                    }
                }
            }
        },
    )
}

/// Where a background finish leaves its result and how long it took.
type FinishSlot = Arc<Mutex<Option<(OpResult<Emit>, Duration)>>>;

/// Starts a task's [`crate::operators::BackgroundFinish`] on a thread of its own; when it ends, its result
/// lands in the returned slot and the operator is activated to emit it.
fn spawn_finish(
    node: &str,
    job: crate::operators::BackgroundFinish,
    activator: timely::scheduling::activate::SyncActivator,
) -> Result<FinishSlot, OpError> {
    let slot = Arc::new(Mutex::new(None));
    let done = slot.clone();
    let label = node.to_string();
    std::thread::Builder::new()
        .name(format!("idflow-{node}"))
        .spawn(move || {
            let t0 = Instant::now();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                .unwrap_or_else(|_| Err(OpError::new(format!("node `{label}`: the background job panicked"))));
            if let Ok(mut r) = done.lock() {
                *r = Some((res, t0.elapsed()));
            }
            // the worker may already be gone (a failed run); nothing is left to tell then
            let _ = activator.activate();
        })
        .map_err(|e| OpError::new(format!("node `{node}`: cannot start a thread: {e}")))?;
    Ok(slot)
}
