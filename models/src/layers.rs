//! Small building blocks shared by the models: convolutions, norms and activations whose parameter
//! names follow PyTorch (`weight`, `bias`, `running_mean`, …) so a state dict loads by lookup.
//!
//! candle-nn already has `Conv2d`, `Linear` and `GroupNorm`; they are used as they are. The
//! wrappers here add what candle-nn lacks: 1×1 `Conv1d` as a batched matmul, an eval-mode
//! `BatchNorm` that also consumes PyTorch's `num_batches_tracked` buffer (so strict loading sees
//! every key used), an affine-free BatchNorm variant, and `PReLU` with per-channel slopes.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// `torch.nn.Conv2d` with a square kernel, given stride and padding, with bias.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<candle_nn::Conv2d> {
    let cfg = candle_nn::Conv2dConfig { padding, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)
}

/// `torch.nn.Conv2d(..., bias=False)`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<candle_nn::Conv2d> {
    let cfg = candle_nn::Conv2dConfig { padding, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    candle_nn::conv2d_no_bias(in_channels, out_channels, kernel, cfg, vb)
}

/// `torch.nn.ConvTranspose2d(c_in, c_out, k, stride, padding)` with bias (weight `[c_in, c_out, k, k]`).
pub fn conv_transpose2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<candle_nn::ConvTranspose2d> {
    let cfg = candle_nn::ConvTranspose2dConfig { padding, output_padding: 0, stride, dilation: 1 };
    candle_nn::conv_transpose2d(in_channels, out_channels, kernel, cfg, vb)
}

/// `torch.nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<candle_nn::GroupNorm> {
    candle_nn::group_norm(groups, channels, eps, vb)
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
        let weight = vb.get((out_channels, in_channels, 1), "weight")?.squeeze(2)?;
        let bias = vb.get(out_channels, "bias")?;
        Ok(Self { weight, bias: Some(bias) })
    }

    /// Loads `Linear(in, out)` parameters, applied on the channel axis.
    pub fn linear(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels), "weight")?;
        let bias = vb.get(out_channels, "bias")?;
        Ok(Self { weight, bias: Some(bias) })
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

/// `torch.nn.BatchNorm{1,2}d` in eval mode: normalises with the running statistics.
///
/// `affine = false` (TFace's final `BatchNorm1d`) has no `weight`/`bias`. The optional
/// `num_batches_tracked` buffer is read (and so counted as consumed) when the state dict has it.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    /// Loads `BatchNorm(channels, eps)` with or without affine parameters.
    pub fn new(channels: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        // initial values (used when training from scratch) are PyTorch's
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        if vb.contains_tensor("num_batches_tracked") {
            let _ = vb.get_unchecked_dtype("num_batches_tracked", DType::I64)?;
        }
        let inv_std = (running_var + eps)?.sqrt()?.recip()?;
        let (scale, shift) = if affine {
            let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
            let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
            let scale = (&weight * &inv_std)?;
            let shift = (bias - (&running_mean * &scale)?)?;
            (scale, shift)
        } else {
            let shift = (&running_mean * &inv_std)?.neg()?;
            (inv_std, shift)
        };
        Ok(Self { scale, shift })
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = vec![1usize; x.rank()];
        if x.rank() < 2 {
            candle_core::bail!("BatchNorm expects [B, C, ...], got {:?}", x.dims());
        }
        dims[1] = x.dim(1)?;
        x.broadcast_mul(&self.scale.reshape(dims.clone())?)?.broadcast_add(&self.shift.reshape(dims)?)
    }
}

/// `torch.nn.PReLU(channels)`: `max(0, x) + w_c · min(0, x)`.
#[derive(Clone, Debug)]
pub struct PRelu {
    weight: Tensor,
}

impl PRelu {
    /// Loads the per-channel slopes (`weight`, shape `[channels]`).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(channels, "weight")? })
    }
}

impl Module for PRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = vec![1usize; x.rank()];
        dims[1] = x.dim(1)?;
        let w = self.weight.reshape(dims)?;
        x.relu()?.add(&x.minimum(0f32)?.broadcast_mul(&w)?)
    }
}

/// Softmax over the last axis.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}
