//! Learning-rate schedules and the EMA decay warm-up used by the training operators.
//!
//! * [`LrSchedule::Steps`] — TFace's piecewise-constant `LRS`/`STAGES` (epoch milestones) with
//!   an optional linear warm-up in steps.
//! * [`LrSchedule::Cosine`] — linear warm-up then cosine decay to `min_lr` over all steps.
//! * [`LrSchedule::WarmRestarts`] — `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`
//!   stepped once per optimiser step (IDiff-Face's configuration).
//! * [`ema_decay`] — k-diffusion's `EMAWarmup` value (`1 − (1 + n/γ)^−p`, clamped).

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// A constant rate.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// `lrs[k]` from epoch `stages[k−1]` on (`lrs.len() == stages.len() + 1`).
    Steps {
        /// Rates per stage, e.g. `[0.1, 0.01, 0.001, 0.0001]`.
        lrs: Vec<f64>,
        /// Epoch milestones, e.g. `[22, 28, 32]`.
        stages: Vec<u64>,
        /// Linear warm-up from 0 over this many optimiser steps.
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warm-up, then half a cosine from `lr` to `min_lr` at the last step.
    Cosine {
        /// Peak rate.
        lr: f64,
        /// Final rate.
        #[serde(default)]
        min_lr: f64,
        /// Warm-up steps.
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Cosine annealing with warm restarts, period `t0` steps growing by `t_mult`.
    WarmRestarts {
        /// Peak rate.
        lr: f64,
        /// First period in steps.
        t0: u64,
        /// Period multiplier (≥ 1).
        #[serde(default = "one")]
        t_mult: u64,
        /// Minimum rate.
        #[serde(default)]
        eta_min: f64,
    },
}

fn one() -> u64 {
    1
}

impl LrSchedule {
    /// Checks the parameters; returns a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            LrSchedule::Steps { lrs, stages, .. } => {
                if lrs.len() != stages.len() + 1 {
                    return Err(format!("steps: {} rates need {} stages, got {}", lrs.len(), lrs.len().saturating_sub(1), stages.len()));
                }
                if stages.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("steps: stages must increase".into());
                }
            }
            LrSchedule::WarmRestarts { t0, t_mult, .. } if *t0 == 0 || *t_mult == 0 => {
                return Err("warm-restarts: t0 and t_mult must be at least 1".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// The rate at optimiser step `step` (0-based) of epoch `epoch` (0-based), for a run of
    /// `total_steps` steps.
    pub fn lr(&self, step: u64, epoch: u64, total_steps: u64) -> f64 {
        let warm = |lr: f64, warmup: u64| if step < warmup { lr * (step + 1) as f64 / warmup as f64 } else { lr };
        match self {
            LrSchedule::Constant { lr } => *lr,
            LrSchedule::Steps { lrs, stages, warmup_steps } => {
                let k = stages.iter().filter(|&&s| epoch >= s).count();
                warm(lrs[k.min(lrs.len() - 1)], *warmup_steps)
            }
            LrSchedule::Cosine { lr, min_lr, warmup_steps } => {
                if step < *warmup_steps {
                    return warm(*lr, *warmup_steps);
                }
                let span = total_steps.saturating_sub(*warmup_steps).max(1) as f64;
                let x = ((step - warmup_steps) as f64 / span).min(1.0);
                min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * x).cos())
            }
            LrSchedule::WarmRestarts { lr, t0, t_mult, eta_min } => {
                let (t_cur, t_i) = restart_position(step, *t0, *t_mult);
                eta_min + (lr - eta_min) * (1.0 + (std::f64::consts::PI * t_cur as f64 / t_i as f64).cos()) / 2.0
            }
        }
    }
}

/// Position `(T_cur, T_i)` of `step` inside its restart period.
fn restart_position(step: u64, t0: u64, t_mult: u64) -> (u64, u64) {
    let (mut start, mut period) = (0u64, t0.max(1));
    while step >= start + period {
        start += period;
        period = period.saturating_mul(t_mult.max(1));
    }
    (step - start, period)
}

/// EMA warm-up settings (IDiff-Face: `inv_gamma` 1, `power` 0.75, `max_value` 0.9999).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    /// γ⁻¹.
    #[serde(default = "one_f")]
    pub inv_gamma: f64,
    /// p.
    #[serde(default = "power")]
    pub power: f64,
    /// Upper clamp.
    #[serde(default = "max_value")]
    pub max_value: f64,
}

fn one_f() -> f64 {
    1.0
}
fn power() -> f64 {
    0.75
}
fn max_value() -> f64 {
    0.9999
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { inv_gamma: 1.0, power: 0.75, max_value: 0.9999 }
    }
}

/// The EMA decay at update `n` (0-based): `clamp(1 − (1 + n/γ⁻¹)^−p, 0, max)`; 0 at the first
/// update, so the average starts as a copy of the model.
pub fn ema_decay(cfg: &EmaConfig, n: u64) -> f64 {
    let v = 1.0 - (1.0 + n as f64 / cfg.inv_gamma).powf(-cfg.power);
    v.clamp(0.0, cfg.max_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_restarts_match_the_torch_formula() {
        let s = LrSchedule::WarmRestarts { lr: 1.0, t0: 4, t_mult: 2, eta_min: 0.0 };
        // periods [0,4) [4,12) [12,28)
        assert!((s.lr(0, 0, 0) - 1.0).abs() < 1e-12);
        assert!((s.lr(2, 0, 0) - 0.5).abs() < 1e-12);
        assert!((s.lr(4, 0, 0) - 1.0).abs() < 1e-12);
        assert!((s.lr(8, 0, 0) - 0.5).abs() < 1e-12);
        assert!((s.lr(12, 0, 0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn steps_follow_stages_and_warm_up() {
        let s = LrSchedule::Steps { lrs: vec![0.1, 0.01, 0.001], stages: vec![2, 4], warmup_steps: 10 };
        assert!((s.lr(4, 0, 100) - 0.05).abs() < 1e-12);
        assert!((s.lr(20, 1, 100) - 0.1).abs() < 1e-12);
        assert!((s.lr(20, 2, 100) - 0.01).abs() < 1e-12);
        assert!((s.lr(50, 9, 100) - 0.001).abs() < 1e-12);
        assert!(s.validate().is_ok());
        assert!(LrSchedule::Steps { lrs: vec![0.1], stages: vec![2], warmup_steps: 0 }.validate().is_err());
    }

    #[test]
    fn cosine_ends_at_min() {
        let s = LrSchedule::Cosine { lr: 1.0, min_lr: 0.1, warmup_steps: 2 };
        assert!((s.lr(0, 0, 10) - 0.5).abs() < 1e-12);
        assert!((s.lr(2, 0, 10) - 1.0).abs() < 1e-12);
        assert!((s.lr(10, 0, 10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn ema_decay_warms_up() {
        let c = EmaConfig::default();
        assert_eq!(ema_decay(&c, 0), 0.0);
        assert!((ema_decay(&c, 1) - (1.0 - 2f64.powf(-0.75))).abs() < 1e-12);
        assert_eq!(ema_decay(&c, u64::MAX / 2), 0.9999);
    }
}
