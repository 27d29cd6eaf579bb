//! ONNX Runtime integration and the graph builder: library discovery errors, execution-provider
//! selection, builder operators against independent computations, the protobuf encoding, file
//! output and strict weight accounting.

mod common;

use std::path::Path;

use common::{ort_dylib, reference};
use idflow_models::io::checkpoint::StateDict;
use idflow_models::iresnet::IResNetConfig;
use idflow_models::onnx::builder::{Dim, ElemType, GraphBuilder};
use idflow_models::onnx::proto::{DimensionValue, ModelProto};
use idflow_models::onnx::runtime::TensorOutput;
use idflow_models::onnx::{
    compile_iresnet, compile_to_file, serialize, CompileOptions, ExecutionProvider, OnnxError, OrtRuntime, SessionOptions, TensorInput,
};
use prost::Message;

fn runtime() -> OrtRuntime {
    OrtRuntime::new(Some(&ort_dylib())).expect("ONNX Runtime must load")
}

/// `y = gelu(silu(GroupNorm_2(x)·γ + β))` followed by a nearest ×2 resize, on `[batch, 4, 3, 1]`.
fn small_graph() -> Vec<u8> {
    let mut g = GraphBuilder::new("small");
    let x = g.input("x", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(4), Dim::Fixed(3), Dim::Fixed(1)]).unwrap();
    let gamma = g.initializer("gamma", &[4, 1, 1], &[1.0, 2.0, 0.5, -1.0]).unwrap();
    let beta = g.initializer("beta", &[4, 1, 1], &[0.0, 0.1, -0.2, 0.3]).unwrap();
    let h = g.group_norm(&x, 2, 1e-5, &gamma, &beta).unwrap();
    let h = g.silu(&h);
    let h = g.gelu_erf(&h);
    let h = g.resize_nearest(&h, 2.0).unwrap();
    g.output(&h, "y", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(4), Dim::Fixed(6), Dim::Fixed(2)]).unwrap();
    serialize(&g.finish("test", &[])).unwrap()
}

/// The same computation in plain Rust (f64).
fn small_graph_reference(x: &[f32], batch: usize) -> Vec<f32> {
    let gamma = [1.0, 2.0, 0.5, -1.0];
    let beta = [0.0, 0.1, -0.2, 0.3];
    let erf = |v: f64| {
        // Abramowitz–Stegun 7.1.26 is too coarse; integrate the series instead
        let mut sum = 0.0;
        let mut term = v;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -v * v / (n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    };
    let mut out = vec![0f32; batch * 4 * 6 * 2];
    for b in 0..batch {
        for group in 0..2 {
            let vals: Vec<f64> = (0..6).map(|i| x[b * 12 + group * 6 + i] as f64).collect();
            let mean = vals.iter().sum::<f64>() / 6.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 6.0;
            for (i, v) in vals.iter().enumerate() {
                let c = group * 2 + i / 3;
                let n = (v - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
                let s = n / (1.0 + (-n).exp());
                let y = 0.5 * s * (1.0 + erf(s / std::f64::consts::SQRT_2));
                let h = i % 3;
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    out[((b * 4 + c) * 6 + 2 * h + dy) * 2 + dx] = y as f32;
                }
            }
        }
    }
    out
}

#[test]
fn builder_operators_match_an_independent_computation() {
    let session = runtime().session_from_bytes(&small_graph(), &SessionOptions::cpu(1)).unwrap();
    for batch in [1usize, 3] {
        let x: Vec<f32> = (0..batch * 12).map(|i| ((i * 7919) % 23) as f32 / 5.0 - 2.0).collect();
        let (shape, y) = session.run_f32(&[("x", TensorInput::F32(&[batch, 4, 3, 1], &x))], "y").unwrap();
        assert_eq!(shape, [batch, 4, 6, 2]);
        let want = small_graph_reference(&x, batch);
        let diff = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "batch {batch}: max abs diff {diff}");
    }
}

#[test]
fn missing_library_is_a_clear_error() {
    let err = OrtRuntime::new(Some(Path::new("/nonexistent/onnxruntime/capi/libonnxruntime.so.1.32.0"))).unwrap_err();
    assert!(matches!(err, OnnxError::RuntimeMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/onnxruntime"), "{msg}");
    assert!(msg.contains("onnxruntime==1.32.0") && msg.contains("ORT_DYLIB_PATH"), "{msg}");
    // a file that is not a shared library
    let not_a_lib = reference("iresnet_tiny_config.json");
    let rt = runtime(); // the process environment may already exist; a different path is refused
    let err = OrtRuntime::new(Some(&not_a_lib)).unwrap_err();
    assert!(err.to_string().contains("iresnet_tiny_config.json"), "{err}");
    assert_eq!(rt.dylib(), ort_dylib().canonicalize().unwrap());
}

#[test]
fn cuda_with_the_cpu_wheel_is_an_error_or_a_logged_fallback() {
    let rt = runtime();
    let available = rt.available_providers();
    assert!(available.contains(&"CPUExecutionProvider".to_string()), "{available:?}");
    if available.iter().any(|p| p == "CUDAExecutionProvider") {
        panic!("this test expects the CPU wheel `onnxruntime`, which has no CUDA provider");
    }
    let model = small_graph();
    let strict = SessionOptions {
        intra_threads: 1,
        providers: vec![ExecutionProvider::Cuda { device_id: 0 }, ExecutionProvider::Cpu],
        allow_fallback: false,
        replicas: 1,
    };
    let err = rt.session_from_bytes(&model, &strict).unwrap_err();
    match &err {
        OnnxError::Provider { requested, available, .. } => {
            assert_eq!(requested, "CUDAExecutionProvider");
            assert!(available.contains(&"CPUExecutionProvider".to_string()));
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
    assert!(err.to_string().contains("onnxruntime-gpu"), "{err}");

    let lenient = SessionOptions { allow_fallback: true, ..strict };
    let session = rt.session_from_bytes(&model, &lenient).unwrap();
    assert_eq!(session.active_providers(), ["CPUExecutionProvider"]);
    assert_eq!(session.fallbacks().len(), 1);
    assert!(session.fallbacks()[0].contains("CUDAExecutionProvider"), "{:?}", session.fallbacks());
    let x = vec![0.5f32; 12];
    session.run(&[("x", TensorInput::F32(&[1, 4, 3, 1], &x))]).unwrap();
}

#[test]
fn execution_provider_names_parse() {
    assert_eq!("cpu".parse::<ExecutionProvider>().unwrap(), ExecutionProvider::Cpu);
    assert_eq!("CUDA:1".parse::<ExecutionProvider>().unwrap(), ExecutionProvider::Cuda { device_id: 1 });
    assert_eq!("tensorrt".parse::<ExecutionProvider>().unwrap(), ExecutionProvider::TensorRt { device_id: 0 });
    assert!("cuda:x".parse::<ExecutionProvider>().is_err());
    assert!("rocm".parse::<ExecutionProvider>().is_err());
}

#[test]
fn run_rejects_bad_inputs() {
    let session = runtime().session_from_bytes(&small_graph(), &SessionOptions::cpu(1)).unwrap();
    let x = vec![0f32; 10];
    let err = session.run(&[("x", TensorInput::F32(&[1, 4, 3, 1], &x))]).unwrap_err();
    assert!(matches!(err, OnnxError::Input { .. }), "{err:?}");
    let x = vec![0f32; 12];
    let err = session.run(&[("image", TensorInput::F32(&[1, 4, 3, 1], &x))]).unwrap_err();
    assert!(err.to_string().contains("no such input"), "{err}");
    // a wrong fixed dimension is reported by ONNX Runtime, not a crash
    let x = vec![0f32; 15];
    assert!(session.run(&[("x", TensorInput::F32(&[1, 5, 3, 1], &x))]).is_err());
}

fn iresnet_bytes() -> Vec<u8> {
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    let cfg = idflow_models::io::presets::reference_tiny_iresnet();
    compile_iresnet(&dict, &cfg, &CompileOptions::default()).unwrap()
}

#[test]
fn compiled_model_is_valid_onnx_protobuf() {
    let bytes = iresnet_bytes();
    let model = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!((model.opset_import[0].domain.as_str(), model.opset_import[0].version), ("", 17));
    let graph = model.graph.unwrap();
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name, "image");
    let dims = &graph.input[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().shape.as_ref().unwrap().dim;
    assert_eq!(dims[0].value, Some(DimensionValue::DimParam("batch".into())));
    assert_eq!(dims[2].value, Some(DimensionValue::DimValue(112)));
    assert_eq!(graph.output[0].name, "features");
    // every official tensor except the int64 counters became an initializer, f32 little-endian
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    let conv1 = graph.initializer.iter().find(|t| t.name == "conv1.weight").unwrap();
    assert_eq!(conv1.dims, [64, 3, 3, 3]);
    let want = dict.get("conv1.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got: Vec<f32> = conv1.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(got, want);
    let named = graph.initializer.iter().filter(|t| dict.get(&t.name).is_some()).count();
    let float_keys = dict.keys().filter(|k| !k.ends_with("num_batches_tracked")).count();
    assert_eq!(named, float_keys);
    // node outputs are unique
    let mut outs: Vec<&String> = graph.node.iter().flat_map(|n| &n.output).collect();
    let n = outs.len();
    outs.sort();
    outs.dedup();
    assert_eq!(outs.len(), n);
}

#[test]
fn compile_to_file_is_atomic_and_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("iresnet.onnx");
    let bytes = iresnet_bytes();
    compile_to_file(&bytes, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let session = runtime().session_from_file(&path, &SessionOptions::cpu(1)).unwrap();
    let x = vec![0.1f32; 3 * 112 * 112];
    let out = session.run(&[("image", TensorInput::F32(&[1, 3, 112, 112], &x))]).unwrap();
    assert!(matches!(&out[0].1, TensorOutput::F32(s, _) if s == &[1, 16]));
    let err = runtime().session_from_file(dir.path().join("missing.onnx"), &SessionOptions::cpu(1)).unwrap_err();
    assert!(err.to_string().contains("missing.onnx"), "{err}");
}

#[test]
fn compile_checks_keys_and_shapes_strictly() {
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    // wrong embedding width → a shape error naming the key
    let cfg = IResNetConfig { layers: [1, 1, 1, 1], num_features: 512, ..Default::default() };
    let err = compile_iresnet(&dict, &cfg, &CompileOptions::default()).unwrap_err();
    assert!(err.to_string().contains("fc.weight") && err.to_string().contains("iresnet_tiny.pth"), "{err}");
    // a deeper model than the file → a missing key
    let cfg = IResNetConfig { layers: [2, 1, 1, 1], num_features: 16, ..Default::default() };
    let err = compile_iresnet(&dict, &cfg, &CompileOptions::default()).unwrap_err();
    assert!(err.to_string().contains("layer1.1."), "{err}");
    // an extra tensor is refused unless allowed
    let mut entries = dict.entries().to_vec();
    entries.push(("extra.weight".into(), candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap()));
    let extended = StateDict::new("extended", entries);
    let cfg = idflow_models::io::presets::reference_tiny_iresnet();
    let err = compile_iresnet(&extended, &cfg, &CompileOptions::default()).unwrap_err();
    assert!(err.to_string().contains("extra.weight"), "{err}");
    let lenient = CompileOptions { allow_unused_keys: true, ..Default::default() };
    compile_iresnet(&extended, &cfg, &lenient).unwrap();
}

#[test]
fn compile_cache_is_keyed_by_checkpoint_and_config() {
    use idflow_models::onnx::{compile_cached, OnnxModelSpec};
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("backbone.pth");
    std::fs::copy(reference("iresnet_tiny.pth"), &ckpt).unwrap();
    let cache = dir.path().join("cache");
    let spec = OnnxModelSpec::IResNet { config: idflow_models::io::presets::reference_tiny_iresnet() };
    let o = CompileOptions::default();
    let first = compile_cached(&cache, &ckpt, &spec, &o).unwrap();
    assert!(first.compiled && first.path.is_file());
    assert!(first.path.file_name().unwrap().to_string_lossy().starts_with("iresnet-"));
    assert_eq!(std::fs::read(&first.path).unwrap(), iresnet_bytes());
    let again = compile_cached(&cache, &ckpt, &spec, &o).unwrap();
    assert_eq!(again, idflow_models::onnx::CachedModel { path: first.path.clone(), compiled: false });
    // other compile options → another entry
    let lenient = CompileOptions { allow_unused_keys: true, ..Default::default() };
    let other = compile_cached(&cache, &ckpt, &spec, &lenient).unwrap();
    assert!(other.compiled && other.path != first.path);
    // changed weights → another entry (same config)
    let mut dict = StateDict::from_file(&ckpt).unwrap().entries().to_vec();
    let w = dict.iter_mut().find(|(k, _)| k == "fc.bias").unwrap();
    w.1 = (&w.1 + 1.0).unwrap();
    let st = dir.path().join("backbone.safetensors");
    StateDict::new("edited", dict).save_safetensors(&st).unwrap();
    let edited = compile_cached(&cache, &st, &spec, &o).unwrap();
    assert!(edited.compiled && edited.path != first.path);
    // a bad config fails and leaves nothing behind
    let bad = OnnxModelSpec::IResNet { config: IResNetConfig { layers: [1, 1, 1, 1], num_features: 8, ..Default::default() } };
    assert!(compile_cached(&cache, &ckpt, &bad, &o).is_err());
    let names: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".onnx")).count(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".onnx") || n.ends_with(".onnx.lock")), "no temporary files left: {names:?}");
}

/// Workers of one process (threads) and separate processes compiling the same entry at once:
/// one compiles, the others wait on the entry's lock and read the finished file.
#[test]
fn concurrent_cache_lookups_compile_once() {
    use idflow_models::onnx::{compile_cached, OnnxModelSpec};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spec = OnnxModelSpec::IResNet { config: idflow_models::io::presets::reference_tiny_iresnet() };
    let ckpt = reference("iresnet_tiny.pth");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..4).map(|_| s.spawn(|| compile_cached(&cache, &ckpt, &spec, &CompileOptions::default()).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.compiled).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.path == results[0].path));
    assert_eq!(std::fs::read(&results[0].path).unwrap(), iresnet_bytes());
}

/// A session pool with `replicas: 2` serves concurrent callers with at most two sessions, and
/// every run gives the reference output.
#[test]
fn session_pool_serves_concurrent_runs() {
    let options = SessionOptions { replicas: 2, ..SessionOptions::cpu(1) };
    let session = runtime().session_from_bytes(&small_graph(), &options).unwrap();
    assert_eq!((session.replicas(), session.sessions_created(), session.intra_threads()), (2, 1, 1));
    std::thread::scope(|s| {
        for k in 0..4 {
            let session = &session;
            s.spawn(move || {
                for i in 0..25 {
                    let x: Vec<f32> = (0..12).map(|j| ((j + i + k) as f32 * 0.37).sin()).collect();
                    let (_, y) = session.run_f32(&[("x", TensorInput::F32(&[1, 4, 3, 1], &x))], "y").unwrap();
                    let want = small_graph_reference(&x, 1);
                    let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(worst < 1e-5, "{worst}");
                }
            });
        }
    });
    assert!((1..=2).contains(&session.sessions_created()), "{}", session.sessions_created());
}

/// Without `ORT_DYLIB_PATH` the library is found in the venv `tests/py/ort_env.sh` made.
#[test]
fn the_library_is_found_in_the_ort_env_venv() {
    use idflow_models::onnx::runtime::library_in_venv;
    let lib = ort_dylib();
    // <venv>/lib/python3.X/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0
    let venv = lib.ancestors().nth(6).unwrap();
    assert_eq!(library_in_venv(venv).map(|p| p.canonicalize().unwrap()), Some(lib.canonicalize().unwrap()));
    assert_eq!(library_in_venv(&venv.join("lib")), None);
    assert_eq!(library_in_venv(Path::new("/nonexistent/venv")), None);
}
