//! Emitters of the PyTorch layers shared by the models (`Conv2d`, `Linear`, `GroupNorm`,
//! `BatchNorm`, `PReLU`, 1×1 `Conv1d`), reading their parameters by the official key names.

use super::builder::{GraphBuilder, Value};
use super::weights::Weights;
use super::OnnxError;

/// `Conv2d(c_in, c_out, k, stride)` with `pads` = `[top, left, bottom, right]`; `bias` says
/// whether the layer has one.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    x: &Value,
    (c_in, c_out, k): (usize, usize, usize),
    stride: i64,
    pads: [i64; 4],
    bias: bool,
) -> Result<Value, OnnxError> {
    let weight = w.param(g, &format!("{key}.weight"), &[c_out, c_in, k, k])?;
    let b = if bias { Some(w.param(g, &format!("{key}.bias"), &[c_out])?) } else { None };
    Ok(g.conv2d(x, &weight, b.as_ref(), stride, pads))
}

/// `Conv2d` with symmetric padding `pad` and a bias.
pub fn conv2d_same(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    x: &Value,
    shape: (usize, usize, usize),
    stride: i64,
    pad: i64,
) -> Result<Value, OnnxError> {
    conv2d(g, w, key, x, shape, stride, [pad; 4], true)
}

/// `Linear(c_in, c_out)` on `[B, c_in]` (a `Gemm`).
pub fn linear(g: &mut GraphBuilder, w: &Weights<'_>, key: &str, x: &Value, c_in: usize, c_out: usize) -> Result<Value, OnnxError> {
    let weight = w.param(g, &format!("{key}.weight"), &[c_out, c_in])?;
    let bias = w.param(g, &format!("{key}.bias"), &[c_out])?;
    Ok(g.linear(x, &weight, Some(&bias)))
}

/// A channel-mixing `W·x + b` on `[B, c_in, L]` from a `Conv1d(k=1)` weight `[out, in, 1]`
/// (`conv1d = true`) or a `Linear` weight `[out, in]` applied on the channel axis.
pub fn pointwise(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    x: &Value,
    (c_in, c_out): (usize, usize),
    conv1d: bool,
) -> Result<Value, OnnxError> {
    let wkey = format!("{key}.weight");
    let weight = if conv1d { w.param_as(g, &wkey, &[c_out, c_in, 1], &[c_out, c_in])? } else { w.param(g, &wkey, &[c_out, c_in])? };
    let bias = w.param_as(g, &format!("{key}.bias"), &[c_out], &[c_out, 1])?;
    let y = g.matmul(&weight, x);
    Ok(g.add(&y, &bias))
}

/// `GroupNorm(groups, C, eps)` on a tensor of rank `rank` (3 or 4), channels on axis 1.
pub fn group_norm(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    x: &Value,
    (groups, channels): (usize, usize),
    eps: f32,
    rank: usize,
) -> Result<Value, OnnxError> {
    if !channels.is_multiple_of(groups) {
        return Err(OnnxError::Config(format!("{key}: {channels} channels are not divisible into {groups} groups")));
    }
    let mut dims = vec![channels];
    dims.resize(rank - 1, 1);
    let gamma = w.param_as(g, &format!("{key}.weight"), &[channels], &dims)?;
    let beta = w.param_as(g, &format!("{key}.bias"), &[channels], &dims)?;
    g.group_norm(x, groups, eps, &gamma, &beta)
}

/// Eval-mode `BatchNorm{1,2}d(C, eps)` (`affine = false`: no `weight`/`bias` in the file).
pub fn batch_norm(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    x: &Value,
    channels: usize,
    eps: f32,
    affine: bool,
) -> Result<Value, OnnxError> {
    let (scale, bias) = if affine {
        (w.param(g, &format!("{key}.weight"), &[channels])?, w.param(g, &format!("{key}.bias"), &[channels])?)
    } else {
        (g.const_tensor(&[channels], &vec![1.0; channels])?, g.const_tensor(&[channels], &vec![0.0; channels])?)
    };
    let mean = w.param(g, &format!("{key}.running_mean"), &[channels])?;
    let var = w.param(g, &format!("{key}.running_var"), &[channels])?;
    w.touch(&format!("{key}.num_batches_tracked"));
    Ok(g.batch_norm(x, &scale, &bias, &mean, &var, eps))
}

/// `PReLU(C)` on `[B, C, H, W]`.
pub fn prelu(g: &mut GraphBuilder, w: &Weights<'_>, key: &str, x: &Value, channels: usize) -> Result<Value, OnnxError> {
    let slope = w.param_as(g, &format!("{key}.weight"), &[channels], &[channels, 1, 1])?;
    Ok(g.prelu(x, &slope))
}

/// The affine parameters of a `GroupNorm(C)` laid out for a rank-`rank` input, for modules that
/// apply one norm several times (the UNet's `x_norm`).
pub fn group_norm_params(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    key: &str,
    channels: usize,
    rank: usize,
) -> Result<(Value, Value), OnnxError> {
    let mut dims = vec![channels];
    dims.resize(rank - 1, 1);
    Ok((w.param_as(g, &format!("{key}.weight"), &[channels], &dims)?, w.param_as(g, &format!("{key}.bias"), &[channels], &dims)?))
}
