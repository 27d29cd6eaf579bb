//! The `FixedSizeList<Float32, n>` tensor columns the operators exchange (latents, contexts,
//! embeddings): building their fields and arrays, reading their rows, and their `shape` metadata.

use crate::batch::column;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// A `FixedSizeList<Float32, Π shape>` field with `shape` metadata (e.g. `[3,32,32]`).
pub fn tensor_field(name: &str, shape: &[usize]) -> Field {
    let len: usize = shape.iter().product();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let meta = HashMap::from([("shape".to_string(), format!("[{}]", dims.join(",")))]);
    Field::new(name, DataType::FixedSizeList(item, len as i32), false).with_metadata(meta)
}

/// A tensor column of `values.len() / width` rows.
pub fn tensor_array(values: Vec<f32>, width: usize) -> Result<FixedSizeListArray, arrow_schema::ArrowError> {
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        width as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// The values of a tensor column, row-major, and the row width. Nulls are refused.
pub fn tensor_rows<'a>(b: &'a RecordBatch, name: &str) -> Result<(&'a [f32], usize), String> {
    let list = column(b, name)?.as_fixed_size_list_opt().ok_or_else(|| format!("column `{name}` is not a FixedSizeList"))?;
    if list.null_count() > 0 {
        return Err(format!("column `{name}` has null rows"));
    }
    let width = list.value_length() as usize;
    let values = list.values().as_primitive_opt::<Float32Type>().ok_or_else(|| format!("column `{name}` is not Float32"))?;
    let start = list.offset() * width;
    let all = values.values();
    all.get(start..start + list.len() * width).map(|v| (v, width)).ok_or_else(|| format!("column `{name}` is shorter than its rows"))
}

/// The `shape` metadata of a tensor field, parsed (`[3,32,32]` → `[3, 32, 32]`).
pub fn field_shape(f: &Field) -> Option<Vec<usize>> {
    let s = f.metadata().get("shape")?;
    s.trim_matches(['[', ']']).split(',').map(|d| d.trim().parse().ok()).collect()
}

/// The latent shape of a column, from its `shape` metadata (or `[3, s, s]` for a square width).
pub fn latent_shape(f: &Field) -> Result<[usize; 3], String> {
    if let Some(s) = field_shape(f) {
        if let [c, h, w] = s[..] {
            return Ok([c, h, w]);
        }
        return Err(format!("column `{}` has shape {s:?}, expected [c, h, w]", f.name()));
    }
    if let DataType::FixedSizeList(_, n) = f.data_type() {
        let side = ((*n as usize / 3) as f64).sqrt() as usize;
        if 3 * side * side == *n as usize {
            return Ok([3, side, side]);
        }
    }
    Err(format!("column `{}` has no `shape` metadata; cannot tell its latent shape", f.name()))
}

/// The input schema of a one-input transform with the new column `field` appended (the
/// input's metadata kept); an error naming the clash when the input already has that column.
pub fn append_column(inputs: &[SchemaRef], op: &str, field: Field) -> Result<SchemaRef, String> {
    let input = inputs.first().ok_or_else(|| format!("{op} needs an input"))?;
    if input.field_with_name(field.name()).is_ok() {
        return Err(format!("input already has a column `{}`; choose another `output`", field.name()));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(field);
    Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
}
