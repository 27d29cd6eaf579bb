//! `evaluate`: judges a face encoder on verification benchmarks and an embedded synthetic
//! dataset on the metrics of the synthetic-data literature, and writes a report.
//!
//! Two modes, combinable in one node:
//!
//! 1. **Verification benchmarks** (`benchmarks:` + `encoder:`): every `.bin` pair file is
//!    embedded with the encoder (flip test-time augmentation by default) and scored with the
//!    insightface 10-fold protocol ([`bench`](mod@bench)); the results table has the seed's columns LFW,
//!    CFP-FP, CPLFW, AgeDB, CALFW and Average.
//! 2. **Dataset metrics** on the input rows (`identity` u32, `embedding`
//!    `FixedSizeList<Float32, d>`, optional `context` and `image`): genuine scores are the
//!    cosines of every within-identity pair, found by a differential-dataflow self-join
//!    ([`pairs`]); impostor scores the same number of seeded random cross-identity pairs (all
//!    of them when there are at most `max_impostor_pairs`); from them pyeer's EER, FMR100,
//!    FMR1000, AUC, means, deviations and FDR; DCFace's U_class and C_intra at `r`; and the
//!    mean cos(embedding, context) when contexts are present. Plots ([`plots`]): score
//!    histograms, a DET curve, and a contact sheet of the first identities' images.
//!
//! The node is a sink with [`Routing::Single`]: every row reaches worker 0, which keeps the
//! identity, embedding and context of each row (and the images of the contact sheet's
//! identities only) and does all the work in `finish()`. Outputs go to the `output` folder,
//! each file written atomically: `metrics.json` (everything), `benchmarks.md`,
//! `benchmarks.csv`, `dataset_metrics.md`, `score_histograms.png`, `det_curve.png`,
//! `contact_sheet.png`; the tables are also printed to stderr. The node emits one row per
//! benchmark.
//!
//! # Memory at scale (10 K identities × 50 samples)
//! * Embeddings: 500 K × 512 × 4 B ≈ 1 GB of f32, held once (plus one f64 norm per row).
//! * Genuine pairs: 10 K × 50·49/2 ≈ 12.25 M. The join streams them into the scorer a bounded
//!   chunk at a time and only the f64 scores are kept: 12.25 M × 8 B ≈ 98 MB, the same for the
//!   impostor scores. The exact pyeer statistics then sort one copy of each (another ≈ 196 MB,
//!   transient; see `idflow_dataset::metrics::scores`), so EER/FMR/AUC are exact, not read off
//!   a histogram. The DET curve and histograms are binned (4000 / `histogram_bins` bins).
//! * Uniqueness compares all class-centre pairs: 10 K² / 2 × 512 multiply-adds, `O(classes × d)`
//!   memory.
//!
//! Measured at exactly that size (512-d embeddings, optimised build, one thread on a busy
//! 2-core machine): the join alone streams the 12.25 M genuine pairs in 0.3 s; all dataset
//! metrics take 36 s; peak RSS 1.46 GB.

use super::support::model_ref;
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, PrepareContext, Resume, Role, Routing, Started,
    Task, TaskContext,
};
use crate::batch::{binary_column, column, id_value, u32_column};
use crate::spec::ConfigError;
use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub mod bench;
pub mod dataset;
pub mod pairs;
pub mod plots;

use bench::{BenchmarkResult, Encoder, EncoderParams};
use dataset::{dataset_json, dataset_markdown, evaluate_dataset, permute_rows, EmbeddedRows};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "evaluate",
        role: Role::Sink,
        summary: "Verification benchmarks (10-fold accuracy, VAL@FAR) and dataset metrics (EER, FMR, FDR, U_class, C_intra) with plots and tables",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/evaluate.md");

/// Files this operator writes into `output`.
pub const OUTPUT_FILES: &[&str] = &[
    "metrics.json",
    "benchmarks.md",
    "benchmarks.csv",
    "dataset_metrics.md",
    "score_histograms.png",
    "det_curve.png",
    "contact_sheet.png",
];

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    output: PathBuf,
    #[serde(default)]
    benchmarks: Vec<PathBuf>,
    #[serde(default)]
    encoder: Option<EncoderParams>,
    #[serde(default = "default_folds")]
    n_folds: usize,
    #[serde(default)]
    dataset_metrics: Option<bool>,
    #[serde(default = "default_identity")]
    identity_column: String,
    #[serde(default = "default_embedding")]
    embedding_column: String,
    #[serde(default = "default_context")]
    context_column: String,
    #[serde(default = "default_image")]
    image_column: String,
    #[serde(default = "default_sample")]
    sample_column: String,
    #[serde(default = "default_max_impostors")]
    max_impostor_pairs: u64,
    #[serde(default = "default_r")]
    r: f64,
    #[serde(default = "default_true")]
    plots: bool,
    #[serde(default = "default_bins")]
    histogram_bins: usize,
    #[serde(default = "default_contact")]
    contact_identities: usize,
    #[serde(default = "default_contact")]
    contact_samples: usize,
    #[serde(default = "default_thumbnail")]
    thumbnail: u32,
}

fn default_folds() -> usize {
    10
}
fn default_identity() -> String {
    "identity".into()
}
fn default_embedding() -> String {
    "embedding".into()
}
fn default_context() -> String {
    "context".into()
}
fn default_image() -> String {
    "image".into()
}
fn default_sample() -> String {
    "sample".into()
}
fn default_max_impostors() -> u64 {
    1_000_000
}
fn default_r() -> f64 {
    idflow_dataset::metrics::identity::DEFAULT_R
}
fn default_true() -> bool {
    true
}
fn default_bins() -> usize {
    100
}
fn default_contact() -> usize {
    8
}
fn default_thumbnail() -> u32 {
    96
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    match (&p.encoder, p.benchmarks.is_empty()) {
        (None, false) => return Err(ctx.node.error(Some("encoder"), "`benchmarks` need an `encoder` to embed their images")),
        (Some(_), true) => return Err(ctx.node.error(Some("benchmarks"), "an `encoder` is given but no `benchmarks` to run it on")),
        (Some(e), false) => {
            let cfg = e.config().map_err(|m| ctx.node.error(Some("encoder"), m))?;
            model_ref::check_checkpoint(&ctx.node, "encoder", &e.checkpoint, model_ref::Network::IResNet(&cfg))?;
            if let Some(missing) = p.benchmarks.iter().find(|b| !b.is_file()) {
                return Err(ctx.node.error(Some("benchmarks"), format!("{} does not exist", missing.display())));
            }
        }
        (None, true) => {}
    }
    if p.n_folds < 2 {
        return Err(ctx.node.error(Some("n_folds"), "must be at least 2"));
    }
    if !(-1.0..=1.0).contains(&p.r) {
        return Err(ctx.node.error(Some("r"), "is a cosine similarity: must be between -1 and 1"));
    }
    if p.histogram_bins == 0 {
        return Err(ctx.node.error(Some("histogram_bins"), "must be at least 1"));
    }
    if p.thumbnail == 0 {
        return Err(ctx.node.error(Some("thumbnail"), "must be at least 1"));
    }
    if p.benchmarks.is_empty() && p.dataset_metrics == Some(false) {
        return Err(ctx.node.error(Some("dataset_metrics"), "nothing to evaluate: no `benchmarks` and `dataset_metrics: false`"));
    }
    let stamp = crate::output::Stamp { fingerprint: ctx.fingerprint.clone(), pipeline: ctx.pipeline.clone(), node: ctx.node.id.clone() };
    Ok(Arc::new(Evaluate {
        staged: crate::output::StagedOutput::new(&p.output, stamp),
        lock: std::sync::Mutex::new(None),
        p: Arc::new(p),
        node: ctx.node.id.clone(),
        seed: ctx.seed,
        pipeline: ctx.pipeline.clone(),
        mode: std::sync::OnceLock::new(),
    }))
}

/// Which optional input columns the dataset metrics use (fixed at plan time).
#[derive(Clone, Copy, Debug, Default)]
struct DatasetColumns {
    enabled: bool,
    context: bool,
    image: bool,
    sample: bool,
}

struct Evaluate {
    p: Arc<Params>,
    node: String,
    seed: u64,
    pipeline: String,
    mode: std::sync::OnceLock<DatasetColumns>,
    /// The report folder, written through a staging folder and published with the run.
    staged: crate::output::StagedOutput,
    /// The report folder's lock, held from `prepare` to the end of the process (process 0).
    lock: std::sync::Mutex<Option<crate::output::OutputLock>>,
}

fn tensor_width(dt: &DataType) -> Option<i32> {
    match dt {
        DataType::FixedSizeList(f, n) if f.data_type() == &DataType::Float32 => Some(*n),
        _ => None,
    }
}

/// The rows the node emits: one per benchmark.
pub fn benchmark_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("benchmark", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("pairs", DataType::UInt64, false),
        Field::new("accuracy_mean", DataType::Float64, false),
        Field::new("accuracy_std", DataType::Float64, false),
        Field::new("best_thresholds", DataType::List(Arc::new(Field::new("item", DataType::Float64, true))), false),
        Field::new("val_at_far_1e_3", DataType::Float64, false),
        Field::new("val_std", DataType::Float64, false),
        Field::new("far_mean", DataType::Float64, false),
        Field::new("xnorm", DataType::Float64, false),
    ]))
}

impl Evaluate {
    fn columns_for(&self, input: &Schema) -> Result<DatasetColumns, String> {
        let p = &self.p;
        let has = |name: &str| input.field_with_name(name).ok();
        let wanted = match p.dataset_metrics {
            Some(w) => w,
            None => has(&p.identity_column).is_some() && has(&p.embedding_column).is_some(),
        };
        if !wanted {
            return Ok(DatasetColumns::default());
        }
        let id = has(&p.identity_column).ok_or_else(|| format!("dataset metrics need an identity column `{}`", p.identity_column))?;
        if id.data_type() != &DataType::UInt32 {
            return Err(format!("identity column `{}` is {}, expected UInt32", p.identity_column, id.data_type()));
        }
        let emb = has(&p.embedding_column).ok_or_else(|| format!("dataset metrics need an embedding column `{}`", p.embedding_column))?;
        let d = tensor_width(emb.data_type()).ok_or_else(|| {
            format!("embedding column `{}` is {}, expected FixedSizeList<Float32, d>", p.embedding_column, emb.data_type())
        })?;
        let context = match has(&p.context_column).map(|f| tensor_width(f.data_type())) {
            Some(Some(c)) if c == d => true,
            Some(Some(c)) => {
                return Err(format!(
                    "context column `{}` has width {c} but the embeddings have {d}: cosines need equal widths",
                    p.context_column
                ))
            }
            _ => false,
        };
        let image = has(&p.image_column).is_some_and(|f| matches!(f.data_type(), DataType::Binary));
        let sample = has(&p.sample_column).is_some_and(|f| matches!(f.data_type(), DataType::UInt32 | DataType::UInt64));
        Ok(DatasetColumns { enabled: true, context, image, sample })
    }
}

impl Operator for Evaluate {
    fn outputs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        [
            ("report", "metrics.json"),
            ("benchmark table", "benchmarks.md"),
            ("dataset metrics", "dataset_metrics.md"),
            ("score histograms", "score_histograms.png"),
            ("DET curve", "det_curve.png"),
            ("contact sheet", "contact_sheet.png"),
        ]
        .into_iter()
        .map(|(label, file)| (label, self.p.output.join(file)))
        .collect()
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        if self.p.dataset_metrics == Some(true) {
            vec![
                ColumnReq::new(&self.p.identity_column, ColumnType::Exact(DataType::UInt32)),
                ColumnReq::new(&self.p.embedding_column, ColumnType::F32Tensor),
            ]
        } else {
            Vec::new()
        }
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("evaluate needs an input")?;
        let cols = self.columns_for(input)?;
        if !cols.enabled && self.p.benchmarks.is_empty() {
            return Err(format!(
                "nothing to evaluate: no `benchmarks`, and the input has no `{}` + `{}` columns for dataset metrics",
                self.p.identity_column, self.p.embedding_column
            ));
        }
        let _ = self.mode.set(cols);
        Ok(benchmark_schema())
    }

    fn routing(&self) -> Routing {
        Routing::Single
    }

    /// Takes the report folder (lock, a fresh staging folder); a folder holding files this
    /// operator does not write is refused, one holding another plan's report needs `--overwrite`.
    fn prepare(&self, ctx: &PrepareContext) -> OpResult<Option<Resume>> {
        let err = |e: crate::output::OutputError| OpError::new(format!("node `{}`: {e}", self.node));
        if ctx.process_id == 0 {
            let lock = crate::output::OutputLock::acquire(self.staged.target(), &self.pipeline).map_err(err)?;
            *self.lock.lock().map_err(|_| OpError::new("lock poisoned"))? = Some(lock);
        }
        self.staged.check_target(ctx.overwrite, &|n| OUTPUT_FILES.contains(&n)).map_err(err)?;
        // Only worker 0 (process 0) writes the report.
        if ctx.process_id == 0 {
            self.staged.begin(false, &|_| Ok(())).map_err(err)?;
        }
        Ok(None)
    }

    fn complete(&self) -> Option<bool> {
        Some(self.staged.is_published())
    }

    fn publish(&self) -> OpResult<()> {
        self.staged.publish().map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        Ok(Started::Task(Box::new(EvalTask {
            dir: self.staged.staging().to_path_buf(),
            p: self.p.clone(),
            node: self.node.clone(),
            seed: self.seed,
            cols: self.mode.get().copied().unwrap_or_default(),
            worker: ctx.partition.worker,
            ctx: ctx.clone(),
            rows: Collected::default(),
            images: BTreeMap::new(),
        })))
    }
}

/// What worker 0 keeps of every input row.
#[derive(Default)]
struct Collected {
    /// `(identity, sample or arrival index, arrival index)` per row.
    keys: Vec<(u32, u64, u64)>,
    embeddings: Vec<f32>,
    contexts: Vec<f32>,
    dim: usize,
}

struct EvalTask {
    /// Where the report files go (the staging folder).
    dir: std::path::PathBuf,
    p: Arc<Params>,
    node: String,
    seed: u64,
    cols: DatasetColumns,
    worker: usize,
    ctx: TaskContext,
    rows: Collected,
    /// Images of the contact sheet's identities: the smallest identities seen so far, at most
    /// `contact_samples` each, keyed by sample order.
    images: BTreeMap<u32, BTreeMap<u64, Vec<u8>>>,
}

impl EvalTask {
    fn err(&self, msg: impl std::fmt::Display) -> OpError {
        OpError::new(format!("node `{}`: {msg}", self.node))
    }

    fn collect(&mut self, batch: &RecordBatch) -> OpResult<()> {
        let p = self.p.clone();
        let ids = u32_column(batch, &p.identity_column).map_err(|e| self.err(e))?;
        let emb = column(batch, &p.embedding_column).map_err(|e| self.err(e))?;
        let emb =
            emb.as_fixed_size_list_opt().ok_or_else(|| self.err(format!("column `{}` is not a fixed-size list", p.embedding_column)))?;
        let d = emb.value_length() as usize;
        let emb_values = emb.values().as_primitive_opt::<Float32Type>().ok_or_else(|| self.err("embedding items are not Float32"))?;
        let ctx_col = if self.cols.context {
            let c = column(batch, &p.context_column).map_err(|e| self.err(e))?;
            let c =
                c.as_fixed_size_list_opt().ok_or_else(|| self.err(format!("column `{}` is not a fixed-size list", p.context_column)))?;
            let v = c.values().as_primitive_opt::<Float32Type>().ok_or_else(|| self.err("context items are not Float32"))?;
            Some((c, v))
        } else {
            None
        };
        let samples = if self.cols.sample { batch.column_by_name(&p.sample_column) } else { None };
        let images = if self.cols.image { Some(binary_column(batch, &p.image_column).map_err(|e| self.err(e))?) } else { None };
        self.rows.dim = d;
        for i in 0..batch.num_rows() {
            let context_null = ctx_col.as_ref().is_some_and(|(c, _)| c.is_null(i));
            if ids.is_null(i) || emb.is_null(i) || context_null {
                self.ctx.bad_row(self.err(format!("row {i} of a batch has a null identity, embedding or context")))?;
                continue;
            }
            let arrival = self.rows.keys.len() as u64;
            let sample = samples.and_then(|s| id_value(s.as_ref(), i)).unwrap_or(arrival);
            let id = ids.value(i);
            let off = emb.value_offset_at(i);
            self.rows.embeddings.extend_from_slice(&emb_values.values()[off..off + d]);
            if let Some((c, v)) = &ctx_col {
                let off = c.value_offset_at(i);
                self.rows.contexts.extend_from_slice(&v.values()[off..off + d]);
            }
            self.rows.keys.push((id, sample, arrival));
            if let Some(img) = images {
                if !img.is_null(i) {
                    self.keep_image(id, sample, img.value(i));
                }
            }
        }
        Ok(())
    }

    fn keep_image(&mut self, id: u32, sample: u64, bytes: &[u8]) {
        let (k, m) = (self.p.contact_identities, self.p.contact_samples);
        if k == 0 || m == 0 {
            return;
        }
        let full_of_smaller = self.images.len() >= k && self.images.keys().next_back().is_some_and(|&last| id > last);
        if full_of_smaller {
            return;
        }
        let per_id = self.images.entry(id).or_default();
        per_id.insert(sample, bytes.to_vec());
        if per_id.len() > m {
            per_id.pop_last();
        }
        if self.images.len() > k {
            self.images.pop_last();
        }
    }

    fn write(&self, name: &str, data: &[u8]) -> OpResult<()> {
        let path = self.dir.join(name);
        crate::fsutil::atomic_write(&path, data).map_err(|e| self.err(format!("cannot write {}: {e}", path.display())))
    }
}

impl Task for EvalTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, _out: &mut Emit) -> OpResult<()> {
        if self.cols.enabled && batch.num_rows() > 0 {
            self.collect(&batch)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        if self.worker != 0 {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(format!("cannot create {}: {e}", self.dir.display())))?;
        let mut files = Vec::new();
        let mut report = serde_json::Map::new();
        report.insert("node".into(), json!(self.node));
        report.insert("seed".into(), json!(self.seed));

        // 1. Verification benchmarks.
        let mut results = Vec::new();
        if let Some(enc) = &self.p.encoder {
            let encoder = Encoder::load(enc).map_err(|e| self.err(e))?;
            for path in &self.p.benchmarks {
                let r = bench::run_benchmark(path, &encoder, self.p.n_folds)
                    .map_err(|e| self.err(format!("benchmark {}: {e}", path.display())))?;
                tracing::info!("{}: accuracy {:.4} ± {:.4}", r.column, r.report.accuracy_mean, r.report.accuracy_std);
                results.push(r);
            }
            let md = bench::markdown_table(encoder.name(), &results);
            self.write("benchmarks.md", md.as_bytes())?;
            self.write("benchmarks.csv", bench::csv_table(encoder.name(), &results).as_bytes())?;
            files.extend(["benchmarks.md", "benchmarks.csv"]);
            eprintln!("\nVerification benchmarks ({}):\n{md}", encoder.name());
            report.insert("benchmarks".into(), json!(results.iter().map(benchmark_json).collect::<Vec<_>>()));
            report.insert("table".into(), table_json(encoder.name(), &results));
        }

        // 2. Dataset metrics.
        if self.cols.enabled {
            let rows = std::mem::take(&mut self.rows);
            let input = EmbeddedRows::from_collected(rows, self.cols.context);
            let ev = evaluate_dataset(input, self.seed, self.p.max_impostor_pairs, self.p.r).map_err(|e| self.err(e))?;
            let md = dataset_markdown(&ev);
            self.write("dataset_metrics.md", md.as_bytes())?;
            files.push("dataset_metrics.md");
            eprintln!("\nDataset metrics:\n{md}");
            if self.p.plots {
                let hist = plots::score_histograms_png(&ev.genuine, &ev.impostor, self.p.histogram_bins).map_err(|e| self.err(e))?;
                self.write("score_histograms.png", &hist)?;
                let det = plots::det_curve_png(&ev.genuine, &ev.impostor, ev.stats.eer).map_err(|e| self.err(e))?;
                self.write("det_curve.png", &det)?;
                files.extend(["score_histograms.png", "det_curve.png"]);
                if !self.images.is_empty() {
                    let sheet: Vec<Vec<Vec<u8>>> =
                        std::mem::take(&mut self.images).into_values().map(|m| m.into_values().collect()).collect();
                    let png = plots::contact_sheet_png(&sheet, self.p.contact_samples, self.p.thumbnail).map_err(|e| self.err(e))?;
                    self.write("contact_sheet.png", &png)?;
                    files.push("contact_sheet.png");
                }
            }
            report.insert("dataset".into(), dataset_json(&ev, self.p.max_impostor_pairs));
        }

        files.push("metrics.json");
        report.insert("files".into(), json!(files));
        let text = serde_json::to_vec_pretty(&serde_json::Value::Object(report)).map_err(|e| self.err(e))?;
        self.write("metrics.json", &text)?;

        if !results.is_empty() {
            out.rows.push(benchmark_rows(&results).map_err(|e| self.err(e))?);
        }
        Ok(())
    }
}

fn benchmark_rows(results: &[BenchmarkResult]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let f64s = |f: &dyn Fn(&BenchmarkResult) -> f64| Arc::new(Float64Array::from(results.iter().map(f).collect::<Vec<_>>())) as ArrayRef;
    let mut thresholds = ListBuilder::new(Float64Builder::new());
    for r in results {
        thresholds.values().append_slice(&r.report.best_threshold_per_fold);
        thresholds.append(true);
    }
    RecordBatch::try_new(
        benchmark_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(results.iter().map(|r| r.name.as_str()))),
            Arc::new(StringArray::from_iter_values(results.iter().map(|r| r.column.as_str()))),
            Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.report.n_pairs as u64))),
            f64s(&|r| r.report.accuracy_mean),
            f64s(&|r| r.report.accuracy_std),
            Arc::new(thresholds.finish()),
            f64s(&|r| r.report.val_mean),
            f64s(&|r| r.report.val_std),
            f64s(&|r| r.report.far_mean),
            f64s(&|r| r.xnorm),
        ],
    )
}

fn benchmark_json(r: &BenchmarkResult) -> serde_json::Value {
    let t = &r.report;
    json!({
        "name": r.name,
        "column": r.column,
        "path": r.path.display().to_string(),
        "pairs": t.n_pairs,
        "n_folds": t.n_folds,
        "accuracy_mean": t.accuracy_mean,
        "accuracy_std": t.accuracy_std,
        "accuracy_per_fold": t.accuracy_per_fold,
        "best_threshold_index_per_fold": t.best_threshold_index_per_fold,
        "best_threshold_per_fold": t.best_threshold_per_fold,
        "val_at_far_1e_3_mean": t.val_mean,
        "val_at_far_1e_3_std": t.val_std,
        "far_mean": t.far_mean,
        "val_per_fold": t.val_per_fold,
        "far_per_fold": t.far_per_fold,
        "val_threshold_per_fold": t.val_threshold_per_fold,
        "xnorm": r.xnorm,
    })
}

fn table_json(model: &str, results: &[BenchmarkResult]) -> serde_json::Value {
    let cols = bench::table_columns(results);
    let (values, avg) = bench::table_values(results, &cols);
    let by_column: serde_json::Map<String, serde_json::Value> = cols.into_iter().zip(values).map(|(c, v)| (c, json!(v))).collect();
    json!({"model": model, "accuracy_percent": by_column, "average": avg})
}

impl EmbeddedRows {
    /// Orders the collected rows by (identity, sample, arrival), which does not depend on the
    /// number of workers that produced them. Rows are permuted in place (no second copy of the
    /// embeddings).
    fn from_collected(rows: Collected, with_contexts: bool) -> Self {
        let Collected { keys, mut embeddings, mut contexts, dim } = rows;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        permute_rows(&mut embeddings, dim, &order);
        if with_contexts {
            permute_rows(&mut contexts, dim, &order);
        }
        Self { identities: order.iter().map(|&i| keys[i].0).collect(), embeddings, dim, contexts: with_contexts.then_some(contexts) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_rows_are_ordered_by_identity_and_sample() {
        let rows = Collected {
            keys: vec![(2, 1, 0), (1, 0, 1), (2, 0, 2), (1, 1, 3)],
            embeddings: vec![21.0, 10.0, 20.0, 11.0],
            contexts: vec![-21.0, -10.0, -20.0, -11.0],
            dim: 1,
        };
        let e = EmbeddedRows::from_collected(rows, true);
        assert_eq!(e.identities, vec![1, 1, 2, 2]);
        assert_eq!(e.dim, 1);
        assert_eq!(e.embeddings, vec![10.0, 11.0, 20.0, 21.0]);
        assert_eq!(e.contexts.unwrap(), vec![-10.0, -11.0, -20.0, -21.0]);
    }
}
