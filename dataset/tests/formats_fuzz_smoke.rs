//! Corpus replay of every fuzz target on stable, in the normal test suite (`fuzz/run.sh` does the
//! real, coverage-guided fuzzing on nightly). Each target's seeds — the in-repo reference
//! fixtures `fuzz/run.sh` seeds from, plus small valid files made here — and deterministic
//! mutations of them (every truncation up to a bound, then evenly spaced ones; single bit flips at
//! keyed positions; keyed multi-step mutations: flips, overwrites, truncations, splices,
//! extensions) go through the fuzz targets' own entry points (`fuzz/src/lib.rs`). A reader must
//! return Ok or an error naming the file — never panic, hang or blow up; a panicking input is
//! saved under the cargo target folder's test tmp dir for `cargo fuzz run <target> <file>`.

mod formats_common;
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use formats_common::reference;
use fuzz_entries::{Entry, TARGETS};
use idflow_dataset::formats::pickle::BytesStyle;
use idflow_dataset::formats::recordio::{self, RecordIoFaceWriter};
use idflow_dataset::formats::tfrecord::TfRecordShardWriter;
use idflow_dataset::formats::verification_bin::encode_bin;
use idflow_dataset::rng::KeyedRng;

/// Every prefix length up to this is tried; longer seeds get [`SPACED_TRUNCATIONS`] more.
const ALL_TRUNCATIONS: usize = 512;
/// Evenly spaced truncation lengths past [`ALL_TRUNCATIONS`].
const SPACED_TRUNCATIONS: usize = 256;
/// Single bit flips per seed (half of them within the first 4 KiB, where the headers are).
const BIT_FLIPS: u64 = 512;
/// Seeds longer than this (the 2 MB checkpoint, the 386 KB benchmark) get [`LARGE_SEED_PLAN`]:
/// each of their inputs costs milliseconds, and the replay must stay a few seconds per target.
const LARGE_SEED: usize = 256 * 1024;
/// Spaced truncations, bit flips and at most this many keyed mutations for a large seed.
const LARGE_SEED_PLAN: (usize, u64, u64) = (64, 128, 64);

/// One seed of a target's corpus.
struct Seed {
    /// Where it comes from (a fixture name or a description).
    name: String,
    /// Its bytes.
    bytes: Vec<u8>,
    /// Whether the reader must accept it as it is.
    valid: bool,
}

fn made(name: &str, bytes: Vec<u8>) -> Seed {
    Seed { name: name.into(), bytes, valid: true }
}

fn fixture(name: &str, valid: bool) -> Seed {
    Seed { name: name.into(), bytes: std::fs::read(reference(name)).unwrap(), valid }
}

fn mutate(seed: &[u8], rng: &mut KeyedRng) -> Vec<u8> {
    let mut d = seed.to_vec();
    let n_ops = 1 + rng.next_u64() % 4;
    for _ in 0..n_ops {
        if d.is_empty() {
            d.push(rng.next_u64() as u8);
            continue;
        }
        let at = (rng.next_u64() % d.len() as u64) as usize;
        match rng.next_u64() % 6 {
            0 => d[at] ^= 1 << (rng.next_u64() % 8),
            1 => d[at] = [0, 0xff, 0x7f, 0x80, b'(', b'.'][(rng.next_u64() % 6) as usize],
            2 => d.truncate(at),
            3 => {
                let v = rng.next_u64().to_le_bytes();
                let end = (at + 8).min(d.len());
                d[at..end].copy_from_slice(&v[..end - at]);
            }
            4 => {
                let from = (rng.next_u64() % d.len() as u64) as usize;
                let len = ((rng.next_u64() % 64) as usize).min(d.len() - from);
                let chunk = d[from..from + len].to_vec();
                d.splice(at..at, chunk);
            }
            _ => d.extend((0..rng.next_u64() % 16).map(|_| rng.next_u64() as u8)),
        }
    }
    d
}

/// The entry point of fuzz target `target`.
fn entry(target: &str) -> Entry {
    TARGETS.iter().find(|(name, _)| *name == target).unwrap_or_else(|| panic!("no fuzz target {target}")).1
}

/// Runs `input` through `f`; a panic saves the input and fails with where it came from.
fn check(target: &str, f: Entry, input: &[u8], what: &dyn Fn() -> String) -> bool {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz"), "{target}, {}: error does not name the file: {msg}", what());
            true
        }
        Err(_) => {
            let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-replay-{target}.bin"));
            std::fs::write(&saved, input).unwrap();
            panic!("{target}, {}: the reader panicked (input saved to {})", what(), saved.display());
        }
    }
}

/// Prefix lengths tried for a seed of `len` bytes: all up to [`ALL_TRUNCATIONS`], then `spaced`
/// evenly spaced ones.
fn truncations(len: usize, spaced: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len.min(ALL_TRUNCATIONS)).collect();
    if len > ALL_TRUNCATIONS {
        let span = len - ALL_TRUNCATIONS;
        v.extend((0..spaced).map(|i| ALL_TRUNCATIONS + span * i / spaced));
    }
    v
}

/// Replays `seeds` and their mutations (`random` keyed multi-step ones per seed, fewer for a
/// large seed) through `target`'s entry point; returns the number of inputs.
fn replay(target: &str, seeds: &[Seed], random: u64) -> u64 {
    let f = entry(target);
    let (mut inputs, mut rejected) = (0u64, 0u64);
    for (s, seed) in seeds.iter().enumerate() {
        let data = &seed.bytes[..];
        let (spaced, flips, random) = if data.len() > LARGE_SEED {
            (LARGE_SEED_PLAN.0, LARGE_SEED_PLAN.1, random.min(LARGE_SEED_PLAN.2))
        } else {
            (SPACED_TRUNCATIONS, BIT_FLIPS, random)
        };
        let rejected_as_is = check(target, f, data, &|| format!("seed {}", seed.name));
        assert!(!(seed.valid && rejected_as_is), "{target}: seed {} must parse: {:?}", seed.name, f(data).unwrap_err().to_string());
        let mut count = |was_rejected: bool| {
            inputs += 1;
            rejected += u64::from(was_rejected);
        };
        for len in truncations(data.len(), spaced) {
            count(check(target, f, &data[..len], &|| format!("seed {} truncated to {len} bytes", seed.name)));
        }
        let mut rng = KeyedRng::new(&[0xf1a9, s as u64]);
        for i in 0..flips {
            let span = if i % 2 == 0 { data.len().min(4096) } else { data.len() };
            if span == 0 {
                break;
            }
            let (at, bit) = ((rng.next_u64() % span as u64) as usize, rng.next_u64() % 8);
            let mut d = data.to_vec();
            d[at] ^= 1 << bit;
            count(check(target, f, &d, &|| format!("seed {} with bit {bit} of byte {at} flipped", seed.name)));
        }
        for i in 0..random {
            let mut rng = KeyedRng::new(&[0xf022, s as u64, i]);
            let d = mutate(data, &mut rng);
            count(check(target, f, &d, &|| format!("seed {} mutation {i}", seed.name)));
        }
    }
    eprintln!("{target}: {} seeds, {inputs} inputs, {rejected} rejected", seeds.len());
    inputs
}

fn small_checkpoint() -> Vec<u8> {
    use idflow_dataset::formats::pickle::{dumps, CallKind, Object, Value};
    use std::io::Write;
    let g = |m: &str, n: &str| Value::Global { module: m.into(), name: n.into() };
    let call = |c: Value, args: Vec<Value>| {
        Value::Object(Box::new(Object {
            kind: CallKind::Reduce,
            callable: c,
            args: Value::Tuple(args),
            kwargs: None,
            state: None,
            dict_items: vec![],
            list_items: vec![],
        }))
    };
    let t = |key: &str, shape: Vec<i64>, stride: Vec<i64>| {
        let pid = Value::PersistentId(Box::new(Value::Tuple(vec![
            Value::Str("storage".into()),
            g("torch", "FloatStorage"),
            Value::Str(key.into()),
            Value::Str("cpu".into()),
            Value::Int(6),
        ])));
        call(
            g("torch._utils", "_rebuild_tensor_v2"),
            vec![
                pid,
                Value::Int(0),
                Value::Tuple(shape.into_iter().map(Value::Int).collect()),
                Value::Tuple(stride.into_iter().map(Value::Int).collect()),
                Value::Bool(false),
                call(g("collections", "OrderedDict"), vec![]),
            ],
        )
    };
    let root = Value::Dict(vec![
        (Value::Str("a.weight".into()), t("0", vec![2, 3], vec![3, 1])),
        (Value::Str("a.t".into()), t("0", vec![3, 2], vec![1, 3])),
    ]);
    let mut cur = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut cur);
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("m/data.pkl", o).unwrap();
        z.write_all(&dumps(&root, BytesStyle::CodecsEncode).unwrap()).unwrap();
        z.start_file("m/data/0", o).unwrap();
        z.write_all(&[0x3f; 24]).unwrap();
        z.finish().unwrap();
    }
    cur.into_inner()
}

#[test]
fn the_replayed_entry_points_are_the_fuzz_targets() {
    // the targets of fuzz/Cargo.toml, in file order, are the entry points replayed below
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/Cargo.toml")).unwrap();
    let bins: Vec<&str> =
        manifest.lines().filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')).filter(|n| *n != "idflow-formats-fuzz").collect();
    let targets: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(bins, targets);
}

#[test]
fn tfrecord_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TfRecordShardWriter::create(dir.path(), "s", 100).unwrap();
    for i in 0..4u8 {
        w.write(&i.to_string(), &[0xff, 0xd8, i, i, i], i64::from(i)).unwrap();
    }
    let shard = std::fs::read(&w.finish().unwrap().shards[0]).unwrap();
    replay("tfrecord", &[made("4-record shard", shard)], 20_000);
}

#[test]
fn recordio_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RecordIoFaceWriter::create(dir.path(), (112, 112)).unwrap();
    for i in 0..4usize {
        // the magic at an aligned offset of the payload makes multi-part records
        let mut img = vec![0xff, 0xd8, i as u8, 0];
        img.extend_from_slice(&recordio::MAGIC.to_le_bytes());
        w.add(i / 2, &img).unwrap();
    }
    let rec = std::fs::read(w.finish().unwrap().rec).unwrap();
    replay("recordio", &[made("4-face .rec with split records", rec)], 20_000);
}

#[test]
fn verification_bin_replay() {
    let imgs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![0xff, 0xd8, i, 0x80, 0x01]).collect();
    let issame = [true, false, true];
    let seeds = [
        made("codecs.encode pairs", encode_bin(&imgs, &issame, BytesStyle::CodecsEncode).unwrap()),
        made("py2 str pairs", encode_bin(&imgs, &issame, BytesStyle::Py2Str).unwrap()),
        fixture("tiny_verification_py2.bin", true),
        fixture("tiny_verification.bin", true),
    ];
    replay("verification_bin", &seeds, 1500);
}

#[test]
fn contexts_replay() {
    let seeds = [fixture("contexts_dict.npy", true), fixture("contexts_dict_numpy2.npy", true), fixture("contexts_plain.npy", true)];
    replay("contexts", &seeds, 1500);
}

#[test]
fn torch_zip_replay() {
    let seeds = [
        made("2-tensor checkpoint", small_checkpoint()),
        fixture("vq_tiny_first_stage_encoder_state_dict.pt", true),
        fixture("contexts_dict.npy", false),
    ];
    replay("torch_zip", &seeds, 2000);
}
