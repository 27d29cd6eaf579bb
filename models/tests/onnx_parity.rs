//! ONNX export parity: every reference fixture compiled from its official checkpoint, run through
//! ONNX Runtime, compared with the golden outputs (README tolerances), and ORT vs the native
//! candle forward on a batch of 5 (dynamic batch).
//!
//! The ONNX Runtime library comes from `tests/py/ort_env.sh` (a venv with the PyPI wheel); when it
//! cannot be had the tests fail.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use common::{assert_close, get, load_io, max_abs_diff, ort_dylib, reference};
use idflow_dataset::rng::KeyedRng;
use idflow_models::io::checkpoint::{load_model, parameter_shapes, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::random::random_state_dict;
use idflow_models::onnx::{
    compile_iresnet, compile_unet, compile_vq_decoder, compile_vq_encoder, CompileOptions, OrtDenoiser, OrtFaceEncoder, OrtFirstStage,
    OrtRuntime, SessionOptions, TimestepType, UNetExport,
};
use idflow_models::traits::{Denoiser, FaceEncoder, FirstStage};
use idflow_models::unet::{ConditionalUNet, UNetConfig};
use idflow_models::vq::{VqConfig, VqDecoder, VqEncoder};

fn runtime() -> OrtRuntime {
    OrtRuntime::new(Some(&ort_dylib())).expect("ONNX Runtime must load")
}

fn opts() -> SessionOptions {
    SessionOptions::cpu(2)
}

fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v = vec![0f32; shape.iter().product()];
    rng.fill_normal_f32(&mut v);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

// ---------------------------------------------------------------- IResNet

fn iresnet_config() -> IResNetConfig {
    idflow_models::io::presets::reference_tiny_iresnet()
}

fn iresnet_encoder() -> (OrtFaceEncoder, StateDict) {
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    let bytes = compile_iresnet(&dict, &iresnet_config(), &CompileOptions::default()).unwrap();
    let session = runtime().session_from_bytes(&bytes, &opts()).unwrap();
    assert_eq!(session.active_providers(), ["CPUExecutionProvider"]);
    (OrtFaceEncoder::new(session), dict)
}

#[test]
fn iresnet_features_match_reference() {
    let (enc, _) = iresnet_encoder();
    let io = load_io("iresnet_tiny_io.safetensors");
    let features = enc.embed(get(&io, "input")).unwrap();
    assert_close("IResNet features", &features, get(&io, "features"), 1e-4);
    let flipped = get(&io, "input").flip(&[3]).unwrap();
    let f2 = enc.embed(&flipped).unwrap();
    assert_close("IResNet features (flipped input)", &f2, get(&io, "features_flipped_input"), 1e-4);
}

#[test]
fn iresnet_batch_of_five_matches_native() {
    let (enc, dict) = iresnet_encoder();
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(&iresnet_config(), vb)).unwrap();
    let x = random_tensor(&[5, 3, 112, 112], 11);
    let a = enc.embed(&x).unwrap();
    let b = native.forward(&x).unwrap();
    assert_eq!(a.dims(), [5, 16]);
    assert_close("IResNet ORT vs native, batch 5", &a, &b, 1e-4);
}

// ---------------------------------------------------------------- VQ

fn vq_config() -> VqConfig {
    idflow_models::io::presets::reference_tiny_vq()
}

struct Vq {
    quantizing: OrtFirstStage,
    plain: OrtFirstStage,
    enc: StateDict,
    dec: StateDict,
}

fn vq() -> Vq {
    let enc = StateDict::from_file(reference("vq_tiny_first_stage_encoder_state_dict.pt")).unwrap();
    let dec = StateDict::from_file(reference("vq_tiny_first_stage_decoder_state_dict.pt")).unwrap();
    let cfg = vq_config();
    let o = CompileOptions::default();
    let rt = runtime();
    let e_bytes = compile_vq_encoder(&enc, &cfg, &o).unwrap();
    let dq_bytes = compile_vq_decoder(&dec, &cfg, true, &o).unwrap();
    let dn_bytes = compile_vq_decoder(&dec, &cfg, false, &o).unwrap();
    let session = |b: &[u8]| rt.session_from_bytes(b, &opts()).unwrap();
    Vq {
        quantizing: OrtFirstStage::new(Some(session(&e_bytes)), session(&dq_bytes)),
        plain: OrtFirstStage::new(Some(session(&e_bytes)), session(&dn_bytes)),
        enc,
        dec,
    }
}

fn assert_indices(what: &str, got: &[i64], want: &Tensor) {
    let want = want.flatten_all().unwrap().to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(got, want.as_slice(), "{what}: code indices differ");
}

#[test]
fn vq_matches_reference() {
    let v = vq();
    let io = load_io("vq_tiny_io.safetensors");
    let h = v.quantizing.encode(get(&io, "x")).unwrap();
    assert_close("VQ encoder h", &h, get(&io, "h"), 1e-4);

    let (img, idx) = v.quantizing.decode_with_indices(get(&io, "z")).unwrap();
    assert_close("VQ decoded_quantized", &img, get(&io, "decoded_quantized"), 1e-4);
    assert_indices("z", &idx.expect("quantising decoder outputs indices"), get(&io, "z_q_indices"));

    let (img, idx) = v.plain.decode_with_indices(get(&io, "z")).unwrap();
    assert!(idx.is_none());
    assert_close("VQ decoded_not_quantized", &img, get(&io, "decoded_not_quantized"), 1e-4);

    // indices of the reference h (not our h, whose codes may sit near a tie) and the round trip
    let (img, idx) = v.quantizing.decode_with_indices(get(&io, "h")).unwrap();
    assert_indices("h", &idx.unwrap(), get(&io, "h_q_indices"));
    assert_close("VQ decoded_h_quantized", &img, get(&io, "decoded_h_quantized"), 1e-4);
}

#[test]
fn vq_batch_of_five_matches_native() {
    let v = vq();
    let cfg = vq_config();
    let (enc, _) = load_model(&v.enc, &LoadOptions::default(), |vb| VqEncoder::new(&cfg, vb)).unwrap();
    let (dec, _) = load_model(&v.dec, &LoadOptions::default(), |vb| VqDecoder::new(&cfg, 64, vb)).unwrap();
    let x = random_tensor(&[5, 3, 32, 32], 21).tanh().unwrap();
    assert_close("VQ encode ORT vs native, batch 5", &v.quantizing.encode(&x).unwrap(), &enc.encode(&x).unwrap(), 1e-4);
    let z = random_tensor(&[5, 3, 8, 8], 22);
    let (img, idx) = v.quantizing.decode_with_indices(&z).unwrap();
    let native_idx = dec.quantizer().indices(&z).unwrap();
    assert_indices("batch-5 z", &idx.unwrap(), &native_idx);
    assert_close("VQ decode ORT vs native, batch 5", &img, &dec.decode(&z, false).unwrap(), 1e-4);
    assert_close("VQ decode (no quantiser) ORT vs native", &v.plain.decode(&z).unwrap(), &dec.decode(&z, true).unwrap(), 1e-4);
    // spatial size is symbolic too: a 48×48 image → 12×12 latent
    let x48 = random_tensor(&[2, 3, 48, 48], 23).tanh().unwrap();
    assert_close("VQ encode 48×48", &v.quantizing.encode(&x48).unwrap(), &enc.encode(&x48).unwrap(), 1e-4);
}

// ---------------------------------------------------------------- UNet

fn unet_config() -> UNetConfig {
    let text = std::fs::read_to_string(reference("idiff_unet_tiny_config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut eps_model = json["eps_model"].clone();
    let obj = eps_model.as_object_mut().unwrap();
    obj.remove("_target_");
    obj.remove("n_context_classes");
    serde_json::from_value(eps_model).unwrap()
}

fn unet_session(dict: &StateDict, cfg: &UNetConfig, export: &UNetExport) -> OrtDenoiser {
    let bytes = compile_unet(dict, cfg, export, &CompileOptions::default()).unwrap();
    OrtDenoiser::new(runtime().session_from_bytes(&bytes, &opts()).unwrap()).unwrap()
}

#[test]
fn unet_eps_matches_reference() {
    let dict = StateDict::from_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let cfg = unet_config();
    let io = load_io("idiff_unet_tiny_io.safetensors");
    let (x, t, c) = (get(&io, "x"), get(&io, "t"), get(&io, "context"));
    for timestep in [TimestepType::Int64, TimestepType::Float32] {
        let d = unet_session(&dict, &cfg, &UNetExport { timestep, dropout_mask: true });
        let what = format!("{timestep:?}");
        assert_close(&format!("UNet eps ({what})"), &d.eps(x, t, Some(c)).unwrap(), get(&io, "eps"), 1e-4);
        assert_close(&format!("UNet eps_empty_context ({what})"), &d.eps(x, t, None).unwrap(), get(&io, "eps_empty_context"), 1e-4);
        let mask = get(&io, "dropout_mask").to_vec1::<u8>().unwrap();
        let masked = d.eps_masked(x, t, Some(c), Some(&mask)).unwrap();
        assert_close(&format!("UNet eps_dropout_mask ({what})"), &masked, get(&io, "eps_dropout_mask"), 1e-4);
    }
    // without the mask input the graph has exactly x, t, context
    let d = unet_session(&dict, &cfg, &UNetExport { timestep: TimestepType::Int64, dropout_mask: false });
    assert_eq!(d.session().input_names(), ["x", "t", "context"]);
    assert_close("UNet eps (no mask input)", &d.eps(x, t, Some(c)).unwrap(), get(&io, "eps"), 1e-4);
    assert!(d.eps(x, t, None).is_err(), "the empty context needs the mask input");
}

#[test]
fn unet_batch_of_five_and_guidance_match_native() {
    let dict = StateDict::from_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let cfg = unet_config();
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(&cfg, vb)).unwrap();
    let d = unet_session(&dict, &cfg, &UNetExport::default());
    let x = random_tensor(&[5, 3, 16, 16], 31);
    let t = Tensor::new(&[0i64, 17, 250, 640, 999], &Device::Cpu).unwrap();
    let c = random_tensor(&[5, 512], 32);
    assert_close("UNet ORT vs native, batch 5", &d.eps(&x, &t, Some(&c)).unwrap(), &native.eps(&x, &t, Some(&c)).unwrap(), 1e-4);
    assert_close("UNet CFG w=3 ORT vs native", &d.eps_guided(&x, &t, &c, 3.0).unwrap(), &native.eps_guided(&x, &t, &c, 3.0).unwrap(), 2e-4);
    // a 32×32 latent (the real latent size) through the same graph
    let x32 = random_tensor(&[2, 3, 32, 32], 33);
    let t2 = Tensor::new(&[5i64, 900], &Device::Cpu).unwrap();
    let c2 = c.narrow(0, 0, 2).unwrap();
    assert_close("UNet 32×32 ORT vs native", &d.eps(&x32, &t2, Some(&c2)).unwrap(), &native.eps(&x32, &t2, Some(&c2)).unwrap(), 1e-4);
}

/// Unconditional AdaGN and the other conditioning forms (random weights, small config).
#[test]
fn unet_condition_types_match_native() {
    use idflow_models::unet::ConditionType;
    let base = UNetConfig { channel_multipliers: vec![1, 2], is_attention: vec![false, true], context_channels: 32, ..unet_config() };
    let cases = [
        ("uncond AdaGN", ConditionType::AdaGn, false, false),
        ("AdaGN", ConditionType::AdaGn, true, false),
        ("DiffAE", ConditionType::DiffAe, true, false),
        ("AddPlusGN", ConditionType::AddPlusGn, true, false),
        ("CA learned empty", ConditionType::Ca, true, true),
    ];
    let x = random_tensor(&[5, 3, 16, 16], 41);
    let t = Tensor::new(&[3i64, 99, 400, 777, 998], &Device::Cpu).unwrap();
    let c = random_tensor(&[5, 512], 42);
    for (name, ct, conditional, learn_empty) in cases {
        let cfg = UNetConfig { condition_type: ct, is_context_conditional: conditional, learn_empty_context: learn_empty, ..base.clone() };
        let shapes = parameter_shapes(|vb| ConditionalUNet::new(&cfg, vb)).unwrap();
        let dict = random_state_dict(&shapes, 7).unwrap();
        let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(&cfg, vb)).unwrap();
        let d = unet_session(&dict, &cfg, &UNetExport::default());
        assert_eq!(d.is_conditional(), conditional, "{name}");
        let ctx = conditional.then_some(&c);
        let a = d.eps(&x, &t, ctx).unwrap();
        let b = native.eps(&x, &t, ctx).unwrap();
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let diff = max_abs_diff(&a, &b);
        eprintln!("{name}: max abs diff {diff:e} (max |eps| {scale:.3})");
        assert!(diff <= 1e-4 * scale.max(1.0), "{name}: ORT vs native differ by {diff:e}");
        if conditional {
            let a = d.eps(&x, &t, None).unwrap();
            let b = native.eps(&x, &t, None).unwrap();
            let diff = max_abs_diff(&a, &b);
            assert!(diff <= 1e-4 * scale.max(1.0), "{name} empty context: ORT vs native differ by {diff:e}");
        }
    }
}

// ---------------------------------------------------------------- TFace IR

/// TFace IR-18 (random weights; no reference checkpoint exists): ORT vs native on a batch of 3.
#[test]
fn tface_ir_matches_native() {
    use idflow_models::iresnet::IrBackbone;
    use idflow_models::onnx::compile_tface_ir;
    let shapes = parameter_shapes(|vb| IrBackbone::new(18, vb)).unwrap();
    let dict = random_state_dict(&shapes, 5).unwrap();
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IrBackbone::new(18, vb)).unwrap();
    let bytes = compile_tface_ir(&dict, 18, &CompileOptions::default()).unwrap();
    let enc = OrtFaceEncoder::new(runtime().session_from_bytes(&bytes, &opts()).unwrap());
    let x = random_tensor(&[3, 3, 112, 112], 51);
    let a = enc.embed(&x).unwrap();
    let b = native.forward(&x).unwrap();
    assert_eq!(a.dims(), [3, 512]);
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let diff = max_abs_diff(&a, &b);
    eprintln!("TFace IR-18 ORT vs native: max abs diff {diff:e} (max |feature| {scale:.3})");
    assert!(diff <= 2e-5 * scale.max(1.0), "TFace IR-18: ORT vs native differ by {diff:e}");
    assert!(compile_tface_ir(&dict, 152, &CompileOptions::default()).is_err());
}
