//! `write-records`: writes the rows it receives as a sharded dataset and passes them on
//! unchanged (so an `evaluate` node can follow). This format is `parquet`:
//!
//! - zstd-compressed `part-NNNNN.parquet` shards of at most `rows_per_shard` rows; shard
//!   numbers are `seq * workers + worker`, unique without coordination;
//! - the image column is stored as the Hugging Face `datasets` image struct
//!   `{bytes: binary, path: string}` and the schema carries the `huggingface` metadata that
//!   `datasets` reads, so `load_dataset("parquet", ...)` shows images;
//! - each shard is written under a hidden temporary name and renamed when complete, so no
//!   partial shard is ever visible; a failed run removes its temporary files;
//! - after every worker has finished, worker 0 writes `_manifest.json` (shards, row counts,
//!   sha256, pipeline and idflow version), itself atomically.

use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, ParamDoc, ResumeSet, Role, Routing, Started,
    Task, TaskContext,
};

mod other;
mod resume;
use crate::batch::{str_column, u64_column};
use crate::fsutil::{atomic_write, sha256_file};
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

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "format", ty: "string", default: "parquet", doc: "parquet | image-folder | tfrecord | recordio" },
    ParamDoc { name: "path", ty: "path", default: "required", doc: "output directory" },
    ParamDoc { name: "rows_per_shard", ty: "integer", default: "10000", doc: "maximum rows per shard file" },
    ParamDoc {
        name: "image_column",
        ty: "string",
        default: "image",
        doc: "encoded-image column stored as the HF image struct (if present)",
    },
    ParamDoc { name: "columns", ty: "list of strings", default: "all", doc: "columns to write (others are passed on but not written)" },
    ParamDoc { name: "zstd_level", ty: "integer", default: "3", doc: "zstd compression level (1-22)" },
    ParamDoc {
        name: "name",
        ty: "string",
        default: "train",
        doc: "tfrecord: shard and index name (`<name>-00000.tfrecord`, `<name>.index`)",
    },
    ParamDoc { name: "image_size", ty: "[h, w]", default: "[112, 112]", doc: "recordio: image size recorded in `property`" },
];

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

/// Marker of a run in progress (its plan fingerprint), removed when the manifest is written.
pub const PROGRESS: &str = "_progress.json";

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
}

impl WriteRecords {
    /// Whether rows of this output carry the `(identity, sample)` key a resume needs. Outputs
    /// without it (a `train` node's statistics, for one) are rewritten whole on every run.
    fn keyed(&self) -> bool {
        self.input_schema.get().is_some_and(|s| s.index_of("identity").is_ok() && s.index_of("sample").is_ok())
    }

    /// Whether the directory holds output of this very plan (interrupted or finished).
    fn same_plan_on_disk(&self) -> bool {
        [PROGRESS, MANIFEST].iter().any(|f| {
            std::fs::read(self.p.path.join(f))
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["fingerprint"] == self.fingerprint.as_str())
        })
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
    fn role(&self) -> Role {
        Role::Sink
    }

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

    /// Parquet: when the directory holds shards of an interrupted (or finished) run of the
    /// same plan (same fingerprint in `_progress.json` or `_manifest.json`), they are kept and
    /// their `(identity, sample)` keys returned, so the run only adds what is missing. Otherwise
    /// (and for the other formats) what an earlier run left is cleared, so the directory ends up
    /// holding exactly this run's dataset. Image folders are never cleared: the directory may
    /// hold other data.
    fn prepare(&self) -> OpResult<Option<ResumeSet>> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let resumable = self.p.format == Format::Parquet && self.keyed() && self.same_plan_on_disk();
        let mut done = None;
        if let Ok(entries) = std::fs::read_dir(&self.p.path) {
            let tf_prefix = format!("{}-", self.p.name);
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_shard = name.starts_with("part-") && name.ends_with(".parquet");
                let stale = match self.p.format {
                    Format::Parquet => (is_shard && !resumable) || (name.starts_with(".part-") && name.ends_with(".tmp")),
                    Format::Tfrecord => name.starts_with(&tf_prefix) && name.ends_with(".tfrecord"),
                    Format::ImageFolder | Format::Recordio => false,
                } || name == MANIFEST;
                if stale {
                    match std::fs::remove_file(entry.path()) {
                        // another process of a cluster run may have removed it first
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(err(format!("cannot remove stale {}: {e}", entry.path().display())));
                        }
                        _ => {}
                    }
                }
            }
            if resumable {
                let (keys, max_index) = resume::done_keys(&self.p.path).map_err(err)?;
                let kept = resume::shards_on_disk(&self.p.path).map_err(err)?.into_iter().map(|(n, _)| self.p.path.join(n)).collect();
                *self.kept_shards.lock().map_err(|_| err("lock poisoned".into()))? = kept;
                *self.first_shard.lock().map_err(|_| err("lock poisoned".into()))? = max_index.map_or(0, |m| m + 1);
                done = Some(ResumeSet::new(keys));
            }
        }
        if self.p.format == Format::Parquet {
            std::fs::create_dir_all(&self.p.path).map_err(|e| err(format!("cannot create {}: {e}", self.p.path.display())))?;
            let progress = serde_json::json!({"fingerprint": self.fingerprint, "pipeline": self.pipeline});
            atomic_write(&self.p.path.join(PROGRESS), progress.to_string().as_bytes()).map_err(|e| err(e.to_string()))?;
        }
        Ok(done)
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        std::fs::create_dir_all(&self.p.path)
            .map_err(|e| OpError::new(format!("node `{}`: cannot create {}: {e}", self.node, self.p.path.display())))?;
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
                p: self.p.clone(),
                worker: ctx.partition.worker,
                peers: ctx.partition.peers,
                seq: 0,
                open: None,
                file_schema: None,
                node,
            }),
            Format::ImageFolder => Box::new(other::FolderWriter::new(self.p.path.clone(), self.p.image_column.clone(), node)),
            Format::Tfrecord => Box::new(other::TfWriter::new(
                self.p.path.clone(),
                self.p.name.clone(),
                self.p.rows_per_shard,
                self.p.image_column.clone(),
                node,
            )),
            Format::Recordio => {
                Box::new(other::RecordIoWriter::new(self.p.path.clone(), self.p.image_size, self.p.image_column.clone(), node))
            }
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
        if self.p.format == Format::Parquet {
            // Shards kept from an interrupted run are part of the dataset too.
            let listed: std::collections::HashSet<String> = shards.iter().filter_map(|s| s["file"].as_str().map(String::from)).collect();
            for (name, rows) in resume::shards_on_disk(&self.p.path).map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))? {
                if !listed.contains(&name) {
                    let b = file_info(&self.p.path, &self.p.path.join(&name), rows).map_err(OpError::new)?;
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
        atomic_write(&self.p.path.join(MANIFEST), &text)
            .map_err(|e| OpError::new(format!("node `{}`: cannot write manifest: {e}", self.node)))?;
        let _ = std::fs::remove_file(self.p.path.join(PROGRESS));
        Ok(())
    }
}

struct OpenShard {
    writer: ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    name: String,
    rows: usize,
}

struct ShardWriter {
    /// Shard numbers of this run start here (after a resumed run's shards).
    first_shard: usize,
    /// Shards of the interrupted run whose rows go downstream at the end.
    replay: Vec<PathBuf>,
    input_schema: Option<SchemaRef>,
    resume: Arc<ResumeSet>,
    p: Params,
    worker: usize,
    peers: usize,
    seq: usize,
    open: Option<OpenShard>,
    file_schema: Option<SchemaRef>,
    node: String,
}

impl ShardWriter {
    fn err(&self, e: impl std::fmt::Display) -> OpError {
        OpError::new(format!("node `{}`: {e}", self.node))
    }

    /// Converts an input batch to the on-disk layout.
    fn file_batch(&mut self, batch: &RecordBatch) -> OpResult<RecordBatch> {
        if self.file_schema.is_none() {
            self.file_schema = Some(file_schema(&self.p, &batch.schema()).map_err(|e| self.err(e))?);
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

    fn open_shard(&mut self) -> OpResult<()> {
        let index = self.first_shard + self.seq * self.peers + self.worker;
        self.seq += 1;
        let name = format!("part-{index:05}.parquet");
        let tmp = self.p.path.join(format!(".{name}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(|e| self.err(format!("cannot create {}: {e}", tmp.display())))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.p.zstd_level).map_err(|e| self.err(e))?))
            .build();
        let schema = self.file_schema.clone().ok_or_else(|| self.err("no schema"))?;
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| self.err(e))?;
        self.open = Some(OpenShard { writer, tmp, name, rows: 0 });
        Ok(())
    }

    fn close_shard(&mut self, out: &mut Emit) -> OpResult<()> {
        let Some(shard) = self.open.take() else { return Ok(()) };
        let file = shard.writer.into_inner().map_err(|e| self.err(e))?;
        file.sync_all().map_err(|e| self.err(e))?;
        drop(file);
        let final_path = self.p.path.join(&shard.name);
        std::fs::rename(&shard.tmp, &final_path).map_err(|e| self.err(format!("cannot rename to {}: {e}", final_path.display())))?;
        resume::crash_hook();
        out.commit.push(file_info(&self.p.path, &final_path, shard.rows as u64).map_err(|e| self.err(e))?);
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
        let mut offset = 0;
        while offset < file_batch.num_rows() {
            if self.open.is_none() {
                self.open_shard()?;
            }
            let shard = self.open.as_mut().expect("opened above");
            let take = (self.p.rows_per_shard - shard.rows).min(file_batch.num_rows() - offset);
            let part = file_batch.slice(offset, take);
            shard.writer.write(&part).map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
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
            drop(shard.writer);
            let _ = std::fs::remove_file(&shard.tmp);
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
        let list = self.p.path.join("images.lst");
        idflow_dataset::formats::image_folder::write_image_list(&list, &entries).map_err(|e| err(e.to_string()))?;
        file_info(&self.p.path, &list, entries.len() as u64).map_err(err)
    }
}

/// Reads a manifest back (used by tests and by resume).
pub fn read_manifest(dir: &Path) -> Result<serde_json::Value, String> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", p.display()))
}
