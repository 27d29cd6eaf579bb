//! `decode-latent`: latents → encoded face images with the VQ first stage, as IDiff-Face's
//! sampler does: quantise to the nearest codewords (optional), `post_quant_conv` + decoder,
//! clamp to [−1, 1], map to uint8 RGB as torchvision's `save_image` does
//! (`floor(((x + 1)/2)·255 + 0.5)`), optionally resize (e.g. 128 → 112, the training size), and
//! encode PNG or JPEG. Adds an `image` (Binary) column.
//!
//! As in `diffuse`, `reproducible: exact` (default) decodes one latent per call so the bytes do
//! not depend on batch composition; `batched` stacks `batch` latents per call.

use super::support::columns::{latent_shape, tensor_rows};
use super::support::latent_decoder::{check_decode, DecodeParams, LatentDecoder};
use super::{BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Started, Task, TaskContext};
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_models::vq::VqConfig;
use std::sync::{Arc, OnceLock};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "decode-latent",
        role: Role::Transform,
        summary: "Decode latents with the VQ first stage into PNG/JPEG face images",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/decode-latent.md");

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: DecodeParams = ctx.node.parse_params()?;
    let cfg = check_decode(&ctx.node, &p, &|f| f.to_string())?;
    Ok(Arc::new(DecodeLatent { p, cfg, node: ctx.node.id.clone(), decoder: OnceLock::new() }))
}

struct DecodeLatent {
    p: DecodeParams,
    cfg: VqConfig,
    node: String,
    decoder: OnceLock<Result<Arc<LatentDecoder>, String>>,
}

impl Operator for DecodeLatent {
    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::F32Tensor)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("decode-latent needs an input")?;
        let f = input.field_with_name(&self.p.column).map_err(|e| e.to_string())?;
        let shape = latent_shape(f)?;
        if shape[0] != self.cfg.embed_dim {
            return Err(format!("latents have {} channels, the first stage expects {}", shape[0], self.cfg.embed_dim));
        }
        if input.field_with_name("image").is_ok() {
            return Err("input already has an `image` column".into());
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("image", DataType::Binary, false));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let decoder = self
            .decoder
            .get_or_init(|| LatentDecoder::load(&self.p, &self.cfg, ctx.local_workers).map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        Ok(Started::Task(Box::new(DecodeLatentTask { decoder, column: self.p.column.clone(), node: self.node.clone() })))
    }
}

struct DecodeLatentTask {
    decoder: Arc<LatentDecoder>,
    column: String,
    node: String,
}

impl Task for DecodeLatentTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let schema = batch.schema();
        let field = schema.field_with_name(&self.column).map_err(|e| err(e.to_string()))?;
        let shape = latent_shape(field).map_err(err)?;
        let (latents, _) = tensor_rows(&batch, &self.column).map_err(err)?;
        let first = super::support::rows::row_label(&batch, 0);
        let images = self.decoder.encoded(latents, shape).map_err(|e| err(format!("rows from {first}: {e}")))?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("image", DataType::Binary, false));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))));
        out.rows.push(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?);
        Ok(())
    }
}
