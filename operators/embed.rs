//! `embed`: a frozen face encoder (ElasticFace / insightface IResNet) over an encoded image
//! column. Each image is decoded, resized to the encoder input (112×112, bilinear), normalised
//! `(x/255 − mean)/std` (default 0.5/0.5, the ElasticFace convention), optionally embedded a
//! second time horizontally flipped and summed (the verification protocol's flip TTA), and
//! L2-normalised into an `embedding` column (`FixedSizeList<Float32, num_features>`).
//!
//! `reproducible: exact` (default) runs one image per forward pass so the embedding does not
//! depend on batch composition (see `diffuse`); `batched` stacks `batch` images.

use super::diffuse::Reproducible;
use super::model_spec::{self, tensor_array, tensor_field, Backend, Inference, ModelRef, Provider};
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, ParamDoc, Role, Started, Task, TaskContext,
};
use crate::batch::binary_column;
use crate::spec::{ConfigError, NodeSpec};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use candle_core::{Device, Tensor};
use idflow_dataset::formats::image_bytes::decode_complete;
use idflow_models::iresnet::IResNetConfig;
use idflow_models::traits::FaceEncoder;
use image::{imageops, RgbImage};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "encoder",
        ty: "{checkpoint, config}",
        default: "required",
        doc: "IResNet weights; config: iresnet50 (default) | iresnet18/34/100/200 | JSON | inline {layers, num_features}",
    },
    model_spec::INFERENCE_PARAMS[0],
    model_spec::INFERENCE_PARAMS[1],
    model_spec::INFERENCE_PARAMS[2],
    ParamDoc { name: "column", ty: "string", default: "image", doc: "encoded image column" },
    ParamDoc { name: "output", ty: "string", default: "embedding", doc: "embedding column to add" },
    ParamDoc { name: "flip", ty: "bool", default: "false", doc: "flip TTA: normalize(f(x) + f(flip(x)))" },
    ParamDoc { name: "mean", ty: "[r, g, b]", default: "[0.5, 0.5, 0.5]", doc: "subtracted after scaling to [0, 1]" },
    ParamDoc { name: "std", ty: "[r, g, b]", default: "[0.5, 0.5, 0.5]", doc: "divisor after subtracting the mean" },
    ParamDoc { name: "batch", ty: "integer", default: "32", doc: "images per forward pass (batched mode)" },
    ParamDoc {
        name: "reproducible",
        ty: "exact | batched",
        default: "exact",
        doc: "exact: one image per pass (embedding independent of batching)",
    },
];

/// The encoder input side (IResNet's `fc` expects 512·7·7 features, i.e. 112×112 inputs).
pub const INPUT_SIZE: u32 = 112;

/// Embedding parameters, shared with `filter`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Encoder weights and configuration.
    pub encoder: ModelRef,
    /// Backend (default `onnx`).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads per worker (default cores / workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Image column.
    #[serde(default = "default_column")]
    pub column: String,
    /// Output column.
    #[serde(default = "default_output")]
    pub output: String,
    /// Flip TTA.
    #[serde(default)]
    pub flip: bool,
    /// Normalisation mean.
    #[serde(default = "default_half")]
    pub mean: [f32; 3],
    /// Normalisation std.
    #[serde(default = "default_half")]
    pub std: [f32; 3],
    /// Images per pass.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Exact or batched.
    #[serde(default = "default_reproducible")]
    pub reproducible: Reproducible,
}

fn default_column() -> String {
    "image".into()
}
fn default_output() -> String {
    "embedding".into()
}
fn default_half() -> [f32; 3] {
    [0.5; 3]
}
fn default_batch() -> usize {
    32
}
fn default_reproducible() -> Reproducible {
    Reproducible::Exact
}

/// Plan-time checks; returns the resolved configuration.
pub fn check_embed(node: &NodeSpec, p: &EmbedParams, field: &dyn Fn(&str) -> String) -> Result<IResNetConfig, ConfigError> {
    let cfg = model_spec::iresnet_config(p.encoder.config.as_ref()).map_err(|e| node.error(Some(&*field("encoder")), e))?;
    if cfg.num_features == 0 {
        return Err(node.error(Some(&*field("encoder")), "num_features must be positive"));
    }
    model_spec::check_inference(node, p.threads, field)?;
    model_spec::check_checkpoint(node, &field("encoder"), &p.encoder.checkpoint, model_spec::Network::IResNet(&cfg))?;
    if p.std.contains(&0.0) {
        return Err(node.error(Some(&*field("std")), "must not contain 0"));
    }
    if p.batch == 0 {
        return Err(node.error(Some(&*field("batch")), "must be at least 1"));
    }
    Ok(cfg)
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: EmbedParams = ctx.node.parse_params()?;
    let cfg = check_embed(&ctx.node, &p, &|f| f.to_string())?;
    Ok(Arc::new(Embed { p, cfg, node: ctx.node.id.clone(), encoder: OnceLock::new() }))
}

/// A loaded face encoder plus preprocessing settings.
pub struct FaceEmbedder {
    net: Box<dyn FaceEncoder>,
    p: EmbedParams,
    dim: usize,
    /// Input side of the encoder (the config's `input_size`).
    side: u32,
}

impl FaceEmbedder {
    /// Loads the encoder weights (on the node's backend, sized for `workers` local workers).
    pub fn load(p: &EmbedParams, cfg: &IResNetConfig, workers: usize) -> Result<Self, String> {
        let side = u32::try_from(cfg.input_size).map_err(|_| format!("input_size {} is too large", cfg.input_size))?;
        let inference = Inference::new(p.backend, p.threads, &p.providers, workers);
        Ok(Self { net: model_spec::load_iresnet(&inference, &p.encoder.checkpoint, cfg)?, p: p.clone(), dim: cfg.num_features, side })
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Decodes and resizes one encoded image to the encoder input.
    pub fn prepare(bytes: &[u8], side: u32) -> Result<RgbImage, String> {
        let img = decode_complete(bytes).map_err(|e| e.to_string())?.to_rgb8();
        Ok(if img.dimensions() == (side, side) { img } else { imageops::resize(&img, side, side, imageops::FilterType::Triangle) })
    }

    /// [`FaceEmbedder::prepare`] at this encoder's input size.
    pub fn prepare_for(&self, bytes: &[u8]) -> Result<RgbImage, String> {
        Self::prepare(bytes, self.side)
    }

    fn tensor(&self, imgs: &[&RgbImage], flip: bool) -> candle_core::Result<Tensor> {
        let s = self.side as usize;
        let plane = s * s;
        let mut v = vec![0f32; imgs.len() * 3 * plane];
        for (n, img) in imgs.iter().enumerate() {
            for (x, y, px) in img.enumerate_pixels() {
                let xx = if flip { s - 1 - x as usize } else { x as usize };
                let i = y as usize * s + xx;
                for c in 0..3 {
                    v[n * 3 * plane + c * plane + i] = (px.0[c] as f32 / 255.0 - self.p.mean[c]) / self.p.std[c];
                }
            }
        }
        Tensor::from_vec(v, (imgs.len(), 3, s, s), &Device::Cpu)
    }

    fn features(&self, imgs: &[&RgbImage], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let run = |flip: bool| -> Result<Vec<f32>, String> {
            let t = self.tensor(imgs, flip).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let f = self.net.embed(&t);
            if let Some(ns) = model_ns {
                ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            let f = f.map_err(|e| e.to_string())?;
            f.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(|e| e.to_string())
        };
        let mut f = run(false)?;
        if self.p.flip {
            for (a, b) in f.iter_mut().zip(run(true)?) {
                *a += b;
            }
        }
        Ok(f)
    }

    /// L2-normalised embeddings of prepared 112×112 images, row-major.
    pub fn embed_images(&self, imgs: &[RgbImage]) -> Result<Vec<f32>, String> {
        self.embed_images_timed(imgs, None)
    }

    /// [`FaceEmbedder::embed_images`], adding the nanoseconds spent inside the encoder calls to
    /// `model_ns` when given.
    pub fn embed_images_timed(&self, imgs: &[RgbImage], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let chunk = if self.p.reproducible == Reproducible::Exact { 1 } else { self.p.batch };
        let mut out = Vec::with_capacity(imgs.len() * self.dim);
        for group in imgs.chunks(chunk) {
            let refs: Vec<&RgbImage> = group.iter().collect();
            out.extend(self.features(&refs, model_ns)?);
        }
        for row in out.chunks_mut(self.dim) {
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        Ok(out)
    }
}

struct Embed {
    p: EmbedParams,
    cfg: IResNetConfig,
    node: String,
    encoder: OnceLock<Result<Arc<FaceEmbedder>, String>>,
}

impl Operator for Embed {
    fn role(&self) -> Role {
        Role::Transform
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::Bytes)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("embed needs an input")?;
        if input.field_with_name(&self.p.output).is_ok() {
            return Err(format!("input already has a column `{}`; choose another `output`", self.p.output));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(tensor_field(&self.p.output, &[self.cfg.num_features]));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
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
        let images = binary_column(&batch, &self.p.column).map_err(|e| OpError::new(format!("node `{node}`: {e}")))?;
        let mut prepared = Vec::with_capacity(batch.num_rows());
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let res = if images.is_null(i) { Err("image is null".to_string()) } else { self.encoder.prepare_for(images.value(i)) };
            match res {
                Ok(img) => {
                    prepared.push(img);
                    keep.push(true);
                }
                Err(e) => {
                    self.ctx.bad_row(OpError::new(format!("node `{node}`: {}: {e}", super::filter::row_label(&batch, i))))?;
                    keep.push(false);
                }
            }
        }
        let batch =
            if keep.iter().all(|k| *k) { batch } else { arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))? };
        let emb = self
            .encoder
            .embed_images_timed(&prepared, Some(&self.ctx.counters.model_ns))
            .map_err(|e| OpError::new(format!("node `{node}`: rows from {}: {e}", super::filter::row_label(&batch, 0))))?;
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(tensor_field(&self.p.output, &[self.encoder.dim()]));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(tensor_array(emb, self.encoder.dim())?));
        let rows = RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?;
        out.rows.push(super::finite::finite_rows(&self.ctx, node, rows, &self.p.output)?);
        Ok(())
    }
}
