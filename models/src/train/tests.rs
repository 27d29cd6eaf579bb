//! Unit tests of the training loops: autograd gradients
//! of the trainable IResNet against finite differences, the SGD and Adam update rules against
//! hand-computed PyTorch formulas, weight decay skipping BatchNorm parameters, a published-
//! topology backbone loading into the inference IResNet `embed` uses, and an exactly
//! reproducible resume of the denoiser (optimiser + EMA state).

use crate::io::checkpoint::LoadOptions;
use crate::iresnet::{IResNet, IResNetConfig};
use crate::sampler::NoiseKey;
use crate::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use crate::train::face::{BackboneConfig, FaceTrainConfig, FaceTrainer};
use crate::train::optim::{params, Adam, Sgd};
use crate::train::schedule::EmaConfig;
use crate::train::state::{decode_safetensors, encode_safetensors, keyed_init};
use crate::unet::UNetConfig;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use std::collections::{BTreeMap, HashMap};

/// Deterministic N(0, 1) test data keyed by `key` (unseeded draws made the finite-difference
/// checks depend on luck).
fn normal(key: u64, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v = vec![0f32; n];
    idflow_dataset::rng::KeyedRng::new(&[key]).fill_normal_f32(&mut v);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn tiny_backbone() -> IResNetConfig {
    IResNetConfig { layers: [1, 1, 1, 1], widths: [4, 4, 8, 8], num_features: 6, input_size: 16 }
}

#[test]
fn iresnet_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let net = IResNet::new(&tiny_backbone(), VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
    keyed_init(&varmap, 11).unwrap();
    let x = normal(101, &[4, 3, 16, 16], DType::F64);
    let w = normal(102, &[4, 6], DType::F64);
    let loss_of = |net: &IResNet| net.forward_train(&x).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss_of(&net).backward().unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    let mut checked = 0;
    for name in ["conv1.weight", "layer2.0.conv2.weight", "layer3.0.prelu.weight", "fc.weight", "layer1.0.bn2.weight"] {
        let var = &vars[name];
        let g: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().any(|v| v.abs() > 1e-8), "{name}: gradient vanishes");
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for idx in [0, base.len() / 2, base.len() - 1] {
            let h = 1e-5;
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap()).unwrap();
                loss_of(&net).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap()).unwrap();
            assert!((fd - g[idx]).abs() <= 1e-5 + 1e-4 * fd.abs(), "{name}[{idx}]: autograd {} vs finite difference {fd}", g[idx]);
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

#[test]
fn sgd_follows_torch_momentum_and_skips_batchnorm_decay() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
    let conv = vb.get_with_hints(2, "conv.weight", Init::Const(1.0)).unwrap();
    let bn = vb.get_with_hints(2, "bn.weight", Init::Const(1.0)).unwrap();
    let _ = vb.get_with_hints(2, "bn.running_mean", Init::Const(0.0)).unwrap();
    let ps = params(&varmap);
    assert_eq!(ps.iter().map(|p| (p.name.as_str(), p.decay)).collect::<Vec<_>>(), vec![("bn.weight", false), ("conv.weight", true)]);
    let mut sgd = Sgd::new(ps, 0.9, 0.1);
    let (lr, mut p_conv, mut p_bn, mut buf_conv, mut buf_bn) = (0.1, 1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for step in 0..3 {
        // loss = Σ conv² + Σ bn²  ⇒  g = 2p
        let loss = (conv.sqr().unwrap().sum_all().unwrap() + bn.sqr().unwrap().sum_all().unwrap()).unwrap();
        sgd.step(&loss.backward().unwrap(), lr).unwrap();
        let d_conv = 2.0 * p_conv + 0.1 * p_conv;
        let d_bn = 2.0 * p_bn;
        buf_conv = if step == 0 { d_conv } else { 0.9 * buf_conv + d_conv };
        buf_bn = if step == 0 { d_bn } else { 0.9 * buf_bn + d_bn };
        p_conv -= lr * buf_conv;
        p_bn -= lr * buf_bn;
        let got_conv: Vec<f64> = conv.to_vec1().unwrap();
        let got_bn: Vec<f64> = bn.to_vec1().unwrap();
        assert!(
            (got_conv[0] - p_conv).abs() < 1e-12 && (got_bn[1] - p_bn).abs() < 1e-12,
            "step {step}: {got_conv:?} {got_bn:?} vs {p_conv} {p_bn}"
        );
    }
    // the momentum buffers round-trip through the state entries
    let state: BTreeMap<String, Tensor> = sgd.state().into_iter().collect();
    assert!((state["momentum_buffer.conv.weight"].to_vec1::<f64>().unwrap()[0] - buf_conv).abs() < 1e-12);
}

#[test]
fn adam_follows_torch_bias_corrected_update() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let p = VarBuilder::from_varmap(&varmap, DType::F64, &dev).get_with_hints(1, "w", Init::Const(3.0)).unwrap();
    let mut adam = Adam::new(params(&varmap));
    let (mut x, mut m, mut v, lr) = (3.0f64, 0.0f64, 0.0f64, 0.01);
    for t in 1..=4 {
        let loss = p.sqr().unwrap().sum_all().unwrap();
        adam.step(&loss.backward().unwrap(), lr).unwrap();
        let g = 2.0 * x;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        let (mh, vh) = (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.999f64.powi(t)));
        x -= lr * mh / (vh.sqrt() + 1e-8);
        let got = p.to_vec1::<f64>().unwrap()[0];
        assert!((got - x).abs() < 1e-12, "step {t}: {got} vs {x}");
    }
}

#[test]
fn published_topology_backbone_loads_into_the_inference_iresnet() {
    let cfg = IResNetConfig { layers: [1, 1, 1, 1], widths: [64, 128, 256, 512], num_features: 32, input_size: 112 };
    let trainer = FaceTrainer::new(FaceTrainConfig {
        backbone: BackboneConfig::Iresnet(cfg),
        classes: 3,
        scale: 64.0,
        margin: crate::heads::Margin::CosFace { m: 0.35 },
        momentum: 0.9,
        weight_decay: 5e-4,
        clip_grad_norm: None,
        seed: 2,
        replicas: 1,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backbone.safetensors");
    std::fs::write(&path, encode_safetensors(&trainer.backbone_state(), HashMap::new()).unwrap()).unwrap();
    // strict load: every key of the official IResNet present, nothing extra
    let net = crate::io::pretrained::load_iresnet(
        &path,
        &IResNetConfig { layers: [1, 1, 1, 1], num_features: 32, ..Default::default() },
        &LoadOptions::default(),
    )
    .expect("the trained backbone loads as an ElasticFace IResNet");
    let x = normal(103, &[1, 3, 112, 112], DType::F32);
    let a: Vec<f32> = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = trainer.embed(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let d = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(d < 1e-4, "the inference IResNet disagrees with the trained backbone by {d}");
}

fn tiny_conditional_unet() -> UNetConfig {
    serde_json::from_str(r#"{"input_channels": 2, "initial_channels": 32, "channel_multipliers": [1, 1], "is_attention": [false, true], "attention_heads": -1, "attention_head_channels": 32, "n_blocks_per_resolution": 1, "condition_type": "CA", "context_input_channels": 8, "context_channels": 32, "is_context_conditional": true, "learn_empty_context": true, "context_dropout_probability": 0.25}"#).unwrap()
}

/// A fresh trainer's UNet starts with every weight matrix random (attention projections and
/// feed-forwards included) and its context reaches the loss: after a few steps the context
/// projection and the cross-attention have moved, and CPD changes the trajectory.
#[test]
fn fresh_denoiser_initialises_every_layer_and_learns_from_its_context() {
    let cfg = |p: f64| DiffusionTrainConfig {
        unet: UNetConfig { context_dropout_probability: p, ..tiny_conditional_unet() },
        timesteps: 50,
        uncond_probability: 0.0,
        ema: EmaConfig::default(),
        clip_grad_norm: None,
        seed: 5,
    };
    let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap() };
    let mut trainer = DiffusionTrainer::new(cfg(0.25)).unwrap();
    let state = trainer.model_state().unwrap();
    let before: HashMap<String, Vec<f32>> = state.iter().map(|(k, t)| (k.clone(), values(t))).collect();
    let ranks: HashMap<String, usize> = state.iter().map(|(k, t)| (k.clone(), t.rank())).collect();
    for (name, v) in &before {
        if name.starts_with("eps_model.") && name.ends_with("weight") && ranks[name] >= 2 {
            assert!(v.iter().any(|x| *x != v[0]), "{name} starts constant");
        }
    }
    let x0 = normal(120, &[4, 2, 8, 8], DType::F32);
    let ctx = normal(121, &[4, 8], DType::F32);
    let keys: Vec<NoiseKey> = (0..4).map(|i| NoiseKey { seed: 5, identity: i, sample: 0 }).collect();
    let with_cpd: Vec<f64> = (0..3).map(|_| trainer.train_step(&x0, Some(&ctx), &keys, 1e-2).unwrap()).collect();
    for name in ["eps_model.context_emb.weight", "eps_model.middle.attn.cross_attention.to_v.weight", "eps_model.middle.attn.ff.0.weight"] {
        let after = trainer.model_state().unwrap().into_iter().find(|(k, _)| k == name).map(|(_, t)| values(&t)).unwrap();
        assert_ne!(after, before[name], "{name} received no gradient");
    }
    let mut no_cpd = DiffusionTrainer::new(cfg(0.0)).unwrap();
    let without: Vec<f64> = (0..3).map(|_| no_cpd.train_step(&x0, Some(&ctx), &keys, 1e-2).unwrap()).collect();
    assert_ne!(with_cpd, without, "CPD p = 0.25 and p = 0 gave the same losses");
}

#[test]
fn denoiser_resume_equals_an_uninterrupted_run() {
    let cfg = DiffusionTrainConfig {
        unet: tiny_conditional_unet(),
        timesteps: 50,
        uncond_probability: 0.2,
        ema: EmaConfig::default(),
        clip_grad_norm: Some(1.0),
        seed: 4,
    };
    let x0 = normal(104, &[3, 2, 8, 8], DType::F32);
    let ctx = normal(105, &[3, 8], DType::F32);
    let keys: Vec<NoiseKey> = (0..3).map(|i| NoiseKey { seed: 4, identity: i, sample: 0 }).collect();
    let k = 3;
    let mut straight = DiffusionTrainer::new(cfg.clone()).unwrap();
    let a: Vec<f64> = (0..2 * k).map(|_| straight.train_step(&x0, Some(&ctx), &keys, 1e-3).unwrap()).collect();
    let mut first = DiffusionTrainer::new(cfg.clone()).unwrap();
    let mut b: Vec<f64> = (0..k).map(|_| first.train_step(&x0, Some(&ctx), &keys, 1e-3).unwrap()).collect();
    let bytes = encode_safetensors(&first.state().unwrap(), HashMap::new()).unwrap();
    let (entries, _) = decode_safetensors(&bytes, "memory").unwrap();
    let mut second = DiffusionTrainer::new(cfg).unwrap();
    second.load_state(&entries, first.step(), "memory").unwrap();
    b.extend((0..k).map(|_| second.train_step(&x0, Some(&ctx), &keys, 1e-3).unwrap()));
    assert_eq!(a, b, "resumed loss trajectory differs");
    let ea = straight.ema_state().unwrap();
    let eb = second.ema_state().unwrap();
    for ((ka, ta), (kb, tb)) in ea.iter().zip(&eb) {
        assert_eq!(ka, kb);
        let d: f32 = (ta - tb).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(d == 0.0, "EMA tensor {ka} differs by {d}");
    }
    assert!(ea.iter().any(|(k, _)| k == "sqrt_alpha_bars") && ea.iter().any(|(k, _)| k.starts_with("eps_model.")));
    // what a trainer keeps between steps records no graph: a tracked EMA tensor keeps the
    // previous one (and so every earlier step) alive, which grew a toy LDM training to 19 GiB
    for (k, t) in
        straight.ema_state().unwrap().into_iter().chain(straight.state().unwrap().into_iter().filter(|(k, _)| !k.starts_with("eps_model.")))
    {
        assert!(!t.track_op(), "denoiser state `{k}` holds a backprop graph");
    }
}

#[test]
fn vq_autoencoder_learns_to_reconstruct_and_resumes_exactly() {
    use crate::train::autoencoder::{AutoencoderTrainConfig, AutoencoderTrainer};
    let vq: crate::vq::VqConfig = serde_json::from_str(
        r#"{"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "in_channels": 3, "out_ch": 3, "z_channels": 3, "embed_dim": 3, "resolution": 16, "attn_resolutions": []}"#,
    )
    .unwrap();
    let cfg = AutoencoderTrainConfig { vq, n_embed: 32, beta: 0.25, codebook_decay: 0.9, clip_grad_norm: None, seed: 8 };
    // smooth two-colour images: easy to reconstruct from a 3×8×8 code
    let mut v = Vec::new();
    for n in 0..8 {
        for c in 0..3 {
            for y in 0..16 {
                for x in 0..16 {
                    let t = ((x + y + 3 * n) as f32 / 30.0 + c as f32 * 0.3).sin();
                    v.push(if (x / 4 + y / 4 + n) % 2 == 0 { 0.8 * t } else { -0.6 * t });
                }
            }
        }
    }
    let images = Tensor::from_vec(v, (8, 3, 16, 16), &Device::Cpu).unwrap();
    let mut trainer = AutoencoderTrainer::new(cfg.clone()).unwrap();
    let first = trainer.train_step(&images, 2e-3).unwrap();
    let mut last = first;
    for _ in 0..40 {
        last = trainer.train_step(&images, 2e-3).unwrap();
    }
    assert!(last.l1 < 0.5 * first.l1, "reconstruction L1 did not halve: {first:?} -> {last:?}");
    assert!(last.usage > 0.0);
    let rec = trainer.reconstruct(&images).unwrap();
    assert_eq!(rec.dims(), images.dims());
    // official split files
    assert!(trainer.encoder_state().iter().all(|(k, _)| k.starts_with("encoder.") || k.starts_with("quant_conv.")));
    assert!(trainer.decoder_state().iter().any(|(k, _)| k == "quantize.embedding.weight"));
    // resume: 2 + 2 steps == 4 straight
    let mut a = AutoencoderTrainer::new(cfg.clone()).unwrap();
    let la: Vec<f64> = (0..4).map(|_| a.train_step(&images, 1e-3).unwrap().loss).collect();
    let mut b = AutoencoderTrainer::new(cfg.clone()).unwrap();
    let mut lb: Vec<f64> = (0..2).map(|_| b.train_step(&images, 1e-3).unwrap().loss).collect();
    let (entries, _) = decode_safetensors(&encode_safetensors(&b.state().unwrap(), HashMap::new()).unwrap(), "memory").unwrap();
    let mut c = AutoencoderTrainer::new(cfg).unwrap();
    c.load_state(&entries, 2, "memory").unwrap();
    lb.extend((0..2).map(|_| c.train_step(&images, 1e-3).unwrap().loss));
    assert_eq!(la, lb);
    // the codebook's running statistics keep no step's graph (see the denoiser's resume test)
    for (k, t) in a.state().unwrap().into_iter().filter(|(k, _)| k.starts_with("codebook_ema.") || k.starts_with("exp_avg")) {
        assert!(!t.track_op(), "autoencoder state `{k}` holds a backprop graph");
    }
}

/// A UNet whose every variable is random (zero-initialised output layers would make the
/// output, and every gradient but theirs, vanish).
fn unet_f64(cfg: &UNetConfig, seed: u64) -> (VarMap, crate::unet::ConditionalUNet) {
    use idflow_dataset::rng::KeyedRng;
    let varmap = VarMap::new();
    let unet = crate::unet::ConditionalUNet::new(cfg, VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu)).unwrap();
    for (i, (name, var)) in crate::train::state::named_vars(&varmap).into_iter().enumerate() {
        let mut rng = KeyedRng::new(&[seed, i as u64]);
        let dims = var.dims().to_vec();
        let fan_in: usize = if dims.len() >= 2 { dims[1..].iter().product() } else { 1 };
        let scale = if dims.len() >= 2 { 1.0 / (fan_in as f64).sqrt() } else { 0.1 };
        let offset = if dims.len() == 1 && name.ends_with("weight") { 1.0 } else { 0.0 };
        let v: Vec<f64> = (0..var.elem_count()).map(|_| offset + scale * rng.normal()).collect();
        var.set(&Tensor::from_vec(v, dims.as_slice(), &Device::Cpu).unwrap()).unwrap();
    }
    (varmap, unet)
}

#[test]
fn cpd_acts_in_training_only_and_p_zero_is_a_no_op() {
    use idflow_dataset::rng::KeyedRng;
    let dev = Device::Cpu;
    let x = normal(107, &[2, 2, 8, 8], DType::F64);
    let t = Tensor::new(&[3i64, 40], &dev).unwrap();
    let ctx = normal(108, &[2, 8], DType::F64);
    let max_diff =
        |a: &Tensor, b: &Tensor| -> f64 { (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap() };
    // p = 0.25: training mode draws a mask (keyed), eval mode is deterministic and mask-free
    let (_, unet) = unet_f64(&tiny_conditional_unet(), 6);
    let eval_a = unet.forward(&x, &t, Some(&ctx), None).unwrap();
    let eval_b = unet.forward(&x, &t, Some(&ctx), None).unwrap();
    assert_eq!(max_diff(&eval_a, &eval_b), 0.0);
    let train_a = unet.forward_train(&x, &t, Some(&ctx), None, &mut KeyedRng::new(&[1])).unwrap();
    let train_b = unet.forward_train(&x, &t, Some(&ctx), None, &mut KeyedRng::new(&[1])).unwrap();
    let train_c = unet.forward_train(&x, &t, Some(&ctx), None, &mut KeyedRng::new(&[2])).unwrap();
    assert_eq!(max_diff(&train_a, &train_b), 0.0, "the mask is keyed");
    assert!(max_diff(&train_a, &eval_a) > 1e-6, "CPD p = 0.25 left the training forward unchanged");
    assert!(max_diff(&train_a, &train_c) > 1e-6, "different keys, same mask");
    // p = 0: the training forward equals the eval forward
    let (_, unet0) = unet_f64(&UNetConfig { context_dropout_probability: 0.0, ..tiny_conditional_unet() }, 6);
    let e0 = unet0.forward(&x, &t, Some(&ctx), None).unwrap();
    let t0 = unet0.forward_train(&x, &t, Some(&ctx), None, &mut KeyedRng::new(&[1])).unwrap();
    assert!(max_diff(&e0, &t0) < 1e-12, "p = 0 must be a no-op");
}

#[test]
fn unet_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let cfg = UNetConfig { context_dropout_probability: 0.0, ..tiny_conditional_unet() };
    let (varmap, unet) = unet_f64(&cfg, 9);
    let x = normal(109, &[2, 2, 4, 4], DType::F64);
    let t = Tensor::new(&[5i64, 70], &dev).unwrap();
    let ctx = normal(110, &[2, 8], DType::F64);
    let w = normal(111, &[2, 2, 4, 4], DType::F64);
    let loss_of = || unet.forward(&x, &t, Some(&ctx), None).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss_of().backward().unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    let mut names: Vec<&String> = vars.keys().filter(|k| k.ends_with("weight") && !k.contains("norm")).collect();
    names.sort();
    let picked: Vec<&String> = names.iter().step_by((names.len() / 5).max(1)).take(5).copied().collect();
    assert!(picked.len() >= 4);
    for name in picked {
        let var = &vars[name];
        let Some(g) = grads.get(var.as_tensor()) else { panic!("no gradient for {name}") };
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().any(|v| v.abs() > 1e-8), "{name}: gradient vanishes");
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for idx in [0, base.len() / 3] {
            let h = 1e-5;
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap()).unwrap();
                loss_of().to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap()).unwrap();
            assert!((fd - g[idx]).abs() <= 1e-5 + 1e-4 * fd.abs(), "{name}[{idx}]: autograd {} vs finite difference {fd}", g[idx]);
        }
    }
}

fn replica_trainer(replicas: usize) -> FaceTrainer {
    FaceTrainer::new(FaceTrainConfig {
        backbone: BackboneConfig::Iresnet(tiny_backbone()),
        classes: 3,
        scale: 16.0,
        margin: crate::heads::Margin::ArcFace { m: 0.3, threshold: true, easy_margin: false },
        momentum: 0.9,
        weight_decay: 5e-4,
        clip_grad_norm: None,
        seed: 5,
        replicas,
    })
    .unwrap()
}

fn state_map(t: &FaceTrainer) -> BTreeMap<String, Vec<f32>> {
    t.state().into_iter().map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn rows_split_into_near_equal_contiguous_replica_parts() {
    use crate::train::replicas::split_rows;
    assert_eq!(split_rows(10, 3), vec![0..3, 3..6, 6..10]);
    assert_eq!(split_rows(8, 2), vec![0..4, 4..8]);
    assert_eq!(split_rows(3, 8), vec![0..1, 1..2, 2..3]);
    assert_eq!(split_rows(5, 1), vec![0..5]);
    assert!(split_rows(0, 2).is_empty());
}

/// With plain SGD's first step (momentum buffer = gradient), a two-replica step on `[x1; x2]`
/// at rate `lr` must move every parameter by the sum of the moves of two single-replica steps,
/// one on `x1` and one on `x2`, each at `lr / 2` from the same start; the running BatchNorm
/// statistics must be the first half's alone.
#[test]
fn two_replica_step_is_the_sum_of_half_batch_steps() {
    let x = normal(301, &[8, 3, 16, 16], DType::F32);
    let labels = [0u32, 1, 2, 0, 1, 2, 2, 0];
    let lr = 0.05;
    let start = state_map(&replica_trainer(1));
    let mut both = replica_trainer(2);
    let stats = both.train_step(&x, &labels, lr).unwrap();
    let mut first = replica_trainer(1);
    let s1 = first.train_step(&x.narrow(0, 0, 4).unwrap(), &labels[..4], lr / 2.0).unwrap();
    let mut second = replica_trainer(1);
    let s2 = second.train_step(&x.narrow(0, 4, 4).unwrap(), &labels[4..], lr / 2.0).unwrap();
    assert!((stats.loss - (s1.loss + s2.loss) / 2.0).abs() < 1e-5, "loss {} vs halves {} {}", stats.loss, s1.loss, s2.loss);
    assert_eq!(stats.correct, s1.correct + s2.correct);
    assert_eq!(stats.rows, 8);
    let (got, a, b) = (state_map(&both), state_map(&first), state_map(&second));
    let mut moved = 0;
    for (name, v0) in &start {
        if name.starts_with("momentum_buffer.") {
            continue;
        }
        let want: Vec<f32> = if name.ends_with("running_mean") || name.ends_with("running_var") {
            a[name].clone()
        } else {
            v0.iter().zip(&a[name]).zip(&b[name]).map(|((z, p), q)| p + q - z).collect()
        };
        let worst = got[name].iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-5, "{name}: replicas differ from the summed half steps by {worst}");
        moved += usize::from(got[name] != *v0);
    }
    assert!(moved > 20, "only {moved} tensors changed in the step");
}

#[test]
fn replica_steps_are_reproducible_and_depend_on_the_split() {
    let x = normal(302, &[6, 3, 16, 16], DType::F32);
    let labels = [2u32, 1, 0, 0, 1, 2];
    let run = |replicas: usize| {
        let mut t = replica_trainer(replicas);
        for _ in 0..2 {
            t.train_step(&x, &labels, 0.05).unwrap();
        }
        state_map(&t)
    };
    assert_eq!(run(3), run(3), "three replicas gave different parameters on a rerun");
    assert_ne!(run(3), run(1), "the replica split had no effect (BatchNorm statistics are per part)");
    assert!(FaceTrainer::new(FaceTrainConfig { replicas: 0, ..replica_trainer(1).config().clone() }).is_err());
}
