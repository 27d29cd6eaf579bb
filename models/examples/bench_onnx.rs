//! UNet forward timings, ONNX Runtime vs the native candle model, same (seeded random) weights.
//!
//! ```text
//! ORT_DYLIB_PATH=$(bash tests/py/ort_env.sh) RAYON_NUM_THREADS=2 nice -n 15 \
//!   cargo run --release -p idflow-models --example bench_onnx -- \
//!   [--iters N] [--full-iters N] [--threads T] [--batch 8,32] [--full-batch 8] [--skip-full] [--iresnet] [--export DIR]
//! ```
//!
//! Configurations: the tiny fixture UNet (`reference-tiny`) and the full IDiff-Face CA UNet
//! (216 M parameters) on 3×32×32 latents, at each batch size of `--batch` (default 8;
//! `--full-batch` overrides it for the full model). Prints the
//! median ms per forward of each backend, the ratio, and the max abs difference of the outputs.
//! The tiny model is timed `--iters` times (default 5), the full one `--full-iters` times
//! (default 2), each after one warm-up call.
//!
//! `--export DIR` writes, in the layout `benches/models_torch.py DIR` reads to time PyTorch on the
//! same weights: `unet_{tiny,full}_weights.safetensors` (official key names; also usable as
//! `diffuse` checkpoints), `unet_{tiny,full}_b{B}_io.safetensors` (inputs and the ORT output),
//! `timings.json` (ORT and native ms per case), `iresnet50_weights.safetensors` (an `embed`
//! checkpoint) and `ddim_tiny_io.safetensors`: x_T, context and the result of a DDIM-50 (η = 0)
//! run of two latents through the ORT tiny UNet, which `benches/sample_torch.py` uses to check
//! its sampling loop. `--iresnet` adds IResNet-50 forwards of a batch of 32 112×112 faces.

mod common;

use common::median_ms;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use idflow_dataset::rng::KeyedRng;
use idflow_models::io::checkpoint::{load_model, parameter_shapes, LoadOptions};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::random::random_state_dict;
use idflow_models::onnx::{
    compile_iresnet, compile_unet, CompileOptions, OrtDenoiser, OrtFaceEncoder, OrtRuntime, SessionOptions, UNetExport,
};
use idflow_models::sampler::{batch_noise, sample, CpuStepMath, NoiseKey, SamplerConfig, SamplerKind, PRIOR_STEP};
use idflow_models::schedule::DdpmSchedule;
use idflow_models::traits::{Denoiser, FaceEncoder};
use idflow_models::unet::{ConditionType, ConditionalUNet, UNetConfig};
use serde_json::json;

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

fn random(shape: &[usize], seed: u64) -> AnyResult<Tensor> {
    let mut rng = KeyedRng::new(&[seed]);
    let mut v = vec![0f32; shape.iter().product()];
    rng.fill_normal_f32(&mut v);
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn save(dir: &std::path::Path, file: &str, tensors: &[(&str, &Tensor)]) -> AnyResult<()> {
    let map: std::collections::HashMap<String, Tensor> = tensors.iter().map(|(k, t)| (k.to_string(), (*t).clone())).collect();
    candle_core::safetensors::save(&map, dir.join(file))?;
    Ok(())
}

struct Bench<'a> {
    rt: &'a OrtRuntime,
    batches: Vec<usize>,
    threads: usize,
    export: Option<PathBuf>,
    timings: serde_json::Map<String, serde_json::Value>,
}

impl Bench<'_> {
    fn write_timings(&self) -> AnyResult<()> {
        if let Some(dir) = &self.export {
            std::fs::write(dir.join("timings.json"), serde_json::to_string_pretty(&self.timings)?)?;
        }
        Ok(())
    }
}

fn bench(b: &mut Bench<'_>, name: &str, key: &str, cfg: &UNetConfig, iters: usize) -> AnyResult<()> {
    let (rt, threads) = (b.rt, b.threads);
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
    println!("{name}: {params} params, {threads} threads | compile {compile_s:.2} s, session {session_s:.2} s");

    if let Some(dir) = &b.export {
        std::fs::create_dir_all(dir)?;
    }
    for &batch in &b.batches.clone() {
        let x = random(&[batch, 3, 32, 32], 1)?;
        let t: Vec<i64> = (0..batch as i64).map(|i| (i * 997 + 13) % 1000).collect();
        let t = Tensor::from_vec(t, batch, &Device::Cpu)?;
        let c = random(&[batch, 512], 2)?;
        let (ort_ms, a) = median_ms(iters, || ort.eps(&x, &t, Some(&c)))?;
        let (native_ms, native_out) = median_ms(iters, || native.eps(&x, &t, Some(&c)))?;
        let diff = (&a - native_out)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let case = format!("{key}_b{batch}");
        b.timings.insert(
            case.clone(),
            json!({"model": key, "batch": batch, "iters": iters, "ort_ms": ort_ms, "native_ms": native_ms, "threads": threads}),
        );
        if let Some(dir) = &b.export {
            save(dir, &format!("{case}_io.safetensors"), &[("x", &x), ("t", &t), ("context", &c), ("eps", &a)])?;
        }
        b.write_timings()?;
        println!(
            "  batch {batch}, 3x32x32, median of {iters}: ORT {ort_ms:.1} ms, native {native_ms:.1} ms, native/ORT {:.2}x | max |diff| {diff:.2e}",
            native_ms / ort_ms
        );
    }

    // The weights are written after the timed calls: writing the full model's 865 MB just
    // before them slowed its forwards two-fold (page-cache writeback competing for the cores).
    if let Some(dir) = &b.export {
        dict.save_safetensors(dir.join(format!("{key}_weights.safetensors")))?;
    }
    drop(dict);
    if key == "unet_tiny" {
        if let Some(dir) = &b.export {
            // A reference DDIM-50 run (η = 0, linear schedule: the random checkpoint carries no
            // schedule buffers, so `diffuse` uses the same one) for the PyTorch loop's check.
            let keys: Vec<NoiseKey> = (0..2).map(|i| NoiseKey { seed: 7, identity: i, sample: 0 }).collect();
            let x_t = batch_noise(&keys, PRIOR_STEP, &[3, 32, 32], &Device::Cpu)?;
            let c = random(&[2, 512], 3)?;
            let config = SamplerConfig { kind: SamplerKind::Ddim { steps: 50, eta: 0.0, admis_compat: false }, guidance_scale: None };
            let x0 = sample(&ort, &DdpmSchedule::linear(1000), &config, &CpuStepMath, &x_t, Some(&c), &keys)?;
            save(dir, "ddim_tiny_io.safetensors", &[("x_T", &x_t), ("context", &c), ("x0", &x0)])?;
            println!("  wrote the DDIM-50 reference run (2 latents)");
        }
    }
    Ok(())
}

/// IResNet-50 (512 features) on 112×112 faces: exports the weights and, with `time`, times a
/// batch of `batch` on both backends.
fn bench_iresnet(b: &Bench<'_>, batch: usize, iters: usize, time: bool) -> AnyResult<()> {
    let cfg = IResNetConfig::depth(50).ok_or("no IResNet-50 preset")?;
    let shapes = parameter_shapes(|vb| IResNet::new(&cfg, vb))?;
    let dict = random_state_dict(&shapes, 2024)?;
    if let Some(dir) = &b.export {
        std::fs::create_dir_all(dir)?;
        dict.save_safetensors(dir.join("iresnet50_weights.safetensors"))?;
    }
    if !time {
        return Ok(());
    }
    let bytes = compile_iresnet(&dict, &cfg, &CompileOptions::default())?;
    let ort = OrtFaceEncoder::new(b.rt.session_from_bytes(&bytes, &SessionOptions::cpu(b.threads))?);
    let (native, _) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(&cfg, vb))?;
    let x = random(&[batch, 3, 112, 112], 3)?.tanh()?;
    let (ort_ms, a) = median_ms(iters, || ort.embed(&x))?;
    let (native_ms, n) = median_ms(iters, || native.embed(&x))?;
    let scale = n.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (a - n)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "IResNet-50: batch {batch}, 3x112x112, {} threads | ORT {ort_ms:.1} ms, native {native_ms:.1} ms, native/ORT {:.2}x | max |diff| / max |feature| {:.2e} (random weights: features grow large through 24 residual blocks)",
        b.threads,
        native_ms / ort_ms,
        diff / scale
    );
    Ok(())
}

fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let arg = |flag: &str, default: usize| -> AnyResult<usize> {
        match value(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("{flag} {v}: {e}").into()),
        }
    };
    let iters = arg("--iters", 5)?.max(1);
    let full_iters = arg("--full-iters", 2)?.max(1);
    let threads = arg("--threads", 2)?;
    let list = |flag: &str, default: Vec<usize>| -> AnyResult<Vec<usize>> {
        let Some(v) = value(flag) else { return Ok(default) };
        let sizes =
            v.split(',').map(|s| s.trim().parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"))).collect::<Result<Vec<_>, _>>()?;
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(format!("{flag} {v}: sizes must be positive").into());
        }
        Ok(sizes)
    };
    let batches = list("--batch", vec![8])?;
    let full_batches = list("--full-batch", batches.clone())?;
    let rt = OrtRuntime::new(None)?;
    println!("ONNX Runtime from {}", rt.dylib().display());
    println!("candle threads: {} (set RAYON_NUM_THREADS to match --threads)", candle_core::utils::get_num_threads());
    let export = value("--export").map(PathBuf::from);
    let mut b = Bench { rt: &rt, batches, threads, export, timings: serde_json::Map::new() };
    bench(&mut b, "tiny UNet", "unet_tiny", &tiny_unet(), iters)?;
    if !args.iter().any(|a| a == "--skip-full") {
        b.batches = full_batches;
        bench(&mut b, "full IDiff-Face UNet", "unet_full", &UNetConfig::idiff_face_ca(), full_iters)?;
    }
    let time_iresnet = args.iter().any(|a| a == "--iresnet");
    if time_iresnet || b.export.is_some() {
        bench_iresnet(&b, 32, iters.clamp(1, 3), time_iresnet)?;
    }
    Ok(())
}
