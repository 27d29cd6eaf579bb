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

mod autoencoder;
mod data;
mod diffusion;
mod face;

use super::support::model_ref::{Backend, ConfigRef};
use super::{
    BackgroundFinish, BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, ParamDoc, Role, Routing,
    Started, Task, TaskContext,
};
use crate::spec::ConfigError;
use arrow_array::{Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_models::train_loop::schedule::{EmaConfig, LrSchedule};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

pub use data::decode_image;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "train",
        role: Role::Sink,
        summary: "Train a face recognizer or an identity-conditioned denoiser; checkpoints, resume",
        params: PARAMS,
        build,
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "task", ty: "face-recognition | diffusion | autoencoder", default: "required", doc: "what to train" },
    ParamDoc { name: "output", ty: "path", default: "required", doc: "directory for checkpoints and final weights" },
    ParamDoc { name: "epochs", ty: "integer", default: "required", doc: "passes over the rows" },
    ParamDoc { name: "batch_size", ty: "integer", default: "32", doc: "rows per optimiser step" },
    ParamDoc { name: "lr", ty: "schedule map", default: "task default", doc: "{type: constant|steps|cosine|warm-restarts, ...}" },
    ParamDoc { name: "resume", ty: "bool", default: "false", doc: "continue from output/checkpoint.safetensors when present" },
    ParamDoc {
        name: "stop_after_epochs",
        ty: "integer",
        default: "none",
        doc: "stop (checkpointed) after this many epochs of the schedule",
    },
    ParamDoc { name: "flip", ty: "bool", default: "true", doc: "keyed horizontal flips (images; latents for diffusion)" },
    ParamDoc {
        name: "random_resized_crop",
        ty: "number",
        default: "0",
        doc: "face-recognition: probability of TFace's RandomResizedCrop(scale 0.2–1) (TFace: 0.2)",
    },
    ParamDoc { name: "clip_grad_norm", ty: "number", default: "none", doc: "clip the global gradient norm" },
    ParamDoc {
        name: "replicas",
        ty: "integer",
        default: "1",
        doc: "face-recognition: data-parallel threads per step, each on its part of the batch (BatchNorm statistics per part)",
    },
    ParamDoc { name: "column", ty: "string", default: "image | latent", doc: "input column (bytes or tensor)" },
    ParamDoc { name: "size", ty: "integer", default: "backbone input", doc: "face-recognition: decoded image side" },
    ParamDoc {
        name: "backbone",
        ty: "name | map",
        default: "iresnet50",
        doc: "iresnet18/34/50/100, ir18/34/50/100, or {layers, widths, num_features, input_size}",
    },
    ParamDoc { name: "head", ty: "map", default: "arcface s 64 m 0.5", doc: "{type: arcface|cosface|elasticface-arc, s, m, std}" },
    ParamDoc { name: "momentum", ty: "number", default: "0.9", doc: "SGD momentum" },
    ParamDoc { name: "weight_decay", ty: "number", default: "5e-4", doc: "SGD weight decay (not on BatchNorm)" },
    ParamDoc { name: "eval", ty: "[path]", default: "[]", doc: "verification .bin files, 10-fold accuracy with flip TTA" },
    ParamDoc { name: "eval_every", ty: "integer", default: "1", doc: "evaluate every n epochs (and at the end)" },
    ParamDoc {
        name: "eval_backend",
        ty: "onnx | native",
        default: "onnx",
        doc: "runs the evaluations' forwards: the backbone compiled in memory onto ONNX Runtime, or candle",
    },
    ParamDoc { name: "worker", ty: "integer", default: "0", doc: "worker that trains (mod workers): spread independent train nodes" },
    ParamDoc { name: "unet", ty: "preset | map | path", default: "idiff-face-ca", doc: "diffusion: UNet configuration" },
    ParamDoc { name: "context", ty: "string | null", default: "context", doc: "diffusion: context column (null: unconditional)" },
    ParamDoc { name: "latent_shape", ty: "[c, h, w]", default: "from field", doc: "diffusion: latent shape" },
    ParamDoc { name: "cpd", ty: "number", default: "UNet config", doc: "diffusion: contextual partial dropout probability" },
    ParamDoc { name: "uncond_probability", ty: "number", default: "0", doc: "diffusion: whole-context dropout to the empty context" },
    ParamDoc { name: "timesteps", ty: "integer", default: "1000", doc: "diffusion: T of the linear schedule" },
    ParamDoc {
        name: "first_stage",
        ty: "preset | map | path",
        default: "vq-f4",
        doc: "autoencoder: VQ configuration (vq-f4, reference-tiny, JSON, inline)",
    },
    ParamDoc { name: "n_embed", ty: "integer", default: "8192", doc: "autoencoder: codebook size" },
    ParamDoc { name: "beta", ty: "number", default: "0.25", doc: "autoencoder: commitment weight" },
    ParamDoc { name: "codebook_decay", ty: "number", default: "0.99", doc: "autoencoder: EMA decay of the codebook statistics" },
    ParamDoc { name: "ema", ty: "map", default: "{inv_gamma 1, power 0.75, max_value 0.9999}", doc: "diffusion: EMA warm-up" },
];

/// What to train.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TrainTask {
    /// A face recognizer.
    FaceRecognition,
    /// An identity-conditioned denoiser.
    Diffusion,
    /// A VQ first stage (toy world).
    Autoencoder,
}

/// A margin head as written in YAML.
#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HeadParams {
    /// ArcFace `cos(θ + m)` (TFace's threshold variant).
    Arcface {
        /// Scale.
        #[serde(default = "s64")]
        s: f64,
        /// Margin.
        #[serde(default = "m05")]
        m: f64,
    },
    /// CosFace `cos θ − m`.
    Cosface {
        /// Scale.
        #[serde(default = "s64")]
        s: f64,
        /// Margin.
        #[serde(default = "m035")]
        m: f64,
    },
    /// ElasticFace-Arc, margins `N(m, std)` per row.
    ElasticfaceArc {
        /// Scale.
        #[serde(default = "s64")]
        s: f64,
        /// Mean margin.
        #[serde(default = "m05")]
        m: f64,
        /// Margin standard deviation.
        #[serde(default = "std0025")]
        std: f64,
    },
}

fn s64() -> f64 {
    64.0
}
fn m05() -> f64 {
    0.5
}
fn m035() -> f64 {
    0.35
}
fn std0025() -> f64 {
    0.025
}

/// A backbone as written in YAML: a name or an inline IResNet shape.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum BackboneParams {
    /// `iresnet18|34|50|100|200` or `ir18|34|50|100`.
    Name(String),
    /// `{layers, widths, num_features, input_size}`.
    Shape(idflow_models::train_loop::backbone::TrainIResNetConfig),
}

/// Parameters of the `train` node.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Task.
    pub task: TrainTask,
    /// Output directory.
    pub output: PathBuf,
    /// Epochs.
    pub epochs: u64,
    /// Rows per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Learning-rate schedule.
    #[serde(default)]
    pub lr: Option<LrSchedule>,
    /// Resume from the checkpoint.
    #[serde(default)]
    pub resume: bool,
    /// Stop after this many epochs.
    #[serde(default)]
    pub stop_after_epochs: Option<u64>,
    /// Keyed horizontal flips.
    #[serde(default = "yes")]
    pub flip: bool,
    /// Probability of a random resized crop (face recognition).
    #[serde(default)]
    pub random_resized_crop: f64,
    /// Gradient clipping.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Data-parallel replicas per step (face recognition).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Input column.
    #[serde(default)]
    pub column: Option<String>,
    /// Decoded image side.
    #[serde(default)]
    pub size: Option<u32>,
    /// Backbone.
    #[serde(default)]
    pub backbone: Option<BackboneParams>,
    /// Head.
    #[serde(default)]
    pub head: Option<HeadParams>,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// SGD weight decay.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Verification benchmarks.
    #[serde(default)]
    pub eval: Vec<PathBuf>,
    /// Evaluation period in epochs.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// What runs the evaluations' forwards: `onnx` (default) compiles the current backbone in
    /// memory and runs it on ONNX Runtime, `native` runs the candle model being trained.
    #[serde(default)]
    pub eval_backend: Backend,
    /// The worker that trains (modulo the worker count); give independent `train` nodes of one
    /// pipeline different workers to train them side by side.
    #[serde(default)]
    pub worker: usize,
    /// UNet configuration.
    #[serde(default)]
    pub unet: Option<ConfigRef>,
    /// Context column (`null`: unconditional).
    #[serde(default = "default_context")]
    pub context: Option<String>,
    /// Latent shape.
    #[serde(default)]
    pub latent_shape: Option<Vec<usize>>,
    /// CPD probability.
    #[serde(default)]
    pub cpd: Option<f64>,
    /// Whole-context dropout.
    #[serde(default)]
    pub uncond_probability: f64,
    /// Diffusion steps.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// EMA.
    #[serde(default)]
    pub ema: EmaConfig,
    /// VQ configuration (autoencoder).
    #[serde(default)]
    pub first_stage: Option<ConfigRef>,
    /// Codebook size (autoencoder).
    #[serde(default = "default_n_embed")]
    pub n_embed: usize,
    /// Commitment weight (autoencoder).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Codebook EMA decay (autoencoder).
    #[serde(default = "default_codebook_decay")]
    pub codebook_decay: f64,
}

fn default_n_embed() -> usize {
    8192
}
fn default_beta() -> f64 {
    0.25
}
fn default_codebook_decay() -> f64 {
    0.99
}

fn default_batch() -> usize {
    32
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_momentum() -> f64 {
    0.9
}
fn default_wd() -> f64 {
    5e-4
}
fn default_eval_every() -> u64 {
    1
}
fn default_context() -> Option<String> {
    Some("context".into())
}
fn default_timesteps() -> usize {
    1000
}

impl TrainParams {
    /// The input column (default `image` / `latent`).
    pub fn input_column(&self) -> String {
        self.column.clone().unwrap_or_else(|| match self.task {
            TrainTask::FaceRecognition | TrainTask::Autoencoder => "image".into(),
            TrainTask::Diffusion => "latent".into(),
        })
    }
}

/// Resolved, validated settings of one node.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Face recognition.
    Face(face::FaceSetup),
    /// Diffusion.
    Diffusion(diffusion::DiffusionSetup),
    /// Autoencoder.
    Autoencoder(autoencoder::AutoencoderSetup),
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: TrainParams = ctx.node.parse_params()?;
    let err = |field: &str, msg: String| ctx.node.error(Some(field), msg);
    if p.epochs == 0 {
        return Err(err("epochs", "must be at least 1".into()));
    }
    if p.batch_size < 2 {
        return Err(err("batch_size", "must be at least 2 (BatchNorm needs batch statistics)".into()));
    }
    if let Some(lr) = &p.lr {
        lr.validate().map_err(|e| err("lr", e))?;
    }
    if !(0.0..=1.0).contains(&p.random_resized_crop) {
        return Err(err("random_resized_crop", "must be a probability within 0..1".into()));
    }
    if p.clip_grad_norm.is_some_and(|c| c <= 0.0) {
        return Err(err("clip_grad_norm", "must be positive".into()));
    }
    if p.replicas == 0 {
        return Err(err("replicas", "must be at least 1".into()));
    }
    if p.replicas > 1 && p.task != TrainTask::FaceRecognition {
        return Err(err("replicas", "data-parallel replicas apply to task: face-recognition only".into()));
    }
    if p.batch_size / p.replicas < 2 {
        return Err(err(
            "replicas",
            format!(
                "batch_size {} gives each of {} replicas fewer than 2 rows (BatchNorm needs batch statistics)",
                p.batch_size, p.replicas
            ),
        ));
    }
    if p.task != TrainTask::FaceRecognition && !p.eval.is_empty() {
        return Err(err("eval", "verification benchmarks apply to task: face-recognition only".into()));
    }
    let mut names: Vec<String> = p.eval.iter().map(|e| benchmark_name(e)).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("eval", "two benchmark files share a file name; their accuracy columns would collide".into()));
    }
    let resolved = match p.task {
        TrainTask::FaceRecognition => Resolved::Face(face::FaceSetup::resolve(&p).map_err(|(f, m)| err(f, m))?),
        TrainTask::Diffusion => Resolved::Diffusion(diffusion::DiffusionSetup::resolve(&p).map_err(|(f, m)| err(f, m))?),
        TrainTask::Autoencoder => Resolved::Autoencoder(autoencoder::AutoencoderSetup::resolve(&p).map_err(|(f, m)| err(f, m))?),
    };
    Ok(Arc::new(Train { p, resolved, seed: ctx.seed, node: ctx.node.id.clone() }))
}

struct Train {
    p: TrainParams,
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
    fn role(&self) -> Role {
        Role::Sink
    }

    fn outputs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("trained model", self.p.output.clone())]
    }

    fn routing(&self) -> Routing {
        Routing::Worker(self.p.worker)
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        match &self.resolved {
            Resolved::Face(_) | Resolved::Autoencoder(_) => vec![
                ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32)),
                ColumnReq::new(
                    &self.p.input_column(),
                    if self.p.column.as_deref() == Some("image") || self.p.column.is_none() {
                        ColumnType::Bytes
                    } else {
                        ColumnType::F32Tensor
                    },
                ),
            ],
            Resolved::Diffusion(_) => {
                let mut v = vec![ColumnReq::new(&self.p.input_column(), ColumnType::F32Tensor)];
                if let Some(c) = &self.p.context {
                    v.push(ColumnReq::new(c, ColumnType::F32Tensor));
                }
                v
            }
        }
    }

    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(stats_schema(&self.p.eval))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        if !self.p.eval.is_empty() && self.p.eval_backend == Backend::Onnx {
            // the evaluations run on ONNX Runtime: a missing library fails now, not after training
            super::support::loading::require_ort().map_err(|e| OpError::new(format!("node `{}`: field `eval_backend`: {e}", self.node)))?;
        }
        std::fs::create_dir_all(&self.p.output)
            .map_err(|e| OpError::new(format!("node `{}`: cannot create {}: {e}", self.node, self.p.output.display())))?;
        Ok(Started::Task(Box::new(TrainTaskState {
            p: self.p.clone(),
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
    p: TrainParams,
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
        let column = self.p.input_column();
        let size = match &self.resolved {
            Resolved::Face(f) => f.size,
            Resolved::Autoencoder(a) => a.size,
            Resolved::Diffusion(_) => 0,
        };
        let values = data::input_rows(&batch, &column, size).map_err(|e| OpError::new(format!("node `{node}`: column `{column}`: {e}")))?;
        let extras = match (&self.resolved, &self.p.context) {
            (Resolved::Diffusion(_), Some(c)) => {
                data::input_rows(&batch, c, 0).map_err(|e| OpError::new(format!("node `{node}`: column `{c}`: {e}")))?
            }
            _ => vec![Vec::new(); batch.num_rows()],
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
        if self.examples.is_empty() && Some(self.ctx.partition.worker) != Routing::Worker(self.p.worker).target(self.ctx.partition.peers) {
            // rows are routed to the training worker; the others have nothing to train
            return None;
        }
        let examples = std::mem::take(&mut self.examples);
        let (resolved, p, seed, node) = (self.resolved.clone(), self.p.clone(), self.seed, self.node.clone());
        let workers = self.ctx.local_workers;
        Some(Box::new(move || {
            let stats = match &resolved {
                Resolved::Face(setup) => face::run(setup, &p, seed, workers, examples),
                Resolved::Diffusion(setup) => diffusion::run(setup, &p, seed, examples),
                Resolved::Autoencoder(setup) => autoencoder::run(setup, &p, seed, examples),
            }
            .map_err(|e| OpError::new(format!("node `{node}`: {e}")))?;
            let mut out = Emit::default();
            out.rows.push(stats_batch(&stats, &p.eval)?);
            Ok(out)
        }))
    }
}
