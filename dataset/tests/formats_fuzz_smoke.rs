//! Deterministic mutation smoke test of every reader (the `fuzz/` crate does the real fuzzing):
//! valid files are bit-flipped, overwritten, truncated, spliced and extended with a keyed RNG;
//! each reader must return Ok or an error naming the file — never panic, hang or blow up.

mod formats_common;

use std::path::Path;

use formats_common::reference;
use idflow_dataset::formats::contexts::parse_contexts;
use idflow_dataset::formats::recordio::{self, RecordIoFaceWriter};
use idflow_dataset::formats::tfrecord::{self, TfRecordShardWriter};
use idflow_dataset::formats::torch_zip::parse_state_dict;
use idflow_dataset::formats::verification_bin::{encode_bin, parse_bin};
use idflow_dataset::formats::{pickle::BytesStyle, FormatError};
use idflow_dataset::rng::KeyedRng;

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

fn smoke(name: &str, seeds: &[Vec<u8>], iterations: u64, f: impl Fn(&[u8]) -> Result<(), FormatError>) {
    let mut errors = 0;
    for (s, seed) in seeds.iter().enumerate() {
        f(seed).unwrap_or_else(|e| panic!("{name}: seed {s} must parse: {e}"));
        for i in 0..iterations {
            let mut rng = KeyedRng::new(&[0xf022, s as u64, i]);
            let input = mutate(seed, &mut rng);
            if let Err(e) = f(&input) {
                let msg = e.to_string();
                assert!(msg.contains("fuzz"), "{name}: error does not name the file: {msg}");
                errors += 1;
            }
        }
    }
    eprintln!("{name}: {} inputs, {errors} rejected", seeds.len() as u64 * iterations);
}

#[test]
fn tfrecord_survives_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TfRecordShardWriter::create(dir.path(), "s", 100).unwrap();
    for i in 0..4u8 {
        w.write(&i.to_string(), &[0xff, 0xd8, i, i, i], i64::from(i)).unwrap();
    }
    let shard = std::fs::read(&w.finish().unwrap().shards[0]).unwrap();
    let p = Path::new("fuzz.tfrecord");
    smoke("tfrecord", &[shard], 20_000, |d| {
        let _ = tfrecord::decode_example(d, p, 0);
        for (off, payload) in tfrecord::parse_records(d, p)? {
            tfrecord::decode_example(&payload, p, off)?;
        }
        Ok(())
    });
}

#[test]
fn recordio_survives_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RecordIoFaceWriter::create(dir.path(), (112, 112)).unwrap();
    for i in 0..4usize {
        let mut img = vec![0xff, 0xd8, i as u8, 0];
        img.extend_from_slice(&recordio::MAGIC.to_le_bytes());
        w.add(i / 2, &img).unwrap();
    }
    let rec = std::fs::read(w.finish().unwrap().rec).unwrap();
    let p = Path::new("fuzz.rec");
    smoke("recordio", &[rec], 20_000, |d| {
        for (off, payload) in recordio::parse_records(d, p)? {
            recordio::unpack(&payload, p, off)?;
        }
        Ok(())
    });
}

#[test]
fn verification_bin_survives_mutation() {
    let imgs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![0xff, 0xd8, i, 0x80, 0x01]).collect();
    let issame = [true, false, true];
    let seeds = vec![
        encode_bin(&imgs, &issame, BytesStyle::CodecsEncode).unwrap(),
        encode_bin(&imgs, &issame, BytesStyle::Py2Str).unwrap(),
        std::fs::read(reference("tiny_verification_py2.bin")).unwrap()[..].to_vec(),
    ];
    let p = Path::new("fuzz.bin");
    smoke("verification_bin", &seeds, 1500, |d| parse_bin(d, p).map(|_| ()));
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
fn contexts_and_torch_zip_survive_mutation() {
    let seeds = vec![std::fs::read(reference("contexts_dict.npy")).unwrap(), std::fs::read(reference("contexts_plain.npy")).unwrap()];
    let p = Path::new("fuzz_contexts.npy");
    smoke("contexts", &seeds, 1500, |d| parse_contexts(d.to_vec(), p).map(|_| ()));
    let p = Path::new("fuzz.ckpt");
    smoke("torch_zip", &[small_checkpoint()], 2000, |d| parse_state_dict(d.to_vec(), p).map(|_| ()));
}
