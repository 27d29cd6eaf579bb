//! Reading the Parquet shards `write-records` writes back into batches and rows.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// All Parquet shards directly under `dir`, sorted by file name.
pub fn shards(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut v: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    v.sort();
    v
}

/// Every batch of every shard under `dir`, in shard order.
pub fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for p in shards(dir) {
        let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()));
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// One row of an image-folder dataset: (identity, identity_name, path, image bytes).
pub type ImageRow = (u32, String, String, Vec<u8>);

/// Rows of an image-folder dataset under `dir`, sorted by (identity, path); every image has bytes.
pub fn image_rows(dir: &Path) -> Vec<ImageRow> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
        let name = b.column_by_name("identity_name").unwrap().as_string::<i32>();
        let image = b.column_by_name("image").unwrap().as_struct();
        let bytes = image.column_by_name("bytes").unwrap().as_binary::<i32>();
        let path = image.column_by_name("path").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(!bytes.is_null(i));
            rows.push((id.value(i), name.value(i).to_string(), path.value(i).to_string(), bytes.value(i).to_vec()));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    rows
}

/// One generated row (contexts → diffuse → decode-latent → write-records).
#[derive(Clone, Debug, PartialEq)]
pub struct GenRow {
    /// Identity.
    pub identity: u32,
    /// Sample.
    pub sample: u32,
    /// Seed column.
    pub seed: u64,
    /// Context (empty when the column was not written).
    pub context: Vec<f32>,
    /// Latent (empty when the column was not written).
    pub latent: Vec<f32>,
    /// Encoded image.
    pub image: Vec<u8>,
}

/// The values of row `i` of the fixed-size-list float column `name` (empty when there is none).
pub fn list_row(b: &RecordBatch, name: &str, i: usize) -> Vec<f32> {
    match b.column_by_name(name) {
        Some(c) => c.as_fixed_size_list().value(i).as_primitive::<Float32Type>().values().to_vec(),
        None => Vec::new(),
    }
}

/// Generated rows under `dir`, sorted by (identity, sample).
pub fn generated_rows(dir: &Path) -> Vec<GenRow> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
        let sample = b.column_by_name("sample").unwrap().as_primitive::<UInt32Type>();
        let seed = b.column_by_name("seed").unwrap().as_primitive::<UInt64Type>();
        let image = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            rows.push(GenRow {
                identity: id.value(i),
                sample: sample.value(i),
                seed: seed.value(i),
                context: list_row(&b, "context", i),
                latent: list_row(&b, "latent", i),
                image: image.value(i).to_vec(),
            });
        }
    }
    rows.sort_by_key(|r| (r.identity, r.sample));
    rows
}

/// `(epoch, loss)` of a training node's stats rows under `dir`, sorted by epoch.
pub fn epoch_losses(dir: &Path) -> Vec<(u64, f64)> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let e = b.column_by_name("epoch").unwrap().as_primitive::<UInt64Type>().clone();
        let l = b.column_by_name("loss").unwrap().as_primitive::<Float64Type>().clone();
        rows.extend((0..b.num_rows()).map(|i| (e.value(i), l.value(i))));
    }
    rows.sort_by_key(|r| r.0);
    rows
}
