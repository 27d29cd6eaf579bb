//! Checkpoint reading and strict loading: malicious pickles, missing/unexpected keys, prefixes,
//! safetensors round trips.

mod common;

use std::io::Write;
use std::path::Path;

use candle_core::{Module, Tensor};
use common::{assert_close, get, load_io, reference};
use idflow_models::io::checkpoint::{load_model, load_model_from_file, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::schedule::SCHEDULE_KEYS;
use idflow_models::ModelError;

fn write_zip(path: &Path, records: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in records {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn tiny_cfg() -> IResNetConfig {
    idflow_models::io::presets::reference_tiny_iresnet()
}

fn tiny_dict() -> StateDict {
    StateDict::from_torch_file(reference("iresnet_tiny.pth")).unwrap()
}

#[test]
fn crafted_pickle_calling_os_system_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.ckpt");
    // protocol 2: GLOBAL os.system, ("echo pwned",), REDUCE, STOP
    let mut pkl = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.".to_vec();
    pkl.shrink_to_fit();
    write_zip(&path, &[("evil/data.pkl", &pkl), ("evil/version", b"3\n")]);
    let err = StateDict::from_torch_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Checkpoint { .. }), "{msg}");
    assert!(msg.contains("os.system") && msg.contains("evil.ckpt"), "unclear error: {msg}");
    let err = load_model_from_file(&path, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)).unwrap_err();
    assert!(err.to_string().contains("os.system"));
}

#[test]
fn non_zip_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.pth");
    std::fs::write(&path, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    let msg = StateDict::from_torch_file(&path).unwrap_err().to_string();
    assert!(msg.contains("legacy.pth"), "{msg}");
}

#[test]
fn every_key_of_the_unet_checkpoint_is_consumed_by_unet_plus_schedule() {
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let cfg: idflow_models::unet::UNetConfig = {
        let text = std::fs::read_to_string(reference("idiff_unet_tiny_config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let m = v["eps_model"].as_object_mut().unwrap();
        m.remove("_target_");
        m.remove("n_context_classes");
        serde_json::from_value(v["eps_model"].clone()).unwrap()
    };
    let (_, report) = load_model(&dict, &LoadOptions::default(), |vb| idflow_models::unet::ConditionalUNet::new(&cfg, vb)).unwrap();
    assert_eq!(report.outside_prefix, SCHEDULE_KEYS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(report.consumed.len() + report.outside_prefix.len(), dict.len());
    assert!(idflow_models::schedule::DdpmSchedule::from_state_dict(&dict).unwrap().is_some());
}

#[test]
fn strict_loading_reports_missing_unexpected_and_shape_mismatches() {
    let dict = tiny_dict();
    let drop_key = "layer2.0.bn3.running_var";
    let fewer = StateDict::new("fewer", dict.entries().iter().filter(|(k, _)| k != drop_key).cloned().collect());
    match load_model(&fewer, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)) {
        Err(ModelError::KeyMismatch { missing, unexpected, .. }) => {
            assert_eq!(missing, vec![drop_key.to_string()]);
            assert!(unexpected.is_empty());
        }
        other => panic!("expected a key mismatch, got {:?}", other.map(|(_, r)| r)),
    }
    let lax = LoadOptions { strict: false, ..LoadOptions::default() };
    let (_, report) = load_model(&fewer, &lax, |vb| IResNet::new(&tiny_cfg(), vb)).unwrap();
    assert_eq!(report.missing, vec![drop_key.to_string()]);

    let mut extra = dict.entries().to_vec();
    extra.push(("head.weight".into(), Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap()));
    let extra = StateDict::new("extra", extra);
    let msg = load_model(&extra, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)).unwrap_err().to_string();
    assert!(msg.contains("head.weight") && msg.contains("unexpected"), "{msg}");
    let (_, report) = load_model(&extra, &lax, |vb| IResNet::new(&tiny_cfg(), vb)).unwrap();
    assert_eq!(report.unexpected, vec!["head.weight".to_string()]);

    // a wrong shape is refused even when not strict
    let wrong = IResNetConfig { layers: [1, 1, 1, 1], num_features: 32, ..Default::default() };
    let msg = load_model(&dict, &lax, |vb| IResNet::new(&wrong, vb)).unwrap_err().to_string();
    assert!(msg.contains("fc.weight"), "{msg}");
}

#[test]
fn prefixed_and_safetensors_state_dicts_load_to_the_same_model() {
    let dict = tiny_dict();
    let io = load_io("iresnet_tiny_io.safetensors");
    let input = get(&io, "input");
    let (reference, _) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)).unwrap();
    let expected = reference.forward(input).unwrap();

    let prefixed = StateDict::new("dataparallel", dict.entries().iter().map(|(k, t)| (format!("module.{k}"), t.clone())).collect());
    let (net, report) = load_model(&prefixed, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)).unwrap();
    assert_eq!(report.prefix, "module.");
    assert_close("module.-prefixed", &net.forward(input).unwrap(), &expected, 0.0);
    let explicit = LoadOptions { prefix: Some("module.".into()), ..LoadOptions::default() };
    assert!(load_model(&prefixed, &explicit, |vb| IResNet::new(&tiny_cfg(), vb)).is_ok());
    let wrong = LoadOptions { prefix: Some("first_stage_model.".into()), ..LoadOptions::default() };
    assert!(load_model(&prefixed, &wrong, |vb| IResNet::new(&tiny_cfg(), vb)).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iresnet_tiny.safetensors");
    dict.save_safetensors(&path).unwrap();
    let (net, report) = load_model_from_file(&path, &LoadOptions::default(), |vb| IResNet::new(&tiny_cfg(), vb)).unwrap();
    assert_eq!(report.consumed.len(), 115);
    assert_close("from safetensors", &net.forward(input).unwrap(), &expected, 0.0);
}

#[test]
fn one_call_loaders_read_the_official_files() {
    let opts = LoadOptions::default();
    let cfg = idflow_models::io::presets::reference_tiny_vq();
    let vq = idflow_models::io::pretrained::load_vq_first_stage(
        reference("vq_tiny_first_stage_encoder_state_dict.pt"),
        reference("vq_tiny_first_stage_decoder_state_dict.pt"),
        &cfg,
        &opts,
    )
    .unwrap();
    assert_eq!(vq.decoder.quantizer().codebook_shape(), (64, 3));
    let net = idflow_models::io::pretrained::load_iresnet(reference("iresnet_tiny.pth"), &tiny_cfg(), &opts).unwrap();
    let io = load_io("iresnet_tiny_io.safetensors");
    assert_close("load_iresnet", &net.forward(get(&io, "input")).unwrap(), get(&io, "features"), 1e-4);
}

#[test]
fn load_idiff_face_returns_the_unet_and_the_checkpoint_schedule() {
    let text = std::fs::read_to_string(reference("idiff_unet_tiny_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = v["eps_model"].as_object_mut().unwrap();
    m.remove("_target_");
    m.remove("n_context_classes");
    let cfg: idflow_models::unet::UNetConfig = serde_json::from_value(v["eps_model"].clone()).unwrap();
    let (unet, schedule, report) =
        idflow_models::io::pretrained::load_idiff_face(reference("idiff_unet_tiny.ckpt"), &cfg, &LoadOptions::default()).unwrap();
    assert_eq!(report.prefix, "eps_model.");
    assert_eq!(schedule.len(), 1000);
    let io = load_io("idiff_unet_tiny_io.safetensors");
    let eps = unet.forward(get(&io, "x"), get(&io, "t"), Some(get(&io, "context")), None).unwrap();
    assert_close("eps via load_idiff_face", &eps, get(&io, "eps"), 1e-4);
}
