//! Bad input is caught where it enters: truncated images at `decode`, an empty source at
//! `read` / `contexts`, non-finite values at the node that produced or read them, and missing or
//! misshapen model files at `idflow validate` (exit 78). Each case asserts the exit code, the
//! message and what is left on disk.

mod common;
use common::*;

use candle_core::{Device, Tensor};
use idflow_models::io::checkpoint::StateDict;
use std::path::{Path, PathBuf};

/// Writes a 96×96 textured JPEG (large enough that half of it ends inside the image data) at
/// `path`.
fn write_jpeg(path: &Path) {
    let img = image::RgbImage::from_fn(96, 96, |x, y| image::Rgb([((x * 7) ^ (y * 3)) as u8, (y * 5 + x) as u8, ((x * y) % 251) as u8]));
    img.save(path).unwrap();
}

/// Cuts a file to half its length; returns its path.
fn truncate_half(path: &Path) -> PathBuf {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    path.to_path_buf()
}

/// Runs `idflow run p.yaml` in `dir`; returns (exit code, stderr).
fn run(dir: &Path, text: &str, extra: &[&str]) -> (Option<i32>, String) {
    write_pipeline(dir, "p.yaml", text);
    let mut args = vec!["run", "p.yaml", "-q"];
    args.extend_from_slice(extra);
    let out = idflow(dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stderr)
}

/// Runs `idflow validate p.yaml` in `dir`; returns (exit code, stderr).
fn validate(dir: &Path, text: &str) -> (Option<i32>, String) {
    write_pipeline(dir, "p.yaml", text);
    let out = idflow(dir, &["validate", "p.yaml"]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Files left in an output folder besides the resume marker.
fn leftovers(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != "_progress.json").collect())
        .unwrap_or_default()
}

fn report_skipped(dir: &Path, node: usize) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("r.json")).unwrap()).unwrap();
    report["operators"][node]["skipped"].clone()
}

#[test]
fn a_truncated_jpeg_fails_decode_naming_the_file_or_is_skipped_and_counted() {
    let (dir, faces, out) = faces_dir(2, 2);
    write_jpeg(&faces.join("person_001/00.jpg"));
    let bad = truncate_half(&faces.join("person_001/00.jpg"));
    let (code, stderr) = run(dir.path(), &folder_pipeline(&faces, &out, 2, ""), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node `tensors`") && stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("image file is truncated") && stderr.contains("end-of-image marker (FF D9)"), "{stderr}");
    assert!(leftovers(&out).is_empty(), "no shard or manifest may remain: {:?}", leftovers(&out));

    let (code, stderr) = run(dir.path(), &folder_pipeline(&faces, &out, 2, "    on_error: skip\n"), &["--report", "r.json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows = image_rows(&out);
    assert_eq!(rows.len(), 3);
    assert!(!rows.iter().any(|r| r.2.ends_with("person_001/00.jpg")));
    assert_eq!(report_skipped(dir.path(), 1), 1);
}

#[test]
fn a_truncated_png_fails_decode_naming_the_file() {
    let (dir, faces, out) = faces_dir(2, 2);
    let bad = truncate_half(&faces.join("person_000/01.png"));
    let (code, stderr) = run(dir.path(), &folder_pipeline(&faces, &out, 1, ""), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node `tensors`") && stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("image file is truncated") && stderr.contains("PNG"), "{stderr}");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn an_empty_input_folder_is_an_error_unless_the_node_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    std::fs::create_dir_all(&faces).unwrap();
    let out = dir.path().join("out");
    let text = folder_pipeline(&faces, &out, 2, "");
    let (code, stderr) = run(dir.path(), &text, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node `faces`") && stderr.contains(&format!("{} holds no rows", faces.display())), "{stderr}");
    assert!(stderr.contains("allow_empty: true"), "{stderr}");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));

    let (code, stderr) = run(dir.path(), &text, &["--set", "nodes.faces.allow_empty=true"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(image_rows(&out).is_empty());
}

#[test]
fn zero_synthetic_contexts_are_an_error_unless_the_node_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = format!(
        "name: c\nnodes:\n  ids:\n    op: contexts\n    kind: synthetic-uniform\n    count: 0\n    dim: 8\n  out:\n    op: write-records\n    input: ids\n    path: {}\n",
        out.display()
    );
    let (code, stderr) = run(dir.path(), &text, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node `ids`") && stderr.contains("no contexts to emit: `count` is 0"), "{stderr}");
    let (code, stderr) = run(dir.path(), &text, &["--set", "nodes.ids.allow_empty=true"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_context_file_with_nan_is_rejected_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("contexts.npy");
    let mut values = vec![0.5f32; 3 * 4];
    values[4 + 2] = f32::NAN;
    idflow_dataset::formats::npy::write_npy(&file, 3, 4, &values).unwrap();
    let out = dir.path().join("out");
    for (op, extra) in [("contexts", "    kind: file\n    path"), ("read", "    format: contexts\n    root")] {
        let text = format!(
            "name: c\nnodes:\n  ids:\n    op: {op}\n{extra}: {}\n    dim: 4\n  out:\n    op: write-records\n    input: ids\n    path: {}\n",
            file.display(),
            out.display()
        );
        let (code, stderr) = run(dir.path(), &text, &[]);
        assert_eq!(code, Some(1), "{op}: {stderr}");
        assert!(stderr.contains("node `ids`") && stderr.contains("(row 1) has zero or non-finite norm"), "{op}: {stderr}");
        assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
    }
}

/// The tiny IResNet fixture saved as safetensors with `change` applied to its entries.
fn tiny_encoder(dir: &Path, name: &str, change: impl Fn(&str, &Tensor) -> Option<Tensor>) -> PathBuf {
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    let entries = dict.entries().iter().map(|(k, t)| (k.clone(), change(k, t).unwrap_or_else(|| t.clone()))).collect();
    let path = dir.join(name);
    StateDict::new(name, entries).save_safetensors(&path).unwrap();
    path
}

fn embed_pipeline(faces: &Path, checkpoint: &Path, out: &Path, extra: &str) -> String {
    format!(
        "name: emb\nnodes:\n  faces:\n    op: read\n    root: {}\n  emb:\n    op: embed\n    input: faces\n    backend: native\n{extra}    encoder:\n      checkpoint: {}\n      config: {}\n  out:\n    op: write-records\n    input: emb\n    path: {}\n    columns: [identity, embedding]\n",
        faces.display(),
        checkpoint.display(),
        reference("iresnet_tiny_config.json").display(),
        out.display()
    )
}

#[test]
fn a_nan_embedding_is_rejected_at_embed_naming_the_row() {
    let (dir, faces, out) = faces_dir(2, 1);
    let nan = tiny_encoder(dir.path(), "nan.safetensors", |k, t| {
        (k == "fc.bias").then(|| Tensor::full(f32::NAN, t.dims(), &Device::Cpu).unwrap())
    });
    let (code, stderr) = run(dir.path(), &embed_pipeline(&faces, &nan, &out, ""), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node `emb`: identity 0 (") && stderr.contains("person_000/00.jpg"), "{stderr}");
    assert!(stderr.contains("`embedding` is not finite (NaN at index 0)"), "{stderr}");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));

    let (code, stderr) = run(dir.path(), &embed_pipeline(&faces, &nan, &out, "    on_error: skip\n"), &["--report", "r.json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report_skipped(dir.path(), 1), 2);
}

#[test]
fn validate_names_a_missing_checkpoint_and_a_missing_read_root() {
    let (dir, faces, out) = faces_dir(1, 1);
    let (code, stderr) = validate(dir.path(), &embed_pipeline(&faces, &dir.path().join("nope.pth"), &out, ""));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("p.yaml:11:") && stderr.contains("node `emb`, field `encoder.checkpoint`"), "{stderr}");
    assert!(stderr.contains("nope.pth does not exist"), "{stderr}");

    let (code, stderr) = validate(dir.path(), &embed_pipeline(&dir.path().join("no-faces"), &reference("iresnet_tiny.pth"), &out, ""));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("p.yaml:5:") && stderr.contains("node `faces`, field `root`") && stderr.contains("no-faces does not exist"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn validate_refuses_a_checkpoint_whose_shapes_do_not_fit_the_config() {
    let (dir, faces, out) = faces_dir(1, 1);
    let (code, stderr) = validate(dir.path(), &embed_pipeline(&faces, &reference("iresnet_tiny.pth"), &out, ""));
    assert_eq!(code, Some(0), "the fixture fits its config: {stderr}");
    let wrong = tiny_encoder(dir.path(), "wrong.safetensors", |k, _| match k {
        "fc.weight" => Some(Tensor::zeros((16, 100), candle_core::DType::F32, &Device::Cpu).unwrap()),
        "fc.bias" => Some(Tensor::zeros(8, candle_core::DType::F32, &Device::Cpu).unwrap()),
        _ => None,
    });
    let (code, stderr) = validate(dir.path(), &embed_pipeline(&faces, &wrong, &out, ""));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("node `emb`, field `encoder.checkpoint`") && stderr.contains("wrong.safetensors"), "{stderr}");
    assert!(stderr.contains("2 of ") && stderr.contains("first `fc.weight`: expected [16, 25088], found [16, 100]"), "{stderr}");
}

/// `evaluate`'s encoder is checked like `embed`'s, and its benchmark files must exist.
#[test]
fn validate_checks_the_evaluate_encoder_and_benchmarks() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |checkpoint: &Path, bench: &Path| {
        format!(
            "name: ev\nnodes:\n  faces:\n    op: toy-faces\n    identities: 1\n    images_per_identity: 1\n    size: 16\n  report:\n    op: evaluate\n    input: faces\n    output: out\n    benchmarks: [{}]\n    encoder:\n      checkpoint: {}\n      config: {}\n",
            bench.display(),
            checkpoint.display(),
            reference("iresnet_tiny_config.json").display()
        )
    };
    let bench = reference("tiny_verification.bin");
    let (code, stderr) = validate(dir.path(), &pipeline(&reference("iresnet_tiny.pth"), &bench));
    assert_eq!(code, Some(0), "the fixture fits its config: {stderr}");
    let wrong = tiny_encoder(dir.path(), "wrong.safetensors", |k, _| {
        (k == "fc.weight").then(|| Tensor::zeros((16, 100), candle_core::DType::F32, &Device::Cpu).unwrap())
    });
    let (code, stderr) = validate(dir.path(), &pipeline(&wrong, &bench));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("node `report`, field `encoder.checkpoint`") && stderr.contains("first `fc.weight`"), "{stderr}");
    let (code, stderr) = validate(dir.path(), &pipeline(&reference("iresnet_tiny.pth"), &dir.path().join("lfw.bin")));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("node `report`, field `benchmarks`") && stderr.contains("lfw.bin does not exist"), "{stderr}");
}
