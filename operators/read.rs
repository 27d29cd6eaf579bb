//! `read`: a source of rows from files on disk, in the formats face-recognition tools use.
//! One submodule per format turns the `idflow_dataset::formats` reader into record batches:
//!
//! | format | rows |
//! |---|---|
//! | `image-folder` | `identity` (dense index in sorted folder order), `identity_name`, `path`, `image` |
//! | `image-list` | same, from a `path\tlabel` list file (`identity_name` = the label) |
//! | `tfrecord` | `identity` (the `label` feature), `key` (index key), `image` |
//! | `recordio` | `identity`, `sample`, `image` (insightface `train.rec`/`.idx`) |
//! | `bin` | `pair`, `member` (0/1), `issame`, `image` (verification `.bin`) |
//! | `contexts` | `identity`, `identity_name`, `context` (`FixedSizeList<Float32, dim>`, L2-normalised) |
//! | `parquet` | the file's columns (a Hugging Face image struct becomes binary `image` again) |
//!
//! Files are read lazily, one batch at a time. Each worker reads the identities it owns
//! (`identity % workers`), so the rows do not depend on the worker count; TFRecord shards and
//! `.bin` pairs, which carry no identity up front, are split by shard / pair number instead.

use super::{BuildContext, OpError, OpResult, Operator, OperatorInfo, Role, SourceTask, Started, TaskContext};
use crate::spec::ConfigError;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

mod bin;
mod contexts;
mod folder;
mod listed;
pub(crate) mod parquet_files;
mod recordio;
mod tfrecord;

pub use folder::image_folder_schema;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "read",
        role: Role::Source,
        summary: "Read face data from disk: image-folder, image-list, tfrecord, recordio, bin, contexts, parquet",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/read.md");

/// Input formats `read` understands.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `root/<identity>/<file>`.
    ImageFolder,
    /// `path\tlabel` lines.
    ImageList,
    /// TFace TFRecord shards with a `.index` file.
    Tfrecord,
    /// insightface MXNet RecordIO.
    Recordio,
    /// Verification pair file.
    Bin,
    /// Identity context file (IDiff-Face dict `.npy`, plain `.npy`).
    Contexts,
    /// Parquet file or folder of shards.
    Parquet,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_format")]
    format: Format,
    root: PathBuf,
    #[serde(default = "default_extensions")]
    extensions: Vec<String>,
    #[serde(default)]
    limit_identities: Option<usize>,
    #[serde(default)]
    limit_per_identity: Option<usize>,
    #[serde(default = "default_dim")]
    dim: usize,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    schema: Option<indexmap::IndexMap<String, String>>,
    #[serde(default = "default_batch_rows")]
    batch_rows: usize,
    #[serde(default)]
    allow_empty: bool,
}

fn default_format() -> Format {
    Format::ImageFolder
}
fn default_extensions() -> Vec<String> {
    vec!["jpg".into(), "jpeg".into(), "png".into()]
}
fn default_dim() -> usize {
    512
}
fn default_batch_rows() -> usize {
    64
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    if p.batch_rows == 0 {
        return Err(ctx.node.error(Some("batch_rows"), "must be at least 1"));
    }
    if p.dim == 0 {
        return Err(ctx.node.error(Some("dim"), "must be at least 1"));
    }
    // Declared Parquet schemas are for data a previous pipeline writes later.
    let written_later = p.format == Format::Parquet && p.schema.is_some();
    if !written_later && !p.root.exists() {
        return Err(ctx.node.error(Some("root"), format!("{} does not exist", p.root.display())));
    }
    let schema = match p.format {
        Format::ImageFolder | Format::ImageList => folder::image_folder_schema(),
        Format::Tfrecord => tfrecord::schema(),
        Format::Recordio => recordio::schema(),
        Format::Bin => bin::schema(),
        Format::Contexts => contexts::schema(p.dim),
        // Parquet's schema comes from the data: it must exist when the pipeline is planned.
        Format::Parquet => match &p.schema {
            Some(declared) => parquet_files::declared_schema(declared).map_err(|e| ctx.node.error(Some("schema"), e))?,
            None => parquet_files::schema(&p.root, p.columns.as_deref()).map_err(|e| ctx.node.error(Some("root"), e))?,
        },
    };
    Ok(Arc::new(Read { p, schema, node: ctx.node.id.clone() }))
}

struct Read {
    p: Params,
    schema: SchemaRef,
    node: String,
}

impl Operator for Read {
    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(self.schema.clone())
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let p = &self.p;
        let (part, rows, node) = (&ctx.partition, p.batch_rows, self.node.clone());
        let task: Box<dyn ListedSource> = match p.format {
            Format::ImageFolder => Box::new(
                folder::FolderTask::image_folder(&p.root, &p.extensions, p.limit_identities, p.limit_per_identity, part, rows, node)
                    .map_err(err)?,
            ),
            Format::ImageList => Box::new(folder::FolderTask::image_list(&p.root, part, rows, node).map_err(err)?),
            Format::Tfrecord => Box::new(tfrecord::TfRecordTask::open(&p.root, part, rows, node).map_err(err)?),
            Format::Recordio => Box::new(recordio::RecordIoTask::open(&p.root, part, rows, node).map_err(err)?),
            Format::Bin => Box::new(bin::BinTask::open(&p.root, part, rows).map_err(err)?),
            Format::Contexts => Box::new(contexts::ContextsTask::open(&p.root, p.dim, part, rows).map_err(err)?),
            Format::Parquet => Box::new(parquet_files::ParquetTask::open(&p.root, self.schema.clone(), part, rows).map_err(err)?),
        };
        if task.source_rows() == 0 && !p.allow_empty {
            return Err(err(format!(
                "{} holds no rows; an empty input is an error (set `allow_empty: true` on the node if it may be empty)",
                p.root.display()
            )));
        }
        Ok(Started::Source(Box::new(CheckedSource { inner: task, node: self.node.clone(), ctx: ctx.clone() })))
    }
}

/// A schema of non-nullable columns, in order (the fixed rows of most formats).
fn required_columns(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|(name, data_type)| Field::new(*name, data_type.clone(), false)).collect::<Vec<_>>()))
}

/// A `read` source that knows how many rows the whole input holds (every worker's share
/// together), so an empty input is caught on every worker alike.
pub trait ListedSource: SourceTask {
    /// Rows in the whole input, before the split among workers.
    fn source_rows(&self) -> u64;
}

/// Hands on the rows of a source after refusing non-finite tensor values (contexts, embeddings,
/// latents read from files): each such row is a bad row of the node.
struct CheckedSource {
    inner: Box<dyn ListedSource>,
    node: String,
    ctx: TaskContext,
}

impl SourceTask for CheckedSource {
    fn expected_rows(&self) -> Option<u64> {
        self.inner.expected_rows()
    }

    fn next_batch(&mut self) -> OpResult<Option<arrow_array::RecordBatch>> {
        match self.inner.next_batch()? {
            Some(batch) => Ok(Some(super::support::finite::finite_tensor_columns(&self.ctx, &self.node, batch)?)),
            None => Ok(None),
        }
    }

    fn abort(&mut self) {
        self.inner.abort();
    }
}
