//! `toy-faces`: a source of procedural faces from the toy world (`idflow_dataset::toy`).
//! Rows `identity, sample, seed, image` (PNG bytes) plus every identity parameter as a
//! `Float32` column named `face_<parameter>`. Identity `i` of the output is world identity
//! `identity_offset + i`, so train and test sets can use disjoint ranges of the same world.
//! Each worker renders only the identities it owns.

use super::{next_chunk, BuildContext, OpError, OpResult, Operator, OperatorInfo, Role, SourceTask, Started, TaskContext};
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, BinaryArray, Float32Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::rng::derive_seed;
use idflow_dataset::toy::{self, Difficulty, IdentityParams};
use serde::Deserialize;
use std::sync::Arc;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "toy-faces",
        role: Role::Source,
        summary: "Render procedural toy faces (identity traits + nuisances) as PNG rows",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/toy-faces.md");

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    identities: u32,
    images_per_identity: u32,
    #[serde(default)]
    identity_offset: u64,
    #[serde(default = "default_size")]
    size: u32,
    #[serde(default)]
    world: u64,
    #[serde(default)]
    age: f32,
    #[serde(default)]
    age_max: Option<f32>,
    #[serde(default)]
    difficulty: Difficulty,
    #[serde(default = "default_batch_rows")]
    batch_rows: usize,
}

impl Params {
    /// The age of `(world identity, sample)`: `age`, or the toy world's keyed draw in
    /// `[age, age_max]`.
    fn sample_age(&self, world_identity: u64, sample: u32) -> f32 {
        toy::sample_age(self.world, world_identity, sample as u64, self.age, self.age_max.unwrap_or(self.age))
    }
}

fn default_size() -> u32 {
    toy::DEFAULT_SIZE
}
fn default_batch_rows() -> usize {
    64
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    if p.size == 0 || p.size > 4096 {
        return Err(ctx.node.error(Some("size"), "must be between 1 and 4096"));
    }
    if !(0.0..=1.0).contains(&p.age) {
        return Err(ctx.node.error(Some("age"), "must be within 0..1"));
    }
    if let Some(max) = p.age_max {
        if !(p.age..=1.0).contains(&max) {
            return Err(ctx.node.error(Some("age_max"), format!("must be within age ({})..1, got {max}", p.age)));
        }
    }
    if p.batch_rows == 0 {
        return Err(ctx.node.error(Some("batch_rows"), "must be at least 1"));
    }
    Ok(Arc::new(ToyFaces { p: Arc::new(p), node: ctx.node.id.clone() }))
}

struct ToyFaces {
    p: Arc<Params>,
    node: String,
}

fn param_names() -> Vec<&'static str> {
    IdentityParams::draw(0, 0).columns().into_iter().map(|(n, _)| n).collect()
}

/// The `toy-faces` output schema.
pub fn schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("sample", DataType::UInt32, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("image", DataType::Binary, false),
    ];
    fields.extend(param_names().into_iter().map(|n| Field::new(format!("face_{n}"), DataType::Float32, false)));
    Arc::new(Schema::new(fields))
}

impl Operator for ToyFaces {
    fn output_schema(&self, _inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        Ok(schema())
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        // (identity, sample) pairs of this worker, minus what an interrupted run already wrote.
        let per = self.p.images_per_identity;
        let work: Vec<(u32, u32)> = (0..self.p.identities)
            .filter(|&i| ctx.partition.owns(i as u64))
            .flat_map(|i| (0..per).map(move |s| (i, s)))
            .filter(|&(i, s)| !ctx.resume.is_done(i as u64, s as u64))
            .collect();
        Ok(Started::Source(Box::new(ToyTask { p: self.p.clone(), work, next: 0, schema: schema(), node: self.node.clone() })))
    }
}

struct ToyTask {
    p: Arc<Params>,
    /// This worker's (identity, sample) pairs still to render.
    work: Vec<(u32, u32)>,
    next: usize,
    schema: SchemaRef,
    node: String,
}

impl SourceTask for ToyTask {
    fn expected_rows(&self) -> Option<u64> {
        Some(self.work.len() as u64)
    }

    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        let Some(range) = next_chunk(&mut self.next, self.work.len(), self.p.batch_rows) else { return Ok(None) };
        let rows: Vec<(u32, u32)> = self.work[range].to_vec();
        let mut images = Vec::with_capacity(rows.len());
        let mut params: Vec<Vec<f32>> = Vec::new();
        for &(identity, sample) in &rows {
            let world_identity = self.p.identity_offset + identity as u64;
            let age = self.p.sample_age(world_identity, sample);
            let png = toy::render_png(self.p.world, world_identity, sample as u64, age, self.p.size, &self.p.difficulty)
                .map_err(|e| OpError::new(format!("node `{}`: identity {identity} sample {sample}: {e}", self.node)))?;
            images.push(png);
            let cols = IdentityParams::draw(self.p.world, world_identity).columns();
            if params.is_empty() {
                params = vec![Vec::with_capacity(rows.len()); cols.len()];
            }
            for (slot, (_, v)) in params.iter_mut().zip(cols) {
                slot.push(v);
            }
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|&(i, s)| derive_seed(&[self.p.world, self.p.identity_offset + i as u64, s as u64])),
            )),
            Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))),
        ];
        cols.extend(params.into_iter().map(|v| Arc::new(Float32Array::from(v)) as ArrayRef));
        Ok(Some(RecordBatch::try_new(self.schema.clone(), cols)?))
    }
}
