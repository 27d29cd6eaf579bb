//! `filter`: the identity-consistency gate. A generated sample passes when
//! `cos(embedding, context) ≥ threshold`. With `max_retries: k > 0` a rejected sample is drawn
//! again — same identity and sample index, new noise (`support::generator::noise_sample(sample, attempt)`)
//! — up to k times, so each identity still gets its requested count when the model can deliver.
//!
//! Design: re-drawing needs the whole generation chain, and a dataflow edge cannot feed rows
//! back upstream, so the filter owns a copy of that chain. It takes the same parameter blocks as
//! the `diffuse`, `decode-latent` and `embed` nodes (`generate:`, `decode:`, `embed:`; YAML
//! anchors keep them in sync) and regenerates rejected samples itself, batched per input batch
//! and attempt. Accepted re-draws replace the row's `seed`, latent, `image` and embedding
//! columns; other columns are carried over from the first draw (add per-sample columns after the
//! filter). Rows gain `attempt` (0 = first draw) and `similarity`.
//!
//! Acceptance per identity and overall goes to the commit step: it logs the overall rate and,
//! with `report: path`, writes a JSON file (`identities`, `requested`, `accepted`, `draws`,
//! `acceptance_rate`, `first_draw_acceptance_rate`, `per_identity`).

use super::support::columns::{tensor_array, tensor_field, tensor_rows};
use super::support::face_embedder::{check_embed, EmbedParams, FaceEmbedder};
use super::support::generator::{check_sampling, noise_sample, Generator, Job, SamplingParams};
use super::support::latent_decoder::{check_decode, DecodeParams, LatentDecoder};
use super::support::rows::row_label;
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, PrepareContext, Resume, ResumeSet, Role, Started,
    Task, TaskContext,
};
use crate::output::{Begun, OutputLock, StagedOutput, Stamp};

mod journal;
use crate::batch::u32_column;
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, BinaryArray, Float32Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_models::iresnet::IResNetConfig;
use idflow_models::unet::UNetConfig;
use idflow_models::vq::VqConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "filter",
        role: Role::Transform,
        summary: "Identity-consistency gate cos(embedding, context) >= threshold, re-drawing rejected samples",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/filter.md");

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    threshold: f32,
    #[serde(default)]
    max_retries: u32,
    #[serde(default)]
    generate: Option<SamplingParams>,
    #[serde(default)]
    decode: Option<DecodeParams>,
    #[serde(default)]
    embed: Option<EmbedParams>,
    #[serde(default = "default_context")]
    context_column: String,
    #[serde(default = "default_embedding")]
    embedding_column: String,
    #[serde(default)]
    report: Option<PathBuf>,
}

fn default_context() -> String {
    "context".into()
}
fn default_embedding() -> String {
    "embedding".into()
}

/// The three resolved model configurations of the regeneration chain.
struct Chain {
    generate: SamplingParams,
    unet: UNetConfig,
    decode: DecodeParams,
    vq: VqConfig,
    embed: EmbedParams,
    iresnet: IResNetConfig,
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    let n = &ctx.node;
    if !(-1.0..=1.0).contains(&p.threshold) {
        return Err(n.error(Some("threshold"), "must be a cosine within -1..1"));
    }
    let chain = if p.max_retries > 0 {
        let (Some(g), Some(d), Some(e)) = (p.generate.clone(), p.decode.clone(), p.embed.clone()) else {
            let missing = [("generate", p.generate.is_none()), ("decode", p.decode.is_none()), ("embed", p.embed.is_none())]
                .into_iter()
                .find(|m| m.1)
                .map_or("generate", |m| m.0);
            return Err(n.error(
                Some(missing),
                "missing: re-drawing rejected samples (max_retries > 0) needs the `generate`, `decode` and `embed` parameter blocks",
            ));
        };
        let unet = check_sampling(n, &g, &|f| format!("generate.{f}"))?;
        let vq = check_decode(n, &d, &|f| format!("decode.{f}"))?;
        let iresnet = check_embed(n, &e, &|f| format!("embed.{f}"))?;
        if e.output != p.embedding_column {
            return Err(n.error(Some("embed.output"), format!("must equal embedding_column `{}`", p.embedding_column)));
        }
        if g.context_column != p.context_column {
            return Err(n.error(Some("generate.context_column"), format!("must equal context_column `{}`", p.context_column)));
        }
        Some(Arc::new(Chain { generate: g, unet, decode: d, vq, embed: e, iresnet }))
    } else {
        None
    };
    let stamp = Stamp { fingerprint: ctx.fingerprint.clone(), pipeline: ctx.pipeline.clone(), node: n.id.clone() };
    let staged = p.report.as_ref().map(|r| StagedOutput::json_file(r, stamp));
    Ok(Arc::new(Filter {
        p,
        chain,
        seed: ctx.seed,
        node: n.id.clone(),
        pipeline: ctx.pipeline.clone(),
        fingerprint: ctx.fingerprint.clone(),
        loaded: OnceLock::new(),
        staged,
        lock: std::sync::Mutex::new(None),
    }))
}

/// Cosine of two vectors (not assumed unit-norm).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// The loaded regeneration models.
struct Loaded {
    generator: Generator,
    decoder: LatentDecoder,
    embedder: FaceEmbedder,
}

struct Filter {
    p: Params,
    chain: Option<Arc<Chain>>,
    seed: u64,
    node: String,
    pipeline: String,
    fingerprint: String,
    loaded: OnceLock<Result<Arc<Loaded>, String>>,
    /// The acceptance report (with `report`), staged with its decision journal.
    staged: Option<StagedOutput>,
    /// The report's lock, held from `prepare` to the end of the process (process 0).
    lock: std::sync::Mutex<Option<OutputLock>>,
}

impl Operator for Filter {
    fn outputs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        self.p.report.iter().map(|r| ("acceptance report", r.clone())).collect()
    }

    /// Takes the report (lock, staging folder) and, when an interrupted run of the same plan
    /// left a decision journal, returns the samples it finally rejected: they are not drawn again.
    fn prepare(&self, ctx: &PrepareContext) -> OpResult<Option<Resume>> {
        let Some(out) = &self.staged else { return Ok(None) };
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        if ctx.process_id == 0 {
            let lock = OutputLock::acquire(out.target(), &self.pipeline).map_err(|e| err(e.to_string()))?;
            *self.lock.lock().map_err(|_| err("lock poisoned".into()))? = Some(lock);
        }
        out.check_target(ctx.overwrite, &|_| false).map_err(|e| err(e.to_string()))?;
        if out.open(ctx.process_id, true, &|_| Ok(())).map_err(|e| err(e.to_string()))? == Begun::Fresh {
            return Ok(None);
        }
        let rejected = journal::read_all(out.staging()).map_err(err)?.into_values().filter(|d| !d.accepted);
        Ok(Some(Resume::Decided(ResumeSet::new(rejected.map(|d| (d.identity as u64, d.sample as u64)).collect()))))
    }

    fn complete(&self) -> Option<bool> {
        self.staged.as_ref().map(StagedOutput::is_published)
    }

    fn publish(&self) -> OpResult<()> {
        let Some(out) = &self.staged else { return Ok(()) };
        out.publish().map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        let mut v = vec![
            ColumnReq::new("identity", ColumnType::Exact(DataType::UInt32)),
            ColumnReq::new(&self.p.context_column, ColumnType::F32Tensor),
            ColumnReq::new(&self.p.embedding_column, ColumnType::F32Tensor),
        ];
        if self.chain.is_some() || self.staged.is_some() {
            // the decision journal and the re-draws key samples by (identity, sample)
            v.push(ColumnReq::new("sample", ColumnType::Exact(DataType::UInt32)));
        }
        if self.chain.is_some() {
            v.push(ColumnReq::new("seed", ColumnType::Exact(DataType::UInt64)));
            v.push(ColumnReq::new("latent", ColumnType::F32Tensor));
            v.push(ColumnReq::new("image", ColumnType::Exact(DataType::Binary)));
        }
        v
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("filter needs an input")?;
        for name in ["attempt", "similarity"] {
            if input.field_with_name(name).is_ok() {
                return Err(format!("input already has a column `{name}`"));
            }
        }
        if let Some(c) = &self.chain {
            let f = input.field_with_name("latent").map_err(|e| e.to_string())?;
            let shape = super::support::columns::latent_shape(f)?;
            if shape != c.generate.latent_shape {
                return Err(format!("input latents have shape {shape:?} but generate.latent_shape is {:?}", c.generate.latent_shape));
            }
            let e = input.field_with_name(&self.p.embedding_column).map_err(|e| e.to_string())?;
            if e.data_type() != tensor_field("x", &[c.iresnet.num_features]).data_type() {
                return Err(format!(
                    "column `{}` is not {} wide like the embed block's encoder",
                    self.p.embedding_column, c.iresnet.num_features
                ));
            }
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("attempt", DataType::UInt32, false));
        fields.push(Field::new("similarity", DataType::Float32, false));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let workers = ctx.local_workers;
        let loaded = match &self.chain {
            None => None,
            Some(c) => Some(
                self.loaded
                    .get_or_init(|| {
                        Ok(Arc::new(Loaded {
                            generator: Generator::load(&c.generate, &c.unet, self.seed, workers)?,
                            decoder: LatentDecoder::load(&c.decode, &c.vq, workers)?,
                            embedder: FaceEmbedder::load(&c.embed, &c.iresnet, workers)?,
                        }))
                    })
                    .clone()
                    .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?,
            ),
        };
        let journal = match &self.staged {
            Some(out) => Some(
                journal::Journal::open(out.staging(), ctx.partition.worker)
                    .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?,
            ),
            None => None,
        };
        Ok(Started::Task(Box::new(FilterTask { p: self.p.clone(), loaded, node: self.node.clone(), stats: BTreeMap::new(), journal })))
    }

    fn has_commit(&self) -> bool {
        true
    }

    /// Sums the acceptance statistics (from the decision journal when there is a report, so
    /// they cover every run that built the dataset), logs them and stages the report.
    fn commit(&self, rows: Vec<RecordBatch>) -> OpResult<()> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let mut per: BTreeMap<u32, Stats> = BTreeMap::new();
        if let Some(out) = &self.staged {
            for d in journal::read_all(out.staging()).map_err(err)?.into_values() {
                let s = per.entry(d.identity).or_default();
                s.requested += 1;
                s.draws += d.draws;
                s.accepted += u32::from(d.accepted);
                s.accepted_first += u32::from(d.first);
            }
        }
        for b in rows.iter().filter(|_| self.staged.is_none()) {
            let col = |n: &str| u32_column(b, n).map_err(|e| err(e.clone()));
            let (id, req, acc, first, draws) =
                (col("identity")?, col("requested")?, col("accepted")?, col("accepted_first")?, col("draws")?);
            for i in 0..b.num_rows() {
                let s = per.entry(id.value(i)).or_default();
                s.requested += req.value(i);
                s.accepted += acc.value(i);
                s.accepted_first += first.value(i);
                s.draws += draws.value(i);
            }
        }
        let total = per.values().fold(Stats::default(), |mut t, s| {
            t.requested += s.requested;
            t.accepted += s.accepted;
            t.accepted_first += s.accepted_first;
            t.draws += s.draws;
            t
        });
        let rate = |a: u32, n: u32| if n == 0 { 0.0 } else { a as f64 / n as f64 };
        tracing::info!(
            "node `{}`: accepted {}/{} samples ({:.1}%), {:.1}% on the first draw, {} draws",
            self.node,
            total.accepted,
            total.requested,
            100.0 * rate(total.accepted, total.requested),
            100.0 * rate(total.accepted_first, total.requested),
            total.draws
        );
        let Some(out) = &self.staged else { return Ok(()) };
        let per_identity: Vec<serde_json::Value> = per
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "identity": id, "requested": s.requested, "accepted": s.accepted,
                    "accepted_first_draw": s.accepted_first, "draws": s.draws,
                    "acceptance_rate": rate(s.accepted, s.requested),
                })
            })
            .collect();
        let json = serde_json::json!({
            "node": self.node,
            "fingerprint": self.fingerprint,
            "threshold": self.p.threshold,
            "max_retries": self.p.max_retries,
            "identities": per.len(),
            "requested": total.requested,
            "accepted": total.accepted,
            "accepted_first_draw": total.accepted_first,
            "draws": total.draws,
            "acceptance_rate": rate(total.accepted, total.requested),
            "first_draw_acceptance_rate": rate(total.accepted_first, total.requested),
            "draw_acceptance_rate": rate(total.accepted, total.draws),
            "per_identity": per_identity,
        });
        let text = serde_json::to_vec_pretty(&json).map_err(|e| err(e.to_string()))?;
        let path = out.staged_file();
        crate::fsutil::atomic_write(&path, &text).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    requested: u32,
    accepted: u32,
    accepted_first: u32,
    draws: u32,
}

struct FilterTask {
    p: Params,
    loaded: Option<Arc<Loaded>>,
    node: String,
    stats: BTreeMap<u32, Stats>,
    /// This worker's decision journal (with `report`).
    journal: Option<journal::Journal>,
}

/// The refreshed values of one re-drawn sample.
struct Redraw {
    attempt: u32,
    seed: u64,
    latent: Vec<f32>,
    image: Vec<u8>,
    embedding: Vec<f32>,
    similarity: f32,
}

impl FilterTask {
    fn err(&self, e: impl std::fmt::Display) -> OpError {
        OpError::new(format!("node `{}`: {e}", self.node))
    }

    /// Re-draws rows `todo` until accepted or out of retries; returns accepted re-draws by row.
    fn redraw(&self, batch: &RecordBatch, mut todo: Vec<usize>, draws: &mut [u32]) -> OpResult<BTreeMap<usize, Redraw>> {
        let mut done = BTreeMap::new();
        let Some(m) = &self.loaded else { return Ok(done) };
        let ids = u32_column(batch, "identity").map_err(|e| self.err(e))?;
        let samples = u32_column(batch, "sample").map_err(|e| self.err(e))?;
        let (ctx, cd) = tensor_rows(batch, &self.p.context_column).map_err(|e| self.err(e))?;
        let shape = m.generator.latent_shape();
        let per: usize = shape.iter().product();
        for attempt in 1..=self.p.max_retries {
            if todo.is_empty() {
                break;
            }
            let jobs: Vec<Job> = todo
                .iter()
                .map(|&r| Job {
                    identity: ids.value(r) as u64,
                    noise_sample: noise_sample(samples.value(r), attempt),
                    context: Some(&ctx[r * cd..(r + 1) * cd]),
                })
                .collect();
            let what = || format!("{} (attempt {attempt})", row_label(batch, todo[0]));
            let latents = m.generator.latents(&jobs).map_err(|e| self.err(format!("{}: {e}", what())))?;
            let images = m.decoder.encoded(&latents, shape).map_err(|e| self.err(format!("{}: {e}", what())))?;
            let prepared = images
                .iter()
                .map(|b| m.embedder.prepare_for(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(format!("{}: {e}", what())))?;
            let emb = m.embedder.embed_images(&prepared).map_err(|e| self.err(format!("{}: {e}", what())))?;
            let d = m.embedder.dim();
            let mut still = Vec::new();
            for (k, (&r, image)) in todo.iter().zip(images).enumerate() {
                draws[r] += 1;
                let e = &emb[k * d..(k + 1) * d];
                let bad = super::support::finite::first_non_finite(&latents[k * per..(k + 1) * per])
                    .map(|v| format!("latent ({v})"))
                    .or_else(|| super::support::finite::first_non_finite(e).map(|v| format!("embedding ({v})")));
                if let Some(what) = bad {
                    return Err(self.err(format!("{} (attempt {attempt}): the re-drawn {what} is not finite", row_label(batch, r))));
                }
                let sim = cosine(e, &ctx[r * cd..(r + 1) * cd]);
                if sim >= self.p.threshold {
                    done.insert(
                        r,
                        Redraw {
                            attempt,
                            seed: m.generator.row_seed(jobs[k].identity, jobs[k].noise_sample),
                            latent: latents[k * per..(k + 1) * per].to_vec(),
                            image,
                            embedding: e.to_vec(),
                            similarity: sim,
                        },
                    );
                } else {
                    still.push(r);
                }
            }
            todo = still;
        }
        Ok(done)
    }
}

impl Task for FilterTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let n = batch.num_rows();
        let (ctx, cd) = tensor_rows(&batch, &self.p.context_column).map_err(|e| self.err(e))?;
        let (emb, ed) = tensor_rows(&batch, &self.p.embedding_column).map_err(|e| self.err(e))?;
        if cd != ed {
            return Err(self.err(format!("context has {cd} values but embedding has {ed}")));
        }
        let sims: Vec<f32> = (0..n).map(|r| cosine(&emb[r * ed..(r + 1) * ed], &ctx[r * cd..(r + 1) * cd])).collect();
        let rejected: Vec<usize> = (0..n).filter(|&r| sims[r] < self.p.threshold).collect();
        let mut draws = vec![1u32; n];
        let redrawn = self.redraw(&batch, rejected, &mut draws)?;
        let keep: Vec<usize> = (0..n).filter(|&r| sims[r] >= self.p.threshold || redrawn.contains_key(&r)).collect();
        let ids = u32_column(&batch, "identity").map_err(|e| self.err(e))?;
        if let Some(journal) = &mut self.journal {
            let samples = u32_column(&batch, "sample").map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
            let decisions: Vec<journal::Decision> = (0..n)
                .map(|r| journal::Decision {
                    identity: ids.value(r),
                    sample: samples.value(r),
                    draws: draws[r],
                    accepted: sims[r] >= self.p.threshold || redrawn.contains_key(&r),
                    first: sims[r] >= self.p.threshold,
                })
                .collect();
            journal.append(&decisions).map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        }
        for r in 0..n {
            let s = self.stats.entry(ids.value(r)).or_default();
            s.requested += 1;
            s.draws += draws[r];
            if sims[r] >= self.p.threshold {
                s.accepted += 1;
                s.accepted_first += 1;
            } else if redrawn.contains_key(&r) {
                s.accepted += 1;
            }
        }
        let rows = arrow_select::take::take_record_batch(&batch, &UInt32Array::from_iter_values(keep.iter().map(|&r| r as u32)))?;
        let schema = rows.schema();
        let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
        if !redrawn.is_empty() {
            // rebuild the refreshed columns row by row
            let replace = |name: &str, cols: &mut Vec<ArrayRef>, arr: ArrayRef| -> OpResult<()> {
                let i = schema.index_of(name)?;
                cols[i] = arr;
                Ok(())
            };
            let seeds = crate::batch::u64_column(&batch, "seed").map_err(|e| self.err(e))?;
            let (lat, ld) = tensor_rows(&batch, "latent").map_err(|e| self.err(e))?;
            let images = crate::batch::binary_column(&batch, "image").map_err(|e| self.err(e))?;
            let mut seed_v = Vec::with_capacity(keep.len());
            let mut lat_v = Vec::with_capacity(keep.len() * ld);
            let mut img_v: Vec<&[u8]> = Vec::with_capacity(keep.len());
            let mut emb_v = Vec::with_capacity(keep.len() * ed);
            for &r in &keep {
                match redrawn.get(&r) {
                    Some(d) => {
                        seed_v.push(d.seed);
                        lat_v.extend_from_slice(&d.latent);
                        img_v.push(&d.image);
                        emb_v.extend_from_slice(&d.embedding);
                    }
                    None => {
                        seed_v.push(seeds.value(r));
                        lat_v.extend_from_slice(&lat[r * ld..(r + 1) * ld]);
                        img_v.push(images.value(r));
                        emb_v.extend_from_slice(&emb[r * ed..(r + 1) * ed]);
                    }
                }
            }
            replace("seed", &mut cols, Arc::new(UInt64Array::from(seed_v)))?;
            replace("latent", &mut cols, Arc::new(tensor_array(lat_v, ld)?))?;
            replace("image", &mut cols, Arc::new(BinaryArray::from_iter_values(img_v)))?;
            replace(&self.p.embedding_column, &mut cols, Arc::new(tensor_array(emb_v, ed)?))?;
        }
        let attempts: Vec<u32> = keep.iter().map(|r| redrawn.get(r).map_or(0, |d| d.attempt)).collect();
        let similarity: Vec<f32> = keep.iter().map(|r| redrawn.get(r).map_or(sims[*r], |d| d.similarity)).collect();
        cols.push(Arc::new(UInt32Array::from(attempts)));
        cols.push(Arc::new(Float32Array::from(similarity)));
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("attempt", DataType::UInt32, false));
        fields.push(Field::new("similarity", DataType::Float32, false));
        out.rows.push(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?);
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit) -> OpResult<()> {
        let stats = std::mem::take(&mut self.stats);
        if stats.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&Stats) -> u32| -> ArrayRef { Arc::new(UInt32Array::from_iter_values(stats.values().map(f))) };
        let schema = Arc::new(Schema::new(
            ["identity", "requested", "accepted", "accepted_first", "draws"]
                .iter()
                .map(|n| Field::new(*n, DataType::UInt32, false))
                .collect::<Vec<_>>(),
        ));
        let cols = vec![
            Arc::new(UInt32Array::from_iter_values(stats.keys().copied())) as ArrayRef,
            col(|s| s.requested),
            col(|s| s.accepted),
            col(|s| s.accepted_first),
            col(|s| s.draws),
        ];
        out.commit.push(RecordBatch::try_new(schema, cols)?);
        Ok(())
    }
}
