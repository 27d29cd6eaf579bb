//! `read`: a source of rows from files on disk. This format is `image-folder`
//! (`root/<identity>/<file>`, the PyTorch ImageFolder layout): one row per image with
//! `identity` (dense index in sorted folder order), `identity_name`, `path` and the encoded
//! `image` bytes. Files are read lazily, one batch at a time, and each worker reads only the
//! identities it owns, so memory stays flat and the rows do not depend on the worker count.

use super::{BuildContext, OpError, OpResult, Operator, OperatorInfo, ParamDoc, Role, SourceTask, Started, TaskContext};
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "read",
        role: Role::Source,
        summary: "Read face images (and later other formats) from disk into rows",
        params: PARAMS,
        build,
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "format", ty: "string", default: "image-folder", doc: "input format: image-folder (root/<identity>/<file>)" },
    ParamDoc { name: "root", ty: "path", default: "required", doc: "dataset root directory" },
    ParamDoc { name: "extensions", ty: "list of strings", default: "[jpg, jpeg, png]", doc: "file extensions to read (case-insensitive)" },
    ParamDoc { name: "limit_identities", ty: "integer", default: "all", doc: "read only the first N identities (sorted folder order)" },
    ParamDoc { name: "limit_per_identity", ty: "integer", default: "all", doc: "read only the first N files of each identity (sorted)" },
    ParamDoc { name: "batch_rows", ty: "integer", default: "64", doc: "rows per emitted batch" },
];

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_format")]
    format: String,
    root: PathBuf,
    #[serde(default = "default_extensions")]
    extensions: Vec<String>,
    #[serde(default)]
    limit_identities: Option<usize>,
    #[serde(default)]
    limit_per_identity: Option<usize>,
    #[serde(default = "default_batch_rows")]
    batch_rows: usize,
}

fn default_format() -> String {
    "image-folder".into()
}
fn default_extensions() -> Vec<String> {
    vec!["jpg".into(), "jpeg".into(), "png".into()]
}
fn default_batch_rows() -> usize {
    64
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    if p.format != "image-folder" {
        return Err(ctx.node.error(Some("format"), format!("unknown format `{}`; supported: image-folder", p.format)));
    }
    if p.batch_rows == 0 {
        return Err(ctx.node.error(Some("batch_rows"), "must be at least 1"));
    }
    Ok(Arc::new(ReadImageFolder { p, node: ctx.node.id.clone() }))
}

/// The image-folder schema.
pub fn image_folder_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("identity_name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("image", DataType::Binary, false),
    ]))
}

struct ReadImageFolder {
    p: Params,
    node: String,
}

impl Operator for ReadImageFolder {
    fn role(&self) -> Role {
        Role::Source
    }

    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(image_folder_schema())
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let listing = list_image_folder(&self.p.root, &self.p.extensions, self.p.limit_identities, self.p.limit_per_identity)
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        let files: Vec<_> = listing.into_iter().filter(|f| ctx.partition.owns(f.identity as u64)).collect();
        Ok(Started::Source(Box::new(FolderTask { files, next: 0, batch_rows: self.p.batch_rows, node: self.node.clone() })))
    }
}

/// One file of an image folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Dense identity index in sorted folder order.
    pub identity: u32,
    /// Folder name.
    pub identity_name: String,
    /// File path.
    pub path: PathBuf,
}

/// Lists `root/<identity>/<file>` deterministically (sorted by folder, then file name).
pub fn list_image_folder(
    root: &Path,
    extensions: &[String],
    limit_identities: Option<usize>,
    limit_per_identity: Option<usize>,
) -> Result<Vec<FolderEntry>, String> {
    let read = |p: &Path| std::fs::read_dir(p).map_err(|e| format!("cannot list {}: {e}", p.display()));
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in read(root)? {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", root.display()))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    dirs.sort();
    if let Some(n) = limit_identities {
        dirs.truncate(n);
    }
    let exts: Vec<String> = extensions.iter().map(|e| e.trim_start_matches('.').to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for (identity, (name, dir)) in dirs.into_iter().enumerate() {
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in read(&dir)? {
            let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
            let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            if path.is_file() && ext.is_some_and(|e| exts.contains(&e)) {
                files.push(path);
            }
        }
        files.sort();
        if let Some(n) = limit_per_identity {
            files.truncate(n);
        }
        let identity = u32::try_from(identity).map_err(|_| "more than 2^32 identities".to_string())?;
        out.extend(files.into_iter().map(|path| FolderEntry { identity, identity_name: name.clone(), path }));
    }
    Ok(out)
}

struct FolderTask {
    files: Vec<FolderEntry>,
    next: usize,
    batch_rows: usize,
    node: String,
}

impl SourceTask for FolderTask {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.files.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        if self.next >= self.files.len() {
            return Ok(None);
        }
        let end = (self.next + self.batch_rows).min(self.files.len());
        let chunk = &self.files[self.next..end];
        self.next = end;
        let mut images = Vec::with_capacity(chunk.len());
        for f in chunk {
            let bytes = std::fs::read(&f.path).map_err(|e| OpError::new(format!("node `{}`: cannot read {}: {e}", self.node, f.path.display())))?;
            images.push(bytes);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|f| f.identity))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|f| f.identity_name.as_str()))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|f| f.path.to_string_lossy().into_owned()))),
            Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))),
        ];
        Ok(Some(RecordBatch::try_new(image_folder_schema(), cols)?))
    }
}
