//! Training paths: BatchNorm batch statistics and running updates, gradient steps that lower
//! the loss for a face backbone + margin head and for the UNet's DDPM loss.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use common::assert_close;
use idflow_dataset::rng::KeyedRng;
use idflow_models::heads::{Margin, MarginHead};
use idflow_models::iresnet::IrBackbone;
use idflow_models::nn::layers::BatchNorm;
use idflow_models::sampler::NoiseKey;
use idflow_models::schedule::DdpmSchedule;
use idflow_models::train::loss::{ddpm_training_loss, trainable_vars};
use idflow_models::unet::{ConditionalUNet, UNetConfig};

#[test]
fn batchnorm_training_mode_matches_an_independent_computation() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let bn = BatchNorm::new(3, 1e-5, true, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    let x = Tensor::randn(0.5f32, 2.0, (4, 3, 5, 5), &dev).unwrap();
    let y = bn.forward_train(&x).unwrap();
    // per-channel mean/var over (B, H, W), computed in f64 from the raw values
    let xv: Vec<Vec<Vec<Vec<f32>>>> = x
        .to_vec3::<f32>()
        .map(|_| unreachable!())
        .unwrap_or_else(|_: candle_core::Error| (0..4).map(|b| x.get(b).unwrap().to_vec3::<f32>().unwrap()).collect());
    let mut expected = vec![0f32; 4 * 3 * 25];
    let (mut means, mut vars) = (vec![], vec![]);
    for c in 0..3 {
        let vals: Vec<f64> = (0..4).flat_map(|b| xv[b][c].iter().flatten().map(|&v| v as f64).collect::<Vec<_>>()).collect();
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        means.push(mean);
        vars.push(var * n / (n - 1.0));
        for b in 0..4 {
            for (i, v) in xv[b][c].iter().flatten().enumerate() {
                expected[b * 75 + c * 25 + i] = ((*v as f64 - mean) / (var + 1e-5).sqrt()) as f32;
            }
        }
    }
    let expected = Tensor::from_vec(expected, (4, 3, 5, 5), &dev).unwrap();
    assert_close("batch-normalised", &y, &expected, 1e-5);
    let (rm, rv) = bn.running_stats();
    let rm_exp: Vec<f32> = means.iter().map(|m| (0.1 * m) as f32).collect();
    let rv_exp: Vec<f32> = vars.iter().map(|v| (0.9 + 0.1 * v) as f32).collect();
    assert_close("running mean", rm, &Tensor::new(rm_exp.as_slice(), &dev).unwrap(), 1e-5);
    assert_close("running var", rv, &Tensor::new(rv_exp.as_slice(), &dev).unwrap(), 1e-5);
    // the VarMap holds the updated statistics and they are not trainable
    let data = varmap.data().lock().unwrap();
    assert_close("varmap running_var", data["running_var"].as_tensor(), rv, 0.0);
    drop(data);
    assert_eq!(trainable_vars(&varmap).len(), 2, "weight and bias only");
    // eval mode now uses the running statistics
    let z = bn.forward(&x).unwrap();
    assert!(common::max_abs_diff(&z, &y) > 1e-3);
}

#[test]
fn ir18_with_cosface_learns_a_fixed_pair() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = IrBackbone::new(18, vb.pp("backbone")).unwrap();
    let head = MarginHead::new(512, 2, 64.0, Margin::CosFace { m: 0.35 }, vb.pp("head")).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 112, 112), &dev).unwrap();
    let labels = Tensor::new(&[0i64, 1], &dev).unwrap();
    let vars = trainable_vars(&varmap);
    let loss_at = || {
        // the same dropout key each time: the loss is a deterministic function of the weights
        let emb = net.forward_train(&x, &mut KeyedRng::new(&[1])).unwrap();
        let logits = head.logits(&emb, &labels, None).unwrap();
        candle_nn::loss::cross_entropy(&logits, &labels).unwrap()
    };
    let loss0 = loss_at();
    let grads = loss0.backward().unwrap();
    // every trainable tensor (convs, BN affine, PReLU, fc, head kernel) receives a gradient
    let missing = vars.iter().filter(|v| grads.get(v.as_tensor()).is_none()).count();
    assert_eq!(missing, 0, "{missing} of {} trainable tensors got no gradient", vars.len());
    let mut opt = candle_nn::SGD::new(vars, 1e-4).unwrap();
    opt.step(&grads).unwrap();
    let (l0, l1) = (loss0.to_scalar::<f32>().unwrap(), loss_at().to_scalar::<f32>().unwrap());
    eprintln!("loss {l0} -> {l1}");
    assert!(l0.is_finite() && l1 < l0, "a small gradient step did not lower the loss: {l0} -> {l1}");
}

#[test]
fn unet_ddpm_loss_decreases_under_adamw() {
    let dev = Device::Cpu;
    let cfg = UNetConfig { channel_multipliers: vec![1, 2], ..idflow_models::io::presets::toy_unet() };
    let varmap = VarMap::new();
    let unet = ConditionalUNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    let schedule = DdpmSchedule::linear(1000);
    let x0 = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (2, 16), &dev).unwrap();
    let keys: Vec<NoiseKey> = (0..2).map(|i| NoiseKey { seed: 3, identity: i, sample: 0 }).collect();
    let params = candle_nn::ParamsAdamW { lr: 1e-3, ..Default::default() };
    let mut opt = candle_nn::AdamW::new(trainable_vars(&varmap), params).unwrap();
    let mut losses = vec![];
    for step in 0..8u64 {
        let mut rng = KeyedRng::new(&[9, step]);
        // the same draw every step (step key 0) so the loss is comparable across steps
        let loss = ddpm_training_loss(&unet, &schedule, &x0, Some(&ctx), None, &keys, 0, &mut rng).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    eprintln!("losses {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[7] < losses[0], "loss did not decrease: {losses:?}");
}

#[test]
fn batchnorm_and_prelu_gradients_match_the_broadcasting_formulation() {
    use candle_core::Var;
    use idflow_models::nn::layers::PRelu;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let bn = BatchNorm::new(3, 1e-5, true, vb.pp("bn")).unwrap();
    let prelu = PRelu::new(3, vb.pp("act")).unwrap();
    {
        let data = varmap.data().lock().unwrap();
        data["bn.weight"].set(&Tensor::new(&[0.5f32, 1.5, -1.0], &dev).unwrap()).unwrap();
        data["bn.bias"].set(&Tensor::new(&[0.1f32, -0.2, 0.3], &dev).unwrap()).unwrap();
        data["act.weight"].set(&Tensor::new(&[0.25f32, 0.1, -0.3], &dev).unwrap()).unwrap();
    }
    let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (4, 3, 5, 5), &dev).unwrap()).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (4, 3, 5, 5), &dev).unwrap();
    let ours = prelu.forward(&bn.forward_train(&x).unwrap()).unwrap();
    // the same layers written with candle's broadcasting ops
    let data = varmap.data().lock().unwrap();
    let (w, b, a) = (data["bn.weight"].as_tensor().clone(), data["bn.bias"].as_tensor().clone(), data["act.weight"].as_tensor().clone());
    drop(data);
    let mean = x.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let normed = centred.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
    let y = normed.broadcast_mul(&w.reshape((1, 3, 1, 1)).unwrap()).unwrap().broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap()).unwrap();
    let reference = y.relu().unwrap().add(&y.minimum(0f32).unwrap().broadcast_mul(&a.reshape((1, 3, 1, 1)).unwrap()).unwrap()).unwrap();
    assert_close("forward", &ours, &reference, 1e-5);
    let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("input gradient", g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-4);
    for (name, t) in [("bn.weight", &w), ("bn.bias", &b), ("act.weight", &a)] {
        assert_close(name, g1.get(t).unwrap(), g2.get(t).unwrap(), 1e-4);
    }
}
