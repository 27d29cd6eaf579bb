//! `idflow compile`: official checkpoints become ONNX files that ONNX Runtime loads, with the
//! documented graph interface; bad input is a clear error.

mod common;
use common::*;
use std::path::Path;

fn compile(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["compile"];
    all.extend_from_slice(args);
    idflow(dir, &all)
}

#[test]
fn reference_checkpoints_compile_to_loadable_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runtime = idflow_models::onnx::OrtRuntime::new(Some(&ort_dylib())).unwrap();
    let cases: Vec<(Vec<String>, Vec<&str>, Vec<&str>)> = vec![
        (
            vec![
                "--model".into(),
                "iresnet".into(),
                "--checkpoint".into(),
                reference("iresnet_tiny.pth").display().to_string(),
                "--config".into(),
                reference("iresnet_tiny_config.json").display().to_string(),
            ],
            vec!["image"],
            vec!["features"],
        ),
        (
            vec![
                "--model".into(),
                "unet".into(),
                "--checkpoint".into(),
                reference("idiff_unet_tiny.ckpt").display().to_string(),
                "--config".into(),
                "reference-tiny".into(),
                "--dropout-mask".into(),
            ],
            vec!["x", "t", "context", "dropout_mask"],
            vec!["eps"],
        ),
        (
            vec![
                "--model".into(),
                "vq-decoder".into(),
                "--checkpoint".into(),
                reference("vq_tiny_first_stage_decoder_state_dict.pt").display().to_string(),
                "--config".into(),
                "reference-tiny".into(),
            ],
            vec!["z"],
            vec!["image"],
        ),
        (
            vec![
                "--model".into(),
                "vq-encoder".into(),
                "--checkpoint".into(),
                reference("vq_tiny_first_stage_encoder_state_dict.pt").display().to_string(),
                "--config".into(),
                "reference-tiny".into(),
            ],
            vec!["image"],
            vec!["latent"],
        ),
    ];
    for (k, (args, inputs, outputs)) in cases.into_iter().enumerate() {
        let file = d.join(format!("m{k}.onnx"));
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["--out", file.to_str().unwrap()]);
        let out = compile(d, &a);
        assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
        let session = runtime.session_from_file(&file, &Default::default()).unwrap();
        assert_eq!(session.input_names(), inputs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{a:?}");
        for o in outputs {
            assert!(session.output_names().iter().any(|n| n == o), "{a:?}: outputs {:?}", session.output_names());
        }
    }
}

#[test]
fn a_checkpoint_that_does_not_fit_the_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("x.onnx");
    let out = compile(
        dir.path(),
        &[
            "--model",
            "unet",
            "--checkpoint",
            reference("idiff_unet_tiny.ckpt").to_str().unwrap(),
            "--config",
            "idiff-face-ca",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("idiff_unet_tiny.ckpt") && !stderr.contains("panicked"), "{stderr}");
    assert!(!out_file.exists(), "no partial output");
}
