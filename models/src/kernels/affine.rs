//! Per-channel affine maps `y[b, c, …] = x[b, c, …] · scale[c] + shift[c]` with a fast backward
//! pass, the kernel under the norms of [`crate::nn::layers`] (on f32 CPU tensors the norms and
//! PReLU take the fused ops of [`super::fused`] instead).
//!
//! Written with candle's broadcasting ops, the gradient of a per-channel parameter is a sum over
//! the batch and spatial axes of a `[B, C, H, W]` tensor, which candle 0.11 reduces element by
//! element with strided index arithmetic on the CPU: profiling the toy encoder's training step
//! put a quarter of its time there (BatchNorm, PReLU and bias gradients). This op computes the
//! same gradients as row sums over contiguous `[B·C, H·W]` rows instead. No crate offers such an
//! op for candle. Off the CPU the broadcasting ops are used as they are.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::buffers::{contiguous_f32, for_each_row};

/// The op: `(x [B, C, …], scale [C], shift [C]) → x · scale + shift`.
struct ChannelAffine;

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "idflow-channel-affine"
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
        let dims = l1.shape().dims();
        let channels = dims[1];
        let values = |s, l| contiguous_f32(s, l, "channel affine");
        let (x, scale, shift) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        if scale.len() != channels || shift.len() != channels {
            candle_core::bail!("channel affine: {} scales and {} shifts for {channels} channels", scale.len(), shift.len());
        }
        let plane = dims[2..].iter().product::<usize>();
        let mut y = vec![0f32; x.len()];
        let plane = plane.max(1);
        for_each_row(&mut y, plane, |row, out| {
            let (a, b) = (scale[row % channels], shift[row % channels]);
            for (o, &v) in out.iter_mut().zip(&x[row * plane..]) {
                *o = v * a + b;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, channels) = (x.dim(0)?, x.dim(1)?);
        // [B, C, R] → row sums over R (contiguous), then a small sum over B.
        let per_channel = |t: Tensor| -> Result<Tensor> { t.reshape((batch, channels, ()))?.sum(2)?.sum(0) };
        let grad = grad.contiguous()?;
        let d_x = if x.track_op() { Some(grad.broadcast_mul(&scale.reshape(broadcast_dims(x)?)?)?) } else { None };
        let d_scale = if scale.track_op() { Some(per_channel((&grad * x)?)?) } else { None };
        let d_shift = if shift.track_op() { Some(per_channel(grad)?) } else { None };
        Ok((d_x, d_scale, d_shift))
    }
}

/// `[1, C, 1, …]` for an input `[B, C, …]`; an error for inputs of rank < 2.
pub fn broadcast_dims(x: &Tensor) -> Result<Vec<usize>> {
    if x.rank() < 2 {
        candle_core::bail!("a per-channel op needs [B, C, ...], got {:?}", x.dims());
    }
    let mut dims = vec![1usize; x.rank()];
    dims[1] = x.dim(1)?;
    Ok(dims)
}

/// `x · scale + shift` per channel (axis 1) of `x [B, C, …]`; either parameter may be absent.
pub fn channel_affine(x: &Tensor, scale: Option<&Tensor>, shift: Option<&Tensor>) -> Result<Tensor> {
    let dims = broadcast_dims(x)?;
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        let y = match scale {
            Some(s) => x.broadcast_mul(&s.reshape(dims.as_slice())?)?,
            None => x.clone(),
        };
        return match shift {
            Some(b) => y.broadcast_add(&b.reshape(dims.as_slice())?),
            None => Ok(y),
        };
    }
    let channels = dims[1];
    let ones;
    let zeros;
    let scale = match scale {
        Some(s) => s.flatten_all()?.contiguous()?,
        None => {
            ones = Tensor::ones(channels, DType::F32, x.device())?;
            ones
        }
    };
    let shift = match shift {
        Some(b) => b.flatten_all()?.contiguous()?,
        None => {
            zeros = Tensor::zeros(channels, DType::F32, x.device())?;
            zeros
        }
    };
    x.contiguous()?.apply_op3(&scale, &shift, ChannelAffine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn channel_affine_matches_broadcasting_forward_and_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 2), &dev).unwrap()).unwrap();
        let scale = Var::from_tensor(&Tensor::randn(0f32, 1.0, 4, &dev).unwrap()).unwrap();
        let shift = Var::from_tensor(&Tensor::randn(0f32, 1.0, 4, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 4, 5, 2), &dev).unwrap();
        let ours = channel_affine(&x, Some(&scale), Some(&shift)).unwrap();
        let reference =
            x.broadcast_mul(&scale.reshape((1, 4, 1, 1)).unwrap()).unwrap().broadcast_add(&shift.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-6);
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &scale, &shift] {
            assert!(max_diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-4);
        }
        // a missing scale or shift is the identity of that part
        let only_shift = channel_affine(&x, None, Some(&shift)).unwrap();
        let expected = x.broadcast_add(&shift.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&only_shift, &expected) < 1e-6);
        let g = only_shift.sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g.get(&shift).unwrap(), &Tensor::full(30f32, 4, &dev).unwrap()) < 1e-4);
    }
}
