//! Fused CPU ops for BatchNorm's batch-statistics forward, GroupNorm and PReLU.
//!
//! Written with candle's tensor ops, a training-mode BatchNorm is a transposed copy of its input,
//! a mean, a centring, a square, a second mean and the affine map, and about twice as many
//! full-size passes again in the backward pass, each with a fresh buffer. GroupNorm is the same
//! chain over channel groups, PReLU a ReLU, a minimum, a per-channel scale and a sum. In the toy
//! encoder's training step these element-wise passes, not the convolutions' GEMMs, were most of
//! the time. The ops here do the same arithmetic in two passes forward (statistics,
//! normalisation) and two backward (the per-channel sums, the input gradient), on contiguous
//! `[B, C, …]` f32 rows. candle has no such ops and no crate provides them for candle, hence this
//! module. Callers fall back to the composed ops off the CPU or for other dtypes
//! ([`is_fusable`]).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

use super::buffers::{contiguous_f32, for_each_row};

/// Whether `x` can take the fused path (f32 on the CPU).
pub fn is_fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `(batch, channels, plane)` of a `[B, C, …]` shape (`plane` = product of the trailing dims).
fn geometry(dims: &[usize], op: &'static str) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("{op}: expected [B, C, ...], got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product::<usize>()))
}

/// Runs `f` on the contiguous f32 values of a CPU tensor.
fn with_values<T>(t: &Tensor, op: &'static str, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous_f32(cpu, layout, op)?),
        _ => candle_core::bail!("{op}: the fused op runs on the CPU only"),
    }
}

/// Per-channel sums `Σ f(x, other)` over the batch and the plane of `[B, C, plane]` rows.
/// `f` gets the channel, a value of `x` and the matching value of `other`.
fn channel_sums(x: &[f32], other: &[f32], (batch, channels, plane): (usize, usize, usize), f: impl Fn(usize, f32, f32) -> f32) -> Vec<f64> {
    let mut sums = vec![0f64; channels];
    for b in 0..batch {
        for (c, sum) in sums.iter_mut().enumerate() {
            let start = (b * channels + c) * plane;
            let row: f32 = x[start..start + plane].iter().zip(&other[start..start + plane]).map(|(&v, &o)| f(c, v, o)).sum();
            *sum += row as f64;
        }
    }
    sums
}

/// Per-channel mean and biased variance of `x [B, C, …]` over every axis but 1 (two passes,
/// accumulated per row in f32 and across rows in f64).
pub fn channel_moments(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let geo = geometry(x.dims(), "batch norm")?;
    let count = (geo.0 * geo.2) as f64;
    with_values(x, "batch norm", |values| {
        let mean: Vec<f32> = channel_sums(values, values, geo, |_, v, _| v).iter().map(|s| (s / count) as f32).collect();
        let sq = channel_sums(values, values, geo, |c, v, _| (v - mean[c]) * (v - mean[c]));
        Ok((mean, sq.iter().map(|s| (s / count) as f32).collect()))
    })
}

/// The op `(x, weight, bias) → (x − mean) · inv_std · weight + bias` with `mean` and `inv_std`
/// the batch statistics of `x` (computed by [`channel_moments`] and held here); its backward pass
/// differentiates through the statistics as well.
struct BatchNormTrain {
    mean: Arc<Vec<f32>>,
    inv_std: Arc<Vec<f32>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "idflow-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, channels, plane) = geometry(l1.shape().dims(), "batch norm")?;
        let x = contiguous_f32(s1, l1, "batch norm")?;
        let (w, b) = (contiguous_f32(s2, l2, "batch norm")?, contiguous_f32(s3, l3, "batch norm")?);
        if w.len() != channels || b.len() != channels || self.mean.len() != channels {
            candle_core::bail!("batch norm: {} weights and {} biases for {channels} channels", w.len(), b.len());
        }
        // centred first (not x · scale + shift), so a large mean costs no precision
        let scale: Vec<f32> = (0..channels).map(|c| self.inv_std[c] * w[c]).collect();
        let mut y = vec![0f32; x.len()];
        for_each_row(&mut y, plane.max(1), |row, out| {
            let c = row % channels;
            let (m, a, s) = (self.mean[c], scale[c], b[c]);
            for (o, &v) in out.iter_mut().zip(&x[row * plane..]) {
                *o = (v - m) * a + s;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let geo = geometry(x.dims(), "batch norm")?;
        let (batch, channels, plane) = geo;
        let count = (batch * plane) as f64;
        let (mean, inv_std) = (self.mean.clone(), self.inv_std.clone());
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        with_values(x, "batch norm backward", |xv| {
            with_values(grad, "batch norm backward", |gv| {
                // Σ dy and Σ dy·x̂ per channel
                let d_bias = channel_sums(gv, gv, geo, |_, g, _| g);
                let d_weight = channel_sums(xv, gv, geo, |c, v, g| (v - mean[c]) * inv_std[c] * g);
                let d_x = if x.track_op() {
                    // dx = w·inv_std · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N)
                    let mut out = vec![0f32; xv.len()];
                    for_each_row(&mut out, plane.max(1), |row, o| {
                        let c = row % channels;
                        let (m, is) = (mean[c], inv_std[c]);
                        let k = w[c] * is;
                        let (gm, xm) = ((d_bias[c] / count) as f32, (d_weight[c] / count) as f32);
                        let start = row * plane;
                        for ((o, &v), &g) in o.iter_mut().zip(&xv[start..start + plane]).zip(&gv[start..start + plane]) {
                            *o = k * (g - gm - (v - m) * is * xm);
                        }
                    });
                    Some(Tensor::from_vec(out, x.shape(), x.device())?)
                } else {
                    None
                };
                let to_tensor = |v: &[f64]| Tensor::from_vec(v.iter().map(|&s| s as f32).collect::<Vec<_>>(), channels, x.device());
                let d_w = if weight.track_op() { Some(to_tensor(&d_weight)?) } else { None };
                let d_b = if bias.track_op() { Some(to_tensor(&d_bias)?) } else { None };
                Ok((d_x, d_w, d_b))
            })
        })
    }
}

/// Training-mode BatchNorm of `x [B, C, …]` (f32, CPU) with the batch statistics `mean` and
/// `inv_std = 1/sqrt(var + eps)` of `x` (from [`channel_moments`]), `weight` and `bias` `[C]`.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, mean: Vec<f32>, inv_std: Vec<f32>) -> Result<Tensor> {
    let op = BatchNormTrain { mean: Arc::new(mean), inv_std: Arc::new(inv_std) };
    x.contiguous()?.apply_op3(&weight.flatten_all()?.contiguous()?, &bias.flatten_all()?.contiguous()?, op)
}

/// The op `(x, slope) → max(0, x) + slope_c · min(0, x)`.
struct PReluOp;

impl CustomOp2 for PReluOp {
    fn name(&self) -> &'static str {
        "idflow-prelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, channels, plane) = geometry(l1.shape().dims(), "prelu")?;
        let (x, slope) = (contiguous_f32(s1, l1, "prelu")?, contiguous_f32(s2, l2, "prelu")?);
        if slope.len() != channels {
            candle_core::bail!("prelu: {} slopes for {channels} channels", slope.len());
        }
        let mut y = vec![0f32; x.len()];
        for_each_row(&mut y, plane.max(1), |row, out| {
            let a = slope[row % channels];
            for (o, &v) in out.iter_mut().zip(&x[row * plane..]) {
                *o = if v > 0.0 { v } else { a * v };
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, slope: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let geo = geometry(x.dims(), "prelu")?;
        let (_, channels, plane) = geo;
        let a = slope.flatten_all()?.to_vec1::<f32>()?;
        with_values(x, "prelu backward", |xv| {
            with_values(grad, "prelu backward", |gv| {
                let d_x = if x.track_op() {
                    let mut out = vec![0f32; xv.len()];
                    for_each_row(&mut out, plane.max(1), |row, o| {
                        let s = a[row % channels];
                        let start = row * plane;
                        for ((o, &v), &g) in o.iter_mut().zip(&xv[start..start + plane]).zip(&gv[start..start + plane]) {
                            *o = if v > 0.0 { g } else { s * g };
                        }
                    });
                    Some(Tensor::from_vec(out, x.shape(), x.device())?)
                } else {
                    None
                };
                let d_slope = if slope.track_op() {
                    let sums = channel_sums(xv, gv, geo, |_, v, g| v.min(0.0) * g);
                    Some(Tensor::from_vec(sums.iter().map(|&s| s as f32).collect::<Vec<_>>(), channels, x.device())?)
                } else {
                    None
                };
                Ok((d_x, d_slope))
            })
        })
    }
}

/// `PReLU` of `x [B, C, …]` (f32, CPU) with per-channel `slope [C]`.
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&slope.flatten_all()?.contiguous()?, PReluOp)
}

/// Per-(sample, group) mean and biased variance of `x [B, C, …]` with `C` split into `groups`
/// consecutive channel groups: `B · groups` values each, in `(b, g)` order.
pub fn group_moments(x: &Tensor, groups: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let (batch, channels, plane) = geometry(x.dims(), "group norm")?;
    if groups == 0 || !channels.is_multiple_of(groups) {
        candle_core::bail!("group norm: {groups} groups do not divide {channels} channels");
    }
    let len = channels / groups * plane;
    with_values(x, "group norm", |values| {
        let mut mean = Vec::with_capacity(batch * groups);
        let mut var = Vec::with_capacity(batch * groups);
        for row in values.chunks(len.max(1)).take(batch * groups) {
            let m = (row.iter().map(|&v| v as f64).sum::<f64>() / len as f64) as f32;
            let v = row.iter().map(|&v| ((v - m) * (v - m)) as f64).sum::<f64>() / len as f64;
            mean.push(m);
            var.push(v as f32);
        }
        Ok((mean, var))
    })
}

/// The op `(x, weight, bias) → (x − mean_bg) · inv_std_bg · weight_c + bias_c` with the
/// per-(sample, group) statistics of `x` held here; the backward pass differentiates through
/// them.
struct GroupNormOp {
    groups: usize,
    mean: Arc<Vec<f32>>,
    inv_std: Arc<Vec<f32>>,
}

impl GroupNormOp {
    /// The statistics index of row `row` (= `b · C + c`) of a `[B·C, plane]` view.
    fn stat(&self, row: usize, channels: usize) -> usize {
        let (b, c) = (row / channels, row % channels);
        b * self.groups + c / (channels / self.groups)
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "idflow-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, channels, plane) = geometry(l1.shape().dims(), "group norm")?;
        let x = contiguous_f32(s1, l1, "group norm")?;
        let (w, b) = (contiguous_f32(s2, l2, "group norm")?, contiguous_f32(s3, l3, "group norm")?);
        if w.len() != channels || b.len() != channels || self.mean.len() != batch * self.groups {
            candle_core::bail!("group norm: {} weights and {} biases for {channels} channels", w.len(), b.len());
        }
        let mut y = vec![0f32; x.len()];
        for_each_row(&mut y, plane.max(1), |row, out| {
            let (s, c) = (self.stat(row, channels), row % channels);
            let (m, is, wc, bc) = (self.mean[s], self.inv_std[s], w[c], b[c]);
            for (o, &v) in out.iter_mut().zip(&x[row * plane..]) {
                *o = (v - m) * is * wc + bc;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, channels, plane) = geometry(x.dims(), "group norm")?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let count = (channels / self.groups * plane) as f64;
        with_values(x, "group norm backward", |xv| {
            with_values(grad, "group norm backward", |gv| {
                let rows = batch * channels;
                // per row: Σ dy and Σ dy·x̂
                let mut row_dy = vec![0f64; rows];
                let mut row_dyx = vec![0f64; rows];
                for row in 0..rows {
                    let s = self.stat(row, channels);
                    let (m, is) = (self.mean[s], self.inv_std[s]);
                    let span = row * plane..(row + 1) * plane;
                    let (mut a, mut b) = (0f32, 0f32);
                    for (&v, &g) in xv[span.clone()].iter().zip(&gv[span]) {
                        a += g;
                        b += g * (v - m) * is;
                    }
                    row_dy[row] = a as f64;
                    row_dyx[row] = b as f64;
                }
                let mut d_weight = vec![0f64; channels];
                let mut d_bias = vec![0f64; channels];
                let mut group_dxhat = vec![0f64; batch * self.groups];
                let mut group_dxhat_xhat = vec![0f64; batch * self.groups];
                for row in 0..rows {
                    let (s, c) = (self.stat(row, channels), row % channels);
                    d_bias[c] += row_dy[row];
                    d_weight[c] += row_dyx[row];
                    group_dxhat[s] += row_dy[row] * w[c] as f64;
                    group_dxhat_xhat[s] += row_dyx[row] * w[c] as f64;
                }
                let d_x = if x.track_op() {
                    // dx = inv_std · (w_c·dy − Σ(w·dy)/N − x̂ · Σ(w·dy·x̂)/N) over the (sample, group)
                    let mut out = vec![0f32; xv.len()];
                    for_each_row(&mut out, plane.max(1), |row, o| {
                        let (s, c) = (self.stat(row, channels), row % channels);
                        let (m, is, wc) = (self.mean[s], self.inv_std[s], w[c]);
                        let (a, b) = ((group_dxhat[s] / count) as f32, (group_dxhat_xhat[s] / count) as f32);
                        let span = row * plane..(row + 1) * plane;
                        for ((o, &v), &g) in o.iter_mut().zip(&xv[span.clone()]).zip(&gv[span]) {
                            *o = is * (wc * g - a - (v - m) * is * b);
                        }
                    });
                    Some(Tensor::from_vec(out, x.shape(), x.device())?)
                } else {
                    None
                };
                let to_tensor = |v: &[f64]| Tensor::from_vec(v.iter().map(|&s| s as f32).collect::<Vec<_>>(), channels, x.device());
                let d_w = if weight.track_op() { Some(to_tensor(&d_weight)?) } else { None };
                let d_b = if bias.track_op() { Some(to_tensor(&d_bias)?) } else { None };
                Ok((d_x, d_w, d_b))
            })
        })
    }
}

/// GroupNorm of `x [B, C, …]` (f32, CPU) over `groups` channel groups with `weight` and `bias`
/// `[C]` and `eps`.
pub fn group_norm(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (mean, var) = group_moments(&x, groups)?;
    let eps = eps as f32;
    let inv_std = var.iter().map(|v| (v + eps).sqrt().recip()).collect();
    let op = GroupNormOp { groups, mean: Arc::new(mean), inv_std: Arc::new(inv_std) };
    x.apply_op3(&weight.flatten_all()?.contiguous()?, &bias.flatten_all()?.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// BatchNorm's training forward written with candle's broadcasting ops on `[B, C, P]`.
    fn composed_batch_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let (batch, c) = (x.dim(0).unwrap(), x.dim(1).unwrap());
        let x3 = x.reshape((batch, c, ())).unwrap();
        let mean = x3.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap();
        let centred = x3.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(0).unwrap().mean_keepdim(2).unwrap();
        let normed = centred.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
        let y = normed.broadcast_mul(&w.reshape((1, c, 1)).unwrap()).unwrap().broadcast_add(&b.reshape((1, c, 1)).unwrap()).unwrap();
        y.reshape(x.shape()).unwrap()
    }

    /// `tol` scales with |mean| / std: both sides round the centring in f32.
    fn check_batch_norm(x: &Tensor, tol: f32) {
        let dev = Device::Cpu;
        let c = x.dim(1).unwrap();
        let x = Var::from_tensor(x).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, c, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, c, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, x.shape(), &dev).unwrap();
        let (mean, var) = channel_moments(&x).unwrap();
        let inv_std = var.iter().map(|v| (v + 1e-5).sqrt().recip()).collect();
        let ours = batch_norm_train(&x, &w, &b, mean, inv_std).unwrap();
        let reference = composed_batch_norm(&x, &w, &b, 1e-5);
        assert!(max_diff(&ours, &reference) < tol, "forward differs by {} for {:?}", max_diff(&ours, &reference), x.dims());
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, t) in [("x", x.as_tensor()), ("weight", w.as_tensor()), ("bias", b.as_tensor())] {
            let d = max_diff(g1.get(t).unwrap(), g2.get(t).unwrap());
            assert!(d < 10.0 * tol, "{name} gradient differs by {d} for input {:?}", x.dims());
        }
    }

    #[test]
    fn batch_norm_matches_the_composed_ops_with_gradients() {
        let dev = Device::Cpu;
        // BatchNorm2d, BatchNorm1d, an offset mean, and a non-contiguous view
        check_batch_norm(&Tensor::randn(0.5f32, 2.0, (4, 3, 5, 5), &dev).unwrap(), 1e-5);
        check_batch_norm(&Tensor::randn(0f32, 1.0, (8, 6), &dev).unwrap(), 1e-5);
        check_batch_norm(&(Tensor::randn(0f32, 0.1, (5, 2, 3, 7), &dev).unwrap() + 20.0).unwrap(), 1e-4);
        check_batch_norm(&Tensor::randn(0f32, 1.0, (3, 4, 6, 2), &dev).unwrap().transpose(2, 3).unwrap(), 1e-5);
    }

    #[test]
    fn channel_moments_match_an_f64_computation() {
        let dev = Device::Cpu;
        let x = Tensor::randn(3f32, 2.0, (4, 2, 3, 3), &dev).unwrap();
        let (mean, var) = channel_moments(&x).unwrap();
        let values = x.permute((1, 0, 2, 3)).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        for (c, row) in values.iter().enumerate() {
            let n = row.len() as f64;
            let m = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
            assert!(
                (mean[c] as f64 - m).abs() < 1e-5 && (var[c] as f64 - v).abs() < 1e-4,
                "channel {c}: {} {} vs {m} {v}",
                mean[c],
                var[c]
            );
        }
    }

    #[test]
    fn prelu_matches_the_composed_ops_with_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &dev).unwrap()).unwrap();
        let a = Var::from_tensor(&Tensor::new(&[0.25f32, -0.3, 0.0, 1.5], &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &dev).unwrap();
        let ours = prelu(&x, &a).unwrap();
        let reference = x.relu().unwrap().add(&x.minimum(0f32).unwrap().broadcast_mul(&a.reshape((1, 4, 1, 1)).unwrap()).unwrap()).unwrap();
        assert_eq!(max_diff(&ours, &reference), 0.0);
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-6);
        assert!(max_diff(g1.get(&a).unwrap(), g2.get(&a).unwrap()) < 1e-4);
    }

    #[test]
    fn shape_errors_are_reported() {
        let dev = Device::Cpu;
        let x = Tensor::zeros(5, DType::F32, &dev).unwrap();
        assert!(channel_moments(&x).unwrap_err().to_string().contains("[B, C, ...]"));
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let err = prelu(&x, &Tensor::zeros(2, DType::F32, &dev).unwrap()).unwrap_err().to_string();
        assert!(err.contains("2 slopes for 3 channels"), "{err}");
    }
    #[test]
    fn group_norm_matches_candle_nn_with_gradients() {
        let dev = Device::Cpu;
        for (shape, groups) in [((2usize, 6usize, 3usize, 3usize), 2usize), ((3, 8, 2, 5), 4), ((1, 4, 1, 7), 1)] {
            let c = shape.1;
            let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape, &dev).unwrap() + 1.0).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, c, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, c, &dev).unwrap()).unwrap();
            let probe = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let theirs = candle_nn::GroupNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), c, groups, 1e-5).unwrap();
            let ours = group_norm(&x, groups, &w, &b, 1e-5).unwrap();
            let reference = candle_core::Module::forward(&theirs, &x).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-5, "forward {shape:?}: {}", max_diff(&ours, &reference));
            let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, t) in [("x", x.as_tensor()), ("weight", w.as_tensor()), ("bias", b.as_tensor())] {
                let d = max_diff(g1.get(t).unwrap(), g2.get(t).unwrap());
                assert!(d < 1e-4, "{name} gradient differs by {d} for {shape:?} / {groups}");
            }
        }
        let x = Tensor::zeros((2, 6, 3), DType::F32, &dev).unwrap();
        let one = Tensor::ones(6, DType::F32, &dev).unwrap();
        assert!(group_norm(&x, 4, &one, &one, 1e-5).unwrap_err().to_string().contains("4 groups do not divide 6"));
    }
}
