//! Seeded random weights for a model configuration, for benchmarks and native-vs-ONNX checks of
//! configurations without reference checkpoints (e.g. the full-size UNet).
//!
//! The recipe follows the reference fixtures' redraw: norm weights `1 + 0.05·N(0,1)`, biases
//! `0.05·N(0,1)`, BatchNorm running variances `0.5 + U(0,1)`, other weights
//! `max(0.05, 1/√fan_in)·N(0,1)`. Draws come from the project's keyed RNG, one stream per key.

use candle_core::{DType, Device, Shape, Tensor};
use idflow_dataset::rng::{derive_seed, KeyedRng};

use crate::io::checkpoint::StateDict;

fn key_hash(key: &str) -> u64 {
    // FNV-1a: a stable, platform-independent key → stream mapping
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A state dict with seeded random values for every `(key, shape)` (e.g. from
/// [`crate::io::checkpoint::parameter_shapes`]).
pub fn random_state_dict(shapes: &[(String, Shape)], seed: u64) -> candle_core::Result<StateDict> {
    let mut entries = Vec::with_capacity(shapes.len());
    for (key, shape) in shapes {
        let mut rng = KeyedRng::new(&[derive_seed(&[seed, key_hash(key)])]);
        let n = shape.elem_count();
        let dims = shape.dims();
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let mut values = vec![0f32; n];
        if leaf == "num_batches_tracked" {
            entries.push((key.clone(), Tensor::zeros(shape, DType::I64, &Device::Cpu)?));
            continue;
        }
        match leaf {
            "running_var" => values.iter_mut().for_each(|v| *v = (0.5 + rng.uniform()) as f32),
            "running_mean" | "bias" => {
                rng.fill_normal_f32(&mut values);
                let s = if leaf == "bias" { 0.05 } else { 0.1 };
                values.iter_mut().for_each(|v| *v *= s);
            }
            _ if dims.len() == 1 => {
                rng.fill_normal_f32(&mut values);
                values.iter_mut().for_each(|v| *v = 1.0 + 0.05 * *v);
            }
            _ => {
                rng.fill_normal_f32(&mut values);
                let fan_in = (n / dims[0].max(1)).max(1) as f32;
                let s = (1.0 / fan_in.sqrt()).max(0.05);
                values.iter_mut().for_each(|v| *v *= s);
            }
        }
        entries.push((key.clone(), Tensor::from_vec(values, shape, &Device::Cpu)?));
    }
    Ok(StateDict::new(format!("random weights (seed {seed})"), entries))
}
