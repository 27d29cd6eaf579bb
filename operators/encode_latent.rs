//! `encode-latent`: the VQ first stage's encoder + `quant_conv` over an encoded image column,
//! producing the `latent` rows `train` (`task: diffusion`) learns from. Each image is decoded,
//! resized to `size` (bilinear), scaled to `[−1, 1]` (`x/127.5 − 1`, the LDM convention) and
//! encoded without quantisation (`VQModelInterface.encode`); the latent
//! `[embed_dim, size/f, size/f]` (f = 2^(levels − 1)) is added as a `FixedSizeList<Float32>`
//! column with `shape` metadata. Images are encoded one at a time, so a latent does not depend
//! on how rows were batched.

use super::support::columns::{append_column, tensor_array, tensor_field};
use super::support::model_ref::{self, ConfigRef};
use super::{BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Started, Task, TaskContext};
use super::support::rows::{map_image_rows, row_label};
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use candle_core::{Device, Tensor};
use idflow_models::io::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::vq::{VqConfig, VqEncoder};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "encode-latent",
        role: Role::Transform,
        summary: "Encode face images into first-stage (VQ-f4) latents",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/encode-latent.md");

/// The encoder's weights and configuration.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct FirstStageRef {
    checkpoint: PathBuf,
    #[serde(default)]
    config: Option<ConfigRef>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    first_stage: FirstStageRef,
    #[serde(default = "default_column")]
    column: String,
    #[serde(default = "default_output")]
    output: String,
    #[serde(default = "default_size")]
    size: u32,
}

fn default_column() -> String {
    "image".into()
}
fn default_output() -> String {
    "latent".into()
}
fn default_size() -> u32 {
    128
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    let cfg = model_ref::vq_config(p.first_stage.config.as_ref()).map_err(|e| ctx.node.error(Some("first_stage"), e))?;
    let f = 1usize << cfg.ch_mult.len().saturating_sub(1);
    if p.size == 0 || !(p.size as usize).is_multiple_of(f) {
        return Err(ctx.node.error(Some("size"), format!("must be a positive multiple of the downsampling factor {f}")));
    }
    model_ref::check_checkpoint(&ctx.node, "first_stage", &p.first_stage.checkpoint, model_ref::Network::VqEncoder(&cfg))?;
    let side = p.size as usize / f;
    let shape = [cfg.embed_dim, side, side];
    Ok(Arc::new(EncodeLatent { p, cfg, shape, node: ctx.node.id.clone(), encoder: OnceLock::new() }))
}

struct EncodeLatent {
    p: Params,
    cfg: VqConfig,
    shape: [usize; 3],
    node: String,
    encoder: OnceLock<Result<Arc<VqEncoder>, String>>,
}

fn load_encoder(path: &std::path::Path, cfg: &VqConfig) -> Result<VqEncoder, String> {
    let fail = |e: String| format!("cannot load first-stage encoder {}: {e}", path.display());
    let dict = StateDict::from_file(path).map_err(|e| fail(e.to_string()))?;
    load_model(&dict, &LoadOptions::default(), |vb| VqEncoder::new(cfg, vb)).map(|(e, _)| e).map_err(|e| fail(e.to_string()))
}

impl Operator for EncodeLatent {
    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::Bytes)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        append_column(inputs, "encode-latent", tensor_field(&self.p.output, &self.shape))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let encoder = self
            .encoder
            .get_or_init(|| load_encoder(&self.p.first_stage.checkpoint, &self.cfg).map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        Ok(Started::Task(Box::new(EncodeTask { encoder, p: self.p.clone(), shape: self.shape, node: self.node.clone(), ctx: ctx.clone() })))
    }
}

struct EncodeTask {
    encoder: Arc<VqEncoder>,
    p: Params,
    shape: [usize; 3],
    node: String,
    ctx: TaskContext,
}

impl EncodeTask {
    fn encode_one(&self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        // `decode_image` yields (x/255 − 0.5)/0.5 = x/127.5 − 1
        let s = self.p.size as usize;
        let values = super::support::images::decode_image(bytes, self.p.size)?;
        let x = Tensor::from_vec(values, (1, 3, s, s), &Device::Cpu).map_err(|e| e.to_string())?;
        let h = self.encoder.encode(&x).map_err(|e| e.to_string())?;
        if h.dims()[1..] != self.shape {
            return Err(format!("the encoder produced {:?}, expected {:?}", &h.dims()[1..], self.shape));
        }
        h.flatten_all().and_then(|h| h.to_vec1::<f32>()).map_err(|e| e.to_string())
    }
}

impl Task for EncodeTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let node = self.node.clone();
        let width: usize = self.shape.iter().product();
        let mut latents = Vec::with_capacity(batch.num_rows() * width);
        let this = &*self;
        let (batch, _) = map_image_rows(&this.ctx, &node, batch, &this.p.column, row_label, |bytes| {
            latents.extend(this.encode_one(bytes)?);
            Ok(())
        })?;
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(tensor_field(&self.p.output, &self.shape));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(tensor_array(latents, width)?));
        out.rows.push(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?);
        Ok(())
    }
}
