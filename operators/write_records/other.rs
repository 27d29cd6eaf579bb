//! The non-Parquet outputs of `write-records`: image folders, TFRecord and RecordIO, each a
//! thin adapter from record batches to the `idflow_dataset::formats` writers.

use super::shard_info_schema;
use crate::batch::{binary_column, column, id_value, str_column, u32_column};
use crate::fsutil::sha256_file;
use crate::operators::{Emit, OpError, OpResult, Task};
use arrow_array::{Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::formats::image_folder::write_image;
use idflow_dataset::formats::recordio::RecordIoFaceWriter;
use idflow_dataset::formats::tfrecord::TfRecordShardWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A commit row describing one finished file (name relative to `dir`, rows, sha256, size).
pub(crate) fn file_info(dir: &Path, path: &Path, rows: u64) -> Result<RecordBatch, String> {
    let sha = sha256_file(path).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    let bytes = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    let name = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned();
    RecordBatch::try_new(
        shard_info_schema(),
        vec![
            Arc::new(StringArray::from(vec![name])),
            Arc::new(UInt64Array::from(vec![rows])),
            Arc::new(StringArray::from(vec![sha])),
            Arc::new(UInt64Array::from(vec![bytes])),
        ],
    )
    .map_err(|e| e.to_string())
}

/// Schema of the image-folder commit rows: one per image written.
pub(crate) fn image_list_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false), Field::new("label", DataType::UInt32, false)]))
}

/// File extension for encoded image bytes.
fn image_ext(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("jpg")
    } else {
        None
    }
}

/// Per-row `(identity, sample)`; the sample is the `sample` column when there is one, else the
/// row's rank within its identity on this worker (rows of one identity live on one worker).
struct SampleCounter(BTreeMap<u32, u64>);

impl SampleCounter {
    fn next(&mut self, batch: &RecordBatch, row: usize, identity: u32) -> u64 {
        if let Some(v) = batch.column_by_name("sample").and_then(|c| id_value(c.as_ref(), row)) {
            return v;
        }
        let n = self.0.entry(identity).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// `root/<identity>/<sample>.<ext>`; the identity folder is `identity_name` when present,
/// else the zero-padded identity.
pub struct FolderWriter {
    root: PathBuf,
    image_column: String,
    counter: SampleCounter,
    node: String,
}

impl FolderWriter {
    /// A writer into `root`.
    pub fn new(root: PathBuf, image_column: String, node: String) -> Self {
        Self { root, image_column, counter: SampleCounter(BTreeMap::new()), node }
    }
}

impl Task for FolderWriter {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let ids = u32_column(&batch, "identity").map_err(fail)?;
        let images = binary_column(&batch, &self.image_column).map_err(fail)?;
        let names = column(&batch, "identity_name").ok().and_then(|_| str_column(&batch, "identity_name").ok());
        let (mut paths, mut labels) = (Vec::new(), Vec::new());
        for i in 0..batch.num_rows() {
            let identity = ids.value(i);
            let sample = self.counter.next(&batch, i, identity);
            let bytes = images.value(i);
            let ext =
                image_ext(bytes).ok_or_else(|| fail(format!("identity {identity} sample {sample}: image is neither PNG nor JPEG")))?;
            let folder = names.map(|n| n.value(i).to_string()).unwrap_or_else(|| format!("{identity:06}"));
            let path = write_image(&self.root, &folder, &format!("{sample:05}"), ext, bytes).map_err(|e| fail(e.to_string()))?;
            paths.push(path.strip_prefix(&self.root).unwrap_or(&path).to_string_lossy().into_owned());
            labels.push(identity);
        }
        out.commit.push(RecordBatch::try_new(
            image_list_schema(),
            vec![Arc::new(StringArray::from(paths)), Arc::new(UInt32Array::from(labels))],
        )?);
        out.rows.push(batch);
        Ok(())
    }
}

/// TFace TFRecord shards + index, written on worker 0 in arrival order.
pub struct TfWriter {
    dir: PathBuf,
    name: String,
    per_shard: usize,
    image_column: String,
    writer: Option<TfRecordShardWriter>,
    counter: SampleCounter,
    node: String,
}

impl TfWriter {
    /// A writer of `<dir>/<name>-NNNNN.tfrecord`.
    pub fn new(dir: PathBuf, name: String, per_shard: usize, image_column: String, node: String) -> Self {
        Self { dir, name, per_shard, image_column, writer: None, counter: SampleCounter(BTreeMap::new()), node }
    }
}

impl Task for TfWriter {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        if self.writer.is_none() {
            self.writer = Some(TfRecordShardWriter::create(&self.dir, &self.name, self.per_shard).map_err(|e| fail(e.to_string()))?);
        }
        let ids = u32_column(&batch, "identity").map_err(fail)?;
        let images = binary_column(&batch, &self.image_column).map_err(fail)?;
        let paths = column(&batch, "path").ok().and_then(|_| str_column(&batch, "path").ok());
        for i in 0..batch.num_rows() {
            let identity = ids.value(i);
            let sample = self.counter.next(&batch, i, identity);
            let key = paths.filter(|p| !p.is_null(i)).map(|p| p.value(i).to_string()).unwrap_or_else(|| format!("{identity}/{sample}"));
            let w = self.writer.as_mut().ok_or_else(|| fail("writer not open".into()))?;
            w.write(&key, images.value(i), identity as i64).map_err(|e| fail(e.to_string()))?;
        }
        out.rows.push(batch);
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        let Some(w) = self.writer.take() else { return Ok(()) };
        let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let summary = w.finish().map_err(|e| fail(e.to_string()))?;
        for shard in &summary.shards {
            out.commit.push(file_info(&self.dir, shard, 0).map_err(fail)?);
        }
        out.commit.push(file_info(&self.dir, &summary.index, summary.records).map_err(fail)?);
        Ok(())
    }

    fn abort(&mut self) {
        self.writer = None; // uncommitted shards are removed when dropped
    }
}

/// insightface RecordIO. Its layout needs images grouped by dense identity, so rows are
/// buffered on worker 0 and written at the end in (identity, sample) order; identities are
/// renumbered densely in ascending order.
pub struct RecordIoWriter {
    dir: PathBuf,
    image_size: [u32; 2],
    image_column: String,
    rows: Vec<(u32, u64, Vec<u8>)>,
    counter: SampleCounter,
    node: String,
}

impl RecordIoWriter {
    /// A writer of `<dir>/train.{rec,idx}` and `property`.
    pub fn new(dir: PathBuf, image_size: [u32; 2], image_column: String, node: String) -> Self {
        Self { dir, image_size, image_column, rows: Vec::new(), counter: SampleCounter(BTreeMap::new()), node }
    }
}

impl Task for RecordIoWriter {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let ids = u32_column(&batch, "identity").map_err(fail)?;
        let images = binary_column(&batch, &self.image_column).map_err(fail)?;
        for i in 0..batch.num_rows() {
            let identity = ids.value(i);
            let sample = self.counter.next(&batch, i, identity);
            self.rows.push((identity, sample, images.value(i).to_vec()));
        }
        out.rows.push(batch);
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let fail = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        self.rows.sort_by_key(|r| (r.0, r.1));
        let mut w = RecordIoFaceWriter::create(&self.dir, (self.image_size[0], self.image_size[1])).map_err(|e| fail(e.to_string()))?;
        let mut dense = 0usize;
        let mut last = None;
        for (identity, _, image) in &self.rows {
            if last.is_some_and(|l| l != *identity) {
                dense += 1;
            }
            last = Some(*identity);
            w.add(dense, image).map_err(|e| fail(e.to_string()))?;
        }
        let s = w.finish().map_err(|e| fail(e.to_string()))?;
        out.commit.push(file_info(&self.dir, &s.rec, s.images).map_err(fail)?);
        out.commit.push(file_info(&self.dir, &s.idx, 0).map_err(fail)?);
        out.commit.push(file_info(&self.dir, &s.property, 0).map_err(fail)?);
        Ok(())
    }
}
