//! insightface's face layout over RecordIO, with random access through the `.idx` file.
//!
//! Record 0 is a header whose labels `[id_start, id_end)` point at identity index records; each
//! identity record's labels `[sample_start, sample_end)` are the keys of that identity's image
//! records, whose header label is the identity as a float. Files without this header (flag 0 in
//! record 0) are read as a flat list in `.idx` order, grouped by their scalar labels.
//! `.idx` lines are `key\toffset`; `property` is `num_classes,height,width`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::framing::{encode_record, read_record};
use super::header::{pack, unpack, IrHeader};
use crate::formats::atomic::{write_file_atomic, AtomicFile};
use crate::formats::FormatError;

/// Largest integer a float32 label represents exactly.
const MAX_F32_INT: u64 = 1 << 24;

/// One image record located in the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaceRecord {
    /// Identity index (0-based, in identity-record order).
    pub identity: usize,
    /// Sample index within the identity.
    pub sample: usize,
    /// The record's key in `.idx`.
    pub key: u64,
}

/// Random-access reader of `train.rec` through `train.idx`.
pub struct RecordIoReader {
    rec: PathBuf,
    idx: PathBuf,
    file: File,
    file_len: u64,
    offsets: HashMap<u64, u64>,
    keys: Vec<u64>,
}

impl RecordIoReader {
    /// Opens `<dir>/train.rec` with `<dir>/train.idx`.
    pub fn open_dir(dir: &Path) -> Result<Self, FormatError> {
        Self::open(&dir.join("train.rec"), &dir.join("train.idx"))
    }

    /// Opens a `.rec` file with its `.idx` index.
    pub fn open(rec: &Path, idx: &Path) -> Result<Self, FormatError> {
        let file = File::open(rec).map_err(|e| FormatError::io(rec, e))?;
        let file_len = file.metadata().map_err(|e| FormatError::io(rec, e))?.len();
        let text = std::fs::read_to_string(idx).map_err(|e| FormatError::io(idx, e))?;
        let mut offsets = HashMap::new();
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = || FormatError::invalid(idx, format!("line {}: expected 'key<TAB>offset', got {line:?}", i + 1));
            let (k, o) = line.split_once('\t').ok_or_else(bad)?;
            let key: u64 = k.trim().parse().map_err(|_| bad())?;
            let off: u64 = o.trim().parse().map_err(|_| bad())?;
            if off >= file_len {
                return Err(FormatError::invalid(
                    idx,
                    format!("line {}: offset {off} is past the end of {} ({file_len} bytes)", i + 1, rec.display()),
                ));
            }
            if offsets.insert(key, off).is_none() {
                keys.push(key);
            }
        }
        Ok(Self { rec: rec.to_path_buf(), idx: idx.to_path_buf(), file, file_len, offsets, keys })
    }

    /// Keys in `.idx` order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The raw payload of record `key`.
    pub fn read_idx(&mut self, key: u64) -> Result<Vec<u8>, FormatError> {
        let off = *self.offsets.get(&key).ok_or_else(|| FormatError::invalid(&self.idx, format!("no record with key {key}")))?;
        self.file.seek(SeekFrom::Start(off)).map_err(|e| FormatError::io(&self.rec, e))?;
        Ok(read_record(&mut self.file, &self.rec, off, self.file_len)?.0)
    }

    /// Header and image bytes of record `key`.
    pub fn read_image(&mut self, key: u64) -> Result<(IrHeader, Vec<u8>), FormatError> {
        let off = self.offsets.get(&key).copied().unwrap_or(0);
        let rec = self.read_idx(key)?;
        let (h, img) = unpack(&rec, &self.rec, off)?;
        Ok((h, img.to_vec()))
    }

    fn label_range(&self, h: &IrHeader, key: u64) -> Result<(u64, u64), FormatError> {
        let off = self.offsets.get(&key).copied().unwrap_or(0);
        let as_key =
            |x: f32| -> Option<u64> { (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && (x as u64) <= MAX_F32_INT).then_some(x as u64) };
        match h.label.as_slice() {
            [a, b, ..] => match (as_key(*a), as_key(*b)) {
                (Some(a), Some(b)) if a <= b => Ok((a, b)),
                _ => Err(FormatError::corrupt(&self.rec, off, format!("record {key}: bad label range [{a}, {b})"))),
            },
            _ => Err(FormatError::corrupt(&self.rec, off, format!("record {key}: expected a 2-value label range"))),
        }
    }

    /// Lists every image record as (identity, sample, key), without reading images.
    pub fn records(&mut self) -> Result<Vec<FaceRecord>, FormatError> {
        if !self.offsets.contains_key(&0) {
            return self.flat_records();
        }
        let (h0, _) = self.read_image(0)?;
        if h0.flag == 0 {
            return self.flat_records();
        }
        let (id_start, id_end) = self.label_range(&h0, 0)?;
        let mut out = Vec::new();
        for (identity, k) in (id_start..id_end).enumerate() {
            let (h, _) = self.read_image(k)?;
            let (s, e) = self.label_range(&h, k)?;
            for (sample, key) in (s..e).enumerate() {
                if !self.offsets.contains_key(&key) {
                    return Err(FormatError::invalid(
                        &self.idx,
                        format!("identity record {k} points at key {key}, which is not in the index"),
                    ));
                }
                out.push(FaceRecord { identity, sample, key });
            }
        }
        Ok(out)
    }

    fn flat_records(&mut self) -> Result<Vec<FaceRecord>, FormatError> {
        let mut per_identity: HashMap<i64, usize> = HashMap::new();
        let mut out = Vec::with_capacity(self.keys.len());
        for key in self.keys.clone() {
            let (h, _) = self.read_image(key)?;
            let label = h.label.first().copied().unwrap_or(f32::NAN);
            if !(label.is_finite() && label >= 0.0) {
                let off = self.offsets.get(&key).copied().unwrap_or(0);
                return Err(FormatError::corrupt(&self.rec, off, format!("record {key}: label {label} is not an identity")));
            }
            let identity = label as i64;
            let n = per_identity.entry(identity).or_insert(0);
            out.push(FaceRecord { identity: identity as usize, sample: *n, key });
            *n += 1;
        }
        Ok(out)
    }
}

/// What a finished [`RecordIoFaceWriter`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordIoSummary {
    /// `train.rec`.
    pub rec: PathBuf,
    /// `train.idx`.
    pub idx: PathBuf,
    /// `property`.
    pub property: PathBuf,
    /// Number of identities.
    pub identities: usize,
    /// Number of images.
    pub images: u64,
}

/// Writes `train.rec` / `train.idx` / `property` in insightface's layout. Images must arrive
/// grouped by identity, identities numbered 0, 1, 2, … in order.
pub struct RecordIoFaceWriter {
    dir: PathBuf,
    rec: AtomicFile,
    idx_lines: Vec<(u64, u64)>,
    ranges: Vec<(u64, u64)>,
    next_key: u64,
    image_size: (u32, u32),
}

impl RecordIoFaceWriter {
    /// A writer into `dir`; `image_size` (height, width) goes into `property`.
    pub fn create(dir: &Path, image_size: (u32, u32)) -> Result<Self, FormatError> {
        std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            rec: AtomicFile::create(&dir.join("train.rec"))?,
            idx_lines: Vec::new(),
            ranges: Vec::new(),
            next_key: 1,
            image_size,
        })
    }

    fn put(&mut self, key: u64, payload: &[u8]) -> Result<(), FormatError> {
        let framed = encode_record(payload).map_err(|m| FormatError::invalid(self.rec.target(), m))?;
        self.idx_lines.push((key, self.rec.position()));
        self.rec.write_all(&framed)
    }

    /// Appends one image of `identity`; returns its key.
    pub fn add(&mut self, identity: usize, image: &[u8]) -> Result<u64, FormatError> {
        let n = self.ranges.len();
        if identity + 1 == n {
            // same identity as the previous image
        } else if identity == n {
            self.ranges.push((self.next_key, self.next_key));
        } else {
            return Err(FormatError::invalid(
                self.rec.target(),
                format!("identity {identity} arrives out of order (expected {} or {n})", n.saturating_sub(1)),
            ));
        }
        let key = self.next_key;
        if key >= MAX_F32_INT {
            return Err(FormatError::invalid(self.rec.target(), "more records than float32 labels can address"));
        }
        let header = IrHeader { flag: 0, label: vec![identity as f32], id: key, id2: 0 };
        self.put(key, &pack(&header, image))?;
        self.next_key += 1;
        if let Some(r) = self.ranges.last_mut() {
            r.1 = self.next_key;
        }
        Ok(key)
    }

    /// Writes the identity and header records, `train.idx` and `property`.
    pub fn finish(mut self) -> Result<RecordIoSummary, FormatError> {
        let id_start = self.next_key;
        let ranges = std::mem::take(&mut self.ranges);
        for (i, (s, e)) in ranges.iter().enumerate() {
            let key = id_start + i as u64;
            let h = IrHeader { flag: 2, label: vec![*s as f32, *e as f32], id: key, id2: 0 };
            self.put(key, &pack(&h, &[]))?;
        }
        let id_end = id_start + ranges.len() as u64;
        if id_end >= MAX_F32_INT {
            return Err(FormatError::invalid(self.rec.target(), "more records than float32 labels can address"));
        }
        let h0 = IrHeader { flag: 2, label: vec![id_start as f32, id_end as f32], id: 0, id2: 0 };
        self.put(0, &pack(&h0, &[]))?;
        let images = id_start - 1;
        let mut lines = std::mem::take(&mut self.idx_lines);
        lines.sort_unstable();
        let idx_text: String = lines.iter().map(|(k, o)| format!("{k}\t{o}\n")).collect();
        let rec_path = self.rec.target().to_path_buf();
        self.rec.commit()?;
        let idx = self.dir.join("train.idx");
        write_file_atomic(&idx, idx_text.as_bytes())?;
        let property = self.dir.join("property");
        let (h, w) = self.image_size;
        write_file_atomic(&property, format!("{},{h},{w}", ranges.len()).as_bytes())?;
        Ok(RecordIoSummary { rec: rec_path, idx, property, identities: ranges.len(), images })
    }
}

/// Reads `property` (`num_classes,height,width`).
pub fn read_property(path: &Path) -> Result<(usize, u32, u32), FormatError> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let f: Vec<&str> = text.trim().split(',').map(str::trim).collect();
    let bad = || FormatError::invalid(path, format!("expected 'num_classes,height,width', got {:?}", text.trim()));
    match f.as_slice() {
        [n, h, w] => Ok((n.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}
