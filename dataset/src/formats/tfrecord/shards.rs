//! Sharded TFRecord output in TFace's layout and the index files that point into it.
//!
//! Shards are `<name>-00000.tfrecord`, `<name>-00001.tfrecord`, … with at most N records each.
//! `<name>.index` has one line per record, `key\tshard\toffset` (the offset of a record's
//! length field; it advances by payload length + 16). TFace's converted index
//! (`tfr_name\tidx\toffset\tlabel`) is read by [`read_converted_index`].

use std::path::{Path, PathBuf};

use super::example::encode_example;
use super::framing::encode_record;
use crate::formats::atomic::AtomicFile;
use crate::formats::FormatError;

/// TFace's shard size.
pub const DEFAULT_RECORDS_PER_SHARD: usize = 500_000;

/// `<dir>/<name>-%05d.tfrecord`.
pub fn shard_path(dir: &Path, name: &str, shard: usize) -> PathBuf {
    dir.join(format!("{name}-{shard:05}.tfrecord"))
}

/// One line of `<name>.index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record's key (source image path or `identity/sample`).
    pub key: String,
    /// Shard number.
    pub shard: usize,
    /// Byte offset of the record in its shard.
    pub offset: u64,
}

/// One line of TFace's converted index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertedIndexEntry {
    /// Shard file name.
    pub tfr_name: String,
    /// Record number within the dataset.
    pub idx: u64,
    /// Byte offset of the record in its shard.
    pub offset: u64,
    /// Identity label.
    pub label: i64,
}

/// What a finished writer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TfRecordSummary {
    /// Shard files, in order.
    pub shards: Vec<PathBuf>,
    /// The index file.
    pub index: PathBuf,
    /// Records written.
    pub records: u64,
}

/// Writes face records into size-limited shards plus an index; every file appears atomically.
pub struct TfRecordShardWriter {
    dir: PathBuf,
    name: String,
    per_shard: usize,
    current: Option<AtomicFile>,
    in_current: usize,
    shards: Vec<PathBuf>,
    index: String,
    records: u64,
}

impl TfRecordShardWriter {
    /// A writer for `<dir>/<name>-*.tfrecord` with at most `per_shard` records per shard.
    pub fn create(dir: &Path, name: &str, per_shard: usize) -> Result<Self, FormatError> {
        if per_shard == 0 {
            return Err(FormatError::invalid(dir, "records per shard must be at least 1"));
        }
        if name.is_empty() || name.contains('/') {
            return Err(FormatError::invalid(dir, format!("bad dataset name '{name}'")));
        }
        std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            per_shard,
            current: None,
            in_current: 0,
            shards: Vec::new(),
            index: String::new(),
            records: 0,
        })
    }

    /// Appends one face record; returns `(shard, offset)` where it landed.
    pub fn write(&mut self, key: &str, image: &[u8], label: i64) -> Result<(usize, u64), FormatError> {
        if key.contains(['\t', '\n']) {
            return Err(FormatError::invalid(&self.dir, format!("record key {key:?} contains a tab or newline")));
        }
        if self.current.is_some() && self.in_current >= self.per_shard {
            self.close_shard()?;
        }
        if self.current.is_none() {
            let path = shard_path(&self.dir, &self.name, self.shards.len());
            self.current = Some(AtomicFile::create(&path)?);
            self.shards.push(path);
            self.in_current = 0;
        }
        let shard = self.shards.len() - 1;
        let file = self.current.as_mut().ok_or_else(|| FormatError::invalid(&self.dir, "no open shard"))?;
        let offset = file.position();
        file.write_all(&encode_record(&encode_example(image, Some(label))))?;
        self.in_current += 1;
        self.records += 1;
        self.index.push_str(&format!("{key}\t{shard}\t{offset}\n"));
        Ok((shard, offset))
    }

    fn close_shard(&mut self) -> Result<(), FormatError> {
        match self.current.take() {
            Some(f) => f.commit(),
            None => Ok(()),
        }
    }

    /// Commits the last shard and writes `<name>.index`.
    pub fn finish(mut self) -> Result<TfRecordSummary, FormatError> {
        self.close_shard()?;
        let index = self.dir.join(format!("{}.index", self.name));
        let mut f = AtomicFile::create(&index)?;
        f.write_all(self.index.as_bytes())?;
        f.commit()?;
        Ok(TfRecordSummary { shards: std::mem::take(&mut self.shards), index, records: self.records })
    }
}

fn parse_fields<'a>(path: &Path, lineno: usize, line: &'a str, n: usize) -> Result<Vec<&'a str>, FormatError> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != n {
        return Err(FormatError::invalid(path, format!("line {lineno}: {} tab-separated fields, expected {n}", f.len())));
    }
    Ok(f)
}

fn parse_num<T: std::str::FromStr>(path: &Path, lineno: usize, what: &str, s: &str) -> Result<T, FormatError> {
    s.trim().parse().map_err(|_| FormatError::invalid(path, format!("line {lineno}: {what} '{s}' is not a number")))
}

/// Parses the non-empty lines of an index file, each of `width` tab-separated fields, with
/// `entry(line number, fields)`.
fn parse_index<T>(
    path: &Path,
    width: usize,
    mut entry: impl FnMut(usize, &[&str]) -> Result<T, FormatError>,
) -> Result<Vec<T>, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f = parse_fields(path, i + 1, line, width)?;
        out.push(entry(i + 1, &f)?);
    }
    Ok(out)
}

/// Reads `<name>.index` (`key\tshard\toffset` lines).
pub fn read_index(path: &Path) -> Result<Vec<IndexEntry>, FormatError> {
    parse_index(path, 3, |n, f| {
        Ok(IndexEntry { key: f[0].to_string(), shard: parse_num(path, n, "shard", f[1])?, offset: parse_num(path, n, "offset", f[2])? })
    })
}

/// Reads TFace's converted index (`tfr_name\tidx\toffset\tlabel` lines).
pub fn read_converted_index(path: &Path) -> Result<Vec<ConvertedIndexEntry>, FormatError> {
    parse_index(path, 4, |n, f| {
        Ok(ConvertedIndexEntry {
            tfr_name: f[0].to_string(),
            idx: parse_num(path, n, "idx", f[1])?,
            offset: parse_num(path, n, "offset", f[2])?,
            label: parse_num(path, n, "label", f[3])?,
        })
    })
}
