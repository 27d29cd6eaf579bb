//! Regression tests of the committed toy models (`models/toy/`): each loads strictly from the
//! files the toy training pipelines wrote and reproduces the metrics recorded in its
//! `metrics.json` (and quoted in its README card) within a small tolerance.

mod common;

use common::{run_ok, run_pipeline};
use idflow_models::io::checkpoint::LoadOptions;
use idflow_models::vq::VqConfig;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn toy(model: &str) -> PathBuf {
    repo().join("models/toy").join(model)
}

/// A number recorded in `models/toy/<model>/metrics.json`.
fn recorded(model: &str, key: &str) -> f64 {
    let path = toy(model).join("metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json[key].as_f64().unwrap_or_else(|| panic!("{}: no number `{key}`", path.display()))
}

/// Mean absolute error (on the [−1, 1] scale) of encode → quantise → decode over toy faces of
/// identities the first stage never saw (900,000 + i), two samples each, at 32 px.
fn reconstruction_l1(cfg: &VqConfig) -> f64 {
    use candle_core::{Device, Tensor};
    use idflow_models::traits::FirstStage;
    let dir = toy("first-stage");
    let model = idflow_models::io::pretrained::load_vq_first_stage(
        dir.join("first_stage_encoder_state_dict.safetensors"),
        dir.join("first_stage_decoder_state_dict.safetensors"),
        cfg,
        &LoadOptions::default(),
    )
    .expect("the committed first stage loads strictly");
    let difficulty = idflow_dataset::toy::Difficulty::default();
    let mut pixels = Vec::new();
    let n = 32;
    for k in 0..n {
        let img = idflow_dataset::toy::render(0, 900_000 + k / 2, k % 2, 0.2, 32, &difficulty).unwrap();
        for c in 0..3 {
            pixels.extend(img.as_raw().chunks_exact(3).map(|p| p[c] as f32 / 127.5 - 1.0));
        }
    }
    let x = Tensor::from_vec(pixels, (n as usize, 3, 32, 32), &Device::Cpu).unwrap();
    let z = model.encode(&x).unwrap();
    let y = model.decode(&z).unwrap().clamp(-1f32, 1f32).unwrap();
    (x - y).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64
}

fn vq_config() -> VqConfig {
    let text = std::fs::read_to_string(toy("first-stage").join("config.json")).unwrap();
    serde_json::from_str(&text).expect("first-stage config.json is a VqConfig")
}

#[test]
fn first_stage_reconstructs_unseen_faces_as_recorded() {
    let l1 = reconstruction_l1(&vq_config());
    let want = recorded("first-stage", "reconstruction_l1_unseen");
    assert!((l1 - want).abs() < 2e-3, "reconstruction L1 {l1:.5}, recorded {want:.5}");
}

#[test]
fn encoder_reaches_its_recorded_toy_lfw_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("bench");
    run_ok(dir.path(), &["toy", "benchmarks", "--size", "32", "--out", bench.to_str().unwrap()]);
    let enc = toy("encoder");
    let text = format!(
        "name: toy-encoder-check\nseed: 0\nworkers: 1\nnodes:\n  placeholder:\n    op: toy-faces\n    identities: 1\n    images_per_identity: 1\n    size: 16\n  bench:\n    op: evaluate\n    input: placeholder\n    output: {out}\n    benchmarks: [{lfw}]\n    encoder: {{checkpoint: {ckpt}, config: {cfg}}}\n",
        out = dir.path().join("eval").display(),
        lfw = bench.join("toy_lfw.bin").display(),
        ckpt = enc.join("backbone.safetensors").display(),
        cfg = enc.join("config.json").display(),
    );
    run_pipeline(dir.path(), "eval.yaml", &text);
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval/metrics.json")).unwrap()).unwrap();
    let acc = accuracy_of(&metrics, "toy_lfw");
    let want = recorded("encoder", "toy_lfw");
    assert!((acc - want).abs() < 0.005, "toy_lfw accuracy {acc:.4}, recorded {want:.4}");
}

/// The mean 10-fold accuracy of benchmark `name` in an evaluate `metrics.json`.
fn accuracy_of(metrics: &serde_json::Value, name: &str) -> f64 {
    let benches = metrics["benchmarks"].as_array().unwrap_or_else(|| panic!("no benchmarks in {metrics}"));
    let b = benches.iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no {name} in {metrics}"));
    b["accuracy_mean"].as_f64().unwrap_or_else(|| panic!("no accuracy_mean in {b}"))
}

#[test]
fn ldm_checkpoints_load_as_idiff_face_models() {
    let mut weights = Vec::new();
    for (model, cpd) in [("ldm", 0.25), ("ldm-cpd0", 0.0)] {
        let cfg: idflow_models::unet::UNetConfig =
            serde_json::from_str(&std::fs::read_to_string(toy(model).join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg.context_dropout_probability, cpd, "{model}: CPD probability of its config");
        let path: &Path = &toy(model).join("ema_averaged_model.safetensors");
        idflow_models::io::pretrained::load_idiff_face(path, &cfg, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        weights.push(idflow_models::io::checkpoint::StateDict::from_file(path).unwrap());
    }
    // the ablation is its own training run, not a copy: some weight differs
    let (a, b) = (&weights[0], &weights[1]);
    let differs = a.keys().any(|k| {
        let (x, y) = (a.get(k).unwrap(), b.get(k).unwrap());
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap() != y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    });
    assert!(differs, "models/toy/ldm-cpd0 holds the same weights as models/toy/ldm");
}
