//! Helpers shared by the integration tests: image folders, running the binary (with ONNX
//! Runtime available), reading the Parquet output back.
#![allow(dead_code)]

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Output;

mod ort;
#[allow(unused_imports)]
pub use ort::{idflow_command, ort_dylib, test_cache};

/// Path of the built `idflow` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_idflow"))
}

/// Runs `idflow` with `args` in `dir` (with ONNX Runtime available, see [`idflow_command`]).
pub fn idflow(dir: &Path, args: &[&str]) -> Output {
    idflow_command().args(args).current_dir(dir).output().expect("run idflow")
}

/// Writes `n_ids` identities × `per_id` JPEG/PNG images of distinct content under `root`.
pub fn make_faces(root: &Path, n_ids: usize, per_id: usize) {
    for i in 0..n_ids {
        let dir = root.join(format!("person_{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..per_id {
            let img = image::RgbImage::from_fn(24, 20, |x, y| {
                image::Rgb([(x * 9 + i as u32 * 40) as u8, (y * 11 + j as u32 * 30) as u8, ((x + y) * 5) as u8])
            });
            let path = if j % 2 == 0 { dir.join(format!("{j:02}.jpg")) } else { dir.join(format!("{j:02}.png")) };
            img.save(&path).unwrap();
        }
    }
}

/// One written row: (identity, identity_name, path, image bytes).
pub type Row = (u32, String, String, Vec<u8>);

/// All Parquet shards under `dir` (sorted by file name).
pub fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    v.sort();
    v
}

/// Reads every batch of every shard.
pub fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for p in shards(dir) {
        let f = std::fs::File::open(&p).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        for b in reader {
            out.push(b.unwrap());
        }
    }
    out
}

/// Rows of an image-folder dataset, sorted by (identity, path).
pub fn read_rows(dir: &Path) -> Vec<Row> {
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

/// Writes a pipeline file and returns its path.
pub fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A read → decode → write-records pipeline over `faces` into `out`.
pub fn folder_pipeline(faces: &Path, out: &Path, workers: usize, extra_decode: &str) -> String {
    format!(
        "name: folder\nseed: 7\nworkers: {workers}\nnodes:\n  faces:\n    op: read\n    root: {}\n    batch_rows: 3\n  tensors:\n    op: decode\n    input: faces\n    size: 16\n{extra_decode}  out:\n    op: write-records\n    input: tensors\n    path: {}\n    rows_per_shard: 5\n    columns: [identity, identity_name, path, image]\n",
        faces.display(),
        out.display()
    )
}

/// `(epoch, loss)` of a training node's stats rows written to `dir`, sorted by epoch.
pub fn epoch_losses(dir: &Path) -> Vec<(u64, f64)> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let e = b.column_by_name("epoch").unwrap().as_primitive::<arrow_array::types::UInt64Type>().clone();
        let l = b.column_by_name("loss").unwrap().as_primitive::<arrow_array::types::Float64Type>().clone();
        rows.extend((0..b.num_rows()).map(|i| (e.value(i), l.value(i))));
    }
    rows.sort_by_key(|r| r.0);
    rows
}
