//! The training set as the `train` sink buffers it: rows collected from every worker, put in a
//! canonical order (identity, sample, arrival) so training does not depend on how the engine
//! interleaved batches; images decoded once to normalised CHW floats; keyed per-epoch shuffles
//! and flips; checkpoint files read and written atomically.

use super::EpochStats;
use crate::batch::{binary_column, column, id_value};
use crate::fsutil::atomic_write;
use crate::operators::support::columns::tensor_rows;
use crate::operators::support::images::decode_image;
use arrow_array::{Array, RecordBatch};
use candle_core::Tensor;
use idflow_dataset::rng::KeyedRng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One buffered training example.
#[derive(Clone, Debug)]
pub struct Example {
    /// Identity as it arrived.
    pub identity: u64,
    /// Sample index (arrival order within the identity when the input has no `sample`).
    pub sample: u64,
    /// The input tensor, row-major.
    pub values: Vec<f32>,
    /// An extra tensor (the diffusion context), if any.
    pub extra: Vec<f32>,
}

/// Reads the identity and sample of row `i` (`sample` is optional).
pub fn row_key(batch: &RecordBatch, i: usize, arrival: u64) -> Result<(u64, u64), String> {
    let identity = column(batch, "identity")?;
    let id = id_value(identity.as_ref(), i).ok_or("column `identity` must be UInt32 or UInt64")?;
    let sample = match batch.column_by_name("sample") {
        Some(s) => id_value(s.as_ref(), i).ok_or("column `sample` must be UInt32 or UInt64")?,
        None => arrival,
    };
    Ok((id, sample))
}

/// The value rows of `name` in `batch`: a tensor column as it is, or (for `Binary`) decoded
/// images at `size`. Errors name the column and row.
pub fn input_rows(batch: &RecordBatch, name: &str, size: u32) -> Result<Vec<Vec<f32>>, String> {
    let col = column(batch, name)?;
    if matches!(col.data_type(), arrow_schema::DataType::Binary) {
        let bytes = binary_column(batch, name)?;
        (0..batch.num_rows())
            .map(|i| {
                if bytes.is_null(i) {
                    return Err(format!("row {i}: `{name}` is null"));
                }
                decode_image(bytes.value(i), size).map_err(|e| format!("row {i}: {e}"))
            })
            .collect()
    } else {
        let (values, width) = tensor_rows(batch, name)?;
        Ok(values.chunks(width.max(1)).map(|c| c.to_vec()).collect())
    }
}

/// Sorts examples into the canonical order and maps identities to dense labels `0..n`.
pub fn canonical(mut examples: Vec<Example>) -> (Vec<Example>, Vec<u32>, usize) {
    examples.sort_by_key(|e| (e.identity, e.sample));
    let mut dense: BTreeMap<u64, u32> = BTreeMap::new();
    for e in &examples {
        let next = dense.len() as u32;
        dense.entry(e.identity).or_insert(next);
    }
    let labels = examples.iter().map(|e| dense[&e.identity]).collect();
    let classes = dense.len();
    (examples, labels, classes)
}

/// The example order of `epoch`: a Fisher–Yates shuffle keyed by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = KeyedRng::new(&[seed, 0xe90c, epoch]);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Whether example `row` is flipped in `epoch` (probability ½, keyed by (seed, epoch, row)).
pub fn flipped(seed: u64, epoch: u64, row: usize) -> bool {
    KeyedRng::new(&[seed, 0xf119, epoch, row as u64]).chance(0.5)
}

/// Mirrors CHW values along the width axis in place.
pub fn flip_chw(values: &mut [f32], width: usize) {
    for line in values.chunks_mut(width.max(1)) {
        line.reverse();
    }
}

/// torchvision's `RandomResizedCrop(scale = (0.2, 1), ratio = (3/4, 4/3))` on a square CHW
/// image of side `size`, applied with probability `p` (TFace's augmentation), keyed by
/// (seed, epoch, row): a crop of random area and aspect ratio (10 tries, then the full image)
/// resized back to `size` with bilinear interpolation (half-pixel centres).
pub fn random_resized_crop(values: &mut Vec<f32>, size: usize, p: f64, seed: u64, epoch: u64, row: usize) {
    let mut rng = KeyedRng::new(&[seed, 0xc409, epoch, row as u64]);
    if p <= 0.0 || !rng.chance(p) {
        return;
    }
    let area = (size * size) as f64;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    let mut crop = (0, 0, size, size);
    for _ in 0..10 {
        let target = area * rng.range(0.2, 1.0);
        let ratio = rng.range(log_lo, log_hi).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= size && h <= size {
            let top = rng.below((size - h + 1) as u64) as usize;
            let left = rng.below((size - w + 1) as u64) as usize;
            crop = (top, left, h, w);
            break;
        }
    }
    let (top, left, h, w) = crop;
    let plane = size * size;
    let mut out = vec![0f32; values.len()];
    let sample = |src: &[f32], y: f64, x: f64| -> f32 {
        let y = y.clamp(0.0, (h - 1) as f64);
        let x = x.clamp(0.0, (w - 1) as f64);
        let (y0, x0) = (y.floor() as usize, x.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
        let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
        let at = |yy: usize, xx: usize| src[(top + yy) * size + left + xx];
        let a = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
        let b = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
        a * (1.0 - fy) + b * fy
    };
    for (c, dst) in out.chunks_mut(plane).enumerate() {
        let src = &values[c * plane..(c + 1) * plane];
        for oy in 0..size {
            let y = (oy as f64 + 0.5) * h as f64 / size as f64 - 0.5;
            for ox in 0..size {
                let x = (ox as f64 + 0.5) * w as f64 / size as f64 - 0.5;
                dst[oy * size + ox] = sample(src, y, x);
            }
        }
    }
    *values = out;
}

/// Stacks rows into a `[B, dims...]` tensor.
pub fn stack(rows: &[&[f32]], dims: &[usize]) -> Result<Tensor, String> {
    let mut shape = vec![rows.len()];
    shape.extend_from_slice(dims);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, shape, &candle_core::Device::Cpu).map_err(|e| e.to_string())
}

/// Writes named tensors + metadata as safetensors, atomically.
pub fn write_checkpoint(path: &Path, entries: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<(), String> {
    let bytes = idflow_models::train::state::encode_safetensors(entries, metadata).map_err(|e| format!("{}: {e}", path.display()))?;
    atomic_write(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes weights in the `torch.save` zip layout (float32), so the official PyTorch code loads
/// them with `torch.load`.
pub fn write_torch_state_dict(path: &Path, entries: &[(String, Tensor)]) -> Result<(), String> {
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let values = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("{}: tensor `{name}`: {e}", path.display()))?;
        tensors.push((name.clone(), t.dims().to_vec(), values));
    }
    idflow_dataset::formats::torch_save::write_state_dict(path, &tensors).map_err(|e| e.to_string())
}

/// A model's final files: its safetensors name, its `torch.save` name and its tensors.
pub type ModelFiles<'a> = (&'a str, &'a str, &'a [(String, Tensor)]);

/// Writes each model `(safetensors name, torch.save name, tensors)` into `output` twice: as
/// safetensors with `metadata`, and as a `torch.save` archive for the official PyTorch code.
pub fn write_model_files(output: &Path, files: &[ModelFiles<'_>], metadata: &HashMap<String, String>) -> Result<(), String> {
    for (safetensors, _, tensors) in files {
        write_checkpoint(&output.join(safetensors), tensors, metadata.clone())?;
    }
    for (_, torch, tensors) in files {
        write_torch_state_dict(&output.join(torch), tensors)?;
    }
    Ok(())
}

/// Reads a checkpoint written by [`write_checkpoint`].
pub type Checkpoint = (BTreeMap<String, Tensor>, HashMap<String, String>);

/// Reads a safetensors checkpoint with its metadata.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    idflow_models::train::state::decode_safetensors(&bytes, &path.display().to_string()).map_err(|e| e.to_string())
}

/// A checkpoint to continue from (`resume: true` and the file exists).
pub struct ResumePoint {
    /// The saved tensors (weights and optimiser state).
    pub entries: BTreeMap<String, Tensor>,
    /// The saved metadata.
    pub meta: HashMap<String, String>,
    /// First epoch still to run.
    pub epoch: u64,
    /// Optimiser steps already taken.
    pub step: u64,
    /// Statistics of the epochs already run, so a resumed run reports its whole history.
    pub history: Vec<EpochStats>,
}

/// Checkpoint metadata key holding the per-epoch statistics (JSON).
const HISTORY: &str = "history";

/// Adds the statistics of the epochs run so far to a checkpoint's metadata.
pub fn with_history(mut meta: HashMap<String, String>, history: &[EpochStats]) -> HashMap<String, String> {
    meta.insert(HISTORY.to_string(), serde_json::to_string(history).unwrap_or_default());
    meta
}

/// The per-epoch statistics stored in a checkpoint's metadata, up to `epoch` (checkpoints
/// written before the history was stored have none).
fn history(meta: &HashMap<String, String>, epoch: u64, path: &Path) -> Result<Vec<EpochStats>, String> {
    let Some(text) = meta.get(HISTORY) else { return Ok(Vec::new()) };
    let mut h: Vec<EpochStats> =
        serde_json::from_str(text).map_err(|e| format!("{}: checkpoint metadata `{HISTORY}` is not valid: {e}", path.display()))?;
    h.retain(|s| s.epoch <= epoch);
    Ok(h)
}

/// Reads the checkpoint at `path` when `resume` is set and it exists; logs where it resumes.
pub fn resume_point(path: &Path, resume: bool) -> Result<Option<ResumePoint>, String> {
    if !resume || !path.exists() {
        return Ok(None);
    }
    let (entries, meta) = read_checkpoint(path)?;
    let epoch = meta_u64(&meta, "epoch", path)?;
    let step = meta_u64(&meta, "step", path)?;
    let history = history(&meta, epoch, path)?;
    tracing::info!("train: resuming from {} at epoch {epoch}, step {step}", path.display());
    Ok(Some(ResumePoint { entries, meta, epoch, step, history }))
}

/// A metadata value parsed as an integer, naming the file on failure.
pub fn meta_u64(meta: &HashMap<String, String>, key: &str, path: &Path) -> Result<u64, String> {
    meta.get(key)
        .ok_or_else(|| format!("{}: checkpoint metadata has no `{key}`", path.display()))?
        .parse()
        .map_err(|e| format!("{}: checkpoint metadata `{key}` is not an integer: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_keyed_permutation() {
        let a = epoch_order(50, 7, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 7, 1));
        assert_ne!(a, epoch_order(50, 7, 2));
    }

    #[test]
    fn random_resized_crop_is_keyed_and_keeps_constant_images() {
        let size = 8;
        let ramp: Vec<f32> = (0..3 * size * size).map(|i| (i % size) as f32).collect();
        let mut never = ramp.clone();
        random_resized_crop(&mut never, size, 0.0, 1, 0, 0);
        assert_eq!(never, ramp);
        let (mut a, mut b) = (ramp.clone(), ramp.clone());
        random_resized_crop(&mut a, size, 1.0, 1, 0, 3);
        random_resized_crop(&mut b, size, 1.0, 1, 0, 3);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (0.0..=7.0).contains(v)), "interpolation stays within the source range");
        let mut flat = vec![0.25f32; 3 * size * size];
        random_resized_crop(&mut flat, size, 1.0, 1, 2, 5);
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn flip_mirrors_each_line() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        flip_chw(&mut v, 3);
        assert_eq!(v, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    }

    #[test]
    fn canonical_order_ignores_arrival() {
        let ex = |identity, sample| Example { identity, sample, values: vec![identity as f32], extra: vec![] };
        let (a, la, ca) = canonical(vec![ex(9, 1), ex(3, 0), ex(9, 0)]);
        let (b, lb, _) = canonical(vec![ex(9, 0), ex(9, 1), ex(3, 0)]);
        assert_eq!(
            a.iter().map(|e| (e.identity, e.sample)).collect::<Vec<_>>(),
            b.iter().map(|e| (e.identity, e.sample)).collect::<Vec<_>>()
        );
        assert_eq!(la, vec![0, 1, 1]);
        assert_eq!(la, lb);
        assert_eq!(ca, 2);
    }
}
