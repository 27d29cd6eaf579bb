//! Forward-pass timings of the native models (ms per iteration, median).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run -p idflow-models --example bench_forward -- [--iters N] [--skip-full] [--export DIR]
//! ```
//!
//! Benchmarks: the tiny fixture UNet config and the full IDiff-Face config at batch 8 on
//! 3×32×32 latents, and IResNet-50 at batch 32 on 112×112 faces. Weights are random (seeded);
//! `--export DIR` writes each model's weights, input and output as safetensors so
//! `benches/models_torch.py` can time PyTorch on identical weights and check the outputs.

mod common;

use common::median_ms;
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::unet::{ConditionalUNet, UNetConfig};

fn tiny_unet() -> UNetConfig {
    idflow_models::io::presets::reference_tiny_unet()
}

fn export(dir: &Option<PathBuf>, name: &str, varmap: &VarMap, io: &[(&str, &Tensor)]) -> candle_core::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir)?;
    varmap.save(dir.join(format!("{name}_weights.safetensors")))?;
    let io: HashMap<String, Tensor> = io.iter().map(|(k, t)| (k.to_string(), (*t).clone())).collect();
    candle_core::safetensors::save(&io, dir.join(format!("{name}_io.safetensors")))
}

fn bench_unet(name: &str, cfg: &UNetConfig, iters: usize, dir: &Option<PathBuf>) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let unet = ConditionalUNet::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let x = Tensor::randn(0f32, 1.0, (8, 3, 32, 32), &dev)?;
    let t = Tensor::new(&[999i64, 900, 700, 500, 300, 100, 10, 0], &dev)?;
    let c = Tensor::randn(0f32, 1.0, (8, 512), &dev)?;
    let (ms, eps) = median_ms(iters, || unet.forward(&x, &t, Some(&c), None))?;
    println!("unet_{name}_b8_32x32: {ms:.1} ms/iter (median of {iters})");
    export(dir, &format!("unet_{name}"), &varmap, &[("x", &x), ("t", &t), ("context", &c), ("eps", &eps)])?;
    Ok(ms)
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters = args.iter().position(|a| a == "--iters").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(5);
    let skip_full = args.iter().any(|a| a == "--skip-full");
    let dir = args.iter().position(|a| a == "--export").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    println!("threads: RAYON_NUM_THREADS={:?}", std::env::var("RAYON_NUM_THREADS").ok());

    let mut timings = serde_json::Map::new();
    timings.insert("unet_tiny".into(), bench_unet("tiny", &tiny_unet(), iters, &dir)?.into());
    if !skip_full {
        timings.insert("unet_full".into(), bench_unet("full", &UNetConfig::idiff_face_ca(), iters.min(3), &dir)?.into());
    }

    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let cfg = IResNetConfig::depth(50).expect("IResNet-50");
    let net = IResNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let x = Tensor::randn(0f32, 1.0, (32, 3, 112, 112), &dev)?;
    let (ms, y) = median_ms(iters, || net.forward(&x))?;
    println!("iresnet50_b32_112: {ms:.1} ms/iter (median of {iters})");
    timings.insert("iresnet50".into(), ms.into());
    export(&dir, "iresnet50", &varmap, &[("x", &x), ("features", &y)])?;
    if let Some(dir) = &dir {
        let text = serde_json::to_string_pretty(&timings).map_err(candle_core::Error::wrap)?;
        std::fs::write(dir.join("timings.json"), text)?;
    }
    Ok(())
}
