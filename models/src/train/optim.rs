//! Optimisers with exportable state: SGD with momentum and decoupled-from-BN weight decay (as
//! TFace trains its recognisers) and Adam (as IDiff-Face trains its denoiser).
//!
//! candle-nn's `SGD` has neither momentum nor weight decay and its `AdamW` does not expose its
//! moment buffers, which a resumable checkpoint must save; both optimisers are therefore written
//! here, following `torch.optim.SGD` / `torch.optim.Adam` update rules exactly.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// A named parameter and whether weight decay applies to it.
#[derive(Clone, Debug)]
pub struct Param {
    /// Its `VarMap` path (the state-dict key).
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Whether weight decay applies (false for BatchNorm weights and biases).
    pub decay: bool,
}

/// Suffixes of BatchNorm buffers, never optimised.
const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// The trainable parameters of a `VarMap`, sorted by name. A `X.weight` / `X.bias` whose module
/// `X` has a `running_mean` buffer is a BatchNorm parameter and gets no weight decay (TFace's
/// `separate_irse_bn_paras`); everything else (convolutions, linears, PReLU slopes, head kernel)
/// does.
pub fn params(varmap: &VarMap) -> Vec<Param> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<Param> = data
        .iter()
        .filter(|(name, _)| !BUFFERS.iter().any(|s| name.ends_with(s)))
        .map(|(name, var)| {
            let module = name.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
            let is_bn = data.contains_key(&format!("{module}.running_mean"));
            Param { name: name.clone(), var: var.clone(), decay: !is_bn }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(params: &[Param], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                grads.insert(p.var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// `torch.optim.SGD(momentum, weight_decay, dampening=0, nesterov=False)`.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Param>,
    momentum: f64,
    weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// An optimiser over `params`.
    pub fn new(params: Vec<Param>, momentum: f64, weight_decay: f64) -> Self {
        Self { params, momentum, weight_decay, buffers: BTreeMap::new() }
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update with learning rate `lr`: `d = g + wd·p`; `buf = μ·buf + d` (`d` on the first
    /// step); `p −= lr·buf`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let mut d = g.clone();
            if p.decay && self.weight_decay != 0.0 {
                d = (d + (p.var.as_tensor() * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                d = match self.buffers.get(&p.name) {
                    Some(buf) => ((buf * self.momentum)? + d)?,
                    None => d,
                };
                self.buffers.insert(p.name.clone(), d.detach());
            }
            p.var.set(&(p.var.as_tensor() - (d * lr)?)?.detach())?;
        }
        Ok(())
    }

    /// Momentum buffers as `(momentum_buffer.<param>, tensor)` entries.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.iter().map(|(k, v)| (format!("momentum_buffer.{k}"), v.clone())).collect()
    }

    /// Restores momentum buffers saved by [`state`](Self::state); unrelated entries are ignored.
    pub fn load_state(&mut self, entries: &BTreeMap<String, Tensor>) -> Result<()> {
        self.buffers.clear();
        for p in &self.params {
            if let Some(t) = entries.get(&format!("momentum_buffer.{}", p.name)) {
                if t.shape() != p.var.shape() {
                    candle_core::bail!("momentum buffer of `{}` has shape {:?}, parameter {:?}", p.name, t.dims(), p.var.dims());
                }
                self.buffers.insert(p.name.clone(), t.clone());
            }
        }
        Ok(())
    }
}

/// `torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`.
#[derive(Debug)]
pub struct Adam {
    params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: u64,
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl Adam {
    /// An optimiser over `params` with PyTorch's default betas and epsilon.
    pub fn new(params: Vec<Param>) -> Self {
        Self { params, beta1: 0.9, beta2: 0.999, eps: 1e-8, steps: 0, moments: BTreeMap::new() }
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One bias-corrected update with learning rate `lr`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let bc1 = 1.0 - self.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - self.beta2.powi(self.steps as i32);
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let (m, v) = match self.moments.get(&p.name) {
                Some((m, v)) => (((m * self.beta1)? + (g * (1.0 - self.beta1))?)?, ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?),
                None => ((g * (1.0 - self.beta1))?, (g.sqr()? * (1.0 - self.beta2))?),
            };
            let (m, v) = (m.detach(), v.detach());
            let denom = ((v.clone() / bc2)?.sqrt()? + self.eps)?;
            let update = ((m.clone() / denom)? * (lr / bc1))?;
            p.var.set(&(p.var.as_tensor() - update)?.detach())?;
            self.moments.insert(p.name.clone(), (m, v));
        }
        Ok(())
    }

    /// Moments (`exp_avg.<param>`, `exp_avg_sq.<param>`) and the step count (`adam_step`).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.moments.len() + 1);
        for (k, (m, v)) in &self.moments {
            out.push((format!("exp_avg.{k}"), m.clone()));
            out.push((format!("exp_avg_sq.{k}"), v.clone()));
        }
        out.push(("adam_step".into(), Tensor::new(&[self.steps as i64], &candle_core::Device::Cpu)?));
        Ok(out)
    }

    /// Restores what [`state`](Self::state) saved.
    pub fn load_state(&mut self, entries: &BTreeMap<String, Tensor>) -> Result<()> {
        self.moments.clear();
        self.steps = match entries.get("adam_step") {
            Some(t) => t.flatten_all()?.to_vec1::<i64>()?.first().copied().unwrap_or(0).max(0) as u64,
            None => 0,
        };
        for p in &self.params {
            let m = entries.get(&format!("exp_avg.{}", p.name));
            let v = entries.get(&format!("exp_avg_sq.{}", p.name));
            if let (Some(m), Some(v)) = (m, v) {
                if m.shape() != p.var.shape() || v.shape() != p.var.shape() {
                    candle_core::bail!("Adam moments of `{}` do not match the parameter shape {:?}", p.name, p.var.dims());
                }
                self.moments.insert(p.name.clone(), (m.clone(), v.clone()));
            }
        }
        Ok(())
    }
}
