//! `parquet`: a Parquet file or a folder of shards (any producer; idflow's own output reads
//! back as it was written: a Hugging Face image struct `{bytes, path}` becomes a binary column
//! again). With an `identity` column, rows are split among workers by identity; otherwise by
//! file.

use crate::operators::support::parquet::files;
use crate::operators::{OpError, OpResult, Partition, SourceTask};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether a field is the Hugging Face image struct.
fn is_hf_image(f: &Field) -> bool {
    matches!(f.data_type(), DataType::Struct(children)
        if children.iter().any(|c| c.name() == "bytes" && matches!(c.data_type(), DataType::Binary | DataType::LargeBinary)))
}

fn file_schema(path: &Path) -> Result<SchemaRef, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(b.schema().clone())
}

/// The rows' schema: the first file's, projected to `columns`, image structs as binary.
pub fn schema(root: &Path, columns: Option<&[String]>) -> Result<SchemaRef, String> {
    let first = files(root)?.remove(0);
    let s = file_schema(&first)?;
    let mut fields = Vec::new();
    let wanted: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => s.fields().iter().map(|f| f.name().clone()).collect(),
    };
    for name in &wanted {
        let f = s.field_with_name(name).map_err(|_| format!("{}: no column `{name}`", first.display()))?;
        if is_hf_image(f) {
            fields.push(Field::new(f.name(), DataType::Binary, f.is_nullable()));
        } else {
            fields.push(f.clone().with_metadata(f.metadata().clone()));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A schema declared in the pipeline (`name: type`), for Parquet data that a previous pipeline
/// will write: `uint32`, `uint64`, `int64`, `float32`, `float64`, `bool`, `utf8`, `binary`,
/// `float32[N]` (a tensor / embedding column).
pub fn declared_schema(declared: &indexmap::IndexMap<String, String>) -> Result<SchemaRef, String> {
    let mut fields = Vec::new();
    for (name, ty) in declared {
        let t = ty.trim();
        let dt = match t {
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "int64" => DataType::Int64,
            "float32" => DataType::Float32,
            "float64" => DataType::Float64,
            "bool" => DataType::Boolean,
            "utf8" | "string" => DataType::Utf8,
            "binary" | "image" => DataType::Binary,
            _ => match t.strip_prefix("float32[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<i32>().ok()) {
                Some(n) if n > 0 => DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), n),
                _ => return Err(format!("column `{name}`: unknown type `{t}`")),
            },
        };
        fields.push(Field::new(name, dt, true));
    }
    if fields.is_empty() {
        return Err("declare at least one column".into());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Reads the files in order, keeping this worker's rows.
pub struct ParquetTask {
    files: Vec<PathBuf>,
    file_index: usize,
    reader: Option<ParquetRecordBatchReader>,
    schema: SchemaRef,
    part: Partition,
    by_identity: bool,
    batch_rows: usize,
    /// Rows in all files together (from their footers).
    total: u64,
}

impl ParquetTask {
    /// Prepares to read `root` with the planned `schema`.
    pub fn open(root: &Path, schema: SchemaRef, part: &Partition, batch_rows: usize) -> Result<Self, String> {
        let files = files(root)?;
        let by_identity = schema.field_with_name("identity").is_ok_and(|f| matches!(f.data_type(), DataType::UInt32 | DataType::UInt64));
        let mut total = 0;
        for path in &files {
            total += file_rows(path)?;
        }
        Ok(Self { files, file_index: 0, reader: None, schema, part: part.clone(), by_identity, batch_rows, total })
    }

    fn convert(&self, b: RecordBatch, path: &Path) -> Result<RecordBatch, String> {
        let mut cols: Vec<ArrayRef> = Vec::new();
        for f in self.schema.fields() {
            let c = b.column_by_name(f.name()).ok_or_else(|| format!("{}: no column `{}`", path.display(), f.name()))?;
            if matches!(c.data_type(), DataType::Struct(_)) && f.data_type() == &DataType::Binary {
                let s = c.as_struct();
                let bytes = s.column_by_name("bytes").ok_or("image struct without bytes")?;
                let bytes =
                    arrow_select::take::take(bytes.as_ref(), &arrow_array::UInt32Array::from_iter_values(0..b.num_rows() as u32), None)
                        .map_err(|e| e.to_string())?;
                cols.push(if bytes.data_type() == &DataType::Binary {
                    bytes
                } else {
                    Arc::new(arrow_array::BinaryArray::from_iter(bytes.as_binary::<i64>().iter()))
                });
            } else if !same_type(c.data_type(), f.data_type()) {
                return Err(format!(
                    "{}: column `{}` is {}, the first file has {}",
                    path.display(),
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ));
            } else if c.data_type() == f.data_type() {
                cols.push(c.clone());
            } else {
                cols.push(arrow_cast_list(c, f.data_type())?);
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| e.to_string())?;
        if !self.by_identity {
            return Ok(batch);
        }
        let ids = batch.column_by_name("identity").ok_or("no identity")?;
        let keep: BooleanArray =
            (0..batch.num_rows()).map(|i| crate::batch::id_value(ids.as_ref(), i).map(|v| self.part.owns(v))).collect();
        arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| e.to_string())
    }
}

impl super::ListedSource for ParquetTask {
    fn source_rows(&self) -> u64 {
        self.total
    }
}

/// Rows of one Parquet file, from its footer.
fn file_rows(path: &Path) -> Result<u64, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(u64::try_from(b.metadata().file_metadata().num_rows()).unwrap_or(0))
}

impl SourceTask for ParquetTask {
    fn next_batch(&mut self) -> OpResult<Option<RecordBatch>> {
        loop {
            if self.reader.is_none() {
                // Without identities, whole files are split among workers.
                while self.file_index < self.files.len() && !self.by_identity && !self.part.owns(self.file_index as u64) {
                    self.file_index += 1;
                }
                let Some(path) = self.files.get(self.file_index) else { return Ok(None) };
                let f = std::fs::File::open(path).map_err(|e| OpError::new(format!("cannot open {}: {e}", path.display())))?;
                let r = ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| b.with_batch_size(self.batch_rows).build())
                    .map_err(|e| OpError::new(format!("{}: {e}", path.display())))?;
                self.reader = Some(r);
            }
            let path = self.files[self.file_index].clone();
            match self.reader.as_mut().and_then(|r| r.next()) {
                Some(Ok(b)) => {
                    let b = self.convert(b, &path).map_err(OpError::new)?;
                    if b.num_rows() > 0 {
                        return Ok(Some(b));
                    }
                }
                Some(Err(e)) => return Err(OpError::new(format!("{}: {e}", path.display()))),
                None => {
                    self.reader = None;
                    self.file_index += 1;
                }
            }
        }
    }
}

/// Types equal up to the nullability and name of list items.
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => n == m && x.data_type() == y.data_type(),
        _ => a == b,
    }
}

/// Rebuilds a fixed-size list with the planned item field (names / nullability differ).
fn arrow_cast_list(c: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    let (DataType::FixedSizeList(item, n), Some(list)) = (to, c.as_fixed_size_list_opt()) else {
        return Err(format!("cannot convert {} to {to}", c.data_type()));
    };
    let values = list.values().clone();
    Ok(Arc::new(arrow_array::FixedSizeListArray::try_new(item.clone(), *n, values, list.nulls().cloned()).map_err(|e| e.to_string())?))
}
