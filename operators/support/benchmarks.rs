//! Naming of the verification benchmarks: the seed's results-table columns and the column a
//! benchmark file belongs to. Shared by `evaluate` (its benchmark table) and `idflow table`
//! ([`crate::results`]).

use std::path::Path;

/// The benchmark columns of the seed's results table, in order.
pub const TABLE_COLUMNS: [&str; 5] = ["LFW", "CFP-FP", "CPLFW", "AgeDB", "CALFW"];

/// The table column of a benchmark file: its stem without a `toy_` prefix, matched
/// case-insensitively (`lfw`, `cfp_fp`/`cfp-fp`, `cplfw`, `agedb`/`agedb_30`, `calfw`); other
/// files keep their stem.
pub fn column_for(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = stem.to_ascii_lowercase().replace('-', "_");
    let base = lower.strip_prefix("toy_").unwrap_or(&lower);
    match base {
        "lfw" => "LFW".into(),
        "cfp_fp" | "cfpfp" => "CFP-FP".into(),
        "cplfw" => "CPLFW".into(),
        "agedb" | "agedb_30" | "agedb30" => "AgeDB".into(),
        "calfw" => "CALFW".into(),
        _ => stem,
    }
}
