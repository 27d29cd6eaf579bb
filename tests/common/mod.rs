//! Helpers of the root crate's integration tests: image folders and pipelines, and thin wrappers
//! that run this crate's `idflow` binary through [`idflow_testkit`] (only these tests know the
//! binary's path). The reference fixtures and the Parquet readers come from the testkit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(unused_imports)]
pub use idflow_testkit::parquet::{epoch_losses, image_rows, read_batches, shards, ImageRow};
#[allow(unused_imports)]
pub use idflow_testkit::{ort_dylib, reference, reference_dir};

/// Path of the built `idflow` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_idflow"))
}

/// The tests' ONNX cache in the cargo target folder ([`idflow_testkit::process::test_cache`]).
pub fn test_cache() -> PathBuf {
    idflow_testkit::process::test_cache(&bin())
}

/// A command running `idflow` with ONNX Runtime available, the test cache and `IDFLOW_LOG=warn`.
pub fn idflow_command() -> Command {
    idflow_testkit::process::idflow_command(&bin())
}

/// Runs `idflow` with `args` in `dir` (with ONNX Runtime available, see [`idflow_command`]).
pub fn idflow(dir: &Path, args: &[&str]) -> Output {
    idflow_testkit::process::run(&bin(), dir, args)
}

/// Runs `idflow` with `args` in `dir` and asserts success.
pub fn run_ok(dir: &Path, args: &[&str]) -> Output {
    idflow_testkit::process::run_ok(&bin(), dir, args)
}

/// Runs `idflow` with `args` in `dir` and kills it (an abort without clean-up, as a crash
/// would) right after its `shards`-th shard got its final name.
pub fn crashed_run(dir: &Path, args: &[&str], shards: usize) -> Output {
    idflow_command()
        .args(args)
        .current_dir(dir)
        .env("IDFLOW_TEST_CRASH_AFTER_SHARDS", shards.to_string())
        .env("IDFLOW_LOG", "error")
        .output()
        .expect("run idflow")
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

/// A fresh temporary folder with `n_ids` × `per_id` images under `faces/` (see [`make_faces`]);
/// returns the folder, the image root and the path `out` for a run's output (not created).
pub fn faces_dir(n_ids: usize, per_id: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    make_faces(&faces, n_ids, per_id);
    let out = dir.path().join("out");
    (dir, faces, out)
}

/// A toy-faces `difficulty` with every nuisance off, as a YAML flow mapping.
pub const NO_NUISANCE: &str =
    "{rotation: 0, yaw: 0, pitch: 0, translation: 0, scale: 0, expression: 0, lighting: 0, background: 0, blur: 0, noise: 0, occlusion: 0, jpeg: 0}";

/// Writes the pipeline `text` as `name` in `dir` and runs it there, asserting success.
pub fn run_pipeline(dir: &Path, name: &str, text: &str) -> Output {
    let p = write_pipeline(dir, name, text);
    run_ok(dir, &["run", p.to_str().unwrap()])
}
