//! One optimiser step of a face recogniser: backbone ([`IResNet`] or TFace
//! [`IrBackbone`]) → margin head → softmax cross-entropy, SGD with momentum and weight decay
//! off BatchNorm parameters, optional gradient clipping; plus the model/optimiser state a
//! resumable checkpoint needs.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use super::optim::{clip_grad_norm, params, Sgd};
use super::replicas::{run_replicas, split_rows, sum_gradients};
use super::state::{keyed_init, load_into, named_vars};
use crate::error::{input_error, Result};
use crate::heads::{Margin, MarginHead};
use crate::iresnet::IrBackbone;
use crate::iresnet::{IResNet, IResNetConfig};

/// Which backbone to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneConfig {
    /// ElasticFace IResNet of any width/depth/input size.
    Iresnet(IResNetConfig),
    /// TFace IR-`depth` (18, 34, 50, 100), 112×112, 512 features.
    Ir(usize),
}

impl BackboneConfig {
    /// Input side in pixels.
    pub fn input_size(&self) -> usize {
        match self {
            BackboneConfig::Iresnet(c) => c.input_size,
            BackboneConfig::Ir(_) => 112,
        }
    }

    /// Embedding width.
    pub fn num_features(&self) -> usize {
        match self {
            BackboneConfig::Iresnet(c) => c.num_features,
            BackboneConfig::Ir(_) => 512,
        }
    }

    /// The ONNX graph that computes this backbone in eval mode from its
    /// [`FaceTrainer::backbone_state`] (official key layout).
    pub fn onnx_spec(&self) -> crate::onnx::OnnxModelSpec {
        match self {
            BackboneConfig::Iresnet(c) => crate::onnx::OnnxModelSpec::IResNet { config: c.clone() },
            BackboneConfig::Ir(depth) => crate::onnx::OnnxModelSpec::TFaceIr { depth: *depth },
        }
    }
}

/// Hyper-parameters of face-recognition training.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceTrainConfig {
    /// Backbone.
    pub backbone: BackboneConfig,
    /// Number of identities (head classes).
    pub classes: usize,
    /// Head scale s.
    pub scale: f64,
    /// Head margin.
    pub margin: Margin,
    /// SGD momentum (TFace: 0.9).
    pub momentum: f64,
    /// Weight decay on non-BatchNorm parameters (TFace: 5e-4).
    pub weight_decay: f64,
    /// Maximum global gradient norm, if any.
    pub clip_grad_norm: Option<f64>,
    /// Seed of initialisation, dropout and elastic margins.
    pub seed: u64,
    /// Data-parallel replicas per step (see [`super::replicas`]): the batch is split into this
    /// many parts, each with its own thread and its own BatchNorm batch statistics (the running
    /// statistics follow the first part), and the gradients are averaged. 1 = the whole batch on
    /// one thread. Results depend on this number, not on the machine.
    pub replicas: usize,
}

enum Backbone {
    Iresnet(IResNet),
    Ir(IrBackbone),
}

/// Loss and training accuracy of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the margin logits.
    pub loss: f64,
    /// Rows whose nearest class centre (plain cosine, no margin) is their label.
    pub correct: usize,
    /// Rows in the batch.
    pub rows: usize,
    /// Global gradient norm before clipping (when clipping is on).
    pub grad_norm: Option<f64>,
}

/// Backbone + head + SGD state.
pub struct FaceTrainer {
    config: FaceTrainConfig,
    varmap: VarMap,
    backbone: Backbone,
    head: MarginHead,
    sgd: Sgd,
    step: u64,
}

/// Prefix of the head's variables in the checkpoint.
pub const HEAD_PREFIX: &str = "head.";

impl FaceTrainer {
    /// A freshly initialised model (keyed by `config.seed`).
    pub fn new(config: FaceTrainConfig) -> Result<Self> {
        if config.classes == 0 {
            return Err(input_error("classes", "need at least one identity"));
        }
        if config.replicas == 0 {
            return Err(input_error("replicas", "need at least one replica"));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let backbone = match &config.backbone {
            BackboneConfig::Iresnet(c) => Backbone::Iresnet(IResNet::new(c, vb.clone())?),
            BackboneConfig::Ir(depth) => Backbone::Ir(IrBackbone::new(*depth, vb.clone())?),
        };
        let head = MarginHead::new(config.backbone.num_features(), config.classes, config.scale, config.margin, vb.pp("head"))?;
        keyed_init(&varmap, config.seed)?;
        // PyTorch's PReLU starts at 0.25 (the TFace backbone's loader leaves it at 0)
        for (name, var) in named_vars(&varmap) {
            if name.ends_with("input_layer.2.weight") || name.ends_with("res_layer.3.weight") {
                var.set(&var.as_tensor().ones_like()?.affine(0.25, 0.0)?)?;
            }
        }
        let sgd = Sgd::new(params(&varmap), config.momentum, config.weight_decay);
        Ok(Self { config, varmap, backbone, head, sgd, step: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &FaceTrainConfig {
        &self.config
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Training-mode features of replica `replica`'s rows (its BatchNorms update the running
    /// statistics only for replica 0; its dropout mask is keyed by the replica).
    fn features_train(&self, images: &Tensor, replica: usize) -> Result<Tensor> {
        Ok(match &self.backbone {
            Backbone::Iresnet(n) => n.forward_train_replica(images, replica == 0)?,
            Backbone::Ir(n) => {
                let mut rng = KeyedRng::new(&replica_key(&[self.config.seed, 0xd20, self.step], replica));
                n.forward_train_replica(images, &mut rng, replica == 0)?
            }
        })
    }

    /// Eval-mode features `[B, num_features]` (running BatchNorm statistics, no dropout).
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        Ok(match &self.backbone {
            Backbone::Iresnet(n) => n.forward(images)?,
            Backbone::Ir(n) => n.forward(images)?,
        })
    }

    /// One SGD step on `images` `[B, 3, S, S]` with identity `labels` at rate `lr`.
    pub fn train_step(&mut self, images: &Tensor, labels: &[u32], lr: f64) -> Result<StepStats> {
        let b = images.dim(0)?;
        if labels.len() != b {
            return Err(input_error("labels", format!("{} labels for {b} images", labels.len())));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= self.config.classes) {
            return Err(input_error("labels", format!("identity {bad} out of range for {} classes", self.config.classes)));
        }
        let parts = split_rows(b, self.config.replicas);
        let single = parts.len() == 1;
        let outcomes = run_replicas(&parts, |replica, rows| {
            let x = if single { images.clone() } else { images.narrow(0, rows.start, rows.len())? };
            let labels = &labels[rows.clone()];
            let feats = self.features_train(&x, replica)?;
            let label_t = Tensor::from_vec(labels.to_vec(), labels.len(), &Device::Cpu)?;
            let mut rng = KeyedRng::new(&replica_key(&[self.config.seed, 0x3a7, self.step], replica));
            let logits = self.head.logits(&feats, &label_t, Some(&mut rng))?;
            let loss = candle_nn::loss::cross_entropy(&logits, &label_t)?;
            let predicted: Vec<u32> = self.head.cos_theta(&feats)?.argmax(1)?.to_vec1()?;
            let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
            // each part's mean loss weighted by its share of the batch: the summed gradient is
            // the gradient of the whole batch's mean loss
            let share = rows.len() as f64 / b as f64;
            let grads = if single { loss.backward()? } else { loss.affine(share, 0.0)?.backward()? };
            let loss: f64 = loss.to_dtype(DType::F64)?.to_scalar()?;
            Ok((loss * share, correct, grads))
        })?;
        let loss = outcomes.iter().map(|o| o.0).sum();
        let correct = outcomes.iter().map(|o| o.1).sum();
        let mut grads = sum_gradients(outcomes.into_iter().map(|o| o.2).collect(), self.sgd.params())?;
        let grad_norm = match self.config.clip_grad_norm {
            Some(max) => Some(clip_grad_norm(self.sgd.params(), &mut grads, max)?),
            None => None,
        };
        self.sgd.step(&grads, lr)?;
        self.step += 1;
        Ok(StepStats { loss, correct, rows: b, grad_norm })
    }

    /// Backbone tensors under the official state-dict keys (what `embed` loads).
    pub fn backbone_state(&self) -> Vec<(String, Tensor)> {
        named_vars(&self.varmap).into_iter().filter(|(k, _)| !k.starts_with(HEAD_PREFIX)).map(|(k, v)| (k, v.as_tensor().clone())).collect()
    }

    /// Everything a resume needs: all model variables (backbone keys, `head.kernel`) and the
    /// SGD momentum buffers (`momentum_buffer.<name>`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = named_vars(&self.varmap).into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
        out.extend(self.sgd.state());
        out
    }

    /// Restores [`state`](Self::state) and the step counter.
    pub fn load_state(&mut self, entries: &BTreeMap<String, Tensor>, step: u64, source: &str) -> Result<()> {
        load_into(&self.varmap, entries, "", source)?;
        self.sgd.load_state(entries)?;
        self.step = step;
        Ok(())
    }
}

/// A random-stream key for `replica`: the single-replica key itself for replica 0, so one
/// replica reproduces the plain step exactly.
fn replica_key(key: &[u64], replica: usize) -> Vec<u64> {
    let mut key = key.to_vec();
    if replica > 0 {
        key.push(replica as u64);
    }
    key
}
