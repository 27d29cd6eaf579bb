//! A width- and input-size-configurable ElasticFace IResNet for training.
//!
//! The engine's inference [`IResNet`](crate::iresnet::IResNet) is fixed to the published
//! widths (64/128/256/512) and 112×112 inputs. Training on the toy world needs much smaller
//! networks (e.g. widths 16/32/64/128 at 32×32), so this module builds the same `IBasicBlock`
//! topology with configurable stage widths and input side. Parameter names equal the official
//! state-dict keys (`conv1`, `bn1`, `prelu`, `layer1.0.bn1`, …, `bn2`, `fc`, `features`), so with
//! the published widths and a 112 input the trained weights load unchanged into
//! [`IResNet`](crate::iresnet::IResNet) (and therefore into `embed`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d_no_bias, BatchNorm, PRelu};

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

    /// Side of the last stage's feature map (each stage halves with a 3×3/2 convolution).
    pub fn final_side(&self) -> usize {
        (0..4).fold(self.input_size, |s, _| s.div_ceil(2))
    }
}

/// `IBasicBlock`: `bn1 → conv1 → bn2 → prelu → conv2 (stride s) → bn3` + shortcut.
#[derive(Clone, Debug)]
struct Block {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    prelu: PRelu,
    conv2: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

fn prelu(channels: usize, vb: VarBuilder) -> Result<PRelu> {
    // create the slopes with PyTorch's initial value before `PRelu::new` reads them
    let _ = vb.get_with_hints(channels, "weight", Init::Const(PRELU_INIT))?;
    PRelu::new(channels, vb)
}

fn norm(x: &Tensor, bn: &BatchNorm, train: bool) -> Result<Tensor> {
    if train {
        bn.forward_train(x)
    } else {
        bn.forward(x)
    }
}

impl Block {
    fn new(inplanes: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || inplanes != planes {
            let d = vb.pp("downsample");
            Some((conv2d_no_bias(inplanes, planes, 1, stride, 0, d.pp("0"))?, BatchNorm::new(planes, BN_EPS, true, d.pp("1"))?))
        } else {
            None
        };
        Ok(Self {
            bn1: BatchNorm::new(inplanes, BN_EPS, true, vb.pp("bn1"))?,
            conv1: conv2d_no_bias(inplanes, planes, 3, 1, 1, vb.pp("conv1"))?,
            bn2: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn2"))?,
            prelu: prelu(planes, vb.pp("prelu"))?,
            conv2: conv2d_no_bias(planes, planes, 3, stride, 1, vb.pp("conv2"))?,
            bn3: BatchNorm::new(planes, BN_EPS, true, vb.pp("bn3"))?,
            downsample,
        })
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let out = norm(x, &self.bn1, train)?;
        let out = norm(&self.conv1.forward(&out)?, &self.bn2, train)?;
        let out = self.prelu.forward(&out)?;
        let out = norm(&self.conv2.forward(&out)?, &self.bn3, train)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => norm(&conv.forward(x)?, bn, train)?,
            None => x.clone(),
        };
        out + identity
    }
}

/// The trainable IResNet.
#[derive(Clone, Debug)]
pub struct TrainIResNet {
    conv1: Conv2d,
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
            conv1: conv2d_no_bias(3, config.widths[0], 3, 1, 1, vb.pp("conv1"))?,
            bn1: BatchNorm::new(config.widths[0], BN_EPS, true, vb.pp("bn1"))?,
            prelu: prelu(config.widths[0], vb.pp("prelu"))?,
            stages,
            bn2: BatchNorm::new(last, BN_EPS, true, vb.pp("bn2"))?,
            fc: candle_nn::linear(last * side * side, config.num_features, vb.pp("fc"))?,
            features: BatchNorm::new(config.num_features, BN_EPS, true, vb.pp("features"))?,
        })
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.prelu.forward(&norm(&self.conv1.forward(x)?, &self.bn1, train)?)?;
        for stage in &self.stages {
            for block in stage {
                h = block.run(&h, train)?;
            }
        }
        let h = norm(&h, &self.bn2, train)?.flatten_from(1)?;
        norm(&self.fc.forward(&h)?, &self.features, train)
    }

    /// Training mode: batch-statistics BatchNorms, running statistics updated.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }
}

impl Module for TrainIResNet {
    /// Eval mode: `[B, 3, S, S]` → `[B, num_features]` raw features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}
