//! `evaluate` on a verification benchmark: the reference `.bin` through the reference IResNet
//! must reproduce the official pipeline's numbers (fixtures README, section 7).

mod common;
use common::*;

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The default backend (ONNX Runtime) gives the official numbers. (The native encoder is the
/// same `load_iresnet` path as `embed`'s, checked against the official features on both
/// backends in `gen_filter.rs`; running this slow protocol natively too doubled the test time.)
#[test]
fn tiny_verification_bin_matches_the_official_pipeline() {
    check_tiny_verification_bin("onnx");
}

fn check_tiny_verification_bin(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let bin = reference("tiny_verification.bin");
    let ckpt = reference("iresnet_tiny.pth");
    // The fixture's config: IResNet [1,1,1,1], 16 features, flip TTA, 10 folds.
    let pipeline = format!(
        "name: eval-bin\nseed: 3\nnodes:\n  faces:\n    op: toy-faces\n    identities: 1\n    images_per_identity: 1\n    size: 16\n  report:\n    op: evaluate\n    input: faces\n    output: {}\n    benchmarks: [{}]\n    encoder:\n      checkpoint: {}\n      backend: {backend}\n      config: {{layers: [1, 1, 1, 1], num_features: 16}}\n",
        out.display(),
        bin.display(),
        ckpt.display()
    );
    write_pipeline(dir.path(), "p.yaml", &pipeline);
    let run = idflow(dir.path(), &["run", "p.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "idflow ({backend}) failed: {stderr}");
    assert!(stderr.contains("| Model | LFW | CFP-FP | CPLFW | AgeDB | CALFW | tiny_verification | Average |"), "table printed: {stderr}");

    let expected = json(&reference("verification_expected.json"))["tiny_verification_bin"].clone();
    let metrics = json(&out.join("metrics.json"));
    let got = &metrics["benchmarks"][0];
    assert_eq!(got["name"], "tiny_verification");
    assert_eq!(got["pairs"], 60);
    // Counts and ratios exactly.
    assert_eq!(f64s(&got["accuracy_per_fold"]), f64s(&expected["accuracy_per_fold"]));
    assert_eq!(got["accuracy_mean"].as_f64(), expected["accuracy_mean"].as_f64());
    assert_eq!(got["accuracy_std"].as_f64(), expected["accuracy_std"].as_f64());
    assert_eq!(got["best_threshold_index_per_fold"], expected["best_threshold_index_per_fold"]);
    assert_eq!(got["val_at_far_1e_3_mean"].as_f64(), expected["val_at_far_1e_3_mean"].as_f64());
    assert_eq!(got["val_at_far_1e_3_std"].as_f64(), expected["val_at_far_1e_3_std"].as_f64());
    assert_eq!(got["far_mean"].as_f64(), expected["far_mean"].as_f64());
    // Thresholds to 1e-9.
    for key in ["best_threshold_per_fold", "val_threshold_per_fold"] {
        let (g, e) = (f64s(&got[key]), f64s(&expected[key]));
        assert_eq!(g.len(), e.len(), "{key}");
        for (k, (a, b)) in g.iter().zip(&e).enumerate() {
            assert!((a - b).abs() < 1e-9, "{backend}: {key}[{k}]: {a} vs {b}");
        }
    }
    // The mean raw feature norm: `image` decodes the JPEGs slightly differently from
    // libjpeg-turbo (pixels within ±2), which moves features by up to ~1e-2 and xnorm by ~1e-4
    // relative; the encoder itself is checked on the reference pixels in the unit tests.
    let (xg, xe) = (got["xnorm"].as_f64().unwrap(), expected["xnorm"].as_f64().unwrap());
    assert!((xg - xe).abs() < 1e-3 * xe, "{backend}: xnorm {xg} vs {xe}");

    // Tables: the benchmark is not one of the seed's five, so it gets its own column and the
    // five stay blank; Average is over the present one.
    let csv = std::fs::read_to_string(out.join("benchmarks.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "model,LFW,CFP-FP,CPLFW,AgeDB,CALFW,tiny_verification,Average");
    assert_eq!(lines[1], "iresnet_tiny,,,,,,85,85");
    let md = std::fs::read_to_string(out.join("benchmarks.md")).unwrap();
    assert!(md.contains("| iresnet_tiny |  |  |  |  |  | 85.00 | 85.00 |"), "{md}");
    assert!(!out.join("dataset_metrics.md").exists(), "no embeddings in the input: no dataset metrics");
}

/// `idflow validate` of a toy-faces → evaluate pipeline with the extra evaluate fields `extra`:
/// the exit status and standard error.
fn validate_evaluate(extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!("name: bad\nnodes:\n  faces:\n    op: toy-faces\n    identities: 1\n    images_per_identity: 1\n  report:\n    op: evaluate\n    input: faces\n    output: out\n{extra}");
    write_pipeline(dir.path(), "p.yaml", &pipeline);
    let run = idflow(dir.path(), &["validate", "p.yaml"]);
    (run.status.code(), String::from_utf8_lossy(&run.stderr).into_owned())
}

#[test]
fn benchmarks_without_an_encoder_are_a_config_error() {
    let (code, stderr) = validate_evaluate("    benchmarks: [lfw.bin]\n");
    assert_eq!(code, Some(idflow::EXIT_CONFIG));
    assert!(stderr.contains("encoder") && stderr.contains("report"), "{stderr}");
}

#[test]
fn an_input_without_embeddings_and_no_benchmarks_is_refused() {
    let (code, stderr) = validate_evaluate("");
    assert_ne!(code, Some(0));
    assert!(stderr.contains("nothing to evaluate"), "{stderr}");
}
