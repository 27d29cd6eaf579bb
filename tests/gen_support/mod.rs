//! Helpers shared by the generation tests (`tests/gen_*.rs`): reference-fixture paths, the tiny
//! generation pipeline, and reading generated rows back from Parquet.
#![allow(dead_code)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type, UInt64Type};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "../common/ort.rs"]
mod ort;
#[allow(unused_imports)]
pub use ort::{idflow_command, ort_dylib, test_cache};

/// The reference fixtures folder (`IDFLOW_REFERENCE_DIR` overrides); panics when absent.
pub fn fixture_dir() -> PathBuf {
    let dir = std::env::var_os("IDFLOW_REFERENCE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}/../shared/fixtures/reference",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        ))
    });
    assert!(dir.join("README.md").is_file(), "reference fixtures not found at {} (set IDFLOW_REFERENCE_DIR)", dir.display());
    dir
}

/// One reference fixture file; panics with a clear message when missing.
pub fn fixture(name: &str) -> PathBuf {
    let p = fixture_dir().join(name);
    assert!(p.is_file(), "reference fixture {} is missing", p.display());
    p
}

/// Runs the `idflow` binary in `dir` (with ONNX Runtime available, see [`idflow_command`]).
pub fn idflow(dir: &Path, args: &[&str]) -> Output {
    idflow_command().args(args).current_dir(dir).output().expect("run idflow")
}

/// Runs `idflow` and asserts success.
pub fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = idflow(dir, args);
    assert!(out.status.success(), "idflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The tiny UNet block (`model:`), indented for a node.
pub fn unet_block() -> String {
    format!(
        "    model:\n      checkpoint: {}\n      config: {}\n",
        fixture("idiff_unet_tiny.ckpt").display(),
        fixture("idiff_unet_tiny_config.json").display()
    )
}

/// The tiny first-stage block (`first_stage:`).
pub fn vq_block() -> String {
    format!(
        "    first_stage:\n      checkpoint: {}\n      config: {}\n",
        fixture("vq_tiny_first_stage_decoder_state_dict.pt").display(),
        fixture("vq_tiny_config.json").display()
    )
}

/// Settings of the tiny generation pipeline.
pub struct Tiny {
    /// Workers.
    pub workers: usize,
    /// `diffuse` batch.
    pub batch: usize,
    /// Extra `diffuse` lines (indented 4).
    pub diffuse_extra: String,
    /// Identities.
    pub identities: usize,
    /// Samples per identity.
    pub samples: usize,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            workers: 1,
            batch: 4,
            diffuse_extra: "    sampler: ddim\n    steps: 5\n    eta: 1.0\n    guidance: 1.5\n".into(),
            identities: 3,
            samples: 4,
        }
    }
}

/// contexts → diffuse → decode-latent → write-records into `out`.
pub fn tiny_pipeline(t: &Tiny, out: &Path) -> String {
    format!(
        "name: tiny-gen\nseed: 5\nworkers: {}\nnodes:\n  ids:\n    op: contexts\n    kind: synthetic-uniform\n    count: {}\n    batch_rows: 2\n  latents:\n    op: diffuse\n    input: ids\n{}    samples_per_identity: {}\n    latent_shape: [3, 8, 8]\n    batch: {}\n{}  faces:\n    op: decode-latent\n    input: latents\n{}  out:\n    op: write-records\n    input: faces\n    path: {}\n    rows_per_shard: 5\n    columns: [identity, identity_name, sample, seed, context, latent, image]\n",
        t.workers,
        t.identities,
        unet_block(),
        t.samples,
        t.batch,
        t.diffuse_extra,
        vq_block(),
        out.display()
    )
}

/// One generated row.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRow {
    /// Identity.
    pub identity: u32,
    /// Sample.
    pub sample: u32,
    /// Seed column.
    pub seed: u64,
    /// Context (when written).
    pub context: Vec<f32>,
    /// Latent.
    pub latent: Vec<f32>,
    /// Encoded image.
    pub image: Vec<u8>,
}

/// All Parquet batches under `dir`.
pub fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&p).unwrap()).unwrap().build().unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// The values of row `i` of a fixed-size-list float column.
pub fn list_row(b: &RecordBatch, name: &str, i: usize) -> Vec<f32> {
    match b.column_by_name(name) {
        Some(c) => c.as_fixed_size_list().value(i).as_primitive::<Float32Type>().values().to_vec(),
        None => Vec::new(),
    }
}

/// Generated rows sorted by (identity, sample).
pub fn read_rows(dir: &Path) -> Vec<GenRow> {
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
