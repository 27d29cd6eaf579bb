//! `idflow table` (the paper-style results tables of finished runs) and `idflow toy` (toy-world
//! utilities).

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `idflow table`: recognition rows from `train` statistics folders, dataset-metric rows from
/// `evaluate` outputs, as Markdown on stdout (and in `out`).
pub fn table(recognition: &[(String, PathBuf)], dataset: &[(String, PathBuf)], out: Option<&Path>) -> anyhow::Result<ExitCode> {
    if recognition.is_empty() && dataset.is_empty() {
        anyhow::bail!("give at least one --recognition or --dataset LABEL=PATH");
    }
    let mut text = String::new();
    if !recognition.is_empty() {
        let rows = recognition.iter().map(|(label, dir)| idflow::results::recognition_row(label, dir)).collect::<Result<Vec<_>, _>>()?;
        text.push_str(&idflow::results::recognition_markdown(&rows));
    }
    if !dataset.is_empty() {
        let rows = dataset.iter().map(|(label, path)| idflow::results::dataset_row(label, path)).collect::<Result<Vec<_>, _>>()?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&idflow::results::dataset_markdown(&rows));
    }
    print!("{text}");
    if let Some(path) = out {
        idflow::fsutil::atomic_write(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `idflow toy benchmarks`: the five toy verification benchmarks as `.bin` files.
pub fn toy_benchmarks(out: &Path, size: u32, world: u64) -> anyhow::Result<ExitCode> {
    let files = idflow_dataset::toy::benchmarks::write_benchmarks(out, size, world)
        .with_context(|| format!("cannot write the toy benchmarks to {}", out.display()))?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
