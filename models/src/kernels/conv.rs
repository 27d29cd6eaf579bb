//! 2-D convolutions whose forward *and* backward passes are matrix products (im2col / col2im).
//!
//! candle 0.11 computes a convolution's input gradient with `conv_transpose2d`, which on the CPU
//! is a direct loop of short dot products (one per output element and kernel tap), and
//! `ConvTranspose2d`'s own forward is the same loop. Training the toy models spent most of each
//! step there. No crate offers a differentiable im2col for candle, so this module writes the two
//! small data-movement kernels itself and leaves the arithmetic to candle's GEMM:
//!
//! * `conv2d(x, w) = W[c_out, c_in·k·k] × im2col(x)[c_in·k·k, B·H'·W']`;
//! * `conv_transpose2d(x, w) = col2im(W[c_in, c_out·k·k]ᵀ × x[c_in, B·H·W])`;
//!
//! `im2col` and `col2im` are each other's adjoint, so each is the other's backward pass, and
//! candle's matmul backward supplies the weight gradient as one more GEMM. On devices other than
//! the CPU the layers call candle's own convolutions.
//!
//! Parameter names and layouts are PyTorch's (`weight` `[c_out, c_in, k, k]` for `Conv2d`,
//! `[c_in, c_out, k, k]` for `ConvTranspose2d`, `bias` `[c_out]`).

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};

use super::buffers::{contiguous_f32, for_each_row};

/// The geometry shared by `im2col` and `col2im`: an image batch `[batch, channels, height, width]`
/// seen through a `kernel × kernel` window moved by `stride` over the image padded by `padding`,
/// giving a `grid_h × grid_w` grid of window positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    grid_h: usize,
    grid_w: usize,
}

impl Window {
    /// Rows of the column matrix: one per (channel, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Columns of the column matrix: one per (sample, grid row, grid column).
    fn cols(&self) -> usize {
        self.batch * self.grid_h * self.grid_w
    }

    fn image_shape(&self) -> Shape {
        Shape::from((self.batch, self.channels, self.height, self.width))
    }

    fn col_shape(&self) -> Shape {
        Shape::from((self.rows(), self.cols()))
    }

    /// The image coordinate of kernel tap `tap` at grid position `pos`, if it lies inside.
    fn source(&self, pos: usize, tap: usize, extent: usize) -> Option<usize> {
        (pos * self.stride + tap).checked_sub(self.padding).filter(|&i| i < extent)
    }

    /// The column matrix of `image`: `col[(c, ky, kx), (b, gy, gx)] = image[b, c, gy·s−p+ky, gx·s−p+kx]` (0 outside).
    fn im2col(&self, image: &[f32]) -> Vec<f32> {
        let (k, gh, gw) = (self.kernel, self.grid_h, self.grid_w);
        let plane = self.height * self.width;
        let mut col = vec![0f32; self.rows() * self.cols()];
        for_each_row(&mut col, self.cols(), |row, out| {
            let (c, ky, kx) = (row / (k * k), (row / k) % k, row % k);
            for b in 0..self.batch {
                let src = &image[(b * self.channels + c) * plane..][..plane];
                let dst = &mut out[b * gh * gw..][..gh * gw];
                for gy in 0..gh {
                    let Some(iy) = self.source(gy, ky, self.height) else { continue };
                    let src_row = &src[iy * self.width..][..self.width];
                    let dst_row = &mut dst[gy * gw..][..gw];
                    for (gx, d) in dst_row.iter_mut().enumerate() {
                        if let Some(ix) = self.source(gx, kx, self.width) {
                            *d = src_row[ix];
                        }
                    }
                }
            }
        });
        col
    }

    /// The adjoint of [`Window::im2col`]: every column entry is added back onto the image pixel it
    /// was read from.
    fn col2im(&self, col: &[f32]) -> Vec<f32> {
        let (k, gh, gw) = (self.kernel, self.grid_h, self.grid_w);
        let plane = self.height * self.width;
        let cols = self.cols();
        let mut image = vec![0f32; self.batch * self.channels * plane];
        for_each_row(&mut image, plane, |bc, dst| {
            let (b, c) = (bc / self.channels, bc % self.channels);
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let src = &col[row * cols + b * gh * gw..][..gh * gw];
                    for gy in 0..gh {
                        let Some(iy) = self.source(gy, ky, self.height) else { continue };
                        let dst_row = &mut dst[iy * self.width..][..self.width];
                        let src_row = &src[gy * gw..][..gw];
                        for (gx, &v) in src_row.iter().enumerate() {
                            if let Some(ix) = self.source(gx, kx, self.width) {
                                dst_row[ix] += v;
                            }
                        }
                    }
                }
            }
        });
        image
    }
}

/// `image [B, C, H, W] → col [C·k·k, B·H'·W']`.
struct Im2Col(Window);

/// `col [C·k·k, B·H'·W'] → image [B, C, H, W]`, summing overlapping taps.
struct Col2Im(Window);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "idflow-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if layout.shape() != &self.0.image_shape() {
            candle_core::bail!("im2col: expected an image of shape {:?}, got {:?}", self.0.image_shape(), layout.shape());
        }
        let image = contiguous_f32(storage, layout, "im2col")?;
        Ok((CpuStorage::F32(self.0.im2col(image)), self.0.col_shape()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "idflow-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if layout.shape() != &self.0.col_shape() {
            candle_core::bail!("col2im: expected columns of shape {:?}, got {:?}", self.0.col_shape(), layout.shape());
        }
        let col = contiguous_f32(storage, layout, "col2im")?;
        Ok((CpuStorage::F32(self.0.col2im(col)), self.0.image_shape()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Im2Col(self.0))?))
    }
}

/// Whether the GEMM path applies: f32 on the CPU.
fn gemm_path(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && weight.dtype() == candle_core::DType::F32
}

/// Adds a per-channel bias to `[B, C, H, W]`.
fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => super::affine::channel_affine(&y, None, Some(b)),
        None => Ok(y),
    }
}

/// `torch.nn.Conv2d` with a square kernel, dilation 1 and one group.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A convolution from its `weight` `[c_out, c_in, k, k]` and optional `bias` `[c_out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Self { weight, bias, stride, padding }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c_out, c_in, k, k2) = self.weight.dims4()?;
        let (batch, channels, height, width) = x.dims4()?;
        if k != k2 || channels != c_in || self.stride == 0 {
            candle_core::bail!("conv2d: kernel {:?} (stride {}) does not fit input {:?}", self.weight.shape(), self.stride, x.shape());
        }
        if !gemm_path(x, &self.weight) {
            let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
            return add_bias(y, self.bias.as_ref());
        }
        let (padded_h, padded_w) = (height + 2 * self.padding, width + 2 * self.padding);
        if padded_h < k || padded_w < k {
            candle_core::bail!("conv2d: a {k}×{k} kernel does not fit a padded {padded_h}×{padded_w} input");
        }
        let (grid_h, grid_w) = ((padded_h - k) / self.stride + 1, (padded_w - k) / self.stride + 1);
        let window = Window { batch, channels, height, width, kernel: k, stride: self.stride, padding: self.padding, grid_h, grid_w };
        let col = x.contiguous()?.apply_op1(Im2Col(window))?;
        let y = self.weight.reshape((c_out, c_in * k * k))?.matmul(&col)?; // [c_out, B·H'·W']
        let y = y.reshape((c_out, batch, grid_h, grid_w))?.transpose(0, 1)?.contiguous()?;
        add_bias(y, self.bias.as_ref())
    }
}

/// `torch.nn.ConvTranspose2d` with a square kernel, dilation 1, one group and no output padding.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl ConvTranspose2d {
    /// A transposed convolution from its `weight` `[c_in, c_out, k, k]` and optional `bias` `[c_out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Self { weight, bias, stride, padding }
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c_in, c_out, k, k2) = self.weight.dims4()?;
        let (batch, channels, grid_h, grid_w) = x.dims4()?;
        if k != k2 || channels != c_in || self.stride == 0 {
            candle_core::bail!(
                "conv_transpose2d: kernel {:?} (stride {}) does not fit input {:?}",
                self.weight.shape(),
                self.stride,
                x.shape()
            );
        }
        if !gemm_path(x, &self.weight) {
            let y = x.conv_transpose2d(&self.weight, self.padding, 0, self.stride, 1)?;
            return add_bias(y, self.bias.as_ref());
        }
        let span = (grid_h.max(1) - 1) * self.stride + k;
        let span_w = (grid_w.max(1) - 1) * self.stride + k;
        if span < 2 * self.padding + 1 || span_w < 2 * self.padding + 1 {
            candle_core::bail!("conv_transpose2d: padding {} leaves no output for input {:?}", self.padding, x.shape());
        }
        let (height, width) = (span - 2 * self.padding, span_w - 2 * self.padding);
        let window =
            Window { batch, channels: c_out, height, width, kernel: k, stride: self.stride, padding: self.padding, grid_h, grid_w };
        let x = x.transpose(0, 1)?.contiguous()?.reshape((c_in, batch * grid_h * grid_w))?;
        let col = self.weight.reshape((c_in, c_out * k * k))?.t()?.matmul(&x)?.contiguous()?;
        let y = col.apply_op1(Col2Im(window))?;
        add_bias(y, self.bias.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        // A small LCG keeps the test independent of candle's RNG.
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Forward values and all three gradients equal candle's direct convolution.
    fn check_conv(batch: usize, c_in: usize, c_out: usize, size: (usize, usize), k: usize, stride: usize, padding: usize) {
        let x = Var::from_tensor(&random(&[batch, c_in, size.0, size.1], 1)).unwrap();
        let w = Var::from_tensor(&random(&[c_out, c_in, k, k], 2)).unwrap();
        let b = Var::from_tensor(&random(&[c_out], 3)).unwrap();
        let ours = Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), stride, padding).forward(x.as_tensor()).unwrap();
        let reference =
            x.conv2d(w.as_tensor(), padding, stride, 1, 1).unwrap().broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap()).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        assert!(max_diff(&ours, &reference) < 1e-4, "forward differs");
        let probe = random(ours.dims(), 4);
        let g_ours = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("input", &x), ("weight", &w), ("bias", &b)] {
            let d = max_diff(g_ours.get(var).unwrap(), g_ref.get(var).unwrap());
            assert!(d < 1e-3, "{name} gradient differs by {d} (k {k}, stride {stride}, padding {padding})");
        }
    }

    #[test]
    fn conv2d_matches_candle_forward_and_gradients() {
        check_conv(2, 3, 5, (7, 6), 3, 1, 1);
        check_conv(3, 4, 2, (8, 8), 3, 2, 1);
        check_conv(2, 4, 6, (5, 5), 1, 1, 0);
        check_conv(2, 3, 4, (9, 7), 1, 2, 0);
        check_conv(1, 2, 3, (6, 6), 4, 2, 1);
    }

    #[test]
    fn conv_transpose2d_matches_candle_forward_and_gradients() {
        let (batch, c_in, c_out, k, stride, padding) = (2, 4, 3, 4, 2, 1);
        let x = Var::from_tensor(&random(&[batch, c_in, 5, 4], 5)).unwrap();
        let w = Var::from_tensor(&random(&[c_in, c_out, k, k], 6)).unwrap();
        let b = Var::from_tensor(&random(&[c_out], 7)).unwrap();
        let ours =
            ConvTranspose2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), stride, padding).forward(x.as_tensor()).unwrap();
        let reference =
            x.conv_transpose2d(w.as_tensor(), padding, 0, stride, 1).unwrap().broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap()).unwrap();
        assert_eq!(ours.dims(), &[batch, c_out, 10, 8]);
        assert_eq!(ours.dims(), reference.dims());
        assert!(max_diff(&ours, &reference) < 1e-4, "forward differs");
        let probe = random(ours.dims(), 8);
        let g_ours = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("input", &x), ("weight", &w), ("bias", &b)] {
            let d = max_diff(g_ours.get(var).unwrap(), g_ref.get(var).unwrap());
            assert!(d < 1e-3, "{name} gradient differs by {d}");
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for any x, y: the identity the backward passes rely on.
        let window = Window { batch: 2, channels: 3, height: 7, width: 5, kernel: 3, stride: 2, padding: 1, grid_h: 4, grid_w: 3 };
        let x = random(&[2, 3, 7, 5], 9).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = random(&[window.rows(), window.cols()], 10).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let lhs: f64 = window.im2col(&x).iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&window.col2im(&y)).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
