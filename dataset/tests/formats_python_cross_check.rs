//! Cross-check against independent Python readers and writers (`tests/py/cross_check.py`):
//! protobuf for tf.train.Example, pickle for `.bin`, numpy for `.npy`, and a small reader/writer of
//! the published RecordIO format. The venv is created on first use (under the cargo target
//! directory, or at `IDFLOW_PY_VENV`); if it cannot be made the test fails, it never skips.

use std::path::PathBuf;
use std::process::Command;

use idflow_dataset::formats::contexts::read_contexts;
use idflow_dataset::formats::npy::write_npy;
use idflow_dataset::formats::recordio::{RecordIoFaceWriter, RecordIoReader};
use idflow_dataset::formats::tfrecord::{decode_example, TfRecordReader, TfRecordShardWriter};
use idflow_dataset::formats::verification_bin::{read_bin, write_bin};
use idflow_dataset::rng::KeyedRng;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The venv's python, creating the venv and installing protobuf + numpy when needed.
fn venv_python() -> PathBuf {
    let venv = match std::env::var_os("IDFLOW_PY_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            // <target>/<profile>/deps/<test exe> → <target>/py-venv-formats
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).expect("test binary is inside the cargo target dir").join("py-venv-formats")
        }
    };
    let py = venv.join("bin").join("python");
    let ready = py.is_file() && Command::new(&py).args(["-c", "import google.protobuf, numpy"]).output().is_ok_and(|o| o.status.success());
    if !ready {
        let base = std::env::var("IDFLOW_PYTHON").unwrap_or_else(|_| "python3".to_string());
        run(Command::new(&base).args(["-m", "venv"]).arg(&venv), "creating the Python venv");
        run(
            Command::new(&py).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "protobuf>=4.21", "numpy"]),
            "installing protobuf and numpy into the venv",
        );
    }
    py
}

fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut rng = KeyedRng::new(&[0xc0ffee, i as u64]);
            let len = 1 + (rng.next_u64() % 400) as usize;
            let mut v = vec![0xff, 0xd8];
            v.extend((0..len).map(|_| rng.next_u64() as u8));
            if i % 4 == 1 {
                v.splice(4..4, 0xced7_230au32.to_le_bytes());
            }
            v
        })
        .collect()
}

#[test]
fn python_readers_and_writers_agree_with_ours() {
    let py = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let rust = dir.path().join("rust");
    std::fs::create_dir_all(&rust).unwrap();
    let imgs = images(12);
    let labels: Vec<usize> = (0..12).map(|i| i / 3).collect();

    // --- our writers
    let mut tw = TfRecordShardWriter::create(&rust, "faces", 5).unwrap();
    for (i, (img, l)) in imgs.iter().zip(&labels).enumerate() {
        tw.write(&format!("{l}/{i}.jpg"), img, *l as i64).unwrap();
    }
    let tsum = tw.finish().unwrap();
    let issame: Vec<bool> = (0..6).map(|i| i % 3 != 0).collect();
    write_bin(&rust.join("pairs.bin"), &imgs, &issame).unwrap();
    let ctx: Vec<f32> = (0..24).map(|i| (i as f32 - 7.0) * 0.3).collect();
    write_npy(&rust.join("contexts.npy"), 3, 8, &ctx).unwrap();
    let mut rw = RecordIoFaceWriter::create(&rust.join("rec"), (112, 112)).unwrap();
    for (img, l) in imgs.iter().zip(&labels) {
        rw.add(*l, img).unwrap();
    }
    rw.finish().unwrap();

    // --- the Python side
    let script = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()))
        .join("tests/py/cross_check.py");
    let out = run(Command::new(&py).arg(&script).arg(dir.path()), "cross_check.py");
    let s: Json = serde_json::from_slice(&out.stdout).unwrap();

    // TFRecord: every record, in shard order, with our offsets and labels
    let recs = s["tfrecord"].as_array().unwrap();
    assert_eq!(recs.len(), 12);
    assert_eq!(tsum.shards.len(), 3);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r[0].as_str().unwrap(), format!("faces-{:05}.tfrecord", i / 5));
        assert_eq!(r[2].as_str().unwrap(), sha(&imgs[i]), "record {i}");
        assert_eq!(r[3].as_u64().unwrap() as usize, labels[i]);
    }
    let index = s["tfrecord_index"].as_array().unwrap();
    for (i, (line, rec)) in index.iter().zip(recs).enumerate() {
        assert_eq!(line[1].as_str().unwrap(), (i / 5).to_string());
        assert_eq!(line[2].as_str().unwrap(), rec[1].as_u64().unwrap().to_string(), "index offset {i}");
    }
    // .bin
    let b = &s["bin"];
    let shas: Vec<String> = imgs.iter().map(|x| sha(x)).collect();
    assert_eq!(b["images"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect::<Vec<_>>(), shas);
    assert_eq!(b["issame"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect::<Vec<_>>(), issame);
    // .npy
    assert_eq!(s["npy"]["shape"], serde_json::json!([3, 8]));
    assert_eq!(s["npy"]["dtype"], "float32");
    let raw: Vec<u8> = ctx.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(s["npy"]["sha"].as_str().unwrap(), sha(&raw));
    // RecordIO as MXFaceDataset sees it
    let r = &s["recordio"];
    assert_eq!(r["property"], "4,112,112");
    let rimgs = r["images"].as_array().unwrap();
    assert_eq!(rimgs.len(), 12);
    for (i, x) in rimgs.iter().enumerate() {
        assert_eq!(x[0].as_u64().unwrap() as usize, labels[i]);
        assert_eq!(x[1].as_str().unwrap(), shas[i]);
    }
    assert_eq!(r["identities"], serde_json::json!([[1, 4], [4, 7], [7, 10], [10, 13]]));

    // --- our readers on the Python-made files
    let pyd = dir.path().join("py");
    let m: Json = serde_json::from_slice(&std::fs::read(pyd.join("manifest.json")).unwrap()).unwrap();
    let want: Vec<&str> = m["images"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    let want_labels: Vec<i64> = m["labels"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let shard = pyd.join("py-00000.tfrecord");
    let got: Vec<_> = TfRecordReader::open(&shard)
        .unwrap()
        .map(|r| {
            let (off, p) = r.unwrap();
            decode_example(&p, &shard, off).unwrap()
        })
        .collect();
    assert_eq!(got.iter().map(|e| sha(&e.image)).collect::<Vec<_>>(), want);
    assert_eq!(got.iter().map(|e| e.label.unwrap()).collect::<Vec<_>>(), want_labels);
    let want_issame: Vec<bool> = m["issame"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
    for p in [2, 4, 5] {
        let bin = read_bin(&pyd.join(format!("pairs_p{p}.bin"))).unwrap();
        assert_eq!(bin.images.iter().map(|x| sha(x)).collect::<Vec<_>>(), want, "protocol {p}");
        assert_eq!(bin.issame, want_issame);
    }
    let c = read_contexts(&pyd.join("ctx.npy")).unwrap();
    let expect: Vec<u8> = (0..m["ctx_normalized"].as_str().unwrap().len() / 2)
        .map(|i| u8::from_str_radix(&m["ctx_normalized"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let got: Vec<u8> = c.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(got, expect, "context normalisation differs from numpy");
    let mut rr = RecordIoReader::open_dir(&pyd.join("rec")).unwrap();
    let recs = rr.records().unwrap();
    assert_eq!(recs.len(), 12);
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec.identity as i64, want_labels[i]);
        assert_eq!(rec.sample, i % 3);
        assert_eq!(sha(&rr.read_image(rec.key).unwrap().1), want[i]);
    }
}
