//! The filter's decision journal: one JSON line per decided sample (identity, sample, draws,
//! accepted, accepted on the first draw), appended by each worker to its own file in the
//! acceptance report's staging folder before the sample's row moves on.
//!
//! It makes the acceptance report describe the whole dataset after a resume (the report is
//! computed from every decision, not only the last run's), and it tells a resumed run which
//! samples were finally rejected, so they are not drawn again. A sample decided twice (accepted,
//! but killed before the sink wrote it) keeps its last line; both lines are the same decision,
//! since every draw is keyed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One decided sample.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Identity index.
    pub identity: u32,
    /// Sample index within the identity.
    pub sample: u32,
    /// Draws it took (1 + re-draws).
    pub draws: u32,
    /// Whether a draw passed the gate.
    pub accepted: bool,
    /// Whether the first draw passed.
    pub first: bool,
}

/// One worker's append-only journal file.
pub(crate) struct Journal {
    file: std::fs::File,
    path: PathBuf,
}

/// The journal file of global worker `worker` in `dir`.
fn journal_path(dir: &Path, worker: usize) -> PathBuf {
    dir.join(format!("decisions-{worker:04}.jsonl"))
}

impl Journal {
    /// Opens (appending) the journal of `worker` in `dir`.
    pub fn open(dir: &Path, worker: usize) -> Result<Self, String> {
        let path = journal_path(dir, worker);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Self { file, path })
    }

    /// Appends decisions (one write per batch).
    pub fn append(&mut self, decisions: &[Decision]) -> Result<(), String> {
        let mut text = Vec::with_capacity(decisions.len() * 72);
        for d in decisions {
            serde_json::to_writer(&mut text, d).map_err(|e| e.to_string())?;
            text.push(b'\n');
        }
        self.file.write_all(&text).and_then(|()| self.file.flush()).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Every decision in the journals of `dir`, keyed by (identity, sample), the last line winning. A
/// torn last line (a kill in mid-write) is ignored.
pub(crate) fn read_all(dir: &Path) -> Result<BTreeMap<(u32, u32), Decision>, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("decisions-")))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for line in text.lines() {
            if let Ok(d) = serde_json::from_str::<Decision>(line) {
                out.insert((d.identity, d.sample), d);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_decision_wins_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = |identity, sample, accepted| Decision { identity, sample, draws: 1, accepted, first: accepted };
        let mut j = Journal::open(dir.path(), 0).unwrap();
        j.append(&[d(0, 0, false), d(0, 1, true)]).unwrap();
        drop(j);
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&[d(1, 0, true)]).unwrap();
        std::fs::OpenOptions::new().append(true).open(journal_path(dir.path(), 1)).unwrap().write_all(b"{\"identity\":1,\"sam").unwrap();
        let all = read_all(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        assert!(!all[&(0, 0)].accepted && all[&(0, 1)].accepted && all[&(1, 0)].accepted);
    }
}
