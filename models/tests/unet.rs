//! ConditionalUNet against the official IDiff-Face outputs (`idiff_unet_tiny_*`).

mod common;

use candle_core::{DType, Tensor};
use common::{assert_close, get, load_io, reference};
use idflow_models::io::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::unet::{parameter_count, ConditionType, ConditionalUNet, UNetConfig};

fn tiny_config() -> UNetConfig {
    idflow_models::io::presets::reference_tiny_unet()
}

#[test]
fn tiny_config_matches_the_fixture_json() {
    let text = std::fs::read_to_string(reference("idiff_unet_tiny_config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg = UNetConfig::from_official(&json["eps_model"]).unwrap();
    assert_eq!(cfg, tiny_config());
    assert_eq!(cfg.channels_per_level(), vec![32, 32, 64, 64]);
    assert_eq!(parameter_count(&cfg).unwrap(), json["derived"]["n_parameters"].as_u64().unwrap() as usize);
}

#[test]
fn tiny_unet_matches_official_outputs() {
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    assert_eq!(dict.len(), 846);
    let cfg = tiny_config();
    let (unet, report) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(&cfg, vb)).unwrap();
    assert_eq!(report.prefix, "eps_model.");
    assert_eq!(report.consumed.len(), 838);
    assert!(report.unexpected.is_empty() && report.missing.is_empty());
    // the 8 schedule buffers are the only keys outside the model
    assert_eq!(report.outside_prefix.len(), 8);

    let io = load_io("idiff_unet_tiny_io.safetensors");
    let (x, t, context) = (get(&io, "x"), get(&io, "t"), get(&io, "context"));

    assert_close("time_embedding", &unet.time_embedding(t).unwrap(), get(&io, "time_embedding"), 1e-4);
    let c = unet.context_embedding(context).unwrap().unwrap();
    assert_close("context_embedding", &c, get(&io, "context_embedding"), 1e-4);

    let eps = unet.forward(x, t, Some(context), None).unwrap();
    assert_close("eps", &eps, get(&io, "eps"), 1e-4);

    let eps_empty = unet.forward(x, t, None, None).unwrap();
    assert_close("eps_empty_context", &eps_empty, get(&io, "eps_empty_context"), 1e-4);

    let mask = get(&io, "dropout_mask");
    let eps_masked = unet.forward(x, t, Some(context), Some(mask)).unwrap();
    assert_close("eps_dropout_mask", &eps_masked, get(&io, "eps_dropout_mask"), 1e-4);
    // the masked row equals the empty-context row
    assert_close("masked row == empty row", &eps_masked.get(1).unwrap(), &eps_empty.get(1).unwrap(), 1e-6);
}

#[test]
fn class_label_contexts_are_refused_with_a_clear_error() {
    let mut v = serde_json::to_value(tiny_config()).unwrap();
    v["n_context_classes"] = serde_json::json!(10);
    let msg = UNetConfig::from_official(&v).unwrap_err().to_string();
    assert!(msg.contains("n_context_classes"), "{msg}");
    v["n_context_classes"] = serde_json::json!(0);
    v["channel_multipliers"] = serde_json::json!("${constants.mults}");
    // an unresolved hydra interpolation is a type error, not a panic
    let err = UNetConfig::from_official(&v).unwrap_err();
    assert!(matches!(err, idflow_models::ModelError::Config(_)), "{err}");
}

#[test]
fn context_dropout_only_in_training() {
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let cfg = tiny_config();
    let (unet, _) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(&cfg, vb)).unwrap();
    let io = load_io("idiff_unet_tiny_io.safetensors");
    let (x, t, context) = (get(&io, "x"), get(&io, "t"), get(&io, "context"));
    let eval = unet.forward(x, t, Some(context), None).unwrap();
    let mut rng = idflow_dataset::rng::KeyedRng::new(&[1, 2, 3]);
    let train = unet.forward_train(x, t, Some(context), None, &mut rng).unwrap();
    let d = common::max_abs_diff(&eval, &train);
    assert!(d > 1e-3, "training-mode context dropout changed nothing ({d})");
    let mut rng = idflow_dataset::rng::KeyedRng::new(&[1, 2, 3]);
    let again = unet.forward_train(x, t, Some(context), None, &mut rng).unwrap();
    assert_close("same key, same dropout", &train, &again, 0.0);
}

#[test]
fn official_full_configs_have_the_published_parameter_counts() {
    assert_eq!(parameter_count(&UNetConfig::idiff_face_ca()).unwrap(), 216_341_187);
    // `unet_cond_adagn*.yaml` state `# PARAMS: 134595939` (the unconditional YAML repeats the
    // same comment, but without the context layers it is 2,203,776 smaller).
    let cond_adagn = UNetConfig { condition_type: ConditionType::AdaGn, ..UNetConfig::idiff_face_ca() };
    assert_eq!(parameter_count(&cond_adagn).unwrap(), 134_595_939);
}

#[test]
fn unconditional_and_adagn_variants_run() {
    let dev = candle_core::Device::Cpu;
    for (cond, conditional) in
        [(ConditionType::AdaGn, true), (ConditionType::AdaGn, false), (ConditionType::DiffAe, true), (ConditionType::AddPlusGn, true)]
    {
        let cfg = UNetConfig { condition_type: cond, is_context_conditional: conditional, ..tiny_config() };
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let unet = ConditionalUNet::new(&cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &dev).unwrap();
        let t = Tensor::new(&[3i64, 700], &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (2, 512), &dev).unwrap();
        let y = unet.forward(&x, &t, Some(&ctx), None).unwrap();
        assert_eq!(y.dims(), &[2, 3, 16, 16]);
        let y0 = unet.forward(&x, &t, None, None).unwrap();
        assert_eq!(y0.dims(), &[2, 3, 16, 16]);
        // the context changes the output exactly when the model is conditional
        let differs = common::max_abs_diff(&y, &y0) > 0.0;
        assert_eq!(differs, conditional, "{cond:?} conditional={conditional}");
    }
}
