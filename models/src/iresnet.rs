//! Face-recognition backbones: ElasticFace's `IResNet` (also insightface's `arcface_torch`) and
//! TFace's `IR-50` (`Backbone` with `BasicBlockIR`).
//!
//! Both take RGB `[B, 3, 112, 112]` images normalised as `((x/255) − 0.5)/0.5` and return the
//! raw (un-normalised) feature vector. BatchNorms run in eval mode with the running statistics.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::nn::{Backend, Candle, ConvSpec, NormMode};

/// Result of the backend `B`'s operations.
type BResult<B, T> = std::result::Result<T, <B as Backend>::Error>;

/// BatchNorm epsilon of both backbones (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// Channel widths of the four stages.
const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Blocks per stage of the standard depths (18, 34, 50, 100, 200).
pub fn iresnet_layers(depth: usize) -> Option<[usize; 4]> {
    match depth {
        18 => Some([2, 2, 2, 2]),
        34 => Some([3, 4, 6, 3]),
        50 => Some([3, 4, 14, 3]),
        100 => Some([3, 13, 30, 3]),
        200 => Some([6, 26, 60, 6]),
        _ => None,
    }
}

/// Hyper-parameters of an ElasticFace [`IResNet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IResNetConfig {
    /// Blocks per stage (e.g. `[3, 4, 14, 3]` for IResNet-50).
    pub layers: [usize; 4],
    /// Embedding width (`fc` output, 512 for the published models).
    pub num_features: usize,
    /// Channel widths of the four stages (`[64, 128, 256, 512]` in the published models;
    /// smaller for the toy world's recognizers).
    #[serde(default = "default_widths")]
    pub widths: [usize; 4],
    /// Input side in pixels (112 in the published models); each stage halves it (rounding up).
    #[serde(default = "default_input_size")]
    pub input_size: usize,
}

fn default_widths() -> [usize; 4] {
    WIDTHS
}

fn default_input_size() -> usize {
    112
}

impl Default for IResNetConfig {
    /// IResNet-50 as published: 512 features, standard widths, 112×112 input.
    fn default() -> Self {
        Self { layers: [3, 4, 14, 3], num_features: 512, widths: WIDTHS, input_size: 112 }
    }
}

impl IResNetConfig {
    /// The standard configuration for a depth of 18, 34, 50, 100 or 200 with 512 features.
    pub fn depth(depth: usize) -> Option<Self> {
        iresnet_layers(depth).map(|layers| Self { layers, ..Self::default() })
    }

    /// The standard configuration for a depth with `num_features` outputs.
    pub fn depth_features(depth: usize, num_features: usize) -> Option<Self> {
        Self::depth(depth).map(|c| Self { num_features, ..c })
    }

    /// Side of the last stage's feature map (each stage halves with a 3×3/2 convolution).
    pub fn final_side(&self) -> usize {
        (0..4).fold(self.input_size, |s, _| s.div_ceil(2))
    }

    /// Inputs to the `fc` layer: last width × final side².
    pub fn fc_in(&self) -> usize {
        let side = self.final_side();
        self.widths[3] * side * side
    }

    fn validate<B: Backend>(&self) -> BResult<B, ()> {
        if self.input_size < 16 || self.widths.contains(&0) || self.num_features == 0 {
            return Err(B::error(format!("IResNet: input_size must be at least 16 and widths/num_features positive, got {self:?}")));
        }
        Ok(())
    }
}

/// Loads a bias-free `k×k` convolution.
fn conv<B: Backend>(vars: &B::Vars<'_>, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> BResult<B, B::Conv2d> {
    B::load_conv2d(vars, ConvSpec::new(c_in, c_out, kernel).stride(stride).pad(kernel / 2).no_bias())
}

/// The parameter source of child module `i` (`Sequential` index).
fn at<'v, B: Backend>(vars: &B::Vars<'v>, i: usize) -> B::Vars<'v> {
    B::push(vars, &i.to_string())
}

/// Loads an affine BatchNorm.
fn batch_norm<B: Backend>(vars: &B::Vars<'_>, channels: usize) -> BResult<B, B::BatchNorm> {
    B::load_batch_norm(vars, channels, BN_EPS, true)
}

/// `IBasicBlock`: `bn1 → conv1 (3×3) → bn2 → prelu → conv2 (3×3, stride s) → bn3`, plus the
/// (1×1 conv + BN) downsampled identity; no activation after the sum.
#[derive(Clone, Debug)]
struct IBasicBlock<B: Backend> {
    bn1: B::BatchNorm,
    conv1: B::Conv2d,
    bn2: B::BatchNorm,
    prelu: B::PRelu,
    conv2: B::Conv2d,
    bn3: B::BatchNorm,
    downsample: Option<(B::Conv2d, B::BatchNorm)>,
}

impl<B: Backend> IBasicBlock<B> {
    fn new(inplanes: usize, planes: usize, stride: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let pp = |name: &str| B::push(vars, name);
        let downsample = if stride != 1 || inplanes != planes {
            let d = pp("downsample");
            Some((conv::<B>(&B::push(&d, "0"), inplanes, planes, 1, stride)?, batch_norm::<B>(&B::push(&d, "1"), planes)?))
        } else {
            None
        };
        Ok(Self {
            bn1: batch_norm::<B>(&pp("bn1"), inplanes)?,
            conv1: conv::<B>(&pp("conv1"), inplanes, planes, 3, 1)?,
            bn2: batch_norm::<B>(&pp("bn2"), planes)?,
            prelu: B::load_prelu(&pp("prelu"), planes)?,
            conv2: conv::<B>(&pp("conv2"), planes, planes, 3, stride)?,
            bn3: batch_norm::<B>(&pp("bn3"), planes)?,
            downsample,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor, mode: NormMode) -> BResult<B, B::Tensor> {
        let out = b.batch_norm(&self.bn1, x, mode)?;
        let out = b.batch_norm(&self.bn2, &b.conv2d(&self.conv1, &out)?, mode)?;
        let out = b.prelu(&self.prelu, &out)?;
        let out = b.batch_norm(&self.bn3, &b.conv2d(&self.conv2, &out)?, mode)?;
        let identity = match &self.downsample {
            Some((conv, norm)) => b.batch_norm(norm, &b.conv2d(conv, x)?, mode)?,
            None => x.clone(),
        };
        b.add(&out, &identity)
    }
}

/// ElasticFace `backbones.iresnet.IResNet` (`IBasicBlock`, no SE), generic over the
/// [`Backend`]; widths and input size are configurable (the toy world trains small ones).
#[derive(Clone, Debug)]
pub struct IResNet<B: Backend = Candle> {
    conv1: B::Conv2d,
    bn1: B::BatchNorm,
    prelu: B::PRelu,
    stages: Vec<Vec<IBasicBlock<B>>>,
    bn2: B::BatchNorm,
    fc: B::Linear,
    features: B::BatchNorm,
}

impl<B: Backend> IResNet<B> {
    /// Builds the network on backend `B`; keys as in the official state dict (`conv1`,
    /// `layer1.0.bn1`, `fc`, …).
    pub fn build(config: &IResNetConfig, vars: &B::Vars<'_>) -> BResult<B, Self> {
        config.validate::<B>()?;
        let pp = |name: &str| B::push(vars, name);
        let stem = config.widths[0];
        let mut inplanes = stem;
        let mut stages = Vec::with_capacity(4);
        for (s, (&blocks, &planes)) in config.layers.iter().zip(config.widths.iter()).enumerate() {
            let lvars = pp(&format!("layer{}", s + 1));
            let mut stage = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let stride = if i == 0 { 2 } else { 1 };
                stage.push(IBasicBlock::new(inplanes, planes, stride, &B::push(&lvars, &i.to_string()))?);
                inplanes = planes;
            }
            stages.push(stage);
        }
        Ok(Self {
            conv1: conv::<B>(&pp("conv1"), 3, stem, 3, 1)?,
            bn1: batch_norm::<B>(&pp("bn1"), stem)?,
            prelu: B::load_prelu(&pp("prelu"), stem)?,
            stages,
            bn2: batch_norm::<B>(&pp("bn2"), config.widths[3])?,
            fc: B::load_linear(&pp("fc"), config.fc_in(), config.num_features)?,
            features: batch_norm::<B>(&pp("features"), config.num_features)?,
        })
    }

    /// `[B, 3, S, S]` → `[B, num_features]` raw features on backend `b`, BatchNorms in `mode`.
    pub fn forward_with(&self, b: &B, x: &B::Tensor, mode: NormMode) -> BResult<B, B::Tensor> {
        let h = b.batch_norm(&self.bn1, &b.conv2d(&self.conv1, x)?, mode)?;
        let mut h = b.prelu(&self.prelu, &h)?;
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                b.scope(&format!("layer{}.{i}", s + 1));
                h = block.forward(b, &h, mode)?;
            }
        }
        b.scope("head");
        let h = b.flatten_from(&b.batch_norm(&self.bn2, &h, mode)?, 1)?;
        b.batch_norm(&self.features, &b.linear(&self.fc, &h)?, mode)
    }
}

impl IResNet<Candle> {
    /// Builds (or loads, from a filled `VarBuilder`) the network.
    pub fn new(config: &IResNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, &vb)
    }

    /// Training-mode forward: BatchNorms use batch statistics and update their running ones.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::TRAIN)
    }

    /// [`forward_train`](Self::forward_train) of one data-parallel replica: batch statistics,
    /// running statistics updated only when `update_running`.
    pub fn forward_train_replica(&self, x: &Tensor, update_running: bool) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::Batch { update_running })
    }
}

impl Module for IResNet<Candle> {
    /// `[B, 3, S, S]` → `[B, num_features]` (raw features, before L2 normalisation), eval mode.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::Running)
    }
}

/// TFace's `res_layer` `Sequential`: BN, conv, BN, PReLU, conv, BN.
type ResLayer<B> = (
    <B as Backend>::BatchNorm,
    <B as Backend>::Conv2d,
    <B as Backend>::BatchNorm,
    <B as Backend>::PRelu,
    <B as Backend>::Conv2d,
    <B as Backend>::BatchNorm,
);

/// TFace `BasicBlockIR`: `res_layer` = BN → conv 3×3 → BN → PReLU → conv 3×3 (stride s) → BN;
/// `shortcut_layer` = `MaxPool2d(1, s)` (strided subsampling) when the width is unchanged,
/// otherwise 1×1 conv (stride s) → BN.
#[derive(Clone, Debug)]
struct BasicBlockIr<B: Backend> {
    res: ResLayer<B>,
    shortcut: Option<(B::Conv2d, B::BatchNorm)>,
    stride: usize,
}

impl<B: Backend> BasicBlockIr<B> {
    fn new(in_channels: usize, depth: usize, stride: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let r = B::push(vars, "res_layer");
        let shortcut = if in_channels == depth {
            None
        } else {
            let s = B::push(vars, "shortcut_layer");
            Some((conv::<B>(&at::<B>(&s, 0), in_channels, depth, 1, stride)?, batch_norm::<B>(&at::<B>(&s, 1), depth)?))
        };
        Ok(Self {
            res: (
                batch_norm::<B>(&at::<B>(&r, 0), in_channels)?,
                conv::<B>(&at::<B>(&r, 1), in_channels, depth, 3, 1)?,
                batch_norm::<B>(&at::<B>(&r, 2), depth)?,
                B::load_prelu(&at::<B>(&r, 3), depth)?,
                conv::<B>(&at::<B>(&r, 4), depth, depth, 3, stride)?,
                batch_norm::<B>(&at::<B>(&r, 5), depth)?,
            ),
            shortcut,
            stride,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor, mode: NormMode) -> BResult<B, B::Tensor> {
        let (bn0, c1, bn2, p3, c4, bn5) = &self.res;
        let r = b.batch_norm(bn2, &b.conv2d(c1, &b.batch_norm(bn0, x, mode)?)?, mode)?;
        let r = b.batch_norm(bn5, &b.conv2d(c4, &b.prelu(p3, &r)?)?, mode)?;
        let shortcut = match &self.shortcut {
            Some((conv, norm)) => b.batch_norm(norm, &b.conv2d(conv, x)?, mode)?,
            None if self.stride > 1 => b.subsample2d(x, self.stride)?,
            None => x.clone(),
        };
        b.add(&r, &shortcut)
    }
}

/// TFace `Backbone(input_size=[112, 112], num_layers, mode="ir")`: `input_layer`, `body`,
/// `output_layer` = BN2d → Dropout → Flatten → Linear(512·7·7, 512) → BatchNorm1d(affine=False).
#[derive(Clone, Debug)]
pub struct IrBackbone<B: Backend = Candle> {
    input: (B::Conv2d, B::BatchNorm, B::PRelu),
    body: Vec<BasicBlockIr<B>>,
    output: (B::BatchNorm, B::Linear, B::BatchNorm),
    dropout: f64,
}

impl<B: Backend> IrBackbone<B> {
    /// Builds IR-18/34/50/100 (`depth`) on backend `B`.
    pub fn build(depth: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let Some(layers) = iresnet_layers(depth).filter(|_| depth <= 100) else {
            return Err(B::error(format!("TFace IR backbone: unsupported depth {depth} (18, 34, 50 or 100)")));
        };
        let i = B::push(vars, "input_layer");
        let input = (conv::<B>(&at::<B>(&i, 0), 3, 64, 3, 1)?, batch_norm::<B>(&at::<B>(&i, 1), 64)?, B::load_prelu(&at::<B>(&i, 2), 64)?);
        let body_vars = B::push(vars, "body");
        let mut body = Vec::new();
        let mut in_channels = 64;
        for (&units, &depth_c) in layers.iter().zip(WIDTHS.iter()) {
            for u in 0..units {
                let stride = if u == 0 { 2 } else { 1 };
                body.push(BasicBlockIr::new(in_channels, depth_c, stride, &at::<B>(&body_vars, body.len()))?);
                in_channels = depth_c;
            }
        }
        let o = B::push(vars, "output_layer");
        let output = (
            batch_norm::<B>(&at::<B>(&o, 0), 512)?,
            B::load_linear(&at::<B>(&o, 3), 512 * 7 * 7, 512)?,
            B::load_batch_norm(&at::<B>(&o, 4), 512, BN_EPS, false)?,
        );
        Ok(Self { input, body, output, dropout: 0.4 })
    }

    /// `[B, 3, 112, 112]` → `[B, 512]` on backend `b`, BatchNorms in `mode`; `dropout_rng`
    /// turns on TFace's Dropout(0.4) before the final Linear (training).
    pub fn forward_with(&self, b: &B, x: &B::Tensor, mode: NormMode, dropout_rng: Option<&mut KeyedRng>) -> BResult<B, B::Tensor> {
        let (conv, norm, prelu) = &self.input;
        let mut h = b.prelu(prelu, &b.batch_norm(norm, &b.conv2d(conv, x)?, mode)?)?;
        for (index, block) in self.body.iter().enumerate() {
            b.scope(&format!("body.{index}"));
            h = block.forward(b, &h, mode)?;
        }
        b.scope("output_layer");
        let (bn2d, fc, bn1d) = &self.output;
        let mut h = b.batch_norm(bn2d, &h, mode)?;
        if let Some(rng) = dropout_rng {
            h = b.dropout(&h, self.dropout, rng)?;
        }
        b.batch_norm(bn1d, &b.linear(fc, &b.flatten_from(&h, 1)?)?, mode)
    }
}

impl IrBackbone<Candle> {
    /// Builds IR-18/34/50/100 (`depth`); an error for other depths.
    pub fn new(depth: usize, vb: VarBuilder) -> Result<Self> {
        Self::build(depth, &vb)
    }

    /// Training-mode forward: batch-statistics BatchNorms (running statistics updated) and
    /// TFace's Dropout(0.4) before the final Linear, with the dropout mask drawn from `rng`.
    pub fn forward_train(&self, x: &Tensor, rng: &mut KeyedRng) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::TRAIN, Some(rng))
    }

    /// [`forward_train`](Self::forward_train) of one data-parallel replica: batch statistics,
    /// running statistics updated only when `update_running`.
    pub fn forward_train_replica(&self, x: &Tensor, rng: &mut KeyedRng, update_running: bool) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::Batch { update_running }, Some(rng))
    }
}

impl Module for IrBackbone<Candle> {
    /// `[B, 3, 112, 112]` → `[B, 512]`, eval mode.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&Candle, x, NormMode::Running, None)
    }
}
