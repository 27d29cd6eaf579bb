//! Operators: one module per operator, all behind the [`Operator`] trait, all listed in
//! [`registry`] by one `operators!` line each; shared code in [`support`].
//!
//! An operator is built once per pipeline node from its YAML parameters (plan time: it declares
//! the columns it needs and the schema it produces, so every edge is checked before anything
//! runs), then started once per worker (run time: a [`SourceTask`] that produces record batches
//! for the worker's share of identities, or a [`Task`] that turns input batches into output
//! batches).

use crate::spec::{ConfigError, NodeSpec, OnError};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use std::path::PathBuf;
use std::sync::Arc;

pub mod support;

/// Declares the operator modules and the registry from one list: each line names a module
/// (`operators/<module>.rs`) and the registry entries it provides, in the order `idflow ops`
/// shows them.
macro_rules! operators {
    ($($module:ident: [$($info:ident),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every operator idflow knows.
        pub fn registry() -> &'static [OperatorInfo] {
            static REGISTRY: std::sync::OnceLock<Vec<OperatorInfo>> = std::sync::OnceLock::new();
            REGISTRY.get_or_init(|| vec![$($($module::$info()),+),+])
        }
    };
}

// Adding an operator: its file, its parameter table in `params/`, and one line here.
operators! {
    read: [info],
    toy_faces: [info],
    decode: [info],
    write_records: [info],
    contexts: [info, info_from_embeddings],
    diffuse: [info],
    decode_latent: [info],
    embed: [info],
    filter: [info],
    evaluate: [info],
    train: [info],
    encode_latent: [info],
}

/// An error while an operator runs (bad input data, I/O). Names what failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// Wraps any displayable error with context.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl From<arrow_schema::ArrowError> for OpError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self(format!("arrow: {e}"))
    }
}

/// Result of operator work.
pub type OpResult<T> = Result<T, OpError>;

/// What kind of node an operator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Produces rows; has no inputs.
    Source,
    /// Consumes rows from one or more inputs and emits rows.
    Transform,
    /// Consumes rows and writes them somewhere; its output (if any) is a summary.
    Sink,
}

/// Where a node's input rows must be for it to work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Wherever they are: rows stay on the worker that owns their identity.
    Local,
    /// All rows on worker 0 (operators that need the whole collection, e.g. a final report).
    Single,
    /// All rows on worker `w` modulo the worker count: like [`Routing::Single`], but lets
    /// independent whole-collection sinks (two `train` nodes, say) run side by side.
    Worker(usize),
}

impl Routing {
    /// The worker that receives the rows among `peers` workers, or `None` for [`Routing::Local`].
    pub fn target(self, peers: usize) -> Option<usize> {
        match self {
            Routing::Local => None,
            Routing::Single => Some(0),
            Routing::Worker(w) => Some(w % peers.max(1)),
        }
    }
}

/// The type a required input column must have.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnType {
    /// Exactly this Arrow type.
    Exact(DataType),
    /// `FixedSizeList<Float32, n>` for any n (tensors, embeddings, latents).
    F32Tensor,
    /// Binary or LargeBinary (encoded image bytes).
    Bytes,
}

impl ColumnType {
    /// Whether `dt` satisfies this requirement.
    pub fn accepts(&self, dt: &DataType) -> bool {
        match self {
            ColumnType::Exact(t) => t == dt,
            ColumnType::F32Tensor => matches!(dt, DataType::FixedSizeList(f, _) if f.data_type() == &DataType::Float32),
            ColumnType::Bytes => matches!(dt, DataType::Binary | DataType::LargeBinary),
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnType::Exact(t) => write!(f, "{t}"),
            ColumnType::F32Tensor => write!(f, "FixedSizeList<Float32, n>"),
            ColumnType::Bytes => write!(f, "Binary"),
        }
    }
}

/// One input column an operator needs.
#[derive(Clone, Debug)]
pub struct ColumnReq {
    /// Input port (0 for single-input operators).
    pub port: usize,
    /// Column name.
    pub name: String,
    /// Accepted types.
    pub ty: ColumnType,
}

impl ColumnReq {
    /// A requirement on port 0.
    pub fn new(name: &str, ty: ColumnType) -> Self {
        Self { port: 0, name: name.to_string(), ty }
    }
}

/// The worker's share of the work: identities are partitioned by `identity % peers`.
#[derive(Clone, Debug)]
pub struct Partition {
    /// This worker's global index.
    pub worker: usize,
    /// Number of workers over all processes.
    pub peers: usize,
}

impl Partition {
    /// Whether this worker owns `identity`.
    pub fn owns(&self, identity: u64) -> bool {
        (identity % self.peers as u64) as usize == self.worker
    }
}

/// Per-node facts the engine passes to an operator at build time.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The node's spec (id, params, error policy).
    pub node: NodeSpec,
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline seed.
    pub seed: u64,
    /// The pipeline file (for the manifest).
    pub pipeline_file: PathBuf,
    /// Hash of the whole planned pipeline (name, seed, every node's operator, inputs and
    /// parameters after overrides): an output written by a different plan is not resumed.
    pub fingerprint: String,
    /// How many nodes read this node's output.
    pub consumers: usize,
}

/// Work an interrupted earlier run already wrote: its `(identity, sample)` keys. Sources and
/// generators skip these, sinks drop them, so a rerun finishes the dataset without redoing or
/// duplicating anything.
#[derive(Debug, Default)]
pub struct ResumeSet {
    done: std::collections::HashSet<(u64, u64)>,
}

impl ResumeSet {
    /// A set of done keys.
    pub fn new(done: std::collections::HashSet<(u64, u64)>) -> Self {
        Self { done }
    }
    /// Whether `(identity, sample)` is already written.
    pub fn is_done(&self, identity: u64, sample: u64) -> bool {
        self.done.contains(&(identity, sample))
    }
    /// Every done key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.done.iter().copied()
    }
    /// Number of done keys.
    pub fn len(&self) -> usize {
        self.done.len()
    }
    /// Whether nothing is done yet.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
    /// The keys in every one of `sets`; `None` when any is `None` (a node that needs every key)
    /// or there are none.
    pub fn intersection<'a>(sets: impl IntoIterator<Item = Option<&'a ResumeSet>>) -> Option<ResumeSet> {
        let mut out: Option<ResumeSet> = None;
        for s in sets {
            let s = s?;
            out = Some(match out {
                None => ResumeSet { done: s.done.clone() },
                Some(o) => ResumeSet { done: o.done.intersection(&s.done).copied().collect() },
            });
        }
        out
    }
    /// Adds another set's keys.
    pub fn extend(&mut self, other: ResumeSet) {
        self.done.extend(other.done);
    }
}

/// What the engine tells [`Operator::prepare`].
#[derive(Clone, Debug, Default)]
pub struct PrepareContext {
    /// This process's index in a cluster run (0 for a local run); process 0 locks outputs.
    pub process_id: usize,
    /// Whether a finished output of another plan may be replaced (`--overwrite`).
    pub overwrite: bool,
}

/// What an interrupted earlier run of the same plan already settled.
#[derive(Debug)]
pub enum Resume {
    /// Samples a sink already wrote (at most one sink of a plan resumes).
    Written(ResumeSet),
    /// Samples already decided that never reach a sink (e.g. finally rejected by `filter`).
    Decided(ResumeSet),
}

/// Counters a task bumps while it runs (rows skipped under `on_error: skip`, etc.).
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Rows dropped because of bad input under `on_error: skip`.
    pub skipped: std::sync::atomic::AtomicU64,
    /// Nanoseconds spent inside model forward calls (`diffuse`'s denoiser, `embed`'s encoder).
    pub model_ns: std::sync::atomic::AtomicU64,
}

/// Run-time context of one task on one worker.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The worker's share.
    pub partition: Partition,
    /// The node's error policy.
    pub on_error: OnError,
    /// Shared counters for the report.
    pub counters: Arc<TaskCounters>,
    /// Keys this node need not produce: what an interrupted earlier run of the same plan
    /// already wrote or decided below it (empty on a fresh run).
    pub resume: Arc<ResumeSet>,
    /// Worker threads in this process (model operators size their ONNX Runtime thread pools
    /// and session counts by it).
    pub local_workers: usize,
}

impl TaskContext {
    /// Applies the error policy to one bad row: `Ok(())` (counted) under `skip`, else the error.
    pub fn bad_row(&self, err: OpError) -> OpResult<()> {
        match self.on_error {
            OnError::Skip => {
                tracing::warn!("skipped: {err}");
                self.counters.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            OnError::Fail => Err(err),
        }
    }
}

/// The next `batch`-sized range of a worker's `len` items, advancing `next`; `None` when done.
/// Sources that list their work up front hand it out with this.
pub fn next_chunk(next: &mut usize, len: usize, batch: usize) -> Option<std::ops::Range<usize>> {
    if *next >= len {
        return None;
    }
    let start = *next;
    *next = (start + batch.max(1)).min(len);
    Some(start..*next)
}

/// A source's per-worker producer.
pub trait SourceTask {
    /// Total rows this worker will produce, when known (for progress bars).
    fn expected_rows(&self) -> Option<u64> {
        None
    }
    /// The next batch, or `None` when done.
    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>>;
    /// Called when the run is aborted: remove anything temporary.
    fn abort(&mut self) {}
}

/// Output of one [`Task`] call: rows for downstream nodes, and summary rows for the node's
/// own [`Operator::commit`] (which runs once, on worker 0, after all workers finished).
#[derive(Default)]
pub struct Emit {
    /// Rows for downstream nodes.
    pub rows: Vec<RecordBatch>,
    /// Rows for downstream nodes that continue on the given worker (a cluster-wide index
    /// below [`Partition::peers`]), e.g. the owner of their identities. Downstream nodes with
    /// [`Routing::Single`] still receive them on worker 0.
    pub rows_to: Vec<(usize, RecordBatch)>,
    /// Rows for the commit step.
    pub commit: Vec<RecordBatch>,
}

/// The rest of a task's work, run by the engine on a thread of its own (see
/// [`Task::finish_in_background`]); it returns what [`Task::finish`] would have emitted.
pub type BackgroundFinish = Box<dyn FnOnce() -> OpResult<Emit> + Send + 'static>;

/// A transform's or sink's per-worker state.
pub trait Task {
    /// Processes one batch arriving on input `port`.
    fn process(&mut self, port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()>;
    /// All inputs are exhausted: flush what is buffered.
    fn finish(&mut self, _out: &mut Emit) -> OpResult<()> {
        Ok(())
    }
    /// All inputs are exhausted and what is left is long (a training run): hand it over as a
    /// job, which the engine runs on its own thread while this worker keeps serving the other
    /// nodes; the job's rows are emitted when it ends. `None` (the default) runs
    /// [`Task::finish`] on the worker instead.
    fn finish_in_background(&mut self) -> Option<BackgroundFinish> {
        None
    }
    /// The run failed elsewhere: remove anything temporary, write nothing final.
    fn abort(&mut self) {}
}

/// A started node on one worker.
pub enum Started {
    /// A source.
    Source(Box<dyn SourceTask>),
    /// A transform or sink.
    Task(Box<dyn Task>),
}

/// A configured operator instance (one per pipeline node).
pub trait Operator: Send + Sync {
    /// Input columns this operator reads.
    fn required_columns(&self) -> Vec<ColumnReq> {
        Vec::new()
    }
    /// The schema of the rows this node emits, given its input schemas (plan time).
    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String>;
    /// Where the input rows must be.
    fn routing(&self) -> Routing {
        Routing::Local
    }
    /// Runs once per process before the dataflow starts: takes the node's outputs (lock,
    /// staging folder, see [`crate::output`]) and collects what an interrupted run of the same
    /// plan already did, which every task then sees in [`TaskContext::resume`].
    fn prepare(&self, _ctx: &PrepareContext) -> OpResult<Option<Resume>> {
        Ok(None)
    }
    /// Whether this node's outputs were published by this very plan: `None` for a node without
    /// outputs. When every node with outputs says `Some(true)`, a run has nothing to do.
    fn complete(&self) -> Option<bool> {
        (!self.outputs().is_empty()).then_some(false)
    }
    /// Runs once (process 0) after the whole run succeeded: moves the staged outputs into place.
    fn publish(&self) -> OpResult<()> {
        Ok(())
    }
    /// Starts the node on one worker.
    fn start(&self, ctx: &TaskContext) -> OpResult<Started>;
    /// Runs once on worker 0 after every worker finished, with all commit rows.
    fn commit(&self, _rows: Vec<RecordBatch>) -> OpResult<()> {
        Ok(())
    }
    /// Whether the run has a commit step (so the engine routes commit rows).
    fn has_commit(&self) -> bool {
        false
    }
    /// What this node writes, as `(label, path)` pairs (a dataset folder, a report file, a
    /// plot); `idflow run` lists those that exist when the run finishes.
    fn outputs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        Vec::new()
    }
}

pub use support::param_table::ParamDoc;

/// A registry entry: how to build an operator from a node.
pub struct OperatorInfo {
    /// The `op:` name.
    pub name: &'static str,
    /// Role of the nodes it makes.
    pub role: Role,
    /// One-line description.
    pub summary: &'static str,
    /// Parameters: the operator's table in `operators/params/` (a Markdown table, one row per
    /// YAML field; read with [`OperatorInfo::param_docs`]).
    pub params: &'static str,
    /// Constructor.
    pub build: fn(&BuildContext) -> Result<Arc<dyn Operator>, ConfigError>,
}

impl OperatorInfo {
    /// The documented parameters, in table order, the shared model block expanded where the
    /// table says *inference*.
    pub fn param_docs(&self) -> Vec<ParamDoc> {
        support::param_table::parse(self.params)
    }
}

/// Looks an operator up by name.
pub fn find(name: &str) -> Option<&'static OperatorInfo> {
    registry().iter().find(|i| i.name == name)
}
