//! `tfrecord`: TFace shards read through their index (idflow's `key\tshard\toffset` index, or
//! TFace's converted `tfr_name\tidx\toffset\tlabel` index). Records are split among workers by
//! record number; `identity` is the record's `label` feature (or the converted index's label).

use super::listed::{Listed, RowBatcher};
use crate::operators::{OpError, OpResult, Partition};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use idflow_dataset::formats::tfrecord::{decode_example, read_converted_index, read_index, read_record_at, shard_path};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows of a TFRecord dataset.
pub fn schema() -> SchemaRef {
    super::required_columns(&[("identity", DataType::UInt32), ("key", DataType::Utf8), ("image", DataType::Binary)])
}

/// One listed record: its shard, offset, key and (converted index) label.
pub struct Rec {
    shard: PathBuf,
    offset: u64,
    key: String,
    label: Option<i64>,
}

/// Reads this worker's records; records in the index, for all workers together, are the
/// source's total.
pub type TfRecordTask = Listed<TfRecordRows>;

/// Reads a chunk's records from their shards (kept open) and makes their batch.
pub struct TfRecordRows {
    open: HashMap<PathBuf, File>,
    node: String,
}

/// The index file: `root` itself, or the only `*.index` file in the folder `root`.
fn find_index(root: &Path) -> Result<PathBuf, String> {
    if root.is_file() {
        return Ok(root.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| format!("cannot list {}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("{}: no .index file (give the index file as `root`)", root.display())),
        _ => Err(format!("{}: several .index files; give one as `root`", root.display())),
    }
}

impl TfRecordTask {
    /// Opens the index and keeps this worker's records.
    pub fn open(root: &Path, part: &Partition, batch_rows: usize, node: String) -> Result<Self, String> {
        let index = find_index(root)?;
        let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = index.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let first = std::fs::read_to_string(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?;
        let converted = first.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.split('\t').count() == 4);
        let all: Vec<Rec> = if converted {
            read_converted_index(&index)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|e| Rec {
                    shard: dir.join(&e.tfr_name),
                    offset: e.offset,
                    key: format!("{}:{}", e.tfr_name, e.idx),
                    label: Some(e.label),
                })
                .collect()
        } else {
            read_index(&index)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|e| Rec { shard: shard_path(&dir, &name, e.shard), offset: e.offset, key: e.key, label: None })
                .collect()
        };
        let total = all.len() as u64;
        let records: Vec<_> = all.into_iter().enumerate().filter(|(k, _)| part.owns(*k as u64)).map(|(_, r)| r).collect();
        Ok(Listed::new(records, total, batch_rows, TfRecordRows { open: HashMap::new(), node }))
    }
}

impl RowBatcher for TfRecordRows {
    type Row = Rec;

    fn batch(&mut self, chunk: &[Rec]) -> OpResult<RecordBatch> {
        let (mut ids, mut keys, mut images) = (Vec::new(), Vec::new(), Vec::new());
        for r in chunk {
            let node = &self.node;
            let fail = |e: String| OpError::new(format!("node `{node}`: {e}"));
            if !self.open.contains_key(&r.shard) {
                let f = File::open(&r.shard).map_err(|e| fail(format!("cannot open {}: {e}", r.shard.display())))?;
                self.open.insert(r.shard.clone(), f);
            }
            let file = self.open.get_mut(&r.shard).ok_or_else(|| fail("shard not open".into()))?;
            let payload = read_record_at(file, &r.shard, r.offset).map_err(|e| fail(e.to_string()))?;
            let ex = decode_example(&payload, &r.shard, r.offset).map_err(|e| fail(e.to_string()))?;
            let label = ex.label.or(r.label).ok_or_else(|| fail(format!("{} @ {}: record has no `label`", r.shard.display(), r.offset)))?;
            let label =
                u32::try_from(label).map_err(|_| fail(format!("{} @ {}: label {label} is not a u32", r.shard.display(), r.offset)))?;
            ids.push(label);
            keys.push(r.key.clone());
            images.push(ex.image);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(StringArray::from(keys)),
            Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))),
        ];
        Ok(RecordBatch::try_new(schema(), cols)?)
    }
}
