//! Resuming a Parquet output: which `(identity, sample)` keys the completed shards of an
//! interrupted run hold, dropping those keys from new input, and the crash hook the resume
//! tests use.
//!
//! Completed shards are trusted as they are: a shard only gets its final name once it is fully
//! written and synced, so whatever carries that name is whole.

use crate::batch::id_value;
use crate::operators::{OpError, OpResult, Partition, ResumeSet};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::collections::HashSet;
use std::path::Path;

/// Completed shards in `dir` with their row counts, sorted by name.
pub(crate) fn shards_on_disk(dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            let f = std::fs::File::open(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|err| format!("{}: {err}", e.path().display()))?;
            out.push((name, b.metadata().file_metadata().num_rows() as u64));
        }
    }
    out.sort();
    Ok(out)
}

/// Keys of written samples.
pub(crate) type DoneKeys = HashSet<(u64, u64)>;

/// `(identity, sample)` keys of every completed shard, and the highest shard number seen.
/// Shards without both columns make the output not resumable (an error that says so).
pub(crate) fn done_keys(dir: &Path) -> Result<(DoneKeys, Option<usize>), String> {
    let mut keys = HashSet::new();
    let mut max_index = None;
    for (name, _) in shards_on_disk(dir)? {
        let index: usize =
            name.trim_start_matches("part-").trim_end_matches(".parquet").parse().map_err(|_| format!("unexpected shard name {name}"))?;
        max_index = max_index.max(Some(index));
        let path = dir.join(&name);
        let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| format!("{}: {e}", path.display()))?;
        let schema = builder.schema().clone();
        let (Ok(i), Ok(s)) = (schema.index_of("identity"), schema.index_of("sample")) else {
            return Err(format!(
                "{}: cannot resume an output without `identity` and `sample` columns; remove the folder to start over",
                path.display()
            ));
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [i, s]);
        let reader = builder.with_projection(mask).build().map_err(|e| format!("{}: {e}", path.display()))?;
        for b in reader {
            let b = b.map_err(|e| format!("{}: {e}", path.display()))?;
            let (ids, samples) = (b.column(0), b.column(1));
            for r in 0..b.num_rows() {
                let (Some(id), Some(sm)) = (id_value(ids.as_ref(), r), id_value(samples.as_ref(), r)) else {
                    return Err(format!("{}: `identity` / `sample` must be unsigned integers", path.display()));
                };
                keys.insert((id, sm));
            }
        }
    }
    Ok((keys, max_index))
}

/// Every row of one Parquet file, as one batch.
fn read_whole(path: &Path) -> Result<RecordBatch, String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| what(&e))?;
    let schema = builder.schema().clone();
    let batches = builder.build().map_err(|e| what(&e))?.collect::<Result<Vec<_>, _>>().map_err(|e| what(&e))?;
    arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| what(&e))
}

/// The rows of a kept shard that `part` owns, in the node's input schema (the Hugging Face
/// image struct becomes bytes again; columns the shard leaves out come from its replay
/// sidecar), for the nodes downstream of a resumed sink.
pub(crate) fn replay_rows(shard: &Path, input: &SchemaRef, image_column: &str, part: &Partition) -> Result<Vec<RecordBatch>, String> {
    let main = read_whole(shard)?;
    let sidecar_path = shard.parent().map(|d| d.join(super::REPLAY)).and_then(|d| shard.file_name().map(|n| d.join(n)));
    let sidecar = match sidecar_path.filter(|p| p.exists()) {
        Some(p) => Some(read_whole(&p)?),
        None => None,
    };
    if sidecar.as_ref().is_some_and(|s| s.num_rows() != main.num_rows()) {
        return Err(format!("{}: its replay sidecar has a different row count; remove the staging folder to start over", shard.display()));
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(input.fields().len());
    for f in input.fields() {
        let c = main.column_by_name(f.name()).or_else(|| sidecar.as_ref().and_then(|s| s.column_by_name(f.name()))).ok_or_else(|| {
            format!("{}: column `{}` was not written, so resumed rows cannot be passed to the nodes downstream", shard.display(), f.name())
        })?;
        let c = if f.name() == image_column && matches!(c.data_type(), DataType::Struct(_)) {
            c.as_struct().column_by_name("bytes").cloned().ok_or_else(|| format!("{}: image struct without bytes", shard.display()))?
        } else {
            c.clone()
        };
        cols.push(c);
    }
    let batch = RecordBatch::try_new(input.clone(), cols).map_err(|e| format!("{}: {e}", shard.display()))?;
    let ids = batch.column_by_name("identity").cloned();
    let keep: BooleanArray =
        (0..batch.num_rows()).map(|r| Some(ids.as_ref().and_then(|c| id_value(c.as_ref(), r)).is_none_or(|i| part.owns(i)))).collect();
    let batch = arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| e.to_string())?;
    Ok(if batch.num_rows() > 0 { vec![batch] } else { Vec::new() })
}

/// Removes rows whose `(identity, sample)` is already written.
pub(crate) fn drop_done(batch: RecordBatch, done: &ResumeSet) -> OpResult<RecordBatch> {
    if done.is_empty() {
        return Ok(batch);
    }
    let (Some(ids), Some(samples)) = (batch.column_by_name("identity"), batch.column_by_name("sample")) else {
        return Ok(batch);
    };
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| match (id_value(ids.as_ref(), r), id_value(samples.as_ref(), r)) {
            (Some(i), Some(s)) => Some(!done.is_done(i, s)),
            _ => Some(true),
        })
        .collect();
    arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| OpError::new(e.to_string()))
}

/// Test hook: with `IDFLOW_TEST_CRASH_AFTER_SHARDS=k`, the process aborts (no clean-up, as a
/// kill would) right after its k-th shard got its final name.
pub(crate) fn crash_hook() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SHARDS: AtomicUsize = AtomicUsize::new(0);
    let Some(k) = std::env::var("IDFLOW_TEST_CRASH_AFTER_SHARDS").ok().and_then(|v| v.parse::<usize>().ok()) else { return };
    if SHARDS.fetch_add(1, Ordering::SeqCst) + 1 >= k {
        eprintln!("IDFLOW_TEST_CRASH_AFTER_SHARDS={k}: aborting");
        std::process::abort();
    }
}
