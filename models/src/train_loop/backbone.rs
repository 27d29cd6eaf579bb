//! A width- and input-size-configurable ElasticFace IResNet for training.
//!
//! The engine's inference [`IResNet`](crate::iresnet::IResNet) is fixed to the published
//! widths (64/128/256/512) and 112×112 inputs. Training on the toy world needs much smaller
//! networks (e.g. widths 16/32/64/128 at 32×32), so this module builds the same `IBasicBlock`
//! topology with configurable stage widths and input side. Parameter names equal the official
//! state-dict keys (`conv1`, `bn1`, `prelu`, `layer1.0.bn1`, …, `bn2`, `fc`, `features`), so with
//! the published widths and a 112 input the trained weights load unchanged into
//! [`IResNet`](crate::iresnet::IResNet) (and therefore into `embed`).
//!
//! Convolutions are written as im2col (shifted, strided views concatenated on the channel
//! axis) + a batched matmul rather than candle's `conv2d`: candle's CPU backward pass of
//! `conv2d` goes through a direct `conv_transpose2d` loop that made a toy training step ~20×
//! slower than the forward pass; narrow/cat/matmul have cheap backward passes. The weight keeps
//! PyTorch's `[out, in, kh, kw]` layout and key, so checkpoints are unchanged.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::layers::{BatchNorm, NormMode, PRelu};

/// BatchNorm epsilon (PyTorch's default, as the official IResNet).
const BN_EPS: f64 = 1e-5;
/// PyTorch's `nn.PReLU` initial slope.
const PRELU_INIT: f64 = 0.25;

/// Shape of a trainable IResNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainIResNetConfig {
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Channel width of each stage (the stem has `widths[0]` channels). Published: 64/128/256/512.
    pub widths: [usize; 4],
    /// Embedding width (`fc` output).
    pub num_features: usize,
    /// Input side in pixels (published: 112).
    pub input_size: usize,
}

impl TrainIResNetConfig {
    /// The published IResNet of a standard depth (18, 34, 50, 100, 200) at 112×112.
    pub fn standard(depth: usize, num_features: usize) -> Option<Self> {
        crate::iresnet::iresnet_layers(depth).map(|layers| Self { layers, widths: [64, 128, 256, 512], num_features, input_size: 112 })
    }

    /// Whether this is the published topology, loadable by [`crate::iresnet::IResNet`].
    pub fn is_standard(&self) -> bool {
        self.widths == [64, 128, 256, 512] && self.input_size == 112
    }

    /// The same shape as the inference model's configuration ([`crate::iresnet::IResNetConfig`]),
    /// which `embed` and the ONNX compiler take.
    pub fn inference_config(&self) -> crate::iresnet::IResNetConfig {
        crate::iresnet::IResNetConfig {
            layers: self.layers,
            num_features: self.num_features,
            widths: self.widths,
            input_size: self.input_size,
        }
    }

    /// Side of the last stage's feature map (each stage halves with a 3×3/2 convolution).
    pub fn final_side(&self) -> usize {
        (0..4).fold(self.input_size, |s, _| s.div_ceil(2))
    }
}

/// A bias-free square convolution computed as im2col + matmul (see the module docs).
#[derive(Clone, Debug)]
pub struct Im2colConv {
    weight: Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Im2colConv {
    /// `Conv2d(c_in, c_out, kernel, stride, padding, bias=False)`; the weight is `weight`
    /// `[c_out, c_in, kernel, kernel]` under `vb`.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        Ok(Self { weight, kernel, stride, padding })
    }

    /// Rows `start, start + s, …` (`count` of them) of axis `dim` (2 or 3) of `x`.
    fn strided(x: &Tensor, dim: usize, start: usize, count: usize, s: usize) -> Result<Tensor> {
        if s == 1 {
            return x.narrow(dim, start, count);
        }
        // take count·s rows (zero-padding the tail if needed), fold them as [count, s], keep 0
        let avail = x.dim(dim)? - start;
        let need = count * s;
        let mut v = x.narrow(dim, start, avail.min(need))?;
        if avail < need {
            v = v.pad_with_zeros(dim, 0, need - avail)?;
        }
        let mut shape = v.dims().to_vec();
        shape[dim] = count;
        shape.insert(dim + 1, s);
        v.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
    }
}

impl Module for Im2colConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let xp = if p > 0 { x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)? } else { x.clone() };
        let mut patches = Vec::with_capacity(k * k);
        for ky in 0..k {
            let rows = Self::strided(&xp, 2, ky, oh, s)?;
            for kx in 0..k {
                patches.push(Self::strided(&rows, 3, kx, ow, s)?);
            }
        }
        // [B, C, k·k, oh, ow] → [B, C·k·k, oh·ow]: the (c, ky, kx) order of the weight
        let cols = Tensor::stack(&patches, 2)?.reshape((b, c * k * k, oh * ow))?;
        let o = self.weight.dim(0)?;
        let wmat = self.weight.reshape((o, c * k * k))?;
        wmat.broadcast_left(b)?.matmul(&cols)?.reshape((b, o, oh, ow))
    }
}

/// `IBasicBlock`: `bn1 → conv1 → bn2 → prelu → conv2 (stride s) → bn3` + shortcut.
#[derive(Clone, Debug)]
struct Block {
    bn1: BatchNorm,
    conv1: Im2colConv,
    bn2: BatchNorm,
    prelu: PRelu,
    conv2: Im2colConv,
    bn3: BatchNorm,
    downsample: Option<(Im2colConv, BatchNorm)>,
}

fn prelu(channels: usize, vb: VarBuilder) -> Result<PRelu> {
    // create the slopes with PyTorch's initial value before `PRelu::new` reads them
    let _ = vb.get_with_hints(channels, "weight", Init::Const(PRELU_INIT))?;
    PRelu::new(channels, vb)
}

fn norm(x: &Tensor, bn: &BatchNorm, mode: NormMode) -> Result<Tensor> {
    bn.forward_mode(x, mode)
}

impl Block {
    fn new(inplanes: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || inplanes != planes {
            let d = vb.pp("downsample");
            Some((Im2colConv::new(inplanes, planes, 1, stride, 0, d.pp("0"))?, BatchNorm::new(planes, BN_EPS, true, d.pp("1"))?))
        } else {
            None
        };
        Ok(Self {
            bn1: BatchNorm::new(inplanes, BN_EPS, true, vb.pp("bn1"))?,
            conv1: Im2colConv::new(inplanes, planes, 3, 1, 1, vb.pp("conv1"))?,
            bn2: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn2"))?,
            prelu: prelu(planes, vb.pp("prelu"))?,
            conv2: Im2colConv::new(planes, planes, 3, stride, 1, vb.pp("conv2"))?,
            bn3: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn3"))?,
            downsample,
        })
    }

    fn run(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        let out = norm(x, &self.bn1, mode)?;
        let out = norm(&self.conv1.forward(&out)?, &self.bn2, mode)?;
        let out = self.prelu.forward(&out)?;
        let out = norm(&self.conv2.forward(&out)?, &self.bn3, mode)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => norm(&conv.forward(x)?, bn, mode)?,
            None => x.clone(),
        };
        out + identity
    }
}

/// The trainable IResNet.
#[derive(Clone, Debug)]
pub struct TrainIResNet {
    conv1: Im2colConv,
    bn1: BatchNorm,
    prelu: PRelu,
    stages: Vec<Vec<Block>>,
    bn2: BatchNorm,
    fc: Linear,
    features: BatchNorm,
}

impl TrainIResNet {
    /// Builds (or loads, from a filled `VarBuilder`) the network.
    pub fn new(config: &TrainIResNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.input_size < 16 || config.widths.contains(&0) || config.num_features == 0 {
            candle_core::bail!("IResNet: input_size must be at least 16 and widths/num_features positive, got {config:?}");
        }
        let mut inplanes = config.widths[0];
        let mut stages = Vec::with_capacity(4);
        for (s, (&blocks, &planes)) in config.layers.iter().zip(config.widths.iter()).enumerate() {
            let lvb = vb.pp(format!("layer{}", s + 1));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                stage.push(Block::new(inplanes, planes, if b == 0 { 2 } else { 1 }, lvb.pp(b))?);
                inplanes = planes;
            }
            stages.push(stage);
        }
        let last = config.widths[3];
        let side = config.final_side();
        Ok(Self {
            conv1: Im2colConv::new(3, config.widths[0], 3, 1, 1, vb.pp("conv1"))?,
            bn1: BatchNorm::new(config.widths[0], BN_EPS, true, vb.pp("bn1"))?,
            prelu: prelu(config.widths[0], vb.pp("prelu"))?,
            stages,
            bn2: BatchNorm::new(last, BN_EPS, true, vb.pp("bn2"))?,
            fc: candle_nn::linear(last * side * side, config.num_features, vb.pp("fc"))?,
            features: BatchNorm::new(config.num_features, BN_EPS, true, vb.pp("features"))?,
        })
    }

    fn run(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        let mut h = self.prelu.forward(&norm(&self.conv1.forward(x)?, &self.bn1, mode)?)?;
        for stage in &self.stages {
            for block in stage {
                h = block.run(&h, mode)?;
            }
        }
        let h = norm(&h, &self.bn2, mode)?.flatten_from(1)?;
        norm(&self.fc.forward(&h)?, &self.features, mode)
    }

    /// Training mode: batch-statistics BatchNorms, running statistics updated.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, NormMode::TRAIN)
    }

    /// [`forward_train`](Self::forward_train) of one data-parallel replica: batch statistics,
    /// running statistics updated only when `update_running`.
    pub fn forward_train_replica(&self, x: &Tensor, update_running: bool) -> Result<Tensor> {
        self.run(x, NormMode::Batch { update_running })
    }
}

impl Module for TrainIResNet {
    /// Eval mode: `[B, 3, S, S]` → `[B, num_features]` raw features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, NormMode::Running)
    }
}
