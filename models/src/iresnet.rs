//! Face-recognition backbones: ElasticFace's `IResNet` (also insightface's `arcface_torch`) and
//! TFace's `IR-50` (`Backbone` with `BasicBlockIR`).
//!
//! Both take RGB `[B, 3, 112, 112]` images normalised as `((x/255) − 0.5)/0.5` and return the
//! raw (un-normalised) feature vector. BatchNorms run in eval mode with the running statistics.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d_no_bias, BatchNorm, PRelu};

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
}

impl IResNetConfig {
    /// The standard configuration for a depth of 18, 34, 50, 100 or 200 with 512 features.
    pub fn depth(depth: usize) -> Option<Self> {
        iresnet_layers(depth).map(|layers| Self { layers, num_features: 512 })
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

impl Module for IBasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.bn1.forward(x)?;
        let out = self.bn2.forward(&self.conv1.forward(&out)?)?;
        let out = self.prelu.forward(&out)?;
        let out = self.bn3.forward(&self.conv2.forward(&out)?)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?)?,
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
        let mut inplanes = 64;
        let mut stages = Vec::with_capacity(4);
        for (s, (&blocks, &planes)) in config.layers.iter().zip(WIDTHS.iter()).enumerate() {
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
            conv1: conv2d_no_bias(3, 64, 3, 1, 1, vb.pp("conv1"))?,
            bn1: BatchNorm::new(64, BN_EPS, true, vb.pp("bn1"))?,
            prelu: PRelu::new(64, vb.pp("prelu"))?,
            stages,
            bn2: BatchNorm::new(512, BN_EPS, true, vb.pp("bn2"))?,
            fc: candle_nn::linear(512 * 7 * 7, config.num_features, vb.pp("fc"))?,
            features: BatchNorm::new(config.num_features, BN_EPS, true, vb.pp("features"))?,
        })
    }
}

impl Module for IResNet {
    /// `[B, 3, 112, 112]` → `[B, num_features]` (raw features, before L2 normalisation).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.prelu.forward(&self.bn1.forward(&self.conv1.forward(x)?)?)?;
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h)?;
            }
        }
        let h = self.bn2.forward(&h)?.flatten_from(1)?;
        self.features.forward(&self.fc.forward(&h)?)
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

impl Module for BasicBlockIr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (bn0, c1, bn2, p3, c4, bn5) = &self.res;
        let r = bn2.forward(&c1.forward(&bn0.forward(x)?)?)?;
        let r = bn5.forward(&c4.forward(&p3.forward(&r)?)?)?;
        let shortcut = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?)?,
            // MaxPool2d(kernel 1, stride s) keeps every s-th pixel
            None if self.stride > 1 => x.max_pool2d_with_stride(1, self.stride)?,
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
        Ok(Self { input, body, output })
    }
}

impl Module for IrBackbone {
    /// `[B, 3, 112, 112]` → `[B, 512]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (conv, bn, prelu) = &self.input;
        let mut h = prelu.forward(&bn.forward(&conv.forward(x)?)?)?;
        for block in &self.body {
            h = block.forward(&h)?;
        }
        let (bn2d, fc, bn1d) = &self.output;
        let h = bn2d.forward(&h)?.flatten_from(1)?;
        bn1d.forward(&fc.forward(&h)?)
    }
}
