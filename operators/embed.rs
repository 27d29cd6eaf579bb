//! `embed`: a frozen face encoder (ElasticFace / insightface IResNet) over an encoded image
//! column. Each image is decoded, resized to the encoder input (112×112, bilinear), normalised
//! `(x/255 − mean)/std` (default 0.5/0.5, the ElasticFace convention), optionally embedded a
//! second time horizontally flipped and summed (the verification protocol's flip TTA), and
//! L2-normalised into an `embedding` column (`FixedSizeList<Float32, num_features>`).
//!
//! `reproducible: exact` (default) runs one image per forward pass so the embedding does not
//! depend on batch composition (see `diffuse`); `batched` stacks `batch` images.

use super::support::columns::{append_column, tensor_array, tensor_field};
use super::support::face_embedder::{check_embed, EmbedParams, FaceEmbedder};
use super::{BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, Role, Started, Task, TaskContext};
use super::support::rows::{map_image_rows, row_label};
use crate::spec::ConfigError;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use idflow_models::iresnet::IResNetConfig;
use std::sync::{Arc, OnceLock};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "embed",
        role: Role::Transform,
        summary: "Face embeddings from a frozen IResNet encoder (flip TTA optional), L2-normalised",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/embed.md");

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: EmbedParams = ctx.node.parse_params()?;
    let cfg = check_embed(&ctx.node, &p, &|f| f.to_string())?;
    Ok(Arc::new(Embed { p, cfg, node: ctx.node.id.clone(), encoder: OnceLock::new() }))
}

struct Embed {
    p: EmbedParams,
    cfg: IResNetConfig,
    node: String,
    encoder: OnceLock<Result<Arc<FaceEmbedder>, String>>,
}

impl Operator for Embed {
    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::Bytes)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        append_column(inputs, "embed", tensor_field(&self.p.output, &[self.cfg.num_features]))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let encoder = self
            .encoder
            .get_or_init(|| FaceEmbedder::load(&self.p, &self.cfg, ctx.local_workers).map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        Ok(Started::Task(Box::new(EmbedTask { encoder, p: self.p.clone(), node: self.node.clone(), ctx: ctx.clone() })))
    }
}

struct EmbedTask {
    encoder: Arc<FaceEmbedder>,
    p: EmbedParams,
    node: String,
    ctx: TaskContext,
}

impl Task for EmbedTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let node = &self.node;
        let encoder = &self.encoder;
        let (batch, prepared) = map_image_rows(&self.ctx, node, batch, &self.p.column, row_label, |bytes| encoder.prepare_for(bytes))?;
        let emb = self
            .encoder
            .embed_images_timed(&prepared, Some(&self.ctx.counters.model_ns))
            .map_err(|e| OpError::new(format!("node `{node}`: rows from {}: {e}", row_label(&batch, 0))))?;
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(tensor_field(&self.p.output, &[self.encoder.dim()]));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(tensor_array(emb, self.encoder.dim())?));
        let rows = RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?;
        out.rows.push(super::support::finite::finite_rows(&self.ctx, node, rows, &self.p.output)?);
        Ok(())
    }
}
