//! UNet forward timings, ONNX Runtime vs the native candle model, same (seeded random) weights.
//!
//! ```text
//! ORT_DYLIB_PATH=$(bash tests/py/ort_env.sh) RAYON_NUM_THREADS=2 \
//!   cargo run --release -p idflow-models --example bench_onnx -- [--iters N] [--threads T] [--batch B] [--skip-full] [--iresnet] [--export DIR]
//! ```
//!
//! Configurations: the tiny fixture UNet and the full IDiff-Face CA UNet (216 M parameters), batch
//! 8 (default) on 3×32×32 latents. Prints the median ms per forward of each backend, the ratio, and
//! the max abs difference of the outputs. `--export DIR` writes `unet_{tiny,full}_weights.safetensors`,
//! `unet_{tiny,full}_io.safetensors` (inputs and the ORT output) and `timings.json` (ORT ms) in the
//! layout `benches/models_torch.py DIR` reads, to time PyTorch on the same weights. `--iresnet`
//! adds IResNet-50 embedding of a batch of 32 112×112 faces.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use idflow_dataset::rng::KeyedRng;
use idflow_models::checkpoint::{load_model, parameter_shapes, LoadOptions};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::random::random_state_dict;
use idflow_models::onnx::{
    compile_iresnet, compile_unet, CompileOptions, OrtDenoiser, OrtFaceEncoder, OrtRuntime, SessionOptions, UNetExport,
};
use idflow_models::traits::{Denoiser, FaceEncoder};
use idflow_models::unet::{ConditionType, ConditionalUNet, UNetConfig};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn tiny_unet() -> UNetConfig {
    UNetConfig {
        initial_channels: 32,
        channel_multipliers: vec![1, 1, 2, 1],
        condition_type: ConditionType::Ca,
        context_channels: 32,
        ..UNetConfig::idiff_face_ca()
    }
}

fn median_ms(iters: usize, mut f: impl FnMut() -> AnyResult<Tensor>) -> AnyResult<(f64, Tensor)> {
    let mut out = f()?; // warm-up
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        out = f()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], out))
}

fn random(shape: &[usize], seed: u64) -> AnyResult<Tensor> {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v = vec![0f32; shape.iter().product()];
    rng.fill_normal_f32(&mut v);
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

struct Bench<'a> {
    rt: &'a OrtRuntime,
    batch: usize,
    threads: usize,
    export: Option<PathBuf>,
    timings: HashMap<String, f64>,
}

fn bench(b: &mut Bench<'_>, name: &str, key: &str, cfg: &UNetConfig, iters: usize) -> AnyResult<()> {
    let (rt, batch, threads) = (b.rt, b.batch, b.threads);
    let shapes = parameter_shapes(|vb| ConditionalUNet::new(cfg, vb))?;
    let params: usize = shapes.iter().map(|(_, s)| s.elem_count()).sum();
    let dict = random_state_dict(&shapes, 2024)?;
    let t0 = Instant::now();
    let bytes = compile_unet(&dict, cfg, &UNetExport::default(), &CompileOptions::default())?;
    let compile_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let ort = OrtDenoiser::new(rt.session_from_bytes(&bytes, &SessionOptions::cpu(threads))?)?;
    let session_s = t0.elapsed().as_secs_f64();
    drop(bytes);
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| ConditionalUNet::new(cfg, vb))?;
    if let Some(dir) = &b.export {
        std::fs::create_dir_all(dir)?;
        dict.save_safetensors(dir.join(format!("{key}_weights.safetensors")))?;
    }
    drop(dict);

    let x = random(&[batch, 3, 32, 32], 1)?;
    let t: Vec<i64> = (0..batch as i64).map(|i| (i * 997 + 13) % 1000).collect();
    let t = Tensor::from_vec(t, batch, &Device::Cpu)?;
    let c = random(&[batch, 512], 2)?;
    let (ort_ms, a) = median_ms(iters, || Ok(ort.eps(&x, &t, Some(&c))?))?;
    let (native_ms, native_out) = median_ms(iters, || Ok(native.eps(&x, &t, Some(&c))?))?;
    let diff = (&a - native_out)?.abs()?.max_all()?.to_scalar::<f32>()?;
    b.timings.insert(key.to_string(), ort_ms);
    if let Some(dir) = &b.export {
        let io: HashMap<String, Tensor> = [("x", x.clone()), ("t", t.clone()), ("context", c.clone()), ("eps", a.clone())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        candle_core::safetensors::save(&io, dir.join(format!("{key}_io.safetensors")))?;
        let json = serde_json::to_string_pretty(&b.timings)?;
        std::fs::write(dir.join("timings.json"), json)?;
    }
    println!(
        "{name}: {params} params, batch {batch}, 3x32x32, {threads} threads | compile {compile_s:.2} s, session {session_s:.2} s | ORT {ort_ms:.1} ms, native {native_ms:.1} ms, native/ORT {:.2}x | max |diff| {diff:.2e}",
        native_ms / ort_ms
    );
    Ok(())
}

/// IResNet-50 (512 features) on 112×112 faces, batch `batch`.
fn bench_iresnet(rt: &OrtRuntime, batch: usize, threads: usize, iters: usize) -> AnyResult<()> {
    let cfg = IResNetConfig::depth(50).ok_or("no IResNet-50 preset")?;
    let shapes = parameter_shapes(|vb| IResNet::new(&cfg, vb))?;
    let dict = random_state_dict(&shapes, 2024)?;
    let bytes = compile_iresnet(&dict, &cfg, &CompileOptions::default())?;
    let ort = OrtFaceEncoder::new(rt.session_from_bytes(&bytes, &SessionOptions::cpu(threads))?);
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(&cfg, vb))?;
    let x = random(&[batch, 3, 112, 112], 3)?.tanh()?;
    let (ort_ms, a) = median_ms(iters, || Ok(ort.embed(&x)?))?;
    let (native_ms, b) = median_ms(iters, || Ok(native.embed(&x)?))?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "IResNet-50: batch {batch}, 3x112x112, {threads} threads | ORT {ort_ms:.1} ms, native {native_ms:.1} ms, native/ORT {:.2}x | max |diff| / max |feature| {:.2e} (random weights: features grow large through 24 residual blocks)",
        native_ms / ort_ms,
        diff / scale
    );
    Ok(())
}

fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: usize| -> usize {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let iters = arg("--iters", 5);
    let threads = arg("--threads", 2);
    let batch = arg("--batch", 8);
    let rt = OrtRuntime::new(None)?;
    println!("ONNX Runtime from {}", rt.dylib().display());
    println!("candle threads: {} (set RAYON_NUM_THREADS to match --threads)", candle_core::utils::get_num_threads());
    let export = args.iter().position(|a| a == "--export").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let mut b = Bench { rt: &rt, batch, threads, export, timings: HashMap::new() };
    bench(&mut b, "tiny UNet", "unet_tiny", &tiny_unet(), iters)?;
    if !args.iter().any(|a| a == "--skip-full") {
        bench(&mut b, "full IDiff-Face UNet", "unet_full", &UNetConfig::idiff_face_ca(), iters.clamp(1, 3))?;
    }
    if args.iter().any(|a| a == "--iresnet") {
        bench_iresnet(&rt, 32, threads, iters.clamp(1, 3))?;
    }
    Ok(())
}
