//! Listing the Parquet files of a dataset folder (the `read` operator's sources, the results
//! tables of `idflow table`).

use std::path::{Path, PathBuf};

/// The Parquet files under `root` (the file itself, or the folder's visible `*.parquet`, sorted).
pub fn files(root: &Path) -> Result<Vec<PathBuf>, String> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| format!("cannot list {}: {e} (a Parquet source must exist when the pipeline is planned)", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(format!("{}: no .parquet files", root.display()));
    }
    Ok(v)
}
