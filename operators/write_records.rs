//! `write-records`: writes the rows it receives as a sharded dataset and passes them on
//! unchanged (so an `evaluate` node can follow). This format is `parquet`:
//!
//! - zstd-compressed `part-NNNNN.parquet` shards of at most `rows_per_shard` rows; shard
//!   numbers are `seq * workers + worker`, unique without coordination;
//! - the image column is stored as the Hugging Face `datasets` image struct
//!   `{bytes: binary, path: string}` and the schema carries the `huggingface` metadata that
//!   `datasets` reads, so `load_dataset("parquet", ...)` shows images;
//! - the run writes into a hidden staging folder beside the output (`crate::output`), each
//!   shard under a temporary name renamed when complete; after every worker has finished,
//!   worker 0 writes `_manifest.json` (shards, row counts, sha256, pipeline and idflow version)
//!   there, and only when the whole run succeeded is the staging folder swapped into place, so
//!   readers see the previous complete dataset or the new one, never a mix or a fragment;
//! - a rerun of the same plan resumes the staging folder of an interrupted run; when the sink
//!   writes only some `columns` but nodes downstream read the others, those go to hidden
//!   `.replay/` sidecar shards in the staging folder, so resumed rows can be passed on whole.

use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, PrepareContext, Resume, ResumeSet, Role, Routing,
    Started, Task, TaskContext,
};

mod other;
mod resume;
use crate::batch::{str_column, u64_column};
use crate::fsutil::{atomic_write, sha256_file};
use crate::output::{Begun, OutputLock, StagedOutput, Stamp};
use crate::spec::ConfigError;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
pub(crate) use other::file_info;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "write-records",
        role: Role::Sink,
        summary: "Write rows as a sharded Parquet dataset (Hugging Face image layout) with a manifest",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/write-records.md");

/// Output formats of `write-records`.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Sharded Parquet with the Hugging Face image struct.
    Parquet,
    /// `root/<identity>/<sample>.<ext>` plus `images.lst`.
    ImageFolder,
    /// TFace TFRecord shards plus `<name>.index`.
    Tfrecord,
    /// insightface RecordIO (`train.rec`, `train.idx`, `property`).
    Recordio,
}

/// Name of the manifest file in an output directory.
pub const MANIFEST: &str = "_manifest.json";

/// Folder of the sidecar shards (in the staging folder) that hold the columns a `columns`
/// list leaves out, for replaying resumed rows downstream; removed when the dataset is published.
const REPLAY: &str = ".replay";

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_format")]
    format: Format,
    path: PathBuf,
    #[serde(default = "default_rows_per_shard")]
    rows_per_shard: usize,
    #[serde(default = "default_image_column")]
    image_column: String,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default = "default_zstd")]
    zstd_level: i32,
    #[serde(default = "default_name")]
    name: String,
    #[serde(default = "default_image_size")]
    image_size: [u32; 2],
}

fn default_name() -> String {
    "train".into()
}
fn default_image_size() -> [u32; 2] {
    [112, 112]
}

fn default_format() -> Format {
    Format::Parquet
}
fn default_rows_per_shard() -> usize {
    10_000
}
fn default_image_column() -> String {
    "image".into()
}
fn default_zstd() -> i32 {
    3
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    if p.name.is_empty() || p.name.contains(['/', '\\', '\t', '\n']) {
        return Err(ctx.node.error(Some("name"), "must be a plain file name"));
    }
    if p.rows_per_shard == 0 {
        return Err(ctx.node.error(Some("rows_per_shard"), "must be at least 1"));
    }
    if ZstdLevel::try_new(p.zstd_level).is_err() {
        return Err(ctx.node.error(Some("zstd_level"), "must be between 1 and 22"));
    }
    let (p_format, p_path) = (p.format, p.path.clone());
    Ok(Arc::new(WriteRecords {
        p,
        node: ctx.node.id.clone(),
        pipeline: ctx.pipeline.clone(),
        pipeline_file: ctx.pipeline_file.clone(),
        seed: ctx.seed,
        fingerprint: ctx.fingerprint.clone(),
        first_shard: std::sync::Mutex::new(0),
        kept_shards: std::sync::Mutex::new(Vec::new()),
        input_schema: std::sync::OnceLock::new(),
        has_consumers: ctx.consumers > 0,
        staged: (p_format != Format::ImageFolder).then(|| {
            StagedOutput::new(
                &p_path,
                Stamp { fingerprint: ctx.fingerprint.clone(), pipeline: ctx.pipeline.clone(), node: ctx.node.id.clone() },
            )
        }),
        lock: std::sync::Mutex::new(None),
    }))
}

struct WriteRecords {
    p: Params,
    node: String,
    pipeline: String,
    pipeline_file: PathBuf,
    seed: u64,
    fingerprint: String,
    /// First shard number of this run (set by `prepare` when resuming).
    first_shard: std::sync::Mutex<usize>,
    /// Shards kept from an interrupted run (set by `prepare`); their rows are passed on to
    /// downstream nodes so those see the whole dataset.
    kept_shards: std::sync::Mutex<Vec<PathBuf>>,
    /// The input schema (set at plan time).
    input_schema: std::sync::OnceLock<SchemaRef>,
    /// Whether any node reads this one's rows.
    has_consumers: bool,
    /// The staged output (every format but image folders, which are written in place).
    staged: Option<StagedOutput>,
    /// The output's lock, held from `prepare` to the end of the process (process 0).
    lock: std::sync::Mutex<Option<OutputLock>>,
}

impl WriteRecords {
    /// Whether rows of this output carry the `(identity, sample)` key a resume needs. Outputs
    /// without it (a `train` node's statistics, for one) are rewritten whole on every run.
    fn keyed(&self) -> bool {
        self.input_schema.get().is_some_and(|s| s.index_of("identity").is_ok() && s.index_of("sample").is_ok())
    }

    /// Where this run's tasks write: the staging folder, or the output itself for image folders.
    fn write_dir(&self) -> &Path {
        self.staged.as_ref().map_or(self.p.path.as_path(), |o| o.staging())
    }

    /// Whether an entry of the published folder is one this format writes (anything else is
    /// the user's, and the folder is never replaced).
    fn owns(&self, name: &str) -> bool {
        let shard = |prefix: &str, ext: &str| name.starts_with(prefix) && name.ends_with(ext);
        name == MANIFEST
            || match self.p.format {
                // `_progress.json` and `.part-*.tmp`: what earlier versions left in place
                Format::Parquet => shard("part-", ".parquet") || name == "_progress.json" || shard(".part-", ".tmp"),
                Format::Tfrecord => shard(&format!("{}-", self.p.name), ".tfrecord") || name == format!("{}.index", self.p.name),
                Format::Recordio => matches!(name, "train.rec" | "train.idx" | "property"),
                Format::ImageFolder => true,
            }
    }

    /// Whether resumed rows can be passed downstream whole: nothing reads them, or every input
    /// column is in the shards or their sidecars.
    fn replayable_from_published(&self) -> bool {
        !self.has_consumers || self.p.columns.is_none()
    }

    /// Hard-links (or copies) the shards of the published dataset of this plan into the fresh
    /// staging folder, so a rerun that must redo other nodes does not regenerate the dataset.
    fn stage_published_shards(&self, published: &Path, staging: &Path) -> Result<(), String> {
        for (name, _) in resume::shards_on_disk(published)? {
            let (from, to) = (published.join(&name), staging.join(&name));
            std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                .map_err(|e| format!("cannot stage {}: {e}", from.display()))?;
        }
        Ok(())
    }
}
/// Schema of the commit rows: one per file written.
pub(crate) fn shard_info_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("shard", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
}

/// The Hugging Face image struct type `{bytes: binary, path: string}`.
fn hf_image_type() -> DataType {
    DataType::Struct(Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)]))
}

/// The `datasets` feature description of one Arrow field.
fn hf_feature(f: &Field, is_image: bool) -> serde_json::Value {
    use serde_json::json;
    if is_image {
        return json!({"_type": "Image"});
    }
    let dtype = |t: &DataType| -> &'static str {
        match t {
            DataType::UInt8 => "uint8",
            DataType::UInt16 => "uint16",
            DataType::UInt32 => "uint32",
            DataType::UInt64 => "uint64",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::Float16 => "float16",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
            DataType::Boolean => "bool",
            DataType::Utf8 | DataType::LargeUtf8 => "string",
            DataType::Binary | DataType::LargeBinary => "binary",
            _ => "null",
        }
    };
    match f.data_type() {
        DataType::FixedSizeList(item, n) => {
            json!({"feature": {"dtype": dtype(item.data_type()), "_type": "Value"}, "length": n, "_type": "Sequence"})
        }
        DataType::List(item) => json!({"feature": {"dtype": dtype(item.data_type()), "_type": "Value"}, "_type": "Sequence"}),
        t => json!({"dtype": dtype(t), "_type": "Value"}),
    }
}

/// The schema written to disk for an input schema.
fn file_schema(p: &Params, input: &Schema) -> Result<SchemaRef, String> {
    let wanted: Vec<&Field> = match &p.columns {
        Some(cols) => cols
            .iter()
            .map(|c| input.field_with_name(c).map_err(|_| format!("`columns` names `{c}`, which the input does not have")))
            .collect::<Result<_, _>>()?,
        None => input.fields().iter().map(|f| f.as_ref()).collect(),
    };
    let mut features = serde_json::Map::new();
    let mut fields = Vec::new();
    for f in wanted {
        let is_image = f.name() == &p.image_column && matches!(f.data_type(), DataType::Binary | DataType::LargeBinary);
        features.insert(f.name().clone(), hf_feature(f, is_image));
        if is_image {
            fields.push(Field::new(f.name(), hf_image_type(), f.is_nullable()));
        } else {
            fields.push(f.clone());
        }
    }
    let hf = serde_json::json!({"info": {"features": features}});
    let meta = HashMap::from([("huggingface".to_string(), hf.to_string())]);
    Ok(Arc::new(Schema::new_with_metadata(fields, meta)))
}

impl Operator for WriteRecords {
    fn outputs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("dataset", self.p.path.clone())]
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        let image = ColumnReq::new(&self.p.image_column, ColumnType::Bytes);
        let identity = ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32));
        match self.p.format {
            Format::Parquet => match &self.p.columns {
                Some(cols) if cols.contains(&self.p.image_column) => vec![image],
                _ => Vec::new(),
            },
            Format::ImageFolder | Format::Tfrecord | Format::Recordio => vec![identity, image],
        }
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("write-records needs an input")?;
        if self.p.format == Format::Parquet {
            file_schema(&self.p, input)?;
        }
        let _ = self.input_schema.set(input.clone());
        Ok(input.clone())
    }

    /// TFRecord and RecordIO are single files (plus an index) written in identity order: all
    /// rows go to worker 0.
    fn routing(&self) -> Routing {
        match self.p.format {
            Format::Parquet | Format::ImageFolder => Routing::Local,
            Format::Tfrecord | Format::Recordio => Routing::Single,
        }
    }

    fn has_commit(&self) -> bool {
        true
    }

    /// Takes the output (lock on process 0, refusal of another plan's finished output unless
    /// `--overwrite`, never a folder holding the user's files) and opens its staging folder.
    /// Parquet with `(identity, sample)` keys resumes an interrupted run of the same plan: the
    /// completed shards are kept and their keys returned, so the run only adds what is missing.
    fn prepare(&self, ctx: &PrepareContext) -> OpResult<Option<Resume>> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let Some(out) = &self.staged else { return Ok(None) };
        if ctx.process_id == 0 {
            let lock = OutputLock::acquire(out.target(), &self.pipeline).map_err(|e| err(e.to_string()))?;
            *self.lock.lock().map_err(|_| err("lock poisoned".into()))? = Some(lock);
        }
        out.check_target(ctx.overwrite, &|n| self.owns(n)).map_err(|e| err(e.to_string()))?;
        let resumable = self.p.format == Format::Parquet && self.keyed();
        // A published dataset of this plan (another output of the plan is missing): reused.
        let reuse = resumable && out.is_published() && self.replayable_from_published();
        let populate = |dir: &Path| if reuse { self.stage_published_shards(out.target(), dir) } else { Ok(()) };
        let begun = out.open(ctx.process_id, resumable, &populate).map_err(|e| err(e.to_string()))?;
        if begun == Begun::Fresh && !reuse {
            return Ok(None);
        }
        let dir = out.staging();
        let (keys, max_index) = resume::done_keys(dir).map_err(err)?;
        let kept = resume::shards_on_disk(dir).map_err(err)?.into_iter().map(|(n, _)| dir.join(n)).collect();
        *self.kept_shards.lock().map_err(|_| err("lock poisoned".into()))? = kept;
        *self.first_shard.lock().map_err(|_| err("lock poisoned".into()))? = max_index.map_or(0, |m| m + 1);
        Ok(Some(Resume::Written(ResumeSet::new(keys))))
    }

    fn complete(&self) -> Option<bool> {
        Some(self.staged.as_ref().is_some_and(StagedOutput::is_published))
    }

    /// Drops the replay sidecars and swaps the staging folder into place.
    fn publish(&self) -> OpResult<()> {
        let Some(out) = &self.staged else { return Ok(()) };
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let replay = out.staging().join(REPLAY);
        if replay.exists() {
            std::fs::remove_dir_all(&replay).map_err(|e| err(format!("cannot remove {}: {e}", replay.display())))?;
        }
        out.publish().map_err(|e| err(e.to_string()))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let dir = self.write_dir().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| OpError::new(format!("node `{}`: cannot create {}: {e}", self.node, dir.display())))?;
        let node = self.node.clone();
        let task: Box<dyn Task> = match self.p.format {
            Format::Parquet => Box::new(ShardWriter {
                first_shard: *self.first_shard.lock().map_err(|_| OpError::new("lock poisoned"))?,
                replay: if self.has_consumers {
                    self.kept_shards.lock().map_err(|_| OpError::new("lock poisoned"))?.clone()
                } else {
                    Vec::new()
                },
                input_schema: self.input_schema.get().cloned(),
                resume: ctx.resume.clone(),
                dir: dir.clone(),
                sidecar: self.has_consumers && self.p.columns.is_some(),
                p: self.p.clone(),
                worker: ctx.partition.worker,
                peers: ctx.partition.peers,
                seq: 0,
                open: None,
                file_schema: None,
                rest_columns: None,
                node,
            }),
            Format::ImageFolder => Box::new(other::FolderWriter::new(self.p.path.clone(), self.p.image_column.clone(), node)),
            Format::Tfrecord => {
                Box::new(other::TfWriter::new(dir.clone(), self.p.name.clone(), self.p.rows_per_shard, self.p.image_column.clone(), node))
            }
            Format::Recordio => Box::new(other::RecordIoWriter::new(dir.clone(), self.p.image_size, self.p.image_column.clone(), node)),
        };
        Ok(Started::Task(task))
    }

    fn commit(&self, rows: Vec<RecordBatch>) -> OpResult<()> {
        let rows = if self.p.format == Format::ImageFolder { vec![self.write_image_list(&rows)?] } else { rows };
        let mut shards = Vec::new();
        for b in &rows {
            let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
            let (names, counts) = (str_column(b, "shard").map_err(err)?, u64_column(b, "rows").map_err(err)?);
            let (hashes, sizes) = (str_column(b, "sha256").map_err(err)?, u64_column(b, "bytes").map_err(err)?);
            for i in 0..b.num_rows() {
                shards.push(serde_json::json!({
                    "file": names.value(i), "rows": counts.value(i), "sha256": hashes.value(i), "bytes": sizes.value(i)
                }));
            }
        }
        let dir = self.write_dir();
        if self.p.format == Format::Parquet {
            // Shards kept from an interrupted run are part of the dataset too.
            let listed: std::collections::HashSet<String> = shards.iter().filter_map(|s| s["file"].as_str().map(String::from)).collect();
            for (name, rows) in resume::shards_on_disk(dir).map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))? {
                if !listed.contains(&name) {
                    let b = file_info(dir, &dir.join(&name), rows).map_err(OpError::new)?;
                    let (h, sz) = (str_column(&b, "sha256").map_err(OpError::new)?, u64_column(&b, "bytes").map_err(OpError::new)?);
                    shards.push(serde_json::json!({"file": name, "rows": rows, "sha256": h.value(0), "bytes": sz.value(0)}));
                }
            }
        }
        shards.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
        let total: u64 = shards.iter().filter_map(|s| s["rows"].as_u64()).sum();
        let pipeline_sha = sha256_file(&self.pipeline_file).ok();
        let format = serde_json::to_value(self.p.format).unwrap_or_default();
        let manifest = serde_json::json!({
            "format": format,
            "idflow_version": env!("CARGO_PKG_VERSION"),
            "pipeline": {"name": self.pipeline, "file": self.pipeline_file.display().to_string(), "sha256": pipeline_sha, "seed": self.seed},
            "node": self.node,
            "fingerprint": self.fingerprint,
            "total_rows": total,
            "shards": shards,
        });
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| OpError::new(e.to_string()))?;
        let path = dir.join(MANIFEST);
        atomic_write(&path, &text).map_err(|e| OpError::new(format!("node `{}`: cannot write {}: {e}", self.node, path.display())))
    }
}

/// One Parquet file being written under a temporary name.
struct OpenFile {
    writer: ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl OpenFile {
    fn create(tmp: PathBuf, path: PathBuf, schema: SchemaRef, zstd_level: i32) -> Result<Self, String> {
        let file = std::fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let level = ZstdLevel::try_new(zstd_level).map_err(|e| e.to_string())?;
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(level)).build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        Ok(Self { writer, tmp, path })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.writer.write(batch).map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))
    }

    /// Finishes, syncs and renames the file to its final name; on failure the temporary file is
    /// removed.
    fn close(self) -> Result<PathBuf, String> {
        let Self { writer, tmp, path } = self;
        let what = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", tmp.display());
        let res =
            writer.into_inner().map_err(|e| what(&e)).and_then(|file| file.sync_all().map_err(|e| what(&e))).and_then(|()| {
                std::fs::rename(&tmp, &path).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
            });
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map(|()| path)
    }

    /// Drops the unfinished file.
    fn discard(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

struct OpenShard {
    file: OpenFile,
    /// The columns `columns` leaves out, for replaying resumed rows downstream.
    sidecar: Option<OpenFile>,
    rows: usize,
}

struct ShardWriter {
    /// Shard numbers of this run start here (after a resumed run's shards).
    first_shard: usize,
    /// Shards of the interrupted run whose rows go downstream at the end.
    replay: Vec<PathBuf>,
    input_schema: Option<SchemaRef>,
    resume: Arc<ResumeSet>,
    /// The staging folder.
    dir: PathBuf,
    /// Whether to write replay sidecars (nodes downstream read columns `columns` leaves out).
    sidecar: bool,
    p: Params,
    worker: usize,
    peers: usize,
    seq: usize,
    open: Option<OpenShard>,
    file_schema: Option<SchemaRef>,
    /// Indices of the input columns the shards leave out (with `sidecar`).
    rest_columns: Option<Vec<usize>>,
    node: String,
}

impl ShardWriter {
    fn err(&self, e: impl std::fmt::Display) -> OpError {
        OpError::new(format!("node `{}`: {e}", self.node))
    }

    /// Converts an input batch to the on-disk layout.
    fn file_batch(&mut self, batch: &RecordBatch) -> OpResult<RecordBatch> {
        if self.file_schema.is_none() {
            let schema = file_schema(&self.p, &batch.schema()).map_err(|e| self.err(e))?;
            let input = batch.schema();
            let rest = input.fields().iter().enumerate().filter(|(_, f)| schema.index_of(f.name()).is_err()).map(|(i, _)| i);
            self.rest_columns = Some(rest.collect());
            self.file_schema = Some(schema);
        }
        let schema = self.file_schema.clone().expect("set above");
        let paths: Option<ArrayRef> = batch.column_by_name("path").filter(|c| c.data_type() == &DataType::Utf8).cloned();
        let mut cols = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let c = batch.column_by_name(f.name()).ok_or_else(|| self.err(format!("column `{}` disappeared", f.name())))?;
            if f.name() == &self.p.image_column && matches!(f.data_type(), DataType::Struct(_)) {
                let bytes = arrow_cast_binary(c).map_err(|e| self.err(e))?;
                let path: ArrayRef = paths.clone().unwrap_or_else(|| Arc::new(StringArray::new_null(batch.num_rows())));
                let DataType::Struct(fields) = f.data_type() else { unreachable!() };
                cols.push(Arc::new(StructArray::try_new(fields.clone(), vec![bytes, path], None)?) as ArrayRef);
            } else {
                cols.push(c.clone());
            }
        }
        Ok(RecordBatch::try_new(schema, cols)?)
    }

    /// The replay sidecar's part of an input batch, when sidecars are written.
    fn sidecar_batch(&self, batch: &RecordBatch) -> OpResult<Option<RecordBatch>> {
        match (&self.rest_columns, self.sidecar) {
            (Some(rest), true) if !rest.is_empty() => Ok(Some(batch.project(rest)?)),
            _ => Ok(None),
        }
    }

    fn open_shard(&mut self, sidecar_schema: Option<SchemaRef>) -> OpResult<()> {
        let index = self.first_shard + self.seq * self.peers + self.worker;
        self.seq += 1;
        let name = format!("part-{index:05}.parquet");
        let schema = self.file_schema.clone().ok_or_else(|| self.err("no schema"))?;
        let (dir, level) = (self.dir.clone(), self.p.zstd_level);
        let sidecar = match sidecar_schema {
            Some(schema) => {
                let replay = dir.join(REPLAY);
                std::fs::create_dir_all(&replay).map_err(|e| self.err(format!("cannot create {}: {e}", replay.display())))?;
                let tmp = replay.join(format!(".{name}.tmp"));
                Some(OpenFile::create(tmp, replay.join(&name), schema, level).map_err(|e| self.err(e))?)
            }
            None => None,
        };
        let file = OpenFile::create(dir.join(format!(".{name}.tmp")), dir.join(&name), schema, level).map_err(|e| self.err(e))?;
        self.open = Some(OpenShard { file, sidecar, rows: 0 });
        Ok(())
    }

    fn close_shard(&mut self, out: &mut Emit) -> OpResult<()> {
        let Some(shard) = self.open.take() else { return Ok(()) };
        // The sidecar gets its final name first: a shard's name promises its sidecar is whole.
        if let Some(sidecar) = shard.sidecar {
            if let Err(e) = sidecar.close() {
                shard.file.discard();
                return Err(self.err(e));
            }
        }
        let final_path = shard.file.close().map_err(|e| self.err(e))?;
        resume::crash_hook();
        out.commit.push(file_info(&self.dir, &final_path, shard.rows as u64).map_err(|e| self.err(e))?);
        Ok(())
    }
}

fn arrow_cast_binary(c: &ArrayRef) -> Result<ArrayRef, String> {
    match c.data_type() {
        DataType::Binary => Ok(c.clone()),
        DataType::LargeBinary => {
            let a = c.as_any().downcast_ref::<arrow_array::LargeBinaryArray>().ok_or("bad LargeBinary")?;
            Ok(Arc::new(arrow_array::BinaryArray::from_iter(a.iter())))
        }
        t => Err(format!("image column has type {t}, expected Binary")),
    }
}

impl Task for ShardWriter {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let batch = resume::drop_done(batch, &self.resume)?;
        let file_batch = self.file_batch(&batch)?;
        let sidecar_batch = self.sidecar_batch(&batch)?;
        let mut offset = 0;
        while offset < file_batch.num_rows() {
            if self.open.is_none() {
                self.open_shard(sidecar_batch.as_ref().map(|b| b.schema()))?;
            }
            let shard = self.open.as_mut().expect("opened above");
            let take = (self.p.rows_per_shard - shard.rows).min(file_batch.num_rows() - offset);
            let written = shard.file.write(&file_batch.slice(offset, take)).and_then(|()| match (&mut shard.sidecar, &sidecar_batch) {
                (Some(f), Some(b)) => f.write(&b.slice(offset, take)),
                _ => Ok(()),
            });
            written.map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
            shard.rows += take;
            offset += take;
            if shard.rows >= self.p.rows_per_shard {
                self.close_shard(out)?;
            }
        }
        out.rows.push(batch);
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        self.close_shard(out)?;
        if let (false, Some(schema)) = (self.replay.is_empty(), &self.input_schema) {
            let part = crate::operators::Partition { worker: self.worker, peers: self.peers };
            for shard in std::mem::take(&mut self.replay) {
                out.rows.extend(resume::replay_rows(&shard, schema, &self.p.image_column, &part).map_err(|e| self.err(e))?);
            }
        }
        Ok(())
    }

    fn abort(&mut self) {
        if let Some(shard) = self.open.take() {
            shard.file.discard();
            if let Some(s) = shard.sidecar {
                s.discard();
            }
        }
    }
}

impl WriteRecords {
    /// Writes `images.lst` (`path\tlabel`, sorted) from the image-folder commit rows.
    fn write_image_list(&self, rows: &[RecordBatch]) -> OpResult<RecordBatch> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let mut entries: Vec<(PathBuf, usize)> = Vec::new();
        for b in rows {
            let (paths, labels) = (str_column(b, "path").map_err(err)?, crate::batch::u32_column(b, "label").map_err(err)?);
            entries.extend((0..b.num_rows()).map(|i| (PathBuf::from(paths.value(i)), labels.value(i) as usize)));
        }
        entries.sort();
        let list = self.write_dir().join("images.lst");
        idflow_dataset::formats::image_folder::write_image_list(&list, &entries).map_err(|e| err(e.to_string()))?;
        file_info(self.write_dir(), &list, entries.len() as u64).map_err(err)
    }
}

/// Reads a manifest back (used by tests and by resume).
pub fn read_manifest(dir: &Path) -> Result<serde_json::Value, String> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", p.display()))
}
