//! Every architecture preset through both implementations of its single definition: the candle
//! backend (native forward) and the ONNX trace (compiled graph run by ONNX Runtime), on seeded
//! random weights in the official key layout. Presets: the reference fixtures' tiny shapes, the
//! toy world's committed shapes, and the full-size published shapes (IDiff-Face's 216 M
//! ConditionalUNet in its CA and unconditional AdaGN forms, the LDM VQ-f4 first stage,
//! ElasticFace IResNet-50/100, TFace IR-50), the large ones on small inputs.

mod common;

use candle_core::{Device, Module, Tensor};
use common::max_abs_diff;
use idflow_dataset::rng::KeyedRng;
use idflow_models::io::checkpoint::{load_model, parameter_shapes, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig, IrBackbone};
use idflow_models::onnx::random::random_state_dict;
use idflow_models::onnx::{
    compile_iresnet, compile_tface_ir, compile_unet, compile_vq_decoder, compile_vq_encoder, CompileOptions, OrtDenoiser, OrtFaceEncoder,
    OrtFirstStage, OrtRuntime, SessionOptions, UNetExport,
};
use idflow_models::traits::{Denoiser, FaceEncoder, FirstStage};
use idflow_models::unet::{ConditionalUNet, UNetConfig};
use idflow_models::vq::{VqConfig, VqDecoder, VqEncoder};
use idflow_testkit::{ort_dylib, reference, workspace_root};

fn runtime() -> OrtRuntime {
    OrtRuntime::new(Some(&ort_dylib())).expect("ONNX Runtime must load")
}

fn session(bytes: &[u8]) -> idflow_models::onnx::OrtSession {
    runtime().session_from_bytes(bytes, &SessionOptions::cpu(2)).unwrap()
}

fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v = vec![0f32; shape.iter().product()];
    rng.fill_normal_f32(&mut v);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Asserts `onnx` ≈ `native` within `tol` relative to the larger of 1 and max |native|.
fn assert_backends_agree(what: &str, onnx: &Tensor, native: &Tensor, tol: f64) {
    assert_eq!(onnx.dims(), native.dims(), "{what}: shapes");
    let scale = native.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let diff = max_abs_diff(onnx, native);
    eprintln!("{what}: ONNX vs candle max abs diff {diff:e} (max |native| {scale:.3})");
    assert!(diff.is_finite() && diff <= tol * scale.max(1.0), "{what}: ONNX and candle differ by {diff:e}");
}

fn json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toy(path: &str) -> std::path::PathBuf {
    workspace_root().join("models/toy").join(path)
}

fn random_weights<M>(build: impl FnOnce(candle_nn::VarBuilder) -> candle_core::Result<M>) -> StateDict {
    random_state_dict(&parameter_shapes(build).unwrap(), 17).unwrap()
}

// ---------------------------------------------------------------- ConditionalUNet

fn check_unet(name: &str, cfg: &UNetConfig, side: usize) {
    let dict = random_weights(|vb| ConditionalUNet::new(cfg, vb));
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(cfg, vb)).unwrap();
    let bytes = compile_unet(&dict, cfg, &UNetExport::default(), &CompileOptions::default()).unwrap();
    let onnx = OrtDenoiser::new(session(&bytes)).unwrap();
    let x = random_tensor(&[2, cfg.input_channels, side, side], 1);
    let t = Tensor::new(&[17i64, 930], &Device::Cpu).unwrap();
    let c = random_tensor(&[2, cfg.context_input_channels], 2);
    let ctx = cfg.is_context_conditional.then_some(&c);
    assert_backends_agree(&format!("{name} eps"), &onnx.eps(&x, &t, ctx).unwrap(), &native.eps(&x, &t, ctx).unwrap(), 1e-4);
    if cfg.is_context_conditional {
        let (a, b) = (onnx.eps_guided(&x, &t, &c, 2.0).unwrap(), native.eps_guided(&x, &t, &c, 2.0).unwrap());
        assert_backends_agree(&format!("{name} guided eps"), &a, &b, 1e-4);
    }
}

#[test]
fn unet_reference_tiny_and_toy_presets_agree() {
    let tiny = UNetConfig::from_official(&json(reference("idiff_unet_tiny_config.json"))["eps_model"]).unwrap();
    check_unet("UNet reference-tiny", &tiny, 16);
    let toy_cfg: UNetConfig = serde_json::from_value(json(toy("ldm/config.json"))).unwrap();
    check_unet("UNet toy", &toy_cfg, 8);
}

#[test]
fn unet_full_size_presets_agree() {
    check_unet("UNet IDiff-Face CA (216 M)", &UNetConfig::idiff_face_ca(), 8);
    check_unet("UNet IDiff-Face unconditional AdaGN", &UNetConfig::idiff_face_uncond_adagn(), 8);
}

// ---------------------------------------------------------------- VQ-f4

fn check_vq(name: &str, cfg: &VqConfig, n_embed: usize, side: usize) {
    let enc_dict = random_weights(|vb| VqEncoder::new(cfg, vb));
    let dec_dict = random_weights(|vb| VqDecoder::new(cfg, n_embed, vb));
    let (enc, _) = load_model(&enc_dict, &LoadOptions::default(), |vb| VqEncoder::new(cfg, vb)).unwrap();
    let (dec, _) = load_model(&dec_dict, &LoadOptions::default(), |vb| VqDecoder::new(cfg, n_embed, vb)).unwrap();
    let o = CompileOptions::default();
    let e = session(&compile_vq_encoder(&enc_dict, cfg, &o).unwrap());
    let quantising = OrtFirstStage::new(Some(e), session(&compile_vq_decoder(&dec_dict, cfg, true, &o).unwrap()));
    let plain = OrtFirstStage::new(None, session(&compile_vq_decoder(&dec_dict, cfg, false, &o).unwrap()));
    let x = random_tensor(&[2, cfg.in_channels, side, side], 3).tanh().unwrap();
    let z = enc.encode(&x).unwrap();
    assert_backends_agree(&format!("{name} encode"), &quantising.encode(&x).unwrap(), &z, 1e-4);
    let (img, idx) = quantising.decode_with_indices(&z).unwrap();
    let native_idx = dec.quantizer().indices(&z).unwrap().flatten_all().unwrap().to_dtype(candle_core::DType::I64).unwrap();
    assert_eq!(idx.unwrap(), native_idx.to_vec1::<i64>().unwrap(), "{name}: code indices");
    assert_backends_agree(&format!("{name} decode"), &img, &dec.decode(&z, false).unwrap(), 1e-4);
    assert_backends_agree(&format!("{name} decode unquantised"), &plain.decode(&z).unwrap(), &dec.decode(&z, true).unwrap(), 1e-4);
}

#[test]
fn vq_presets_agree() {
    let tiny = idflow_models::io::presets::reference_tiny_vq();
    check_vq("VQ reference-tiny", &tiny, 64, 32);
    let with_attention = VqConfig { attn_resolutions: vec![16, 8], ..tiny };
    check_vq("VQ tiny with attention", &with_attention, 64, 32);
    let toy_cfg: VqConfig = serde_json::from_value(json(toy("first-stage/config.json"))).unwrap();
    check_vq("VQ toy", &toy_cfg, 128, 32);
    check_vq("VQ-f4 (IDiff-Face)", &VqConfig::vq_f4(), 8192, 32);
}

// ---------------------------------------------------------------- IResNet / IR

fn check_face(name: &str, bytes: Vec<u8>, native: &dyn Fn(&Tensor) -> Tensor, side: usize, tol: f64) {
    let onnx = OrtFaceEncoder::new(session(&bytes));
    let x = random_tensor(&[2, 3, side, side], 4).tanh().unwrap();
    assert_backends_agree(name, &onnx.embed(&x).unwrap(), &native(&x), tol);
}

fn check_iresnet(name: &str, cfg: &IResNetConfig) {
    let dict = random_weights(|vb| IResNet::new(cfg, vb));
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(cfg, vb)).unwrap();
    let bytes = compile_iresnet(&dict, cfg, &CompileOptions::default()).unwrap();
    check_face(name, bytes, &|x| native.forward(x).unwrap(), cfg.input_size, 1e-4);
}

#[test]
fn iresnet_presets_agree() {
    check_iresnet("IResNet reference-tiny", &idflow_models::io::presets::reference_tiny_iresnet());
    check_iresnet("IResNet toy", &serde_json::from_value(json(toy("encoder/config.json"))).unwrap());
    // an input side that is not a multiple of 16 (stages round up)
    check_iresnet("IResNet 40 px", &IResNetConfig { layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], num_features: 8, input_size: 40 });
    check_iresnet("IResNet-50", &IResNetConfig::depth(50).unwrap());
    check_iresnet("IResNet-100", &IResNetConfig::depth(100).unwrap());
}

#[test]
fn tface_ir50_agrees() {
    let dict = random_weights(|vb| IrBackbone::new(50, vb));
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IrBackbone::new(50, vb)).unwrap();
    let bytes = compile_tface_ir(&dict, 50, &CompileOptions::default()).unwrap();
    check_face("TFace IR-50", bytes, &|x| native.forward(x).unwrap(), 112, 1e-4);
}
