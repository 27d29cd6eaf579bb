//! Face-recognition backbones: ElasticFace's `IResNet` (also insightface's `arcface_torch`) and
//! TFace's `IR-50` (`Backbone` with `BasicBlockIR`).
//!
//! Both take RGB `[B, 3, 112, 112]` images normalised as `((x/255) − 0.5)/0.5` and return the
//! raw (un-normalised) feature vector. BatchNorms run in eval mode with the running statistics.

use crate::conv::Conv2d;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d_no_bias, subsample2d, BatchNorm, NormMode, PRelu};

/// Eval-mode (running statistics) or training-mode (batch statistics) BatchNorm.
fn bn(norm: &BatchNorm, x: &Tensor, mode: NormMode) -> Result<Tensor> {
    norm.forward_mode(x, mode)
}

/// Keyed inverted dropout (`torch.nn.Dropout`): zero with probability `p`, scale by `1/(1 − p)`.
fn dropout(x: &Tensor, p: f64, rng: &mut KeyedRng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep: Vec<f32> = (0..x.elem_count()).map(|_| if rng.chance(p) { 0.0 } else { (1.0 / (1.0 - p)) as f32 }).collect();
    x * Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?
}

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
    /// Input side in pixels, a multiple of 16 (112 in the published models).
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

    /// Inputs to the `fc` layer: last width × (input / 16)².
    pub fn fc_in(&self) -> usize {
        let side = self.input_size / 16;
        self.widths[3] * side * side
    }
}

/// `IBasicBlock`: `bn1 → conv1 (3×3) → bn2 → prelu → conv2 (3×3, stride s) → bn3`, plus the
/// (1×1 conv + BN) downsampled identity; no activation after the sum.
#[derive(Clone, Debug)]
struct IBasicBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    prelu: PRelu,
    conv2: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl IBasicBlock {
    fn new(inplanes: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || inplanes != planes {
            let dvb = vb.pp("downsample");
            Some((conv2d_no_bias(inplanes, planes, 1, stride, 0, dvb.pp("0"))?, BatchNorm::new(planes, BN_EPS, true, dvb.pp("1"))?))
        } else {
            None
        };
        Ok(Self {
            bn1: BatchNorm::new(inplanes, BN_EPS, true, vb.pp("bn1"))?,
            conv1: conv2d_no_bias(inplanes, planes, 3, 1, 1, vb.pp("conv1"))?,
            bn2: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn2"))?,
            prelu: PRelu::new(planes, vb.pp("prelu"))?,
            conv2: conv2d_no_bias(planes, planes, 3, stride, 1, vb.pp("conv2"))?,
            bn3: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn3"))?,
            downsample,
        })
    }
}

impl IBasicBlock {
    fn run(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        let out = bn(&self.bn1, x, mode)?;
        let out = bn(&self.bn2, &self.conv1.forward(&out)?, mode)?;
        let out = self.prelu.forward(&out)?;
        let out = bn(&self.bn3, &self.conv2.forward(&out)?, mode)?;
        let identity = match &self.downsample {
            Some((conv, norm)) => bn(norm, &conv.forward(x)?, mode)?,
            None => x.clone(),
        };
        out + identity
    }
}

/// ElasticFace `backbones.iresnet.IResNet` (`IBasicBlock`, no SE), eval mode.
#[derive(Clone, Debug)]
pub struct IResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    prelu: PRelu,
    stages: Vec<Vec<IBasicBlock>>,
    bn2: BatchNorm,
    fc: Linear,
    features: BatchNorm,
}

impl IResNet {
    /// Builds the network; keys as in the official state dict (`conv1`, `layer1.0.bn1`, `fc`, …).
    pub fn new(config: &IResNetConfig, vb: VarBuilder) -> Result<Self> {
        let stem = config.widths[0];
        let mut inplanes = stem;
        let mut stages = Vec::with_capacity(4);
        for (s, (&blocks, &planes)) in config.layers.iter().zip(config.widths.iter()).enumerate() {
            let lvb = vb.pp(format!("layer{}", s + 1));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 { 2 } else { 1 };
                stage.push(IBasicBlock::new(inplanes, planes, stride, lvb.pp(b))?);
                inplanes = planes;
            }
            stages.push(stage);
        }
        Ok(Self {
            conv1: conv2d_no_bias(3, stem, 3, 1, 1, vb.pp("conv1"))?,
            bn1: BatchNorm::new(stem, BN_EPS, true, vb.pp("bn1"))?,
            prelu: PRelu::new(stem, vb.pp("prelu"))?,
            stages,
            bn2: BatchNorm::new(config.widths[3], BN_EPS, true, vb.pp("bn2"))?,
            fc: candle_nn::linear(config.fc_in(), config.num_features, vb.pp("fc"))?,
            features: BatchNorm::new(config.num_features, BN_EPS, true, vb.pp("features"))?,
        })
    }
}

impl IResNet {
    fn run(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        let mut h = self.prelu.forward(&bn(&self.bn1, &self.conv1.forward(x)?, mode)?)?;
        for stage in &self.stages {
            for block in stage {
                h = block.run(&h, mode)?;
            }
        }
        let h = bn(&self.bn2, &h, mode)?.flatten_from(1)?;
        bn(&self.features, &self.fc.forward(&h)?, mode)
    }

    /// Training-mode forward: BatchNorms use batch statistics and update their running ones.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, NormMode::TRAIN)
    }
}

impl Module for IResNet {
    /// `[B, 3, 112, 112]` → `[B, num_features]` (raw features, before L2 normalisation).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, NormMode::Running)
    }
}

/// TFace `BasicBlockIR`: `res_layer` = BN → conv 3×3 → BN → PReLU → conv 3×3 (stride s) → BN;
/// `shortcut_layer` = `MaxPool2d(1, s)` (strided subsampling) when the width is unchanged,
/// otherwise 1×1 conv (stride s) → BN.
#[derive(Clone, Debug)]
struct BasicBlockIr {
    res: (BatchNorm, Conv2d, BatchNorm, PRelu, Conv2d, BatchNorm),
    shortcut: Option<(Conv2d, BatchNorm)>,
    stride: usize,
}

impl BasicBlockIr {
    fn new(in_channels: usize, depth: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let r = vb.pp("res_layer");
        let shortcut = if in_channels == depth {
            None
        } else {
            let s = vb.pp("shortcut_layer");
            Some((conv2d_no_bias(in_channels, depth, 1, stride, 0, s.pp("0"))?, BatchNorm::new(depth, BN_EPS, true, s.pp("1"))?))
        };
        Ok(Self {
            res: (
                BatchNorm::new(in_channels, BN_EPS, true, r.pp("0"))?,
                conv2d_no_bias(in_channels, depth, 3, 1, 1, r.pp("1"))?,
                BatchNorm::new(depth, BN_EPS, true, r.pp("2"))?,
                PRelu::new(depth, r.pp("3"))?,
                conv2d_no_bias(depth, depth, 3, stride, 1, r.pp("4"))?,
                BatchNorm::new(depth, BN_EPS, true, r.pp("5"))?,
            ),
            shortcut,
            stride,
        })
    }
}

impl BasicBlockIr {
    fn run(&self, x: &Tensor, mode: NormMode) -> Result<Tensor> {
        let (bn0, c1, bn2, p3, c4, bn5) = &self.res;
        let r = bn(bn2, &c1.forward(&bn(bn0, x, mode)?)?, mode)?;
        let r = bn(bn5, &c4.forward(&p3.forward(&r)?)?, mode)?;
        let shortcut = match &self.shortcut {
            Some((conv, norm)) => bn(norm, &conv.forward(x)?, mode)?,
            None if self.stride > 1 => subsample2d(x, self.stride)?,
            None => x.clone(),
        };
        r + shortcut
    }
}

/// TFace `Backbone(input_size=[112, 112], num_layers, mode="ir")`: `input_layer`, `body`,
/// `output_layer` = BN2d → Dropout → Flatten → Linear(512·7·7, 512) → BatchNorm1d(affine=False).
#[derive(Clone, Debug)]
pub struct IrBackbone {
    input: (Conv2d, BatchNorm, PRelu),
    body: Vec<BasicBlockIr>,
    output: (BatchNorm, Linear, BatchNorm),
    dropout: f64,
}

impl IrBackbone {
    /// Builds IR-18/34/50/100 (`depth`); `None` for other depths.
    pub fn new(depth: usize, vb: VarBuilder) -> Result<Self> {
        let Some(layers) = iresnet_layers(depth).filter(|_| depth <= 100) else {
            candle_core::bail!("TFace IR backbone: unsupported depth {depth} (18, 34, 50 or 100)");
        };
        let i = vb.pp("input_layer");
        let input = (conv2d_no_bias(3, 64, 3, 1, 1, i.pp("0"))?, BatchNorm::new(64, BN_EPS, true, i.pp("1"))?, PRelu::new(64, i.pp("2"))?);
        let mut body = Vec::new();
        let mut in_channels = 64;
        for (&units, &depth_c) in layers.iter().zip(WIDTHS.iter()) {
            for u in 0..units {
                let stride = if u == 0 { 2 } else { 1 };
                body.push(BasicBlockIr::new(in_channels, depth_c, stride, vb.pp("body").pp(body.len()))?);
                in_channels = depth_c;
            }
        }
        let o = vb.pp("output_layer");
        let output = (
            BatchNorm::new(512, BN_EPS, true, o.pp("0"))?,
            candle_nn::linear(512 * 7 * 7, 512, o.pp("3"))?,
            BatchNorm::new(512, BN_EPS, false, o.pp("4"))?,
        );
        Ok(Self { input, body, output, dropout: 0.4 })
    }
}

impl IrBackbone {
    fn run(&self, x: &Tensor, mode: NormMode, dropout_rng: Option<&mut KeyedRng>) -> Result<Tensor> {
        let (conv, norm, prelu) = &self.input;
        let mut h = prelu.forward(&bn(norm, &conv.forward(x)?, mode)?)?;
        for block in &self.body {
            h = block.run(&h, mode)?;
        }
        let (bn2d, fc, bn1d) = &self.output;
        let mut h = bn(bn2d, &h, mode)?;
        if let Some(rng) = dropout_rng {
            h = dropout(&h, self.dropout, rng)?;
        }
        bn(bn1d, &fc.forward(&h.flatten_from(1)?)?, mode)
    }

    /// Training-mode forward: batch-statistics BatchNorms (running statistics updated) and
    /// TFace's Dropout(0.4) before the final Linear, with the dropout mask drawn from `rng`.
    pub fn forward_train(&self, x: &Tensor, rng: &mut KeyedRng) -> Result<Tensor> {
        self.run(x, NormMode::TRAIN, Some(rng))
    }

    /// [`forward_train`](Self::forward_train) of one data-parallel replica: batch statistics,
    /// running statistics updated only when `update_running`.
    pub fn forward_train_replica(&self, x: &Tensor, rng: &mut KeyedRng, update_running: bool) -> Result<Tensor> {
        self.run(x, NormMode::Batch { update_running }, Some(rng))
    }
}

impl Module for IrBackbone {
    /// `[B, 3, 112, 112]` → `[B, 512]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, NormMode::Running, None)
    }
}
