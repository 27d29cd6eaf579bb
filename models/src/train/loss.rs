//! Pieces the training operators need: the trainable subset of a `VarMap` and the DDPM
//! denoising loss of IDiff-Face (`DenoisingDiffusionProbabilisticModel.forward`).

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use idflow_dataset::rng::KeyedRng;

use crate::error::{input_error, Result};
use crate::sampler::NoiseKey;
use crate::schedule::DdpmSchedule;
use crate::unet::ConditionalUNet;

/// Suffixes of buffers that live in a `VarMap` but must not be optimised.
const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// The variables an optimiser should update: everything except BatchNorm running statistics.
pub fn trainable_vars(varmap: &VarMap) -> Vec<Var> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut named: Vec<(&String, &Var)> = data.iter().filter(|(name, _)| !BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))).collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

/// The timestep and noise of one training example, keyed by (seed, identity, sample, step).
pub fn training_draw(key: &NoiseKey, step: u64, t_total: usize, noise_len: usize) -> (usize, Vec<f32>) {
    let mut rng = KeyedRng::new(&[key.seed, key.identity, key.sample, step]);
    let t = rng.below(t_total as u64) as usize;
    let mut eps = vec![0f32; noise_len];
    rng.fill_normal_f32(&mut eps);
    (t, eps)
}

/// `MSE(eps, eps_model(sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·eps, t, context, dropout_mask))` with
/// `t ~ U{0, T−1}` and `eps ~ N(0, 1)` drawn per row from `keys[b]` at optimiser step `step`,
/// and training-mode context dropout drawn from `dropout_rng`.
#[allow(clippy::too_many_arguments)]
pub fn ddpm_training_loss(
    unet: &ConditionalUNet,
    schedule: &DdpmSchedule,
    x0: &Tensor,
    context: Option<&Tensor>,
    dropout_mask: Option<&Tensor>,
    keys: &[NoiseKey],
    step: u64,
    dropout_rng: &mut KeyedRng,
) -> Result<Tensor> {
    let dims = x0.dims().to_vec();
    if dims.first() != Some(&keys.len()) {
        return Err(input_error("keys", format!("{} keys for latents of shape {dims:?}", keys.len())));
    }
    let per: usize = dims[1..].iter().product();
    let (mut ts, mut eps, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for key in keys {
        let (t, e) = training_draw(key, step, schedule.len(), per);
        ts.push(t as i64);
        a.push(schedule.sqrt_alpha_bars[t]);
        b.push(schedule.sqrt_one_minus_alpha_bars[t]);
        eps.extend(e);
    }
    let dev: &Device = x0.device();
    let n = keys.len();
    let mut coef_shape = vec![n];
    coef_shape.extend(std::iter::repeat_n(1, dims.len() - 1));
    let eps = Tensor::from_vec(eps, dims.as_slice(), dev)?.to_dtype(x0.dtype())?;
    let a = Tensor::from_vec(a, coef_shape.as_slice(), dev)?.to_dtype(x0.dtype())?;
    let b = Tensor::from_vec(b, coef_shape.as_slice(), dev)?.to_dtype(x0.dtype())?;
    let x_t = (x0.broadcast_mul(&a)? + eps.broadcast_mul(&b)?)?;
    let t = Tensor::from_vec(ts, n, dev)?;
    let pred = unet.forward_train(&x_t, &t, context, dropout_mask, dropout_rng)?;
    Ok((pred - eps)?.sqr()?.mean_all()?)
}
