//! The tensor-operation interface every architecture is written against.
//!
//! A model file (`unet.rs`, `vq.rs`, `iresnet.rs`) defines its modules once, generic over a
//! [`Backend`]: construction reads parameters by their official state-dict keys through the
//! backend's [`Backend::Vars`], and the forward pass calls the backend's operations. Two
//! implementations exist:
//!
//! * [`super::Candle`] — candle tensors on the CPU (or candle's CUDA device), with idflow's GEMM
//!   convolutions and fused norms; inference and training (autograd through candle `Var`s).
//! * [`crate::onnx::trace::OnnxTrace`] — the ONNX graph builder: running a forward pass on it
//!   emits the graph `idflow compile` writes, so the exported graph is the same code.
//!
//! The set of operations is deliberately small: PyTorch layers (convolutions, `Linear`,
//! GroupNorm, BatchNorm, PReLU, a 1×1 channel mixer), element-wise arithmetic and activations,
//! attention pieces (batched matmul, softmax, reshape/transpose with ONNX's `0` / `-1`
//! conventions so sizes stay symbolic), and three model-specific primitives whose two
//! implementations differ in kind rather than in arithmetic (the sinusoidal time embedding, the
//! per-row empty-context selection, the nearest-codeword quantiser).

use idflow_dataset::rng::KeyedRng;

pub use super::layers::NormMode;

/// Geometry of a square 2-D convolution (dilation 1, one group), as `torch.nn.Conv2d` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding `[top, left, bottom, right]` (PyTorch pads symmetrically; the LDM encoder's
    /// downsampler pads bottom/right only).
    pub padding: [usize; 4],
    /// Whether the layer has a `bias`.
    pub bias: bool,
}

impl ConvSpec {
    /// A `k×k` convolution with stride 1, no padding and a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self { in_channels, out_channels, kernel, stride: 1, padding: [0; 4], bias: true }
    }

    /// The same with stride `stride`.
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// The same with symmetric zero padding `pad`.
    pub fn pad(self, pad: usize) -> Self {
        Self { padding: [pad; 4], ..self }
    }

    /// The same with zero padding `pad` at the bottom and right edges only.
    pub fn pad_bottom_right(self, pad: usize) -> Self {
        Self { padding: [0, 0, pad, pad], ..self }
    }

    /// The same without a bias (`bias=False`).
    pub fn no_bias(self) -> Self {
        Self { bias: false, ..self }
    }

    /// The symmetric padding, if the padding is symmetric.
    pub fn symmetric_padding(&self) -> Option<usize> {
        let p = self.padding[0];
        self.padding.iter().all(|&q| q == p).then_some(p)
    }
}

/// Where the weight of a [`Backend::pointwise`] channel mixer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointwiseFrom {
    /// A `Conv1d(in, out, 1)` weight `[out, in, 1]`.
    Conv1d,
    /// A `Linear(in, out)` weight `[out, in]` applied on the channel axis.
    Linear,
}

/// The operations and parameter loaders an architecture needs; see the module documentation.
///
/// Construction functions (`load_*`) take the parameter source at a key path
/// ([`Backend::Vars`]); forward operations take `&self` (the candle backend is stateless, the
/// ONNX backend appends nodes to its graph).
pub trait Backend: Sized {
    /// A tensor (or, for a graph builder, a symbolic value).
    type Tensor: Clone;
    /// A parameter source positioned at a key path (candle's `VarBuilder`).
    type Vars<'v>: Clone;
    /// What operations fail with.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A loaded `Conv2d`.
    type Conv2d: Clone + std::fmt::Debug;
    /// A loaded `ConvTranspose2d`.
    type ConvTranspose2d: Clone + std::fmt::Debug;
    /// A loaded `Linear`.
    type Linear: Clone + std::fmt::Debug;
    /// A loaded 1×1 channel mixer on `[B, C, L]`.
    type Pointwise: Clone + std::fmt::Debug;
    /// A loaded `GroupNorm`.
    type GroupNorm: Clone + std::fmt::Debug;
    /// A loaded `BatchNorm{1,2}d`.
    type BatchNorm: Clone + std::fmt::Debug;
    /// A loaded `PReLU`.
    type PRelu: Clone + std::fmt::Debug;
    /// A loaded nearest-codeword quantiser (`VectorQuantizer2`).
    type Quantizer: Clone + std::fmt::Debug;
    /// A raw parameter or constant tensor.
    type Param: Clone + std::fmt::Debug;

    /// An error with `message` (configuration checks of the architectures).
    fn error(message: String) -> Self::Error;

    /// The parameter source one key segment deeper (`vars.pp(name)`).
    fn push<'v>(vars: &Self::Vars<'v>, name: &str) -> Self::Vars<'v>;
    /// `torch.nn.Conv2d` under `vars` (`weight`, `bias`).
    fn load_conv2d(vars: &Self::Vars<'_>, spec: ConvSpec) -> Result<Self::Conv2d, Self::Error>;
    /// `torch.nn.ConvTranspose2d(c_in, c_out, k, stride, padding)` with bias; the spec's padding
    /// must be symmetric.
    fn load_conv_transpose2d(vars: &Self::Vars<'_>, spec: ConvSpec) -> Result<Self::ConvTranspose2d, Self::Error>;
    /// `torch.nn.Linear(c_in, c_out)` with bias.
    fn load_linear(vars: &Self::Vars<'_>, c_in: usize, c_out: usize) -> Result<Self::Linear, Self::Error>;
    /// A channel mixer `W·x + b` on `[B, c_in, L]`.
    fn load_pointwise(vars: &Self::Vars<'_>, c_in: usize, c_out: usize, from: PointwiseFrom) -> Result<Self::Pointwise, Self::Error>;
    /// `torch.nn.GroupNorm(groups, channels, eps)`.
    fn load_group_norm(vars: &Self::Vars<'_>, groups: usize, channels: usize, eps: f64) -> Result<Self::GroupNorm, Self::Error>;
    /// `torch.nn.BatchNorm{1,2}d(channels, eps, affine)` with its running statistics.
    fn load_batch_norm(vars: &Self::Vars<'_>, channels: usize, eps: f64, affine: bool) -> Result<Self::BatchNorm, Self::Error>;
    /// `torch.nn.PReLU(channels)` (PyTorch's initial slope 0.25 when training from scratch).
    fn load_prelu(vars: &Self::Vars<'_>, channels: usize) -> Result<Self::PRelu, Self::Error>;
    /// `VectorQuantizer2`'s codebook `embedding.weight` `[n_embed, dim]` under `vars`.
    fn load_quantizer(vars: &Self::Vars<'_>, n_embed: usize, dim: usize) -> Result<Self::Quantizer, Self::Error>;
    /// The learned tensor `name` of shape `shape` under `vars`.
    fn load_param(vars: &Self::Vars<'_>, name: &str, shape: &[usize]) -> Result<Self::Param, Self::Error>;
    /// A zero tensor of shape `shape` (not a parameter).
    fn zeros(vars: &Self::Vars<'_>, shape: &[usize]) -> Result<Self::Param, Self::Error>;
    /// A constant float tensor `name` (not in the state dict; e.g. precomputed frequencies).
    fn constant(vars: &Self::Vars<'_>, name: &str, shape: &[usize], data: Vec<f32>) -> Result<Self::Param, Self::Error>;

    /// Names the operations that follow (graph node scopes; no effect on the arithmetic).
    fn scope(&self, _name: &str) {}

    /// Applies a [`Backend::Conv2d`].
    fn conv2d(&self, layer: &Self::Conv2d, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::ConvTranspose2d`].
    fn conv_transpose2d(&self, layer: &Self::ConvTranspose2d, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::Linear`] to `[B, c_in]`.
    fn linear(&self, layer: &Self::Linear, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::Pointwise`] to `[B, c_in, L]`.
    fn pointwise(&self, layer: &Self::Pointwise, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::GroupNorm`] (channels on axis 1, rank 3 or 4).
    fn group_norm(&self, layer: &Self::GroupNorm, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::BatchNorm`] with running (eval) or batch (training) statistics.
    fn batch_norm(&self, layer: &Self::BatchNorm, x: &Self::Tensor, mode: NormMode) -> Result<Self::Tensor, Self::Error>;
    /// Applies a [`Backend::PRelu`] to `[B, C, H, W]`.
    fn prelu(&self, layer: &Self::PRelu, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Snaps `z` `[B, C, H, W]` to its nearest codewords: `(z + (e − z), indices [B, H, W])`.
    fn quantize(&self, layer: &Self::Quantizer, z: &Self::Tensor) -> Result<(Self::Tensor, Self::Tensor), Self::Error>;

    /// `a + b` with broadcasting.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// `a · b` with broadcasting.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// `x + s`.
    fn add_scalar(&self, x: &Self::Tensor, s: f64) -> Result<Self::Tensor, Self::Error>;
    /// `x · s`.
    fn mul_scalar(&self, x: &Self::Tensor, s: f64) -> Result<Self::Tensor, Self::Error>;
    /// `x · sigmoid(x)`.
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// GELU with the exact (erf) form.
    fn gelu_erf(&self, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Softmax over the last axis.
    fn softmax_last(&self, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Batched matrix product of the last two axes.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Reshape with ONNX conventions: `0` keeps the input's size on that axis, `-1` is inferred.
    fn reshape(&self, x: &Self::Tensor, shape: &[i64]) -> Result<Self::Tensor, Self::Error>;
    /// Reshape to the shape of `like`.
    fn reshape_like(&self, x: &Self::Tensor, like: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Axis permutation (materialised).
    fn transpose(&self, x: &Self::Tensor, perm: &[usize]) -> Result<Self::Tensor, Self::Error>;
    /// Inserts size-1 axes at `axes` (of the output).
    fn unsqueeze(&self, x: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor, Self::Error>;
    /// Concatenation along `axis`.
    fn concat(&self, xs: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor, Self::Error>;
    /// Flattens the axes from `axis` on into one.
    fn flatten_from(&self, x: &Self::Tensor, axis: usize) -> Result<Self::Tensor, Self::Error>;
    /// Nearest-neighbour ×2 upsampling of `[B, C, H, W]`.
    fn upsample_nearest2x(&self, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Keeps pixel `(s·i, s·j)` (`MaxPool2d(kernel 1, stride s)`).
    fn subsample2d(&self, x: &Self::Tensor, stride: usize) -> Result<Self::Tensor, Self::Error>;
    /// Keyed inverted dropout (training only): zero with probability `p`, scale by `1/(1 − p)`.
    fn dropout(&self, x: &Self::Tensor, p: f64, rng: &mut KeyedRng) -> Result<Self::Tensor, Self::Error>;

    /// `[cos(t·f), sin(t·f)]` per timestep `t` `[B]` and frequency `f` (`frequencies` `[1, F]`),
    /// computed in float32 → `[B, 2F]`.
    fn sinusoid(&self, t: &Self::Tensor, frequencies: &Self::Param) -> Result<Self::Tensor, Self::Error>;
    /// `rows` `[D]` repeated for every row of `like` `[B, …]` → `[B, D]`.
    fn repeat_rows(&self, row: &Self::Param, like: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
    /// Rows of `x` `[B, D]` whose `mask` `[B]` is non-zero replaced by `row` `[D]`.
    fn replace_rows(&self, mask: &Self::Tensor, row: &Self::Param, x: &Self::Tensor) -> Result<Self::Tensor, Self::Error>;
}

/// Keyed inverted-dropout keep factors: `0` with probability `p`, else `1/(1 − p)`, one per
/// element, drawn in order from `rng`.
pub fn dropout_factors(n: usize, p: f64, rng: &mut KeyedRng) -> Vec<f32> {
    (0..n).map(|_| if rng.chance(p) { 0.0 } else { (1.0 / (1.0 - p)) as f32 }).collect()
}
