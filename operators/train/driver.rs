//! The training driver, one for every task: canonical order and checks of the rows, the epoch
//! loop (keyed shuffles, batches, flips, learning-rate schedule), resume from the checkpoint,
//! the evaluation schedule, the per-epoch statistics and log line, the checkpoint written
//! every epoch and the final files. A task ([`TrainTask`]) supplies its parameters, its model
//! and optimiser step, its evaluation (if any) and its checkpoint tensors.

use super::data::{self, Example, ResumePoint};
use super::params::CommonParams;
use super::EpochStats;
use candle_core::Tensor;
use idflow_models::train::schedule::LrSchedule;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Checkpoint file name inside `output` (weights, optimiser state, epoch, step, history).
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// The rows a task trains on, in canonical order (identity, sample, arrival).
pub struct TrainingSet {
    /// The examples.
    pub examples: Vec<Example>,
    /// Dense identity labels `0..classes`, one per example.
    pub labels: Vec<u32>,
    /// Number of identities.
    pub classes: usize,
}

/// What one optimiser step reports.
#[derive(Clone, Copy, Debug)]
pub struct StepLoss {
    /// Mean loss of the batch.
    pub loss: f64,
    /// Rows classified correctly (tasks with a training accuracy).
    pub correct: Option<usize>,
    /// A further per-batch mean the epoch's log line reports (its name and value).
    pub logged: Option<(&'static str, f64)>,
}

impl StepLoss {
    /// Just the loss.
    pub fn loss(loss: f64) -> Self {
        Self { loss, correct: None, logged: None }
    }
}

/// One task of `train`, as the driver runs it.
pub trait TrainTask: Sized {
    /// The task's own parameters (besides [`CommonParams`]).
    type Params: DeserializeOwned;
    /// The resolved, validated settings of a node, made at build time.
    type Setup: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// The name after `task:` (also in the checkpoint's metadata).
    const NAME: &'static str;
    /// What one input row is called in messages.
    const ROW: &'static str;
    /// What the throughput counts.
    const UNIT: &'static str = "images";
    /// The smallest batch trained: an epoch's shorter last batch is dropped.
    const MIN_BATCH: usize = 1;

    /// Resolves and checks the parameters; errors name the field.
    fn resolve(common: &CommonParams, params: Self::Params) -> Result<Self::Setup, (&'static str, String)>;
    /// The shape `[c, h, w]` of one input row (flips mirror the last axis).
    fn row_shape(setup: &Self::Setup) -> [usize; 3];
    /// A freshly initialised model and optimiser for `set` (keyed by `seed`); `workers` sizes
    /// thread pools of evaluations.
    fn new(setup: &Self::Setup, common: &CommonParams, set: &TrainingSet, seed: u64, workers: usize) -> Result<Self, String>;
    /// The learning-rate schedule.
    fn lr(&self) -> &LrSchedule;
    /// Augments row `row` of `epoch` after the flip (keyed; nothing by default).
    fn augment(&self, _values: &mut Vec<f32>, _epoch: u64, _row: usize) {}
    /// Optimiser steps taken.
    fn step(&self) -> u64;
    /// One optimiser step on the rows `rows` of `set`, stacked (augmented) into `batch`.
    fn train_step(&mut self, set: &TrainingSet, rows: &[usize], batch: &Tensor, lr: f64) -> Result<StepLoss, String>;
    /// Evaluates every this many epochs (and after the last); `None`: the task does not evaluate.
    fn eval_every(&self) -> Option<u64> {
        None
    }
    /// The evaluations after epoch `epoch` (1-based), one per `eval_*` statistics column.
    fn evaluate(&mut self, _epoch: u64) -> Result<Vec<Option<f64>>, String> {
        Ok(Vec::new())
    }
    /// Everything a resume needs (weights and optimiser state).
    fn state(&self) -> Result<Vec<(String, Tensor)>, String>;
    /// Checkpoint metadata of the task besides task, epoch, step and history.
    fn checkpoint_meta(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Restores [`state`](Self::state) from the checkpoint at `path`.
    fn load_state(&mut self, resume: &ResumePoint, path: &Path) -> Result<(), String>;
    /// Writes the final files into `output`.
    fn write_outputs(&self, output: &Path) -> Result<(), String>;
}

/// The training set in canonical order, checked against what the task takes.
fn training_set<T: TrainTask>(setup: &T::Setup, examples: Vec<Example>) -> Result<TrainingSet, String> {
    let (examples, labels, classes) = data::canonical(examples);
    let n = examples.len();
    if n < T::MIN_BATCH.max(1) {
        return Err(if T::MIN_BATCH > 1 {
            format!("{} training needs at least {} rows, got {n}", T::NAME, T::MIN_BATCH)
        } else {
            format!("{} training got no rows", T::NAME)
        });
    }
    let [c, h, w] = T::row_shape(setup);
    if let Some(bad) = examples.iter().find(|e| e.values.len() != c * h * w) {
        return Err(format!(
            "identity {} sample {}: {} has {} values, expected {c}×{h}×{w}",
            bad.identity,
            bad.sample,
            T::ROW,
            bad.values.len()
        ));
    }
    Ok(TrainingSet { examples, labels, classes })
}

/// The running sums of one epoch.
#[derive(Default)]
struct EpochSums {
    loss: f64,
    correct: Option<usize>,
    logged: Option<(&'static str, f64)>,
    seen: usize,
    lr: f64,
}

impl EpochSums {
    fn add(&mut self, s: StepLoss, rows: usize, lr: f64) {
        self.loss += s.loss * rows as f64;
        if let Some(c) = s.correct {
            self.correct = Some(self.correct.unwrap_or(0) + c);
        }
        if let Some((name, v)) = s.logged {
            self.logged = Some((name, self.logged.map_or(0.0, |l| l.1) + v * rows as f64));
        }
        self.seen += rows;
        self.lr = lr;
    }

    fn mean(&self, sum: f64) -> f64 {
        sum / self.seen.max(1) as f64
    }
}

/// Trains task `T` on `examples` from the node's settings: resumes from the checkpoint when
/// asked, runs the remaining epochs (writing the checkpoint after each), writes the final
/// files; returns the statistics of every epoch (those of a resumed run's earlier epochs too).
pub fn run<T: TrainTask>(
    setup: &T::Setup,
    common: &CommonParams,
    seed: u64,
    workers: usize,
    examples: Vec<Example>,
) -> Result<Vec<EpochStats>, String> {
    let set = training_set::<T>(setup, examples)?;
    let n = set.examples.len();
    let dims = T::row_shape(setup);
    let mut task = T::new(setup, common, &set, seed, workers)?;
    let ckpt_path = common.output.join(CHECKPOINT);
    let (mut start_epoch, mut out) = (0, Vec::new());
    if let Some(r) = data::resume_point(&ckpt_path, common.resume)? {
        task.load_state(&r, &ckpt_path)?;
        start_epoch = r.epoch;
        out = r.history;
    }
    let bs = common.batch_size;
    // a last batch shorter than MIN_BATCH is dropped (face recognition: BatchNorm needs two rows)
    let steps_per_epoch = n / bs + usize::from(n % bs >= T::MIN_BATCH);
    let total_steps = steps_per_epoch as u64 * common.epochs;
    let last_epoch = common.last_epoch();
    for epoch in start_epoch..last_epoch {
        let t0 = Instant::now();
        let order = data::epoch_order(n, seed, epoch);
        let mut sums = EpochSums::default();
        for chunk in order.chunks(bs).filter(|c| c.len() >= T::MIN_BATCH) {
            let mut rows: Vec<Vec<f32>> = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let mut v = set.examples[i].values.clone();
                if common.flip && data::flipped(seed, epoch, i) {
                    data::flip_chw(&mut v, dims[2]);
                }
                task.augment(&mut v, epoch, i);
                rows.push(v);
            }
            let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            let batch = data::stack(&refs, &dims)?;
            let lr = task.lr().lr(task.step(), epoch, total_steps);
            let s = task.train_step(&set, chunk, &batch, lr)?;
            if !s.loss.is_finite() {
                return Err(format!("epoch {}: loss became {} at step {}", epoch + 1, s.loss, task.step()));
            }
            sums.add(s, chunk.len(), lr);
        }
        let secs = t0.elapsed().as_secs_f64();
        let mut stats = EpochStats {
            epoch: epoch + 1,
            step: task.step(),
            loss: sums.mean(sums.loss),
            accuracy: sums.correct.map(|c| sums.mean(c as f64)),
            lr: sums.lr,
            images_per_s: sums.seen as f64 / secs.max(1e-9),
            evals: Vec::new(),
        };
        let mut extra = String::new();
        if let Some(a) = stats.accuracy {
            extra += &format!(" accuracy {a:.3}");
        }
        if let Some((name, v)) = sums.logged {
            extra += &format!(" {name} {:.5}", sums.mean(v));
        }
        tracing::info!(
            "train: epoch {}/{} step {} loss {:.5}{extra} lr {:.2e} {:.1} {}/s",
            stats.epoch,
            common.epochs,
            stats.step,
            stats.loss,
            stats.lr,
            stats.images_per_s,
            T::UNIT
        );
        if let Some(every) = task.eval_every() {
            if (epoch + 1) % every.max(1) == 0 || epoch + 1 == last_epoch {
                stats.evals = task.evaluate(epoch + 1)?;
            }
        }
        out.push(stats);
        let mut meta = HashMap::from([
            ("task".to_string(), T::NAME.to_string()),
            ("epoch".to_string(), (epoch + 1).to_string()),
            ("step".to_string(), task.step().to_string()),
        ]);
        meta.extend(task.checkpoint_meta());
        data::write_checkpoint(&ckpt_path, &task.state()?, data::with_history(meta, &out))?;
    }
    task.write_outputs(&common.output)?;
    Ok(out)
}
