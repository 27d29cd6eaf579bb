//! The face-recognition task of `train`: its parameters (backbone, margin head, SGD,
//! augmentation, data-parallel replicas, verification benchmarks), its step and its
//! evaluation on verification `.bin` files during training.

use super::data;
use crate::operators::support::images::decode_image;
use super::data::ResumePoint;
use super::driver::{StepLoss, TrainTask, TrainingSet};
use super::params::CommonParams;
use crate::operators::support::loading as model_spec;
use crate::operators::support::model_ref::{Backend, Inference};
use candle_core::Tensor;
use idflow_dataset::metrics::verification;
use idflow_models::heads::Margin;
use idflow_models::io::checkpoint::StateDict;
use idflow_models::iresnet::IResNetConfig;
use idflow_models::train::face::{BackboneConfig, FaceTrainConfig, FaceTrainer};
use idflow_models::train::schedule::LrSchedule;
use idflow_models::traits::FaceEncoder;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    Shape(IResNetConfig),
}

/// The parameters of `task: face-recognition` (besides the common ones).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FaceParams {
    /// Probability of a random resized crop.
    #[serde(default)]
    pub random_resized_crop: f64,
    /// Data-parallel replicas per step.
    #[serde(default = "one")]
    pub replicas: usize,
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
}

fn one() -> usize {
    1
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

/// Resolved face-recognition settings.
#[derive(Debug, Clone)]
pub struct FaceSetup {
    /// The parameters as written.
    pub params: FaceParams,
    /// Backbone.
    pub backbone: BackboneConfig,
    /// Head scale.
    pub scale: f64,
    /// Head margin.
    pub margin: Margin,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
    /// Decoded image side.
    pub size: u32,
}

/// Final backbone file name inside `output`.
pub const BACKBONE: &str = "backbone.safetensors";

fn backbone_config(p: &FaceParams) -> Result<BackboneConfig, (&'static str, String)> {
    Ok(match &p.backbone {
        None => BackboneConfig::Iresnet(IResNetConfig::depth_features(50, 512).ok_or(("backbone", "no iresnet50".to_string()))?),
        Some(BackboneParams::Name(n)) => {
            if let Some(d) = n.strip_prefix("iresnet").and_then(|d| d.parse::<usize>().ok()) {
                BackboneConfig::Iresnet(IResNetConfig::depth_features(d, 512).ok_or(("backbone", format!("unknown IResNet depth {d}")))?)
            } else if let Some(d) = n.strip_prefix("ir").and_then(|d| d.parse::<usize>().ok()).filter(|d| [18, 34, 50, 100].contains(d)) {
                BackboneConfig::Ir(d)
            } else {
                return Err(("backbone", format!("unknown backbone `{n}`; use iresnet18/34/50/100/200, ir18/34/50/100 or an inline map")));
            }
        }
        Some(BackboneParams::Shape(c)) => {
            if c.input_size < 16 || c.widths.contains(&0) || c.num_features == 0 || c.layers.contains(&0) {
                return Err(("backbone", "input_size must be ≥ 16 and layers/widths/num_features positive".into()));
            }
            BackboneConfig::Iresnet(c.clone())
        }
    })
}

/// A verification benchmark, kept encoded: its images are decoded chunk by chunk when it is
/// evaluated, so a training run does not hold tens of thousands of decoded images (five toy
/// benchmarks at 32 px are 740 MB as f32) between evaluations.
struct Benchmark {
    name: String,
    path: PathBuf,
    encoded: Vec<Vec<u8>>,
    issame: Vec<bool>,
}

impl Benchmark {
    /// The images decoded at `size`, [`EVAL_CHUNK`] at a time.
    fn decoded_chunks(&self, size: u32) -> impl Iterator<Item = Result<Vec<Vec<f32>>, String>> + '_ {
        (0..self.encoded.len()).step_by(EVAL_CHUNK).map(move |start| {
            (start..(start + EVAL_CHUNK).min(self.encoded.len()))
                .map(|i| decode_image(&self.encoded[i], size).map_err(|e| format!("{}: image {i}: {e}", self.path.display())))
                .collect()
        })
    }
}

/// Reads the benchmarks and decodes every image once, so a bad file fails before training.
fn load_benchmarks(paths: &[PathBuf], size: u32) -> Result<Vec<Benchmark>, String> {
    paths
        .iter()
        .map(|path| {
            let bin = idflow_dataset::formats::verification_bin::read_bin(path).map_err(|e| e.to_string())?;
            let bench = Benchmark { name: super::benchmark_name(path), path: path.clone(), encoded: bin.images, issame: bin.issame };
            for chunk in bench.decoded_chunks(size) {
                chunk?;
            }
            Ok(bench)
        })
        .collect()
}

/// Images per evaluation forward.
const EVAL_CHUNK: usize = 64;

/// The forward an evaluation runs: the candle model being trained, or its weights compiled in
/// memory onto ONNX Runtime (several times faster on the CPU; same arithmetic within float
/// rounding).
enum EvalForward {
    Native,
    Onnx(Box<dyn FaceEncoder>),
}

impl EvalForward {
    /// The forward for the trainer's current weights.
    fn new(trainer: &FaceTrainer, setup: &FaceSetup, inference: &Inference) -> Result<Self, String> {
        if inference.backend == Backend::Native {
            return Ok(Self::Native);
        }
        let dict = StateDict::new("the backbone being trained", trainer.backbone_state());
        Ok(Self::Onnx(model_spec::face_encoder_in_memory(inference, &dict, &setup.backbone.onnx_spec())?))
    }

    fn embed(&self, trainer: &FaceTrainer, images: &Tensor) -> Result<Tensor, String> {
        match self {
            Self::Native => trainer.embed(images).map_err(|e| e.to_string()),
            Self::Onnx(encoder) => encoder.embed(images).map_err(|e| e.to_string()),
        }
    }
}

/// 10-fold verification accuracy with flip TTA (`f(x) + f(flip(x))`, L2-normalised).
fn verify(trainer: &FaceTrainer, forward: &EvalForward, bench: &Benchmark, size: usize) -> Result<f64, String> {
    let dim = trainer.config().backbone.num_features();
    let mut emb = Vec::with_capacity(bench.encoded.len() * dim);
    for chunk in bench.decoded_chunks(size as u32) {
        let chunk = chunk?;
        let rows: Vec<&[f32]> = chunk.iter().map(|v| v.as_slice()).collect();
        let flipped: Vec<Vec<f32>> = chunk
            .iter()
            .map(|v| {
                let mut f = v.clone();
                data::flip_chw(&mut f, size);
                f
            })
            .collect();
        let frows: Vec<&[f32]> = flipped.iter().map(|v| v.as_slice()).collect();
        let a = forward.embed(trainer, &data::stack(&rows, &[3, size, size])?)?;
        let b = forward.embed(trainer, &data::stack(&frows, &[3, size, size])?)?;
        let sum = (a + b).and_then(|s| s.flatten_all()).and_then(|s| s.to_vec1::<f32>()).map_err(|e| e.to_string())?;
        emb.extend(sum);
    }
    verification::l2_normalize_rows(&mut emb, dim).map_err(|e| e.to_string())?;
    let report = verification::evaluate(&emb, dim, &bench.issame, 10).map_err(|e| format!("benchmark {}: {e}", bench.name))?;
    Ok(report.accuracy_mean)
}

/// Face-recognition training: the trainer, the benchmarks and the settings of one run.
pub struct FaceTask {
    setup: FaceSetup,
    trainer: FaceTrainer,
    benchmarks: Vec<Benchmark>,
    seed: u64,
    workers: usize,
}

impl TrainTask for FaceTask {
    type Params = FaceParams;
    type Setup = FaceSetup;
    const NAME: &'static str = "face-recognition";
    const ROW: &'static str = "input";
    const MIN_BATCH: usize = 2;

    fn resolve(common: &CommonParams, p: FaceParams) -> Result<FaceSetup, (&'static str, String)> {
        if !(0.0..=1.0).contains(&p.random_resized_crop) {
            return Err(("random_resized_crop", "must be a probability within 0..1".into()));
        }
        if p.replicas == 0 {
            return Err(("replicas", "must be at least 1".into()));
        }
        if common.batch_size / p.replicas < 2 {
            return Err((
                "replicas",
                format!(
                    "batch_size {} gives each of {} replicas fewer than 2 rows (BatchNorm needs batch statistics)",
                    common.batch_size, p.replicas
                ),
            ));
        }
        let mut names: Vec<String> = p.eval.iter().map(|e| super::benchmark_name(e)).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(("eval", "two benchmark files share a file name; their accuracy columns would collide".into()));
        }
        let backbone = backbone_config(&p)?;
        let (scale, margin) = match p.head.clone().unwrap_or(HeadParams::Arcface { s: 64.0, m: 0.5 }) {
            HeadParams::Arcface { s, m } => (s, Margin::ArcFace { m, threshold: true, easy_margin: false }),
            HeadParams::Cosface { s, m } => (s, Margin::CosFace { m }),
            HeadParams::ElasticfaceArc { s, m, std } => (s, Margin::ElasticArc { m, std, plus: false }),
        };
        let size = p.size.unwrap_or(backbone.input_size() as u32);
        if size as usize != backbone.input_size() {
            return Err(("size", format!("the backbone takes {0}×{0} inputs", backbone.input_size())));
        }
        let lr = common.lr.clone().unwrap_or(LrSchedule::Steps {
            lrs: vec![0.1, 0.01, 0.001, 0.0001],
            stages: vec![22, 28, 32],
            warmup_steps: 0,
        });
        Ok(FaceSetup { params: p, backbone, scale, margin, lr, size })
    }

    fn row_shape(setup: &FaceSetup) -> [usize; 3] {
        let s = setup.size as usize;
        [3, s, s]
    }

    fn new(setup: &FaceSetup, common: &CommonParams, set: &TrainingSet, seed: u64, workers: usize) -> Result<Self, String> {
        let p = &setup.params;
        let benchmarks = load_benchmarks(&p.eval, setup.size)?;
        let trainer = FaceTrainer::new(FaceTrainConfig {
            backbone: setup.backbone.clone(),
            classes: set.classes,
            scale: setup.scale,
            margin: setup.margin,
            momentum: p.momentum,
            weight_decay: p.weight_decay,
            clip_grad_norm: common.clip_grad_norm,
            seed,
            replicas: p.replicas,
        })
        .map_err(|e| e.to_string())?;
        Ok(Self { setup: setup.clone(), trainer, benchmarks, seed, workers })
    }

    fn lr(&self) -> &LrSchedule {
        &self.setup.lr
    }

    fn augment(&self, values: &mut Vec<f32>, epoch: u64, row: usize) {
        data::random_resized_crop(values, self.setup.size as usize, self.setup.params.random_resized_crop, self.seed, epoch, row);
    }

    fn step(&self) -> u64 {
        self.trainer.step()
    }

    fn train_step(&mut self, set: &TrainingSet, rows: &[usize], batch: &Tensor, lr: f64) -> Result<StepLoss, String> {
        let labels: Vec<u32> = rows.iter().map(|&i| set.labels[i]).collect();
        let s = self.trainer.train_step(batch, &labels, lr).map_err(|e| e.to_string())?;
        Ok(StepLoss { loss: s.loss, correct: Some(s.correct), logged: None })
    }

    fn eval_every(&self) -> Option<u64> {
        (!self.benchmarks.is_empty()).then_some(self.setup.params.eval_every)
    }

    fn evaluate(&mut self, epoch: u64) -> Result<Vec<Option<f64>>, String> {
        let inference = Inference::new(self.setup.params.eval_backend, None, &[], self.workers);
        let forward = EvalForward::new(&self.trainer, &self.setup, &inference)?;
        let mut out = Vec::with_capacity(self.benchmarks.len());
        for b in &self.benchmarks {
            let acc = verify(&self.trainer, &forward, b, self.setup.size as usize)?;
            tracing::info!("train: epoch {epoch} {} accuracy {:.4}", b.name, acc);
            out.push(Some(acc));
        }
        Ok(out)
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        Ok(self.trainer.state())
    }

    fn checkpoint_meta(&self) -> Vec<(String, String)> {
        vec![("classes".to_string(), self.trainer.config().classes.to_string()), backbone_meta(&self.setup)]
    }

    fn load_state(&mut self, r: &ResumePoint, path: &Path) -> Result<(), String> {
        let classes = self.trainer.config().classes;
        let saved_classes = data::meta_u64(&r.meta, "classes", path)?;
        if saved_classes as usize != classes {
            return Err(format!("{}: checkpoint has {saved_classes} classes, the input has {classes} identities", path.display()));
        }
        self.trainer.load_state(&r.entries, r.step, &path.display().to_string()).map_err(|e| e.to_string())
    }

    fn write_outputs(&self, output: &Path) -> Result<(), String> {
        data::write_checkpoint(&output.join(BACKBONE), &self.trainer.backbone_state(), HashMap::from([backbone_meta(&self.setup)]))
    }
}

/// The `backbone` metadata entry (its configuration as JSON).
fn backbone_meta(setup: &FaceSetup) -> (String, String) {
    ("backbone".to_string(), serde_json::to_string(&setup.backbone).unwrap_or_default())
}
