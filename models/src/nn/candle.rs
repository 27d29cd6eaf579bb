//! The candle implementation of [`Backend`]: candle tensors, parameters from a `VarBuilder`
//! (a checkpoint, or a `VarMap` of trainable variables), idflow's GEMM convolutions and fused
//! norms ([`crate::kernels`]) where candle's own are slow on the CPU.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;
use idflow_dataset::rng::KeyedRng;

use super::backend::{dropout_factors, Backend, ConvSpec, NormMode, PointwiseFrom};
use super::layers::{conv2d, conv_transpose2d, BatchNorm, GroupNorm, PRelu, Pointwise};
use crate::vq::VectorQuantizer;

/// The candle backend (stateless; all state lives in the tensors).
#[derive(Clone, Copy, Debug, Default)]
pub struct Candle;

/// A convolution with PyTorch's symmetric padding, or with explicit zero padding
/// `[top, left, bottom, right]` applied before an unpadded convolution.
#[derive(Clone, Debug)]
pub struct PaddedConv2d {
    conv: crate::kernels::conv::Conv2d,
    extra: Option<[usize; 4]>,
}

impl Backend for Candle {
    type Tensor = Tensor;
    type Vars<'v> = VarBuilder<'v>;
    type Error = candle_core::Error;
    type Conv2d = PaddedConv2d;
    type ConvTranspose2d = crate::kernels::conv::ConvTranspose2d;
    type Linear = candle_nn::Linear;
    type Pointwise = Pointwise;
    type GroupNorm = GroupNorm;
    type BatchNorm = BatchNorm;
    type PRelu = PRelu;
    type Quantizer = VectorQuantizer;
    type Param = Tensor;

    fn error(message: String) -> Self::Error {
        candle_core::Error::Msg(message)
    }

    fn push<'v>(vars: &Self::Vars<'v>, name: &str) -> Self::Vars<'v> {
        vars.pp(name)
    }

    fn load_conv2d(vars: &VarBuilder<'_>, spec: ConvSpec) -> candle_core::Result<PaddedConv2d> {
        let ConvSpec { in_channels, out_channels, kernel, stride, bias, .. } = spec;
        let (padding, extra) = match spec.symmetric_padding() {
            Some(p) => (p, None),
            None => (0, Some(spec.padding)),
        };
        let conv = conv2d(in_channels, out_channels, kernel, stride, padding, bias, vars.clone())?;
        Ok(PaddedConv2d { conv, extra })
    }

    fn load_conv_transpose2d(vars: &VarBuilder<'_>, spec: ConvSpec) -> candle_core::Result<Self::ConvTranspose2d> {
        let Some(padding) = spec.symmetric_padding() else {
            candle_core::bail!("conv_transpose2d: asymmetric padding {:?} is not supported", spec.padding);
        };
        conv_transpose2d(spec.in_channels, spec.out_channels, spec.kernel, spec.stride, padding, vars.clone())
    }

    fn load_linear(vars: &VarBuilder<'_>, c_in: usize, c_out: usize) -> candle_core::Result<Self::Linear> {
        candle_nn::linear(c_in, c_out, vars.clone())
    }

    fn load_pointwise(vars: &VarBuilder<'_>, c_in: usize, c_out: usize, from: PointwiseFrom) -> candle_core::Result<Pointwise> {
        match from {
            PointwiseFrom::Conv1d => Pointwise::conv1d(c_in, c_out, vars.clone()),
            PointwiseFrom::Linear => Pointwise::linear(c_in, c_out, vars.clone()),
        }
    }

    fn load_group_norm(vars: &VarBuilder<'_>, groups: usize, channels: usize, eps: f64) -> candle_core::Result<GroupNorm> {
        GroupNorm::new(groups, channels, eps, vars.clone())
    }

    fn load_batch_norm(vars: &VarBuilder<'_>, channels: usize, eps: f64, affine: bool) -> candle_core::Result<BatchNorm> {
        BatchNorm::new(channels, eps, affine, vars.clone())
    }

    fn load_prelu(vars: &VarBuilder<'_>, channels: usize) -> candle_core::Result<PRelu> {
        PRelu::new(channels, vars.clone())
    }

    fn load_quantizer(vars: &VarBuilder<'_>, n_embed: usize, dim: usize) -> candle_core::Result<VectorQuantizer> {
        VectorQuantizer::new(n_embed, dim, vars.clone())
    }

    fn load_param(vars: &VarBuilder<'_>, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        vars.get(shape, name)
    }

    fn zeros(vars: &VarBuilder<'_>, shape: &[usize]) -> candle_core::Result<Tensor> {
        Tensor::zeros(shape, vars.dtype(), vars.device())
    }

    fn constant(vars: &VarBuilder<'_>, _name: &str, shape: &[usize], data: Vec<f32>) -> candle_core::Result<Tensor> {
        Tensor::from_vec(data, shape, vars.device())?.to_dtype(vars.dtype())
    }

    fn conv2d(&self, layer: &PaddedConv2d, x: &Tensor) -> candle_core::Result<Tensor> {
        match layer.extra {
            None => layer.conv.forward(x),
            Some([top, left, bottom, right]) => layer.conv.forward(&x.pad_with_zeros(3, left, right)?.pad_with_zeros(2, top, bottom)?),
        }
    }

    fn conv_transpose2d(&self, layer: &Self::ConvTranspose2d, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward(x)
    }

    fn linear(&self, layer: &Self::Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward(x)
    }

    fn pointwise(&self, layer: &Pointwise, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward(x)
    }

    fn group_norm(&self, layer: &GroupNorm, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward(x)
    }

    fn batch_norm(&self, layer: &BatchNorm, x: &Tensor, mode: NormMode) -> candle_core::Result<Tensor> {
        layer.forward_mode(x, mode)
    }

    fn prelu(&self, layer: &PRelu, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward(x)
    }

    fn quantize(&self, layer: &VectorQuantizer, z: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        layer.quantize(z)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        if a.shape() == b.shape() {
            a + b
        } else {
            a.broadcast_add(b)
        }
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        if a.shape() == b.shape() {
            a * b
        } else {
            a.broadcast_mul(b)
        }
    }

    fn add_scalar(&self, x: &Tensor, s: f64) -> candle_core::Result<Tensor> {
        x + s
    }

    fn mul_scalar(&self, x: &Tensor, s: f64) -> candle_core::Result<Tensor> {
        x * s
    }

    fn silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.silu()
    }

    fn gelu_erf(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.gelu_erf()
    }

    fn softmax_last(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax(x, D::Minus1)
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        a.matmul(b)
    }

    fn reshape(&self, x: &Tensor, shape: &[i64]) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let mut out: Vec<usize> = Vec::with_capacity(shape.len());
        let mut infer = None;
        for (i, &s) in shape.iter().enumerate() {
            match s {
                0 => out.push(*dims.get(i).ok_or_else(|| candle_core::Error::Msg(format!("reshape {shape:?} of {dims:?}")))?),
                -1 => {
                    infer = Some(i);
                    out.push(1);
                }
                s if s > 0 => out.push(s as usize),
                _ => candle_core::bail!("reshape: invalid target {shape:?}"),
            }
        }
        if let Some(i) = infer {
            let known: usize = out.iter().product();
            if known == 0 || !x.elem_count().is_multiple_of(known) {
                candle_core::bail!("reshape {shape:?} does not fit {dims:?}");
            }
            out[i] = x.elem_count() / known;
        }
        x.reshape(out)
    }

    fn reshape_like(&self, x: &Tensor, like: &Tensor) -> candle_core::Result<Tensor> {
        x.reshape(like.dims())
    }

    fn transpose(&self, x: &Tensor, perm: &[usize]) -> candle_core::Result<Tensor> {
        x.permute(perm)?.contiguous()
    }

    fn unsqueeze(&self, x: &Tensor, axes: &[usize]) -> candle_core::Result<Tensor> {
        axes.iter().try_fold(x.clone(), |t, &a| t.unsqueeze(a))
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> candle_core::Result<Tensor> {
        Tensor::cat(xs, axis)
    }

    fn flatten_from(&self, x: &Tensor, axis: usize) -> candle_core::Result<Tensor> {
        x.flatten_from(axis)
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        x.upsample_nearest2d(h * 2, w * 2)
    }

    fn subsample2d(&self, x: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
        super::layers::subsample2d(x, stride)
    }

    fn dropout(&self, x: &Tensor, p: f64, rng: &mut KeyedRng) -> candle_core::Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = dropout_factors(x.elem_count(), p, rng);
        x * Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?
    }

    fn sinusoid(&self, t: &Tensor, frequencies: &Tensor) -> candle_core::Result<Tensor> {
        let ts = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let freqs = frequencies.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut emb = Vec::with_capacity(ts.len() * freqs.len() * 2);
        for &tv in &ts {
            emb.extend(freqs.iter().map(|f| (tv * f).cos()));
            emb.extend(freqs.iter().map(|f| (tv * f).sin()));
        }
        Tensor::from_vec(emb, (ts.len(), freqs.len() * 2), frequencies.device())?.to_dtype(frequencies.dtype())
    }

    fn repeat_rows(&self, row: &Tensor, like: &Tensor) -> candle_core::Result<Tensor> {
        let n = row.elem_count();
        row.reshape(n)?.unsqueeze(0)?.broadcast_as((like.dim(0)?, n))?.contiguous()
    }

    fn replace_rows(&self, mask: &Tensor, row: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = x.dims2()?;
        let rows = row.reshape(n)?.unsqueeze(0)?.broadcast_as((b, n))?.to_dtype(x.dtype())?;
        let mask = mask.to_dtype(DType::U8)?.reshape((b, 1))?.broadcast_as((b, n))?;
        mask.where_cond(&rows, x)
    }
}
