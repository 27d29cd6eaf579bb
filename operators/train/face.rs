//! The face-recognition half of `train`: resolves backbone/head/schedule, runs the epochs,
//! evaluates on verification `.bin` files, writes checkpoints.

use super::data::{self, Example};
use super::{BackboneParams, EpochStats, HeadParams, TrainParams};
use crate::operators::support::loading as model_spec;
use crate::operators::support::model_ref::{Backend, Inference};
use candle_core::Tensor;
use idflow_dataset::metrics::verification;
use idflow_models::checkpoint::StateDict;
use idflow_models::heads::Margin;
use idflow_models::train_loop::backbone::TrainIResNetConfig;
use idflow_models::train_loop::face::{BackboneConfig, FaceTrainConfig, FaceTrainer};
use idflow_models::train_loop::schedule::LrSchedule;
use idflow_models::traits::FaceEncoder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Resolved face-recognition settings.
#[derive(Debug, Clone)]
pub struct FaceSetup {
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

/// Checkpoint file name inside `output`.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Final backbone file name inside `output`.
pub const BACKBONE: &str = "backbone.safetensors";

impl FaceSetup {
    /// Resolves the parameters; errors name the field.
    pub fn resolve(p: &TrainParams) -> Result<Self, (&'static str, String)> {
        let backbone = match &p.backbone {
            None => BackboneConfig::Iresnet(TrainIResNetConfig::standard(50, 512).ok_or(("backbone", "no iresnet50".to_string()))?),
            Some(BackboneParams::Name(n)) => {
                if let Some(d) = n.strip_prefix("iresnet").and_then(|d| d.parse::<usize>().ok()) {
                    BackboneConfig::Iresnet(TrainIResNetConfig::standard(d, 512).ok_or(("backbone", format!("unknown IResNet depth {d}")))?)
                } else if let Some(d) = n.strip_prefix("ir").and_then(|d| d.parse::<usize>().ok()).filter(|d| [18, 34, 50, 100].contains(d))
                {
                    BackboneConfig::Ir(d)
                } else {
                    return Err((
                        "backbone",
                        format!("unknown backbone `{n}`; use iresnet18/34/50/100/200, ir18/34/50/100 or an inline map"),
                    ));
                }
            }
            Some(BackboneParams::Shape(c)) => {
                if c.input_size < 16 || c.widths.contains(&0) || c.num_features == 0 || c.layers.contains(&0) {
                    return Err(("backbone", "input_size must be ≥ 16 and layers/widths/num_features positive".into()));
                }
                BackboneConfig::Iresnet(c.clone())
            }
        };
        let (scale, margin) = match p.head.clone().unwrap_or(HeadParams::Arcface { s: 64.0, m: 0.5 }) {
            HeadParams::Arcface { s, m } => (s, Margin::ArcFace { m, threshold: true, easy_margin: false }),
            HeadParams::Cosface { s, m } => (s, Margin::CosFace { m }),
            HeadParams::ElasticfaceArc { s, m, std } => (s, Margin::ElasticArc { m, std, plus: false }),
        };
        let size = p.size.unwrap_or(backbone.input_size() as u32);
        if size as usize != backbone.input_size() {
            return Err(("size", format!("the backbone takes {0}×{0} inputs", backbone.input_size())));
        }
        let lr =
            p.lr.clone().unwrap_or(LrSchedule::Steps { lrs: vec![0.1, 0.01, 0.001, 0.0001], stages: vec![22, 28, 32], warmup_steps: 0 });
        Ok(Self { backbone, scale, margin, lr, size })
    }
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
                .map(|i| data::decode_image(&self.encoded[i], size).map_err(|e| format!("{}: image {i}: {e}", self.path.display())))
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

fn checkpoint_meta(epoch: u64, step: u64, classes: usize, setup: &FaceSetup) -> HashMap<String, String> {
    HashMap::from([
        ("task".to_string(), "face-recognition".to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("step".to_string(), step.to_string()),
        ("classes".to_string(), classes.to_string()),
        ("backbone".to_string(), serde_json::to_string(&setup.backbone).unwrap_or_default()),
    ])
}

/// Trains on `examples` and writes the checkpoints; returns the statistics of the epochs run.
/// `workers` (the process's worker threads) sizes the evaluations' ONNX Runtime thread pool.
pub fn run(setup: &FaceSetup, p: &TrainParams, seed: u64, workers: usize, examples: Vec<Example>) -> Result<Vec<EpochStats>, String> {
    let (examples, labels, classes) = data::canonical(examples);
    let n = examples.len();
    if n < 2 {
        return Err(format!("face-recognition training needs at least 2 rows, got {n}"));
    }
    let size = setup.size as usize;
    let width = 3 * size * size;
    if let Some(bad) = examples.iter().find(|e| e.values.len() != width) {
        return Err(format!(
            "identity {} sample {}: input has {} values, expected 3×{size}×{size}",
            bad.identity,
            bad.sample,
            bad.values.len()
        ));
    }
    let benchmarks = load_benchmarks(&p.eval, setup.size)?;
    let mut trainer = FaceTrainer::new(FaceTrainConfig {
        backbone: setup.backbone.clone(),
        classes,
        scale: setup.scale,
        margin: setup.margin,
        momentum: p.momentum,
        weight_decay: p.weight_decay,
        clip_grad_norm: p.clip_grad_norm,
        seed,
        replicas: p.replicas,
    })
    .map_err(|e| e.to_string())?;
    let ckpt_path = p.output.join(CHECKPOINT);
    let (mut start_epoch, mut out) = (0, Vec::new());
    if let Some(r) = data::resume_point(&ckpt_path, p.resume)? {
        let saved_classes = data::meta_u64(&r.meta, "classes", &ckpt_path)?;
        if saved_classes as usize != classes {
            return Err(format!("{}: checkpoint has {saved_classes} classes, the input has {classes} identities", ckpt_path.display()));
        }
        trainer.load_state(&r.entries, r.step, &ckpt_path.display().to_string()).map_err(|e| e.to_string())?;
        start_epoch = r.epoch;
        out = r.history;
    }
    // batches of `batch_size`; a last batch of one row is dropped (BatchNorm needs two)
    let bs = p.batch_size;
    let steps_per_epoch = n / bs + usize::from(n % bs >= 2);
    let total_steps = steps_per_epoch as u64 * p.epochs;
    let last_epoch = p.stop_after_epochs.map_or(p.epochs, |s| s.min(p.epochs));
    for epoch in start_epoch..last_epoch {
        let t0 = Instant::now();
        let order = data::epoch_order(n, seed, epoch);
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0.0, 0usize, 0usize, 0.0);
        for chunk in order.chunks(bs).filter(|c| c.len() >= 2) {
            let mut rows: Vec<Vec<f32>> = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let mut v = examples[i].values.clone();
                if p.flip && data::flipped(seed, epoch, i) {
                    data::flip_chw(&mut v, size);
                }
                data::random_resized_crop(&mut v, size, p.random_resized_crop, seed, epoch, i);
                rows.push(v);
            }
            let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            let batch_labels: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
            lr = setup.lr.lr(trainer.step(), epoch, total_steps);
            let s = trainer.train_step(&data::stack(&refs, &[3, size, size])?, &batch_labels, lr).map_err(|e| e.to_string())?;
            if !s.loss.is_finite() {
                return Err(format!("epoch {}: loss became {} at step {}", epoch + 1, s.loss, trainer.step()));
            }
            loss_sum += s.loss * s.rows as f64;
            correct += s.correct;
            seen += s.rows;
        }
        let secs = t0.elapsed().as_secs_f64();
        let mut stats = EpochStats {
            epoch: epoch + 1,
            step: trainer.step(),
            loss: loss_sum / seen.max(1) as f64,
            accuracy: Some(correct as f64 / seen.max(1) as f64),
            lr,
            images_per_s: seen as f64 / secs.max(1e-9),
            evals: Vec::new(),
        };
        tracing::info!(
            "train: epoch {}/{} step {} loss {:.4} accuracy {:.3} lr {:.2e} {:.1} images/s",
            stats.epoch,
            p.epochs,
            stats.step,
            stats.loss,
            correct as f64 / seen.max(1) as f64,
            lr,
            stats.images_per_s
        );
        if !benchmarks.is_empty() && ((epoch + 1) % p.eval_every.max(1) == 0 || epoch + 1 == last_epoch) {
            let forward = EvalForward::new(&trainer, setup, &Inference::new(p.eval_backend, None, &[], workers))?;
            for b in &benchmarks {
                let acc = verify(&trainer, &forward, b, size)?;
                tracing::info!("train: epoch {} {} accuracy {:.4}", epoch + 1, b.name, acc);
                stats.evals.push(Some(acc));
            }
        }
        out.push(stats);
        let meta = data::with_history(checkpoint_meta(epoch + 1, trainer.step(), classes, setup), &out);
        data::write_checkpoint(&ckpt_path, &trainer.state(), meta)?;
    }
    write_backbone(&p.output.join(BACKBONE), &trainer, setup)?;
    Ok(out)
}

fn write_backbone(path: &Path, trainer: &FaceTrainer, setup: &FaceSetup) -> Result<(), String> {
    let meta = HashMap::from([("backbone".to_string(), serde_json::to_string(&setup.backbone).unwrap_or_default())]);
    data::write_checkpoint(path, &trainer.backbone_state(), meta)
}
