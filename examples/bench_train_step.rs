//! Images per second of one training step on CPU: the toy-sized recogniser of the tests
//! (IResNet `[1,1,1,1]`, widths 16–128, 32 px, CosFace), a published IResNet-50 at 112 px, and
//! a tiny ConditionalUNet on 3×8×8 latents.
//!
//! `cargo run --release --example bench_train_step [-- --skip-r50] [--steps N]`

use candle_core::{Device, Tensor};
use idflow_models::heads::Margin;
use idflow_models::iresnet::IResNetConfig;
use idflow_models::sampler::NoiseKey;
use idflow_models::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use idflow_models::train::face::{BackboneConfig, FaceTrainConfig, FaceTrainer};
use idflow_models::train::schedule::EmaConfig;
use std::time::Instant;

fn face(name: &str, backbone: IResNetConfig, batch: usize, steps: usize) -> anyhow::Result<()> {
    let size = backbone.input_size;
    let mut trainer = FaceTrainer::new(FaceTrainConfig {
        backbone: BackboneConfig::Iresnet(backbone),
        classes: 8,
        scale: 16.0,
        margin: Margin::CosFace { m: 0.1 },
        momentum: 0.9,
        weight_decay: 5e-4,
        clip_grad_norm: None,
        seed: 1,
        replicas: 1,
    })?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &Device::Cpu)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 8).collect();
    trainer.train_step(&x, &labels, 0.01)?; // warm-up
    let t0 = Instant::now();
    for _ in 0..steps {
        trainer.train_step(&x, &labels, 0.01)?;
    }
    let s = t0.elapsed().as_secs_f64() / steps as f64;
    let t1 = Instant::now();
    for _ in 0..steps {
        trainer.embed(&x)?;
    }
    let f = t1.elapsed().as_secs_f64() / steps as f64;
    println!("{name}: batch {batch}: {:.1} ms/step, {:.1} images/s (eval forward alone {:.1} ms)", s * 1e3, batch as f64 / s, f * 1e3);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps = args.iter().position(|a| a == "--steps").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(5);
    face(
        "toy IResNet [1,1,1,1] w16-128 32px",
        IResNetConfig { layers: [1, 1, 1, 1], widths: [16, 32, 64, 128], num_features: 64, input_size: 32 },
        32,
        steps,
    )?;
    if !args.iter().any(|a| a == "--skip-r50") {
        face("IResNet-50 112px", IResNetConfig::depth_features(50, 512).expect("standard depth"), 8, steps.min(2))?;
    }
    let unet = idflow_models::io::presets::toy_unet();
    let mut trainer = DiffusionTrainer::new(DiffusionTrainConfig {
        unet,
        timesteps: 1000,
        uncond_probability: 0.0,
        ema: EmaConfig::default(),
        clip_grad_norm: None,
        seed: 1,
    })?;
    let batch = 16;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 8, 8), &Device::Cpu)?;
    let c = Tensor::randn(0f32, 1.0, (batch, 16), &Device::Cpu)?;
    let keys: Vec<NoiseKey> = (0..batch as u64).map(|i| NoiseKey { seed: 1, identity: i, sample: 0 }).collect();
    trainer.train_step(&x, Some(&c), &keys, 1e-4)?;
    let t0 = Instant::now();
    for _ in 0..steps {
        trainer.train_step(&x, Some(&c), &keys, 1e-4)?;
    }
    let s = t0.elapsed().as_secs_f64() / steps as f64;
    println!("tiny UNet (32 ch, [1,1], CA) 3x8x8: batch {batch}: {:.1} ms/step, {:.1} latents/s", s * 1e3, batch as f64 / s);
    Ok(())
}
