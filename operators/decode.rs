//! `decode`: encoded JPEG/PNG bytes → an RGB float tensor column (CHW, row-major), with optional
//! resize (bilinear or area), center crop, and mean/std normalisation (default the
//! face-recognition convention `(x/255 − 0.5)/0.5`). The tensor shape is recorded in the field
//! metadata (`shape` = `[3,H,W]`, `layout` = `CHW`).
//!
//! Decoding uses the `image` crate. Area resampling (box averaging with fractional coverage,
//! OpenCV's INTER_AREA for downscaling) is written here because `image` offers no area filter.

use super::support::columns::append_column;
use super::support::images::{area_resize, Size};
use super::{BuildContext, ColumnReq, ColumnType, Emit, OpResult, Operator, OperatorInfo, Role, Started, Task, TaskContext};
use super::support::rows::map_image_rows;
use crate::batch::{column, str_column};
use crate::spec::ConfigError;
use arrow_array::{FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use idflow_dataset::formats::image_bytes::decode_complete;
use image::imageops;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "decode",
        role: Role::Transform,
        summary: "Decode JPEG/PNG bytes into a normalised RGB tensor column",
        params: PARAMS,
        build,
    }
}

const PARAMS: &str = include_str!("params/decode.md");

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Filter {
    Bilinear,
    Area,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_column")]
    column: String,
    #[serde(default = "default_output")]
    output: String,
    #[serde(default)]
    size: Option<Size>,
    #[serde(default = "default_filter")]
    resize: Filter,
    #[serde(default)]
    center_crop: Option<Size>,
    #[serde(default = "default_half")]
    mean: [f32; 3],
    #[serde(default = "default_half")]
    std: [f32; 3],
}

fn default_column() -> String {
    "image".into()
}
fn default_output() -> String {
    "tensor".into()
}
fn default_filter() -> Filter {
    Filter::Bilinear
}
fn default_half() -> [f32; 3] {
    [0.5; 3]
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: Params = ctx.node.parse_params()?;
    let Some(size) = p.size else {
        return Err(ctx
            .node
            .error(Some("size"), "missing: the tensor shape must be known before the run (give `size: 112` or `size: [h, w]`)"));
    };
    let (h, w) = size.hw();
    if h == 0 || w == 0 {
        return Err(ctx.node.error(Some("size"), "must be positive"));
    }
    let out_hw = match p.center_crop {
        Some(c) => {
            let (ch, cw) = c.hw();
            if ch == 0 || cw == 0 || ch > h || cw > w {
                return Err(ctx.node.error(Some("center_crop"), format!("crop {ch}x{cw} must be positive and fit in size {h}x{w}")));
            }
            (ch, cw)
        }
        None => (h, w),
    };
    if p.std.contains(&0.0) {
        return Err(ctx.node.error(Some("std"), "must not contain 0"));
    }
    Ok(Arc::new(Decode { p, resize: (h, w), out: out_hw, node: ctx.node.id.clone() }))
}

struct Decode {
    p: Params,
    resize: (u32, u32),
    out: (u32, u32),
    node: String,
}

impl Decode {
    fn tensor_field(&self) -> Field {
        let (h, w) = self.out;
        let len = (3 * h * w) as i32;
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let meta = HashMap::from([("shape".to_string(), format!("[3,{h},{w}]")), ("layout".to_string(), "CHW".to_string())]);
        Field::new(&self.p.output, DataType::FixedSizeList(item, len), false).with_metadata(meta)
    }
}

impl Operator for Decode {
    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::Bytes)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        append_column(inputs, "decode", self.tensor_field())
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        Ok(Started::Task(Box::new(DecodeTask {
            resize: self.resize,
            out: self.out,
            filter: self.p.resize,
            column: self.p.column.clone(),
            mean: self.p.mean,
            std: self.p.std,
            field: Arc::new(self.tensor_field()),
            node: self.node.clone(),
            ctx: ctx.clone(),
        })))
    }
}

struct DecodeTask {
    resize: (u32, u32),
    out: (u32, u32),
    filter: Filter,
    column: String,
    mean: [f32; 3],
    std: [f32; 3],
    field: Arc<Field>,
    node: String,
    ctx: TaskContext,
}

impl DecodeTask {
    /// Decodes one image into `dst` (CHW floats).
    fn decode_one(&self, bytes: &[u8], dst: &mut Vec<f32>) -> Result<(), String> {
        let img = decode_complete(bytes).map_err(|e| e.to_string())?.to_rgb8();
        let (h, w) = self.resize;
        let img = if img.height() == h && img.width() == w {
            img
        } else {
            match self.filter {
                Filter::Bilinear => imageops::resize(&img, w, h, imageops::FilterType::Triangle),
                Filter::Area => area_resize(&img, w, h),
            }
        };
        let (oh, ow) = self.out;
        let (y0, x0) = ((h - oh) / 2, (w - ow) / 2);
        let plane = (oh * ow) as usize;
        let base = dst.len();
        dst.resize(base + 3 * plane, 0.0);
        for y in 0..oh {
            for x in 0..ow {
                let px = img.get_pixel(x0 + x, y0 + y).0;
                let i = (y * ow + x) as usize;
                for c in 0..3 {
                    dst[base + c * plane + i] = (px[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(())
    }
}

impl Task for DecodeTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let node = &self.node;
        let per_row = (3 * self.out.0 * self.out.1) as usize;
        let mut values = Vec::with_capacity(per_row * batch.num_rows());
        // rows are named by their `path` when the batch has one (a folder read)
        let label = |b: &RecordBatch, i: usize| match str_column(b, "path") {
            Ok(p) if column(b, "path").is_ok() => p.value(i).to_string(),
            _ => format!("row {i}"),
        };
        let this = &*self;
        let (batch, _) = map_image_rows(&this.ctx, node, batch, &this.column, label, |bytes| this.decode_one(bytes, &mut values))?;
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            per_row as i32,
            Arc::new(Float32Array::from(values)),
            None,
        )?;
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(self.field.as_ref().clone());
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(list));
        let schema = Arc::new(Schema::new_with_metadata(fields, batch.schema().metadata().clone()));
        out.rows.push(RecordBatch::try_new(schema, cols)?);
        Ok(())
    }
}
