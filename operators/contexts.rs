//! Identity contexts: the L2-normalised vectors that condition IDiff-Face sampling.
//!
//! * `contexts` (source): `kind: synthetic-uniform` draws `count` Gaussian vectors of width `dim`
//!   keyed by (pipeline seed, candidate index) and L2-normalises them (IDiff-Face's "synthetic
//!   uniform" contexts); `kind: file` reads an IDiff-Face dict `.npy`, a plain `(N, D)` `.npy`
//!   (both through `idflow_dataset::formats::contexts`) or a Parquet file with a `context` column
//!   (fixed-size or variable list of float32; optional `identity_name` column).
//! * `contexts-from-embeddings` (transform): turns upstream `embedding` rows into contexts — the
//!   second stage of the two-stage pipeline. The registry gives every operator one role, so the
//!   transform form is its own operator name.
//!
//! Both accept `max_similarity: τ`: a context is kept only if its cosine to every context kept
//! before it is ≤ τ (greedy, in candidate order), computed with blocked matrix products
//! ([`greedy_max_similarity`], screened with exact integer products); and `limit`, the most contexts kept. Kept contexts are numbered
//! densely (`identity` 0, 1, …). The filter needs every candidate, so the source computes the
//! same kept set on every worker (once per process) and then emits only the identities its
//! worker owns.

use super::support::columns::{tensor_array, tensor_field, tensor_rows};
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Routing, SourceTask, Started, Task,
    TaskContext,
};
use crate::batch::{column, id_value};
use crate::spec::ConfigError;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::formats::contexts::{normalise_rows, read_contexts};
use idflow_dataset::rng::KeyedRng;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use idflow_dataset::spread;
pub use spread::ScreenKernel;

/// Key of the random stream of synthetic contexts ("context" in ASCII), so it never collides
/// with the noise streams keyed (seed, identity, sample, step).
pub const CONTEXT_STREAM: u64 = 0x0063_6f6e_7465_7874;

/// Registry entry of the source.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "contexts",
        role: Role::Source,
        summary: "Identity contexts: synthetic uniform or from a file, optionally spread by max_similarity",
        params: PARAMS,
        build,
    }
}

/// Registry entry of the transform.
pub fn info_from_embeddings() -> OperatorInfo {
    OperatorInfo {
        name: "contexts-from-embeddings",
        role: Role::Transform,
        summary: "Turn upstream face embeddings into identity contexts (two-stage generation)",
        params: PARAMS_EMB,
        build: build_from_embeddings,
    }
}

const PARAMS: &str = include_str!("params/contexts.md");

const PARAMS_EMB: &str = include_str!("params/contexts-from-embeddings.md");

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    SyntheticUniform,
    File,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    kind: Kind,
    #[serde(default)]
    count: Option<usize>,
    #[serde(default = "default_dim")]
    dim: usize,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    max_similarity: Option<f32>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default = "default_batch_rows")]
    batch_rows: usize,
    #[serde(default)]
    allow_empty: bool,
}

fn default_dim() -> usize {
    512
}
fn default_batch_rows() -> usize {
    64
}

fn check_tau(node: &crate::spec::NodeSpec, tau: Option<f32>) -> Result<(), ConfigError> {
    match tau {
        Some(t) if !(-1.0..=1.0).contains(&t) => Err(node.error(Some("max_similarity"), "must be a cosine within -1..1")),
        _ => Ok(()),
    }
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    let n = &ctx.node;
    match p.kind {
        Kind::SyntheticUniform => {
            if p.count.is_none() {
                return Err(n.error(Some("count"), "missing: how many synthetic contexts to draw"));
            }
            if p.path.is_some() {
                return Err(n.error(Some("path"), "only for `kind: file`"));
            }
        }
        Kind::File => {
            if p.path.is_none() {
                return Err(n.error(Some("path"), "missing: the context file"));
            }
            if p.count.is_some() {
                return Err(n.error(Some("count"), "only for `kind: synthetic-uniform` (use `limit` for files)"));
            }
            if let Some(path) = p.path.as_deref().filter(|path| !path.exists()) {
                return Err(n.error(Some("path"), format!("{} does not exist", path.display())));
            }
        }
    }
    if p.dim == 0 {
        return Err(n.error(Some("dim"), "must be at least 1"));
    }
    if p.batch_rows == 0 {
        return Err(n.error(Some("batch_rows"), "must be at least 1"));
    }
    check_tau(n, p.max_similarity)?;
    Ok(Arc::new(ContextsSource { p, seed: ctx.seed, node: n.id.clone(), kept: OnceLock::new() }))
}

/// The schema of context rows.
pub fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("identity_name", DataType::Utf8, false),
        tensor_field("context", &[dim]),
    ]))
}

/// A set of candidate contexts (row-major, unit rows) with their names.
#[derive(Clone, Debug, Default)]
pub struct ContextSet {
    /// Name per row.
    pub names: Vec<String>,
    /// Width.
    pub dim: usize,
    /// `names.len() × dim` values.
    pub values: Vec<f32>,
}

impl ContextSet {
    /// Keeps only rows `keep` (in that order).
    fn select(&self, keep: &[usize]) -> ContextSet {
        let mut values = Vec::with_capacity(keep.len() * self.dim);
        for &i in keep {
            values.extend_from_slice(&self.values[i * self.dim..(i + 1) * self.dim]);
        }
        ContextSet { names: keep.iter().map(|&i| self.names[i].clone()).collect(), dim: self.dim, values }
    }

    /// Applies `max_similarity` and `limit`.
    fn spread(self, tau: Option<f32>, limit: Option<usize>) -> Result<ContextSet, String> {
        let n = self.names.len();
        match tau {
            Some(t) => {
                let keep = greedy_max_similarity(&self.values, self.dim, t, limit)?;
                Ok(self.select(&keep))
            }
            None => match limit {
                Some(l) if l < n => Ok(self.select(&(0..l).collect::<Vec<_>>())),
                _ => Ok(self),
            },
        }
    }
}

/// `count` synthetic-uniform contexts: candidate `i` is `normalize(N(0, I_dim))` drawn from the
/// stream keyed (seed, [`CONTEXT_STREAM`], i).
pub fn synthetic_uniform(seed: u64, count: usize, dim: usize) -> ContextSet {
    let mut values = vec![0f32; count * dim];
    for (i, row) in values.chunks_mut(dim).enumerate() {
        loop {
            KeyedRng::new(&[seed, CONTEXT_STREAM, i as u64]).fill_normal_f32(row);
            let norm = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
                break;
            }
        }
    }
    ContextSet { names: (0..count).map(|i| format!("{i:06}")).collect(), dim, values }
}

/// Reads a context file: `.parquet` (a `context` list column, optional `identity_name`) or the
/// `.npy` layouts of `idflow_dataset::formats::contexts`. Rows come back L2-normalised.
pub fn read_context_file(path: &Path) -> Result<ContextSet, String> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        return read_parquet_contexts(path);
    }
    let c = read_contexts(path).map_err(|e| e.to_string())?;
    Ok(ContextSet { names: c.names, dim: c.dim, values: c.values })
}

fn read_parquet_contexts(path: &Path) -> Result<ContextSet, String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| format!("{shown}: {e}"))?.build().map_err(|e| format!("{shown}: {e}"))?;
    let mut set = ContextSet::default();
    let mut dim = None;
    for b in reader {
        let b = b.map_err(|e| format!("{shown}: {e}"))?;
        let col = column(&b, "context").map_err(|e| format!("{shown}: {e}"))?;
        let names = b.column_by_name("identity_name").and_then(|c| c.as_string_opt::<i32>().cloned());
        for r in 0..b.num_rows() {
            let row: ArrayRef = match col.data_type() {
                DataType::FixedSizeList(..) => col.as_fixed_size_list().value(r),
                DataType::List(_) => col.as_list::<i32>().value(r),
                DataType::LargeList(_) => col.as_list::<i64>().value(r),
                other => return Err(format!("{shown}: column `context` is {other}, expected a list of float32")),
            };
            let idx = set.names.len();
            if col.is_null(r) {
                return Err(format!("{shown}: row {idx}: context is null"));
            }
            let vals = row.as_primitive_opt::<Float32Type>().ok_or_else(|| format!("{shown}: column `context` items are not float32"))?;
            let d = *dim.get_or_insert(vals.len());
            if vals.len() != d {
                return Err(format!("{shown}: row {idx}: context has {} values, earlier rows {d}", vals.len()));
            }
            set.values.extend(vals.values().iter());
            set.names.push(match &names {
                Some(n) if !n.is_null(r) => n.value(r).to_string(),
                _ => idx.to_string(),
            });
        }
    }
    set.dim = dim.unwrap_or(0);
    if set.dim > 0 {
        normalise_rows(&mut set.values, set.dim).map_err(|row| format!("{shown}: row {row}: context has zero or non-finite norm"))?;
    }
    Ok(set)
}

/// Greedy spread: walks the rows in order and keeps row `j` when `cos(j, k) ≤ tau` for every
/// kept `k` (rows should be unit-norm, so the cosine is the dot product: the f64 sum of the
/// f32 products, rounded to f32); stops after `limit` kept rows. Returns the kept row indices.
///
/// Screened with exact int8 products and a rigorous error bound, pairs near `tau` recomputed
/// exactly ([`spread`]): the result equals the row-by-row walk.
pub fn greedy_max_similarity(values: &[f32], dim: usize, tau: f32, limit: Option<usize>) -> Result<Vec<usize>, String> {
    spread::greedy(values, dim, tau, limit, ScreenKernel::Auto)
}

/// [`greedy_max_similarity`] with a chosen screening kernel (the result is the same; tests and
/// benchmarks compare them).
pub fn greedy_max_similarity_with(
    values: &[f32],
    dim: usize,
    tau: f32,
    limit: Option<usize>,
    kernel: ScreenKernel,
) -> Result<Vec<usize>, String> {
    spread::greedy(values, dim, tau, limit, kernel)
}

struct ContextsSource {
    p: Params,
    seed: u64,
    node: String,
    /// The kept set, computed once per process and shared by its workers.
    kept: OnceLock<Result<Arc<ContextSet>, String>>,
}

impl ContextsSource {
    fn compute(&self) -> Result<ContextSet, String> {
        let set = match self.p.kind {
            Kind::SyntheticUniform => synthetic_uniform(self.seed, self.p.count.unwrap_or(0), self.p.dim),
            Kind::File => {
                let path = self.p.path.as_deref().ok_or("no path")?;
                let set = read_context_file(path)?;
                if set.dim != self.p.dim && !set.names.is_empty() {
                    return Err(format!("{}: contexts have {} values but `dim` is {}", path.display(), set.dim, self.p.dim));
                }
                set
            }
        };
        let set = set.spread(self.p.max_similarity, self.p.limit)?;
        if set.names.is_empty() && !self.p.allow_empty {
            let source = match (&self.p.path, self.p.count) {
                (Some(path), _) if self.p.limit != Some(0) => format!("{} holds no contexts", path.display()),
                (None, Some(0)) => "`count` is 0".to_string(),
                _ => "`limit` is 0".to_string(),
            };
            return Err(format!(
                "no contexts to emit: {source}; an empty input is an error (set `allow_empty: true` on the node if it may be empty)"
            ));
        }
        Ok(set)
    }
}

impl Operator for ContextsSource {
    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(schema(self.p.dim))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let started = std::time::Instant::now();
        let set = self
            .kept
            .get_or_init(|| self.compute().map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        tracing::info!("node `{}`: {} contexts kept ({:.2?})", self.node, set.names.len(), started.elapsed());
        let identities: Vec<u32> = (0..set.names.len() as u32).filter(|&i| ctx.partition.owns(i as u64)).collect();
        Ok(Started::Source(Box::new(ContextsTask {
            set,
            identities,
            next: 0,
            batch_rows: self.p.batch_rows,
            node: self.node.clone(),
            ctx: ctx.clone(),
        })))
    }
}

struct ContextsTask {
    set: Arc<ContextSet>,
    identities: Vec<u32>,
    next: usize,
    batch_rows: usize,
    node: String,
    ctx: TaskContext,
}

impl SourceTask for ContextsTask {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.identities.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        if self.next >= self.identities.len() {
            return Ok(None);
        }
        let end = (self.next + self.batch_rows).min(self.identities.len());
        let ids = &self.identities[self.next..end];
        self.next = end;
        let batch = context_batch(&self.set, ids, ids)?;
        Ok(Some(super::support::finite::finite_rows(&self.ctx, &self.node, batch, "context")?))
    }
}

/// Rows `identity, identity_name, context` for set rows `rows`, numbered `identities`.
fn context_batch(set: &ContextSet, rows: &[u32], identities: &[u32]) -> OpResult<RecordBatch> {
    let d = set.dim;
    let mut values = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        values.extend_from_slice(&set.values[r as usize * d..(r as usize + 1) * d]);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(identities.to_vec())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&r| set.names[r as usize].as_str()))),
        Arc::new(tensor_array(values, d)?),
    ];
    Ok(RecordBatch::try_new(schema(d), cols)?)
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct EmbParams {
    #[serde(default = "default_embedding")]
    column: String,
    #[serde(default = "default_one")]
    samples_per_identity: u32,
    #[serde(default)]
    max_similarity: Option<f32>,
    #[serde(default)]
    limit: Option<usize>,
}

fn default_embedding() -> String {
    "embedding".into()
}
fn default_one() -> u32 {
    1
}

fn build_from_embeddings(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: EmbParams = ctx.node.parse_params()?;
    if p.samples_per_identity == 0 {
        return Err(ctx.node.error(Some("samples_per_identity"), "must be at least 1"));
    }
    check_tau(&ctx.node, p.max_similarity)?;
    Ok(Arc::new(FromEmbeddings { p, node: ctx.node.id.clone() }))
}

struct FromEmbeddings {
    p: EmbParams,
    node: String,
}

impl FromEmbeddings {
    /// Whether the node needs every row at once (spread or limit).
    fn gathers(&self) -> bool {
        self.p.max_similarity.is_some() || self.p.limit.is_some()
    }
}

impl Operator for FromEmbeddings {
    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32)), ColumnReq::new(&self.p.column, ColumnType::F32Tensor)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("contexts-from-embeddings needs an input")?;
        let f = input.field_with_name(&self.p.column).map_err(|_| format!("input has no column `{}`", self.p.column))?;
        match f.data_type() {
            DataType::FixedSizeList(_, n) => Ok(schema(*n as usize)),
            other => Err(format!("column `{}` is {other}, expected FixedSizeList<Float32, n>", self.p.column)),
        }
    }

    fn routing(&self) -> Routing {
        if self.gathers() {
            Routing::Single
        } else {
            Routing::Local
        }
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        Ok(Started::Task(Box::new(FromEmbeddingsTask {
            peers: ctx.partition.peers,
            p: self.p.clone(),
            gather: self.gathers(),
            node: self.node.clone(),
            rows: Vec::new(),
            dim: 0,
        })))
    }
}

struct FromEmbeddingsTask {
    /// Workers of the run (the kept identities go back to their owners).
    peers: usize,
    p: EmbParams,
    gather: bool,
    node: String,
    /// Gathered rows: (source identity, source sample, unit vector).
    rows: Vec<(u32, u32, Vec<f32>)>,
    dim: usize,
}

impl FromEmbeddingsTask {
    fn read(&mut self, batch: &RecordBatch) -> Result<Vec<(u32, u32, Vec<f32>)>, String> {
        let ids = column(batch, "identity")?;
        let samples = batch.column_by_name("sample");
        let (vals, d) = tensor_rows(batch, &self.p.column)?;
        self.dim = d;
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let identity = id_value(ids.as_ref(), i).ok_or("identity is not an integer")? as u32;
            let sample = match samples {
                Some(s) => id_value(s.as_ref(), i).ok_or("sample is not an integer")? as u32,
                None => 0,
            };
            let mut v = vals[i * d..(i + 1) * d].to_vec();
            normalise_rows(&mut v, d).map_err(|_| format!("identity {identity} sample {sample}: embedding has zero or non-finite norm"))?;
            out.push((identity, sample, v));
        }
        Ok(out)
    }

    fn emit(&self, rows: &[(u32, u32, Vec<f32>)], identities: Vec<u32>, out: &mut Emit) -> OpResult<()> {
        if let Some(b) = self.batch(rows, identities)? {
            out.rows.push(b);
        }
        Ok(())
    }

    /// Context rows for `rows`, numbered `identities` (`None` when empty).
    fn batch(&self, rows: &[(u32, u32, Vec<f32>)], identities: Vec<u32>) -> OpResult<Option<RecordBatch>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let set = ContextSet {
            names: rows.iter().map(|(i, s, _)| format!("{i}_{s}")).collect(),
            dim: self.dim,
            values: rows.iter().flat_map(|r| r.2.iter().copied()).collect(),
        };
        let idx: Vec<u32> = (0..rows.len() as u32).collect();
        Ok(Some(context_batch(&set, &idx, &identities)?))
    }
}

impl Task for FromEmbeddingsTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let rows = self.read(&batch).map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        if self.gather {
            self.rows.extend(rows);
            return Ok(());
        }
        let per = self.p.samples_per_identity;
        let mut ids = Vec::with_capacity(rows.len());
        for (i, s, _) in &rows {
            if *s >= per {
                return Err(OpError::new(format!(
                    "node `{}`: identity {i} sample {s}: sample >= samples_per_identity ({per}); set it to the upstream count",
                    self.node
                )));
            }
            let id = (*i as u64) * per as u64 + *s as u64;
            ids.push(u32::try_from(id).map_err(|_| OpError::new(format!("node `{}`: identity {id} does not fit in u32", self.node)))?);
        }
        self.emit(&rows, ids, out)
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        if !self.gather {
            return Ok(());
        }
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|r| (r.0, r.1));
        let values: Vec<f32> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
        let keep = match self.p.max_similarity {
            Some(t) => greedy_max_similarity(&values, self.dim.max(1), t, self.p.limit)
                .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?,
            None => (0..rows.len().min(self.p.limit.unwrap_or(usize::MAX))).collect(),
        };
        // Renumbered densely, then sent back to the workers that own the new identities, so
        // the nodes after this one run on every worker again.
        let peers = self.peers.max(1);
        for owner in 0..peers {
            let mine: Vec<usize> = (owner..keep.len()).step_by(peers).collect();
            for chunk in mine.chunks(256) {
                let rows: Vec<(u32, u32, Vec<f32>)> = chunk.iter().map(|&i| rows[keep[i]].clone()).collect();
                let ids = chunk.iter().map(|&i| i as u32).collect();
                if let Some(b) = self.batch(&rows, ids)? {
                    out.rows_to.push((owner, b));
                }
            }
        }
        Ok(())
    }
}
