//! `idflow table`: the paper-style results tables of a set of runs.
//!
//! A *recognition* row comes from the per-epoch statistics a `train` node wrote (a
//! `write-records` Parquet folder with `eval_<benchmark>` columns): the last epoch that was
//! evaluated gives the mean 10-fold accuracy per benchmark, placed in the seed's columns LFW,
//! CFP-FP, CPLFW, AgeDB, CALFW (matched by file stem, `toy_` prefixes allowed) plus their
//! average. A *dataset* row comes from the `metrics.json` an `evaluate` node wrote in dataset
//! mode: EER, FMR100, FMR1000, FDR and the DCFace identity metrics.

use crate::operators::support::benchmarks::{column_for, TABLE_COLUMNS};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// Why a results table could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A file or folder could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A statistics folder could not be listed (the message names it).
    #[error("{0}")]
    Listing(String),
    /// The statistics hold no evaluated epoch.
    #[error("{path}: no epoch has `eval_*` values (give the train node `eval:` files)")]
    NotEvaluated {
        /// The statistics folder.
        path: PathBuf,
    },
}

fn read_err(path: &Path, message: impl ToString) -> TableError {
    TableError::Read { path: path.to_path_buf(), message: message.to_string() }
}

/// One row of the recognition table: accuracies (fractions) per seed column.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognitionRow {
    /// Row label.
    pub label: String,
    /// The epoch the accuracies come from.
    pub epoch: u64,
    /// Accuracy per entry of [`TABLE_COLUMNS`] (`None` where the run had no such benchmark).
    pub accuracy: [Option<f64>; 5],
    /// Benchmarks outside the seed's columns, by file stem.
    pub other: Vec<(String, f64)>,
}

impl RecognitionRow {
    /// Mean of the seed columns present (the table's "Average").
    pub fn average(&self) -> Option<f64> {
        let present: Vec<f64> = self.accuracy.iter().flatten().copied().collect();
        (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
    }
}

/// Every record batch of the Parquet files in `dir` (file-name order; the listing is the
/// `read` operator's).
fn read_parquet_dir(dir: &Path) -> Result<Vec<RecordBatch>, TableError> {
    let files = crate::operators::support::parquet::files(dir).map_err(TableError::Listing)?;
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).map_err(|e| read_err(&f, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| read_err(&f, e))?;
        for b in reader {
            out.push(b.map_err(|e| read_err(&f, e))?);
        }
    }
    Ok(out)
}

/// Reads a recognition row from a `train` statistics folder.
pub fn recognition_row(label: &str, stats_dir: &Path) -> Result<RecognitionRow, TableError> {
    let mut best: Option<RecognitionRow> = None;
    for b in read_parquet_dir(stats_dir)? {
        let epoch = b
            .column_by_name("epoch")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| read_err(stats_dir, "no UInt64 `epoch` column (not a train statistics folder?)"))?;
        for i in 0..b.num_rows() {
            let mut row = RecognitionRow { label: label.to_string(), epoch: epoch.value(i), accuracy: [None; 5], other: Vec::new() };
            for (field, col) in b.schema().fields().iter().zip(b.columns()) {
                let Some(bench) = field.name().strip_prefix("eval_") else { continue };
                let Some(values) = col.as_primitive_opt::<Float64Type>() else { continue };
                if values.is_null(i) {
                    continue;
                }
                let v = values.value(i);
                let column = column_for(Path::new(bench));
                match TABLE_COLUMNS.iter().position(|c| *c == column) {
                    Some(k) => row.accuracy[k] = Some(v),
                    None => row.other.push((bench.to_string(), v)),
                }
            }
            let evaluated = row.accuracy.iter().any(Option::is_some) || !row.other.is_empty();
            if evaluated && best.as_ref().is_none_or(|b| row.epoch >= b.epoch) {
                best = Some(row);
            }
        }
    }
    best.ok_or_else(|| TableError::NotEvaluated { path: stats_dir.to_path_buf() })
}

/// One row of the dataset table, read from an `evaluate` node's `metrics.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    /// Row label.
    pub label: String,
    /// Rows and identities of the evaluated set.
    pub rows: u64,
    /// Identities.
    pub identities: u64,
    /// Equal error rate (fraction).
    pub eer: f64,
    /// FNMR at FMR = 1 % (fraction).
    pub fmr100: f64,
    /// FNMR at FMR = 0.1 % (fraction).
    pub fmr1000: f64,
    /// Fisher discriminant ratio.
    pub fdr: f64,
    /// DCFace U_class, when computed.
    pub u_class: Option<f64>,
    /// DCFace C_intra, when computed.
    pub c_intra: Option<f64>,
}

/// Reads a dataset row from `metrics.json` (or a folder holding it).
pub fn dataset_row(label: &str, path: &Path) -> Result<DatasetRow, TableError> {
    let file = if path.is_dir() { path.join("metrics.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| read_err(&file, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| read_err(&file, e))?;
    let d = json.get("dataset").ok_or_else(|| read_err(&file, "no `dataset` entry (evaluate ran without dataset metrics)"))?;
    let num = |k: &str| d.get(k).and_then(serde_json::Value::as_f64).ok_or_else(|| read_err(&file, format!("dataset.{k} is missing")));
    Ok(DatasetRow {
        label: label.to_string(),
        rows: num("rows")? as u64,
        identities: num("identities")? as u64,
        eer: num("eer")?,
        fmr100: num("fmr100")?,
        fmr1000: num("fmr1000")?,
        fdr: num("fdr")?,
        u_class: d.get("u_class").and_then(serde_json::Value::as_f64),
        c_intra: d.get("c_intra").and_then(serde_json::Value::as_f64),
    })
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2}", 100.0 * x)).unwrap_or_default()
}

/// The recognition table in the seed's layout (accuracies in %).
pub fn recognition_markdown(rows: &[RecognitionRow]) -> String {
    let mut s = String::from("| Training data | LFW | CFP-FP | CPLFW | AgeDB | CALFW | Average |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let cells: Vec<String> = r.accuracy.iter().map(|v| pct(*v)).chain(std::iter::once(pct(r.average()))).collect();
        s.push_str(&format!("| {} | {} |\n", r.label, cells.join(" | ")));
    }
    s
}

/// The dataset-metrics table (error rates in %).
pub fn dataset_markdown(rows: &[DatasetRow]) -> String {
    let mut s = String::from(
        "| Dataset | Images / identities | EER (%) | FMR100 (%) | FMR1000 (%) | FDR | U_class | C_intra |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} |\n",
            r.label,
            r.rows,
            r.identities,
            100.0 * r.eer,
            100.0 * r.fmr100,
            100.0 * r.fmr1000,
            r.fdr,
            opt(r.u_class),
            opt(r.c_intra)
        ));
    }
    s
}

/// Splits a `LABEL=PATH` argument.
pub fn labelled_path(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => Ok((label.to_string(), PathBuf::from(path))),
        _ => Err(format!("expected LABEL=PATH, got `{arg}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_covers_present_columns_only() {
        let r = RecognitionRow { label: "x".into(), epoch: 1, accuracy: [Some(0.9), Some(0.7), None, None, None], other: vec![] };
        assert!((r.average().unwrap() - 0.8).abs() < 1e-12);
        let md = recognition_markdown(&[r]);
        assert!(md.contains("| x | 90.00 | 70.00 |  |  |  | 80.00 |"), "{md}");
    }

    /// The last evaluated epoch wins, benchmark stems map to the seed's columns, and a folder
    /// without evaluations is an error that says what to do.
    #[test]
    fn recognition_rows_come_from_the_last_evaluated_epoch() {
        use arrow_array::{Float64Array, UInt64Array};
        use arrow_schema::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("epoch", DataType::UInt64, false),
            Field::new("eval_toy_lfw", DataType::Float64, true),
            Field::new("eval_custom", DataType::Float64, true),
        ]));
        let write = |name: &str, lfw: Vec<Option<f64>>| {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    std::sync::Arc::new(UInt64Array::from(vec![1, 2, 3])),
                    std::sync::Arc::new(Float64Array::from(lfw.clone())),
                    std::sync::Arc::new(Float64Array::from(lfw)),
                ],
            )
            .unwrap();
            let sub = dir.path().join(name);
            std::fs::create_dir_all(&sub).unwrap();
            let f = std::fs::File::create(sub.join("part-00000.parquet")).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
            w.write(&b).unwrap();
            w.close().unwrap();
            sub
        };
        let row = recognition_row("r", &write("a", vec![Some(0.5), Some(0.75), None])).unwrap();
        assert_eq!(row.epoch, 2);
        assert_eq!(row.accuracy, [Some(0.75), None, None, None, None]);
        assert_eq!(row.other, vec![("custom".to_string(), 0.75)]);
        let err = recognition_row("r", &write("b", vec![None, None, None])).unwrap_err();
        assert!(err.to_string().contains("give the train node `eval:` files"), "{err}");
    }

    #[test]
    fn labelled_paths_need_both_halves() {
        assert_eq!(labelled_path("(a) real=out/a").unwrap(), ("(a) real".to_string(), PathBuf::from("out/a")));
        assert!(labelled_path("nolabel").is_err());
        assert!(labelled_path("=x").is_err());
    }
}
