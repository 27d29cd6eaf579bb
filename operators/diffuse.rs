//! `diffuse`: the reverse diffusion of IDiff-Face. For every context row it generates
//! `samples_per_identity` latents with the ConditionalUNet (ancestral DDPM over all T steps, or
//! DDIM with `steps`/`eta`, optional classifier-free guidance) and emits one row per sample:
//! the input columns plus `sample`, `seed` and `latent` (`FixedSizeList<Float32, C·H·W>`).
//!
//! Every random draw is keyed: x_T by (seed, identity, sample, [`PRIOR_STEP`]) and the step
//! noise by (seed, identity, sample, t) (`idflow_models::sampler::NoiseKey`). Latents from
//! several identities share one denoiser call (`batch`).
//!
//! Bit-exact reproducibility versus speed: CPU matrix products round differently for different
//! batch shapes (the GEMM picks its blocking from the matrix sizes), so a latent computed in a
//! batch of 8 differs from the same latent computed alone by float rounding, which a few dozen
//! steps amplify to visible pixel differences. `reproducible: exact` (default) therefore runs
//! every latent through its own denoiser calls — the bytes then depend only on (seed, identity,
//! sample) and the model, never on `batch`, the worker count or the process count — while
//! `reproducible: batched` stacks `batch` latents per call (faster, especially on GPUs) and is
//! reproducible only for the same batch composition.

use super::model_spec::{self, tensor_array, tensor_field, tensor_rows, Backend, Inference, ModelRef, Provider};
use super::pending::PendingWork;
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, ParamDoc, Role, Started, Task, TaskContext,
};
use crate::batch::u32_column;
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use candle_core::{Device, Tensor};
use idflow_dataset::rng::derive_seed;
use idflow_models::sampler::{batch_noise, sample, CpuStepMath, NoiseKey, SamplerConfig, SamplerKind, PRIOR_STEP};
use idflow_models::schedule::DdpmSchedule;
use idflow_models::traits::Denoiser;
use idflow_models::unet::UNetConfig;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "diffuse",
        role: Role::Transform,
        summary: "Sample latents per identity context with the IDiff-Face denoiser (DDPM / DDIM, CFG)",
        params: PARAMS,
        build,
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "model",
        ty: "{checkpoint, config}",
        default: "required",
        doc: "UNet weights; config: idiff-face-ca (default) | idiff-face-uncond | reference-tiny | JSON file | inline map",
    },
    model_spec::INFERENCE_PARAMS[0],
    model_spec::INFERENCE_PARAMS[1],
    model_spec::INFERENCE_PARAMS[2],
    ParamDoc { name: "samples_per_identity", ty: "integer", default: "required", doc: "latents generated per context row" },
    ParamDoc { name: "sampler", ty: "ddpm | ddim", default: "ddpm", doc: "ancestral DDPM over all T steps, or DDIM" },
    ParamDoc { name: "steps", ty: "integer", default: "50", doc: "DDIM steps (stride T/steps)" },
    ParamDoc { name: "eta", ty: "number", default: "0", doc: "DDIM noise scale (0 = deterministic)" },
    ParamDoc {
        name: "admis_compat",
        ty: "bool",
        default: "false",
        doc: "DDIM with ADMIS's off-by-one alpha_bar_prev and eps re-derivation",
    },
    ParamDoc { name: "guidance", ty: "number", default: "1", doc: "classifier-free guidance weight w (1 = off)" },
    ParamDoc { name: "batch", ty: "integer", default: "16", doc: "latents per denoiser call / per emitted batch, across identities" },
    ParamDoc {
        name: "reproducible",
        ty: "exact | batched",
        default: "exact",
        doc: "exact: bytes independent of batch and workers; batched: stacked calls (faster)",
    },
    ParamDoc { name: "latent_shape", ty: "[c, h, w]", default: "[3, 32, 32]", doc: "latent shape (VQ-f4 latent of a 128 px image)" },
    ParamDoc { name: "condition", ty: "context | none", default: "context", doc: "none: unconditional sampling (two-stage pipelines)" },
    ParamDoc { name: "context_column", ty: "string", default: "context", doc: "input column holding the identity context" },
];

/// How latents share denoiser calls.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reproducible {
    /// One latent per denoiser call: bytes depend only on (seed, identity, sample).
    Exact,
    /// `batch` latents per call.
    Batched,
}

/// Which reverse process.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Ancestral DDPM.
    Ddpm,
    /// DDIM.
    Ddim,
}

/// Whether the denoiser sees the identity context.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Conditioned on the context column.
    Context,
    /// Unconditional.
    None,
}

/// The sampling parameters, shared with `filter` (which regenerates rejected samples).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// UNet weights and configuration.
    pub model: ModelRef,
    /// Backend (default `onnx`).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads per worker (default cores / workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// DDPM or DDIM.
    #[serde(default = "default_sampler")]
    pub sampler: Sampler,
    /// DDIM steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// DDIM η.
    #[serde(default)]
    pub eta: f64,
    /// ADMIS's DDIM variant.
    #[serde(default)]
    pub admis_compat: bool,
    /// CFG weight.
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Latents per call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Exact or batched calls.
    #[serde(default = "default_reproducible")]
    pub reproducible: Reproducible,
    /// Latent shape.
    #[serde(default = "default_latent_shape")]
    pub latent_shape: [usize; 3],
    /// Conditional or not.
    #[serde(default = "default_condition")]
    pub condition: Condition,
    /// Context column.
    #[serde(default = "default_context_column")]
    pub context_column: String,
}

fn default_sampler() -> Sampler {
    Sampler::Ddpm
}
fn default_steps() -> usize {
    50
}
fn default_guidance() -> f64 {
    1.0
}
fn default_batch() -> usize {
    16
}
fn default_reproducible() -> Reproducible {
    Reproducible::Exact
}
fn default_latent_shape() -> [usize; 3] {
    [3, 32, 32]
}
fn default_condition() -> Condition {
    Condition::Context
}
fn default_context_column() -> String {
    "context".into()
}

/// `diffuse`'s parameters: the sampling parameters plus the sample count.
#[derive(Debug, Clone)]
struct Params {
    samples_per_identity: u32,
    sampling: SamplingParams,
}

/// Checks sampling parameters at plan time; returns the resolved UNet configuration.
/// `field` maps a parameter name to the YAML field it came from (for nested use in `filter`).
pub fn check_sampling(node: &crate::spec::NodeSpec, s: &SamplingParams, field: &dyn Fn(&str) -> String) -> Result<UNetConfig, ConfigError> {
    let cfg = model_spec::unet_config(s.model.config.as_ref()).map_err(|e| node.error(Some(&*field("model")), e))?;
    model_spec::check_inference(node, s.threads, field)?;
    model_spec::check_checkpoint(node, &field("model"), &s.model.checkpoint, model_spec::Network::Unet(&cfg))?;
    model_spec::check_unet(&cfg, s.latent_shape[0]).map_err(|e| node.error(Some(&*field("latent_shape")), e))?;
    if s.latent_shape.contains(&0) {
        return Err(node.error(Some(&*field("latent_shape")), "dimensions must be positive"));
    }
    let down = 1usize << (cfg.channel_multipliers.len() - 1);
    if !s.latent_shape[1].is_multiple_of(down) || !s.latent_shape[2].is_multiple_of(down) {
        return Err(node.error(
            Some(&*field("latent_shape")),
            format!("height and width must be multiples of {down} (the UNet downsamples {} times)", cfg.channel_multipliers.len() - 1),
        ));
    }
    if s.batch == 0 {
        return Err(node.error(Some(&*field("batch")), "must be at least 1"));
    }
    if s.sampler == Sampler::Ddim && s.steps == 0 {
        return Err(node.error(Some(&*field("steps")), "must be at least 1"));
    }
    if !(0.0..=10.0).contains(&s.eta) {
        return Err(node.error(Some(&*field("eta")), "must be within 0..10"));
    }
    if !s.guidance.is_finite() {
        return Err(node.error(Some(&*field("guidance")), "must be a finite number"));
    }
    match s.condition {
        Condition::None if s.guidance != 1.0 => {
            return Err(node.error(Some(&*field("guidance")), "classifier-free guidance needs `condition: context`"));
        }
        Condition::Context if !cfg.is_context_conditional => {
            return Err(
                node.error(Some(&*field("condition")), "the model is unconditional (is_context_conditional: false); set `condition: none`")
            );
        }
        _ => {}
    }
    Ok(cfg)
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    // `samples_per_identity` is taken out so the rest parses as the shared `SamplingParams`
    // (serde cannot combine `flatten` with `deny_unknown_fields`).
    let mut rest = ctx.node.clone();
    let per = rest.params.remove("samples_per_identity");
    let sampling: SamplingParams = rest.parse_params()?;
    let per = match per {
        None => return Err(ctx.node.error(Some("samples_per_identity"), "missing: latents per context row")),
        Some(v) => v.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n)),
    };
    let Some(samples_per_identity) = per else {
        return Err(ctx.node.error(Some("samples_per_identity"), "must be a positive integer"));
    };
    let p = Params { samples_per_identity: samples_per_identity as u32, sampling };
    let cfg = check_sampling(&ctx.node, &p.sampling, &|f| f.to_string())?;
    Ok(Arc::new(Diffuse { p, cfg, seed: ctx.seed, node: ctx.node.id.clone(), generator: OnceLock::new() }))
}

/// The rows' noise index for `sample` on draw `attempt` (0 = first draw; `filter` re-draws with
/// attempt 1, 2, …): `sample + attempt·2³²`.
pub fn noise_sample(sample: u32, attempt: u32) -> u64 {
    sample as u64 | ((attempt as u64) << 32)
}

/// One latent to generate.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Identity (noise key).
    pub identity: u64,
    /// Noise index ([`noise_sample`]).
    pub noise_sample: u64,
    /// Context, when conditional.
    pub context: Option<&'a [f32]>,
}

/// A loaded denoiser with its sampler settings: turns [`Job`]s into latents.
pub struct Generator {
    unet: Box<dyn Denoiser>,
    schedule: DdpmSchedule,
    sampler: SamplerConfig,
    latent_shape: [usize; 3],
    seed: u64,
    exact: bool,
    context_dim: usize,
}

impl Generator {
    /// Loads the checkpoint (on the node's backend, sized for `workers` local workers) and checks
    /// the sampler against its schedule.
    pub fn load(s: &SamplingParams, cfg: &UNetConfig, seed: u64, workers: usize) -> Result<Self, String> {
        let inference = Inference::new(s.backend, s.threads, &s.providers, workers);
        let (unet, schedule) = model_spec::load_denoiser(&inference, &s.model.checkpoint, cfg)?;
        if s.sampler == Sampler::Ddim && s.steps > schedule.len() {
            return Err(format!("steps {} exceeds the model's T = {}", s.steps, schedule.len()));
        }
        let kind = match s.sampler {
            Sampler::Ddpm => SamplerKind::Ddpm,
            Sampler::Ddim => SamplerKind::Ddim { steps: s.steps, eta: s.eta, admis_compat: s.admis_compat },
        };
        Ok(Self {
            unet,
            schedule,
            sampler: SamplerConfig { kind, guidance_scale: (s.guidance != 1.0).then_some(s.guidance) },
            latent_shape: s.latent_shape,
            seed,
            exact: s.reproducible == Reproducible::Exact,
            context_dim: cfg.context_input_channels,
        })
    }

    /// The latent shape `[c, h, w]`.
    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// Values per latent.
    pub fn latent_len(&self) -> usize {
        self.latent_shape.iter().product()
    }

    /// The `seed` column value of a job: the derived key of its noise stream.
    pub fn row_seed(&self, identity: u64, noise_sample: u64) -> u64 {
        derive_seed(&[self.seed, identity, noise_sample])
    }

    /// Latents for `jobs`, row-major (one call in `batched` mode, one call per job in `exact`).
    pub fn latents(&self, jobs: &[Job]) -> Result<Vec<f32>, String> {
        self.latents_timed(jobs, None)
    }

    /// [`Generator::latents`], adding the nanoseconds spent inside the denoiser calls to
    /// `model_ns` when given.
    pub fn latents_timed(&self, jobs: &[Job], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        if self.exact {
            let mut out = Vec::with_capacity(jobs.len() * self.latent_len());
            for j in jobs {
                out.extend(self.run(std::slice::from_ref(j), model_ns)?);
            }
            Ok(out)
        } else {
            self.run(jobs, model_ns)
        }
    }

    fn run(&self, jobs: &[Job], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let err = |e: idflow_models::ModelError| e.to_string();
        let keys: Vec<NoiseKey> = jobs.iter().map(|j| NoiseKey { seed: self.seed, identity: j.identity, sample: j.noise_sample }).collect();
        let x_t = batch_noise(&keys, PRIOR_STEP, &self.latent_shape, &Device::Cpu).map_err(err)?;
        let context = match jobs.first().and_then(|j| j.context) {
            Some(_) => {
                let mut v = Vec::with_capacity(jobs.len() * self.context_dim);
                for j in jobs {
                    let c = j.context.ok_or("a job without context in a conditional batch")?;
                    if c.len() != self.context_dim {
                        return Err(format!(
                            "identity {}: context has {} values, the model expects {}",
                            j.identity,
                            c.len(),
                            self.context_dim
                        ));
                    }
                    v.extend_from_slice(c);
                }
                Some(Tensor::from_vec(v, (jobs.len(), self.context_dim), &Device::Cpu).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let timed;
        let unet: &dyn Denoiser = match model_ns {
            Some(ns) => {
                timed = TimedDenoiser { inner: self.unet.as_ref(), ns };
                &timed
            }
            None => self.unet.as_ref(),
        };
        let x0 = sample(unet, &self.schedule, &self.sampler, &CpuStepMath, &x_t, context.as_ref(), &keys).map_err(err)?;
        x0.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())
    }
}

/// A denoiser that adds the time spent in its calls to a counter (the report's `model_seconds`).
struct TimedDenoiser<'a> {
    inner: &'a dyn Denoiser,
    ns: &'a AtomicU64,
}

impl TimedDenoiser<'_> {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Denoiser for TimedDenoiser<'_> {
    fn eps(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>) -> idflow_models::Result<Tensor> {
        self.time(|| self.inner.eps(x, t, context))
    }

    fn eps_guided(&self, x: &Tensor, t: &Tensor, context: &Tensor, w: f64) -> idflow_models::Result<Tensor> {
        self.time(|| self.inner.eps_guided(x, t, context, w))
    }
}

struct Diffuse {
    p: Params,
    cfg: UNetConfig,
    seed: u64,
    node: String,
    generator: OnceLock<Result<Arc<Generator>, String>>,
}

impl Operator for Diffuse {
    fn role(&self) -> Role {
        Role::Transform
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        let mut v = vec![ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32))];
        if self.p.sampling.condition == Condition::Context {
            v.push(ColumnReq::new(&self.p.sampling.context_column, ColumnType::F32Tensor));
        }
        v
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("diffuse needs an input")?;
        if self.p.sampling.condition == Condition::Context {
            let f = input.field_with_name(&self.p.sampling.context_column).map_err(|e| e.to_string())?;
            if let DataType::FixedSizeList(_, n) = f.data_type() {
                if *n as usize != self.cfg.context_input_channels {
                    return Err(format!(
                        "column `{}` has {n} values but the model takes {}-wide contexts",
                        self.p.sampling.context_column, self.cfg.context_input_channels
                    ));
                }
            }
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in ["sample", "seed", "latent"] {
            if input.field_with_name(name).is_ok() {
                return Err(format!("input already has a column `{name}`"));
            }
        }
        fields.push(Field::new("sample", DataType::UInt32, false));
        fields.push(Field::new("seed", DataType::UInt64, false));
        fields.push(tensor_field("latent", &self.p.sampling.latent_shape));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let generator = self
            .generator
            .get_or_init(|| Generator::load(&self.p.sampling, &self.cfg, self.seed, ctx.local_workers).map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        Ok(Started::Task(Box::new(DiffuseTask {
            generator,
            per: self.p.samples_per_identity,
            batch: self.p.sampling.batch,
            conditional: self.p.sampling.condition == Condition::Context,
            context_column: self.p.sampling.context_column.clone(),
            latent_field: Arc::new(tensor_field("latent", &self.p.sampling.latent_shape)),
            node: self.node.clone(),
            pending: Vec::new(),
            inputs: Vec::new(),
            pending_work: PendingWork::new(ctx.resume.keys()),
            next_job: 0,
            ctx: ctx.clone(),
        })))
    }
}

struct DiffuseTask {
    generator: Arc<Generator>,
    per: u32,
    batch: usize,
    conditional: bool,
    context_column: String,
    latent_field: Arc<Field>,
    node: String,
    /// Jobs not yet generated: (input index, row, sample).
    pending: Vec<(usize, usize, u32)>,
    /// Input batches that still have pending jobs (indexed by `pending.0`).
    inputs: Vec<RecordBatch>,
    /// Planned jobs minus the keys an interrupted run of this pipeline already wrote (a
    /// differential antijoin, see [`crate::operators::pending`]).
    pending_work: PendingWork,
    /// Job number of the next planned job.
    next_job: u64,
    /// The worker's context: report counters (time inside the denoiser), error policy.
    ctx: TaskContext,
}

impl DiffuseTask {
    fn err(&self, e: impl std::fmt::Display) -> OpError {
        OpError::new(format!("node `{}`: {e}", self.node))
    }

    /// Generates the first `n` pending jobs and emits their rows.
    fn run(&mut self, n: usize, out: &mut Emit) -> OpResult<()> {
        let chunk: Vec<(usize, usize, u32)> = self.pending.drain(..n).collect();
        let mut jobs = Vec::with_capacity(chunk.len());
        for &(b, r, s) in &chunk {
            let batch = &self.inputs[b];
            let identity = u32_column(batch, "identity").map_err(|e| self.err(e))?.value(r) as u64;
            let context = if self.conditional {
                let (vals, d) = tensor_rows(batch, &self.context_column).map_err(|e| self.err(e))?;
                Some(&vals[r * d..(r + 1) * d])
            } else {
                None
            };
            jobs.push(Job { identity, noise_sample: noise_sample(s, 0), context });
        }
        let first = jobs.first().map(|j| (j.identity, j.noise_sample)).unwrap_or_default();
        let latents = self
            .generator
            .latents_timed(&jobs, Some(&self.ctx.counters.model_ns))
            .map_err(|e| self.err(format!("identity {} sample {} (batch of {}): {e}", first.0, first.1, jobs.len())))?;
        let seeds: Vec<u64> = jobs.iter().map(|j| self.generator.row_seed(j.identity, j.noise_sample)).collect();
        drop(jobs);
        // gather input rows (possibly from several input batches) in job order
        let mut parts = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i].0;
            let mut idx = Vec::new();
            while i < chunk.len() && chunk[i].0 == b {
                idx.push(chunk[i].1 as u32);
                i += 1;
            }
            parts.push(arrow_select::take::take_record_batch(&self.inputs[b], &UInt32Array::from(idx))?);
        }
        let schema = self.inputs[chunk[0].0].schema();
        let rows = arrow_select::concat::concat_batches(&schema, &parts)?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("sample", DataType::UInt32, false));
        fields.push(Field::new("seed", DataType::UInt64, false));
        fields.push(self.latent_field.as_ref().clone());
        let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
        cols.push(Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|c| c.2))));
        cols.push(Arc::new(UInt64Array::from(seeds)));
        cols.push(Arc::new(tensor_array(latents, self.generator.latent_len())?));
        let rows = RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?;
        out.rows.push(super::finite::finite_rows(&self.ctx, &self.node, rows, "latent")?);
        // drop input batches no pending job refers to
        let oldest = self.pending.first().map_or(self.inputs.len(), |p| p.0);
        if oldest > 0 {
            self.inputs.drain(..oldest);
            self.pending.iter_mut().for_each(|p| p.0 -= oldest);
        }
        Ok(())
    }
}

impl Task for DiffuseTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let b = self.inputs.len();
        let ids = u32_column(&batch, "identity").map_err(|e| self.err(e))?;
        // The plan of this batch: every (identity, sample) with a job number in generation
        // order; the antijoin with the done keys says which ones are still to do, so samples
        // an interrupted run already wrote are not generated again.
        let base = self.next_job;
        let per = self.per as u64;
        let planned: Vec<((u64, u64), u64)> = (0..batch.num_rows() as u64)
            .flat_map(|r| {
                let identity = ids.value(r as usize) as u64;
                (0..per).map(move |s| ((identity, s), base + r * per + s))
            })
            .collect();
        self.next_job += batch.num_rows() as u64 * per;
        for job in self.pending_work.pending(planned) {
            let offset = job - base;
            self.pending.push((b, (offset / per) as usize, (offset % per) as u32));
        }
        self.inputs.push(batch);
        while self.pending.len() >= self.batch {
            self.run(self.batch, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        if !self.pending.is_empty() {
            self.run(self.pending.len(), out)?;
        }
        Ok(())
    }
}
