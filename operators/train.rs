//! `train`: a sink that trains a model on every row it receives and writes checkpoints.
//!
//! * `task: face-recognition` — rows with an `image` (encoded bytes, or a decoded tensor
//!   column) and an `identity`; an IResNet (any width/depth/input size, or the published
//!   `iresnet18|34|50|100`) or TFace `ir18|34|50|100` with an ArcFace / CosFace /
//!   ElasticFace-Arc head, SGD (momentum, weight decay off BatchNorm), `steps` / `cosine`
//!   learning-rate schedules, keyed horizontal flips, optional gradient clipping, periodic
//!   10-fold verification on `.bin` benchmarks. Writes `checkpoint.safetensors` (weights,
//!   momentum buffers, epoch, step) every epoch and `backbone.safetensors` (official keys,
//!   loadable by `embed` for the published topology) at the end.
//! * `task: diffusion` — rows with a `latent` tensor and (optionally) a `context`; IDiff-Face's
//!   ConditionalUNet trained on eps-MSE with CPD, Adam + CosineAnnealingWarmRestarts per step,
//!   EMA. Writes `checkpoint.safetensors` (model, EMA, Adam moments) every epoch and
//!   `model.safetensors` / `ema_averaged_model.safetensors` in the official wrapper layout
//!   (`eps_model.*` + schedule buffers), loadable by `diffuse`.
//! * `task: autoencoder` — a VQ first stage on face images (reconstruction + commitment, EMA
//!   codebook), written as IDiff-Face's split `first_stage_encoder_state_dict` /
//!   `first_stage_decoder_state_dict` files (safetensors) plus a resumable checkpoint.
//!
//! The node receives all rows on one worker (`Routing::Worker(worker)`, worker 0 by default),
//! buffers them, puts them into a canonical order and, once its input is complete, trains on a
//! thread of its own (`Task::finish_in_background`), so the worker goes on serving the other
//! nodes. Each epoch gives one row of statistics (`epoch`, `step`, `loss`, `accuracy`, `lr`,
//! `images_per_s`, `eval_*`). `resume: true` continues from the last checkpoint's epoch with its
//! optimiser state: every random draw is keyed by (seed, epoch, row) or (seed, step), so a
//! resumed run repeats an uninterrupted one exactly; the checkpoint also holds the statistics
//! of the epochs already run, and a resumed run emits the whole history.
//!
//! One driver (`driver::run`) trains every task: the epoch loop, resume, the evaluation
//! schedule, the statistics and the checkpoint files are written once; each task implements
//! [`TrainTask`] (its own parameter struct, model, step, evaluation and files). A field of
//! another task on a node is a configuration error naming it (`params::split`).

mod autoencoder;
mod data;
mod diffusion;
mod driver;
mod face;
mod params;

use super::support::model_ref::Backend;
use super::{
    BackgroundFinish, BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Routing, Started, Task,
    TaskContext,
};
use crate::spec::ConfigError;
use arrow_array::{Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::path::PathBuf;
use std::sync::Arc;

pub use autoencoder::{AutoencoderParams, AutoencoderSetup, AutoencoderTask};
pub use diffusion::{DiffusionParams, DiffusionSetup, DiffusionTask};
pub use driver::{StepLoss, TrainTask, TrainingSet, CHECKPOINT};
pub use face::{BackboneParams, FaceParams, FaceSetup, FaceTask, HeadParams};
pub use params::{CommonParams, TaskKind};

/// Registry entry. The parameters are the common ones ([`CommonParams`]) and those of the
/// node's task (prefixed with the task in their documentation).
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "train",
        role: Role::Sink,
        summary: "Train a face recognizer or an identity-conditioned denoiser; checkpoints, resume",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/train.md");

/// Resolved, validated settings of one node: its task's setup.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Face recognition.
    Face(FaceSetup),
    /// Diffusion.
    Diffusion(DiffusionSetup),
    /// Autoencoder.
    Autoencoder(AutoencoderSetup),
}

impl Resolved {
    /// The default input column of the task.
    fn default_column(&self) -> &'static str {
        match self {
            Resolved::Face(_) | Resolved::Autoencoder(_) => "image",
            Resolved::Diffusion(_) => "latent",
        }
    }

    /// The side encoded images are decoded at (0: the task takes tensors only).
    fn decode_size(&self) -> u32 {
        match self {
            Resolved::Face(f) => f.size,
            Resolved::Autoencoder(a) => a.size,
            Resolved::Diffusion(_) => 0,
        }
    }

    /// The context column (diffusion).
    fn context(&self) -> Option<&str> {
        match self {
            Resolved::Diffusion(d) => d.params.context.as_deref(),
            _ => None,
        }
    }

    /// The verification benchmarks (face recognition).
    fn eval(&self) -> &[PathBuf] {
        match self {
            Resolved::Face(f) => &f.params.eval,
            _ => &[],
        }
    }
}

/// Parses the task's own parameters from `node` (already reduced to them) and resolves them.
fn resolve<T: TrainTask>(node: &crate::spec::NodeSpec, common: &CommonParams) -> Result<T::Setup, ConfigError> {
    T::resolve(common, node.parse_params()?).map_err(|(f, m)| node.error(Some(f), m))
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let (common, own) = params::split(&ctx.node)?;
    common.validate().map_err(|(f, m)| ctx.node.error(Some(f), m))?;
    let resolved = match common.task {
        TaskKind::FaceRecognition => Resolved::Face(resolve::<FaceTask>(&own, &common)?),
        TaskKind::Diffusion => Resolved::Diffusion(resolve::<DiffusionTask>(&own, &common)?),
        TaskKind::Autoencoder => Resolved::Autoencoder(resolve::<AutoencoderTask>(&own, &common)?),
    };
    Ok(Arc::new(Train { common, resolved, seed: ctx.seed, node: ctx.node.id.clone() }))
}

struct Train {
    common: CommonParams,
    resolved: Resolved,
    seed: u64,
    node: String,
}

/// The per-epoch statistics rows `train` emits; one `eval_<benchmark>` accuracy column per
/// verification file (null in epochs without evaluation).
pub fn stats_schema(eval: &[PathBuf]) -> SchemaRef {
    let mut fields = vec![
        Field::new("epoch", DataType::UInt64, false),
        Field::new("step", DataType::UInt64, false),
        Field::new("loss", DataType::Float64, false),
        Field::new("accuracy", DataType::Float64, true),
        Field::new("lr", DataType::Float64, false),
        Field::new("images_per_s", DataType::Float64, false),
    ];
    fields.extend(eval.iter().map(|p| Field::new(format!("eval_{}", benchmark_name(p)), DataType::Float64, true)));
    Arc::new(Schema::new(fields))
}

/// A benchmark's name: its file stem.
pub fn benchmark_name(path: &std::path::Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Statistics of one epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// Epoch number (1-based, counting resumed epochs).
    pub epoch: u64,
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Training accuracy (face recognition).
    pub accuracy: Option<f64>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// 10-fold verification accuracy per benchmark (in `eval` order), when evaluated.
    pub evals: Vec<Option<f64>>,
}

fn stats_batch(stats: &[EpochStats], eval: &[PathBuf]) -> OpResult<RecordBatch> {
    let mut columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(UInt64Array::from(stats.iter().map(|s| s.epoch).collect::<Vec<_>>())),
        Arc::new(UInt64Array::from(stats.iter().map(|s| s.step).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(stats.iter().map(|s| s.loss).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(stats.iter().map(|s| s.accuracy).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(stats.iter().map(|s| s.lr).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(stats.iter().map(|s| s.images_per_s).collect::<Vec<_>>())),
    ];
    for k in 0..eval.len() {
        columns.push(Arc::new(Float64Array::from(stats.iter().map(|s| s.evals.get(k).copied().flatten()).collect::<Vec<_>>())));
    }
    Ok(RecordBatch::try_new(stats_schema(eval), columns)?)
}

impl Operator for Train {
    fn outputs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("trained model", self.common.output.clone())]
    }

    fn routing(&self) -> Routing {
        Routing::Worker(self.common.worker)
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        let column = self.common.column.as_deref().unwrap_or(self.resolved.default_column());
        match &self.resolved {
            Resolved::Face(_) | Resolved::Autoencoder(_) => vec![
                ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32)),
                ColumnReq::new(column, if column == "image" { ColumnType::Bytes } else { ColumnType::F32Tensor }),
            ],
            Resolved::Diffusion(_) => {
                let mut v = vec![ColumnReq::new(column, ColumnType::F32Tensor)];
                if let Some(c) = self.resolved.context() {
                    v.push(ColumnReq::new(c, ColumnType::F32Tensor));
                }
                v
            }
        }
    }

    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(stats_schema(self.resolved.eval()))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        if matches!(&self.resolved, Resolved::Face(f) if !f.params.eval.is_empty() && f.params.eval_backend == Backend::Onnx) {
            // the evaluations run on ONNX Runtime: a missing library fails now, not after training
            super::support::loading::require_ort().map_err(|e| OpError::new(format!("node `{}`: field `eval_backend`: {e}", self.node)))?;
        }
        std::fs::create_dir_all(&self.common.output)
            .map_err(|e| OpError::new(format!("node `{}`: cannot create {}: {e}", self.node, self.common.output.display())))?;
        Ok(Started::Task(Box::new(TrainTaskState {
            common: self.common.clone(),
            resolved: self.resolved.clone(),
            seed: self.seed,
            node: self.node.clone(),
            ctx: ctx.clone(),
            examples: Vec::new(),
            arrivals: 0,
        })))
    }
}

struct TrainTaskState {
    common: CommonParams,
    resolved: Resolved,
    seed: u64,
    node: String,
    ctx: TaskContext,
    examples: Vec<data::Example>,
    arrivals: u64,
}

impl Task for TrainTaskState {
    fn process(&mut self, _port: usize, batch: RecordBatch, _out: &mut Emit) -> OpResult<()> {
        let node = &self.node;
        let column = self.common.column.as_deref().unwrap_or(self.resolved.default_column());
        let values = data::input_rows(&batch, column, self.resolved.decode_size())
            .map_err(|e| OpError::new(format!("node `{node}`: column `{column}`: {e}")))?;
        let extras = match self.resolved.context() {
            Some(c) => data::input_rows(&batch, c, 0).map_err(|e| OpError::new(format!("node `{node}`: column `{c}`: {e}")))?,
            None => vec![Vec::new(); batch.num_rows()],
        };
        for (i, (values, extra)) in values.into_iter().zip(extras).enumerate() {
            let (identity, sample) = match data::row_key(&batch, i, self.arrivals) {
                Ok(k) => k,
                Err(e) => {
                    self.ctx.bad_row(OpError::new(format!("node `{node}`: row {i}: {e}")))?;
                    continue;
                }
            };
            self.arrivals += 1;
            self.examples.push(data::Example { identity, sample, values, extra });
        }
        Ok(())
    }

    /// Training runs on its own thread, so a worker that trains one node keeps generating the
    /// inputs of the others (several `train` nodes of a pipeline train side by side).
    fn finish_in_background(&mut self) -> Option<BackgroundFinish> {
        if self.examples.is_empty()
            && Some(self.ctx.partition.worker) != Routing::Worker(self.common.worker).target(self.ctx.partition.peers)
        {
            // rows are routed to the training worker; the others have nothing to train
            return None;
        }
        let examples = std::mem::take(&mut self.examples);
        let (resolved, common, seed, node) = (self.resolved.clone(), self.common.clone(), self.seed, self.node.clone());
        let workers = self.ctx.local_workers;
        Some(Box::new(move || {
            let stats = match &resolved {
                Resolved::Face(setup) => driver::run::<FaceTask>(setup, &common, seed, workers, examples),
                Resolved::Diffusion(setup) => driver::run::<DiffusionTask>(setup, &common, seed, workers, examples),
                Resolved::Autoencoder(setup) => driver::run::<AutoencoderTask>(setup, &common, seed, workers, examples),
            }
            .map_err(|e| OpError::new(format!("node `{node}`: {e}")))?;
            let mut out = Emit::default();
            out.rows.push(stats_batch(&stats, resolved.eval())?);
            Ok(out)
        }))
    }
}
