//! Small building blocks shared by the models: convolutions, norms and activations whose parameter
//! names follow PyTorch (`weight`, `bias`, `running_mean`, …) so a state dict loads by lookup.
//!
//! candle-nn's `Linear` is used as it is; convolutions are candle-nn's
//! parameters run by [`crate::kernels::conv`] (GEMM forward and backward). The wrappers here add what
//! candle-nn lacks: 1×1 `Conv1d` as a batched matmul, an eval-mode
//! `BatchNorm` that also consumes PyTorch's `num_batches_tracked` buffer (so strict loading sees
//! every key used), an affine-free BatchNorm variant, and `PReLU` with per-channel slopes.

use candle_core::{DType, Module, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use crate::kernels::affine::{broadcast_dims, channel_affine};
pub use crate::kernels::conv::{Conv2d, ConvTranspose2d};
use crate::kernels::fused;

/// `torch.nn.Conv2d` with a square kernel, given stride and symmetric padding, with or without
/// a bias (candle-nn's parameter names and initialisation).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = candle_nn::Conv2dConfig { padding, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    let conv = if bias {
        candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)?
    } else {
        candle_nn::conv2d_no_bias(in_channels, out_channels, kernel, cfg, vb)?
    };
    Ok(Conv2d::new(conv.weight().clone(), conv.bias().cloned(), stride, padding))
}

/// `torch.nn.ConvTranspose2d(c_in, c_out, k, stride, padding)` with bias (weight `[c_in, c_out, k, k]`).
pub fn conv_transpose2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let cfg = candle_nn::ConvTranspose2dConfig { padding, output_padding: 0, stride, dilation: 1 };
    let conv = candle_nn::conv_transpose2d(in_channels, out_channels, kernel, cfg, vb)?;
    Ok(ConvTranspose2d::new(conv.weight().clone(), conv.bias().cloned(), stride, padding))
}

/// `torch.nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(groups, channels, eps, vb)
}

/// A pointwise channel mixing `W·x + b` on `[B, C_in, L]` inputs.
///
/// Loads either a `Conv1d(k=1)` weight `[out, in, 1]` or a `Linear` weight `[out, in]` (the
/// feed-forward of the UNet's attention block is a Linear applied on the channel axis, which is
/// the same operation), so no transposes of the activations are needed.
#[derive(Clone, Debug)]
pub struct Pointwise {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Pointwise {
    /// Loads `Conv1d(in, out, 1)` parameters.
    pub fn conv1d(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((out_channels, in_channels, 1), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?.squeeze(2)?;
        let bias = vb.get_with_hints(out_channels, "bias", Self::bias_init(in_channels))?;
        Ok(Self { weight, bias: Some(bias) })
    }

    /// Loads `Linear(in, out)` parameters, applied on the channel axis.
    pub fn linear(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((out_channels, in_channels), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = vb.get_with_hints(out_channels, "bias", Self::bias_init(in_channels))?;
        Ok(Self { weight, bias: Some(bias) })
    }

    /// PyTorch's default bias initialisation `U(±1/√fan_in)`. Fresh (trainable) variables must
    /// not start constant: a constant weight would be taken for a deliberate constant init
    /// (BatchNorm / GroupNorm) and kept, and an attention block whose projections are all zero
    /// receives no gradient at all.
    fn bias_init(fan_in: usize) -> candle_nn::Init {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        candle_nn::Init::Uniform { lo: -bound, up: bound }
    }
}

impl Module for Pointwise {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _) = x.dims3()?;
        let y = self.weight.broadcast_left(b)?.matmul(x)?;
        match &self.bias {
            Some(bias) => y.broadcast_add(&bias.unsqueeze(1)?),
            None => Ok(y),
        }
    }
}

/// Which statistics a [`BatchNorm`] normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormMode {
    /// Eval mode: the running statistics.
    Running,
    /// Training mode: the batch statistics; with `update_running` the running statistics move
    /// towards them (PyTorch's momentum update). Data-parallel replicas other than the first
    /// leave them alone, like PyTorch DDP without SyncBatchNorm.
    Batch {
        /// Whether the running statistics are updated.
        update_running: bool,
    },
}

impl NormMode {
    /// Plain training mode: batch statistics, running statistics updated.
    pub const TRAIN: NormMode = NormMode::Batch { update_running: true };
}

/// `torch.nn.BatchNorm{1,2}d`.
///
/// Eval mode ([`Module::forward`]) normalises with the running statistics; training mode
/// ([`BatchNorm::forward_train`]) with the batch statistics and updates the running ones like
/// PyTorch (momentum 0.1, unbiased variance). `affine = false` (TFace's final `BatchNorm1d`) has
/// no `weight`/`bias`. The optional `num_batches_tracked` buffer is read (and so counted as
/// consumed) when the state dict has it. Running statistics loaded from a `VarMap` stay shared
/// with it, so saving the map saves the updated statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// Loads `BatchNorm(channels, eps)` with or without affine parameters.
    pub fn new(channels: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        // initial values (used when training from scratch) are PyTorch's
        let running_mean = Var::from_tensor(&vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?;
        let running_var = Var::from_tensor(&vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?;
        if vb.contains_tensor("num_batches_tracked") {
            let _ = vb.get_unchecked_dtype("num_batches_tracked", DType::I64)?;
        }
        let (weight, bias) = if affine {
            (Some(vb.get_with_hints(channels, "weight", Init::Const(1.0))?), Some(vb.get_with_hints(channels, "bias", Init::Const(0.0))?))
        } else {
            (None, None)
        };
        Ok(Self { weight, bias, running_mean, running_var, eps, momentum: 0.1 })
    }

    /// `(x − mean) · inv_std · weight + bias` as one per-channel affine map (`mean`, `inv_std` `[C]`).
    fn normalise(&self, x: &Tensor, mean: &Tensor, inv_std: &Tensor) -> Result<Tensor> {
        let scale = match &self.weight {
            Some(w) => (inv_std * w)?,
            None => inv_std.clone(),
        };
        let shift = match &self.bias {
            Some(b) => (b - (mean * &scale)?)?,
            None => (mean * &scale)?.neg()?,
        };
        channel_affine(x, Some(&scale), Some(&shift))
    }

    /// Training-mode forward: batch statistics, running statistics updated in place.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, NormMode::TRAIN)
    }

    /// Forward in the given [`NormMode`].
    pub fn forward_mode(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        match mode {
            NormMode::Running => self.forward(x),
            NormMode::Batch { update_running } => self.forward_batch(x, update_running),
        }
    }

    fn forward_batch(&self, x: &Tensor, update_running: bool) -> Result<Tensor> {
        if fused::is_fusable(x) {
            return self.forward_batch_fused(x, update_running);
        }
        let c = broadcast_dims(x)?[1];
        // [C, N] view: channels first, everything else flattened
        let xc = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
        let n = xc.dim(1)?;
        if n < 2 {
            candle_core::bail!("BatchNorm training needs more than one value per channel, got {:?}", x.dims());
        }
        let mean = xc.mean_keepdim(1)?;
        let centred = xc.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let inv_std = (&var + self.eps)?.sqrt()?.recip()?;
        let normed = self.normalise(x, &mean.flatten_all()?, &inv_std.flatten_all()?)?;
        if !update_running {
            return Ok(normed);
        }
        let m = self.momentum;
        let unbiased = (var.detach().flatten_all()? * (n as f64 / (n as f64 - 1.0)))?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(normed)
    }

    /// [`Self::forward_batch`] through the fused CPU op ([`crate::kernels::fused`]).
    fn forward_batch_fused(&self, x: &Tensor, update_running: bool) -> Result<Tensor> {
        let (b, c) = (x.dim(0)?, broadcast_dims(x)?[1]);
        let n = b * x.dims()[2..].iter().product::<usize>();
        if n < 2 {
            candle_core::bail!("BatchNorm training needs more than one value per channel, got {:?}", x.dims());
        }
        let (mean, var) = fused::channel_moments(x)?;
        let eps = self.eps as f32;
        let inv_std: Vec<f32> = var.iter().map(|v| (v + eps).sqrt().recip()).collect();
        let normed = match (&self.weight, &self.bias) {
            (Some(w), Some(bias)) => fused::batch_norm_train(x, w, bias, mean.clone(), inv_std)?,
            _ => {
                let ones = Tensor::ones(c, DType::F32, x.device())?;
                let zeros = Tensor::zeros(c, DType::F32, x.device())?;
                fused::batch_norm_train(x, &ones, &zeros, mean.clone(), inv_std)?
            }
        };
        if update_running {
            let m = self.momentum;
            let mean = Tensor::from_vec(mean, c, x.device())?;
            let unbiased = (Tensor::from_vec(var, c, x.device())? * (n as f64 / (n as f64 - 1.0)))?;
            self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
            self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        }
        Ok(normed)
    }

    /// The running mean and variance.
    pub fn running_stats(&self) -> (&Tensor, &Tensor) {
        (self.running_mean.as_tensor(), self.running_var.as_tensor())
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inv_std = (self.running_var.as_tensor() + self.eps)?.sqrt()?.recip()?;
        self.normalise(x, self.running_mean.as_tensor(), &inv_std)
    }
}

/// `torch.nn.PReLU(channels)`: `max(0, x) + w_c · min(0, x)`.
#[derive(Clone, Debug)]
pub struct PRelu {
    weight: Tensor,
}

impl PRelu {
    /// Loads the per-channel slopes (`weight`, shape `[channels]`; PyTorch's initial slope 0.25
    /// for a fresh variable).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get_with_hints(channels, "weight", Init::Const(0.25))? })
    }
}

impl Module for PRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if fused::is_fusable(x) {
            return fused::prelu(x, &self.weight);
        }
        x.relu()?.add(&channel_affine(&x.minimum(0f32)?, Some(&self.weight), None)?)
    }
}

/// `MaxPool2d(kernel 1, stride s)`: keeps pixel (s·i, s·j). Written with reshapes and narrows
/// because candle's max-pool has no backward pass for a kernel smaller than its stride.
pub fn subsample2d(x: &Tensor, s: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
    x.pad_with_zeros(2, 0, oh * s - h)?
        .pad_with_zeros(3, 0, ow * s - w)?
        .reshape((b, c, oh, s, ow, s))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, oh, ow))
}

/// Softmax over the last axis.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// `torch.nn.GroupNorm(groups, channels, eps)`: statistics over each group of channels and all
/// positions, then the per-channel `weight` and `bias`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` `[channels]` (initialised to 1 and 0 when training from scratch).
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("GroupNorm: {groups} groups do not divide {channels} channels");
        }
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, groups, eps })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != self.weight.dim(0)? {
            candle_core::bail!("GroupNorm over {} channels got input {:?}", self.weight.dim(0)?, dims);
        }
        if fused::is_fusable(x) {
            return fused::group_norm(x, self.groups, &self.weight, &self.bias, self.eps);
        }
        let grouped = x.reshape((dims[0], self.groups, ()))?;
        let mean = grouped.mean_keepdim(2)?;
        let centred = grouped.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.reshape(dims)?;
        channel_affine(&normed, Some(&self.weight), Some(&self.bias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn group_norm_matches_candle_nn_forward_and_gradients() {
        let dev = Device::Cpu;
        let map = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let ours = GroupNorm::new(2, 6, 1e-5, vb.pp("gn")).unwrap();
        // non-trivial affine parameters, shared with candle-nn's GroupNorm
        for (name, var) in map.data().lock().unwrap().iter() {
            let n = var.dim(0).unwrap();
            let values: Vec<f32> =
                (0..n).map(|i| if name.ends_with("weight") { 0.5 + i as f32 * 0.25 } else { i as f32 * 0.1 - 0.2 }).collect();
            var.set(&Tensor::new(values, &dev).unwrap()).unwrap();
        }
        let theirs = candle_nn::GroupNorm::new(ours.weight.clone(), ours.bias.clone(), 6, 2, 1e-5).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 6, 3, 3), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 6, 3, 3), &dev).unwrap();
        let (a, b) = (ours.forward(&x).unwrap(), theirs.forward(&x).unwrap());
        assert!(max_diff(&a, &b) < 1e-5);
        let g1 = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-4);
        for var in map.all_vars() {
            assert!(max_diff(g1.get(&var).unwrap(), g2.get(&var).unwrap()) < 1e-4);
        }
    }
}
