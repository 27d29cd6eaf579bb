//! `image-folder` and `image-list`: files on disk, one row per image.

use super::listed::{Listed, RowBatcher};
use crate::operators::{OpError, OpResult, Partition};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use idflow_dataset::formats::image_folder::{list_image_folder, read_image_list};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows of an image folder or image list.
pub fn image_folder_schema() -> SchemaRef {
    super::required_columns(&[
        ("identity", DataType::UInt32),
        ("identity_name", DataType::Utf8),
        ("path", DataType::Utf8),
        ("image", DataType::Binary),
    ])
}

/// One listed file: its identity, the identity's name, and where it is.
pub struct Entry {
    identity: u32,
    name: String,
    path: PathBuf,
}

/// Reads the files of this worker's identities, a batch at a time; files listed for all workers
/// together are the source's total.
pub type FolderTask = Listed<FolderRows>;

/// Reads a chunk's files and makes their batch.
pub struct FolderRows {
    node: String,
}

fn to_u32(v: usize, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in u32"))
}

impl FolderTask {
    /// `root/<identity>/<file>`.
    pub fn image_folder(
        root: &Path,
        extensions: &[String],
        limit_identities: Option<usize>,
        limit_per_identity: Option<usize>,
        part: &Partition,
        batch_rows: usize,
        node: String,
    ) -> Result<Self, String> {
        let exts: Vec<&str> = extensions.iter().map(|e| e.trim_start_matches('.')).collect();
        let listing = list_image_folder(root, &exts, limit_identities, limit_per_identity).map_err(|e| e.to_string())?;
        let total = listing.len() as u64;
        let mut entries = Vec::new();
        for (identity, name, path) in listing {
            let identity = to_u32(identity, "identity")?;
            if part.owns(identity as u64) {
                entries.push(Entry { identity, name, path });
            }
        }
        Ok(Listed::new(entries, total, batch_rows, FolderRows { node }))
    }

    /// A `path\tlabel` list file.
    pub fn image_list(list: &Path, part: &Partition, batch_rows: usize, node: String) -> Result<Self, String> {
        let mut entries = Vec::new();
        let listing = read_image_list(list).map_err(|e| e.to_string())?;
        let total = listing.len() as u64;
        for (path, label) in listing {
            let identity = to_u32(label, "label")?;
            if part.owns(identity as u64) {
                entries.push(Entry { identity, name: label.to_string(), path });
            }
        }
        Ok(Listed::new(entries, total, batch_rows, FolderRows { node }))
    }
}

impl RowBatcher for FolderRows {
    type Row = Entry;

    fn batch(&mut self, chunk: &[Entry]) -> OpResult<RecordBatch> {
        let mut images = Vec::with_capacity(chunk.len());
        for e in chunk {
            let bytes = std::fs::read(&e.path)
                .map_err(|err| OpError::new(format!("node `{}`: cannot read {}: {err}", self.node, e.path.display())))?;
            images.push(bytes);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|e| e.identity))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|e| e.name.as_str()))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|e| e.path.to_string_lossy().into_owned()))),
            Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))),
        ];
        Ok(RecordBatch::try_new(image_folder_schema(), cols)?)
    }
}
