//! `diffuse`: the reverse diffusion of IDiff-Face. For every context row it generates
//! `samples_per_identity` latents with the ConditionalUNet (ancestral DDPM over all T steps, or
//! DDIM with `steps`/`eta`, optional classifier-free guidance) and emits one row per sample:
//! the input columns plus `sample`, `seed` and `latent` (`FixedSizeList<Float32, C·H·W>`).
//!
//! Every random draw is keyed: x_T by (seed, identity, sample, [`idflow_models::sampler::PRIOR_STEP`]) and the step
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

use super::support::columns::{tensor_array, tensor_field, tensor_rows};
use super::support::generator::{check_sampling, noise_sample, Condition, Generator, Job, SamplingParams};
use super::support::pending::PendingWork;
use super::{BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Started, Task, TaskContext};
use crate::batch::u32_column;
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_models::unet::UNetConfig;
use std::sync::{Arc, OnceLock};

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

const PARAMS: &str = include_str!("params/diffuse.md");

/// `diffuse`'s parameters: the sampling parameters plus the sample count.
#[derive(Debug, Clone)]
struct Params {
    samples_per_identity: u32,
    sampling: SamplingParams,
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

struct Diffuse {
    p: Params,
    cfg: UNetConfig,
    seed: u64,
    node: String,
    generator: OnceLock<Result<Arc<Generator>, String>>,
}

impl Operator for Diffuse {
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
    /// differential antijoin, see [`crate::operators::support::pending`]).
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
        out.rows.push(super::support::finite::finite_rows(&self.ctx, &self.node, rows, "latent")?);
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
