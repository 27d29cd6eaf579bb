//! Read + decode throughput of 10,000 112×112 JPEGs from TFRecord, RecordIO and an image
//! folder, against a Python loop (PIL + protobuf / struct readers) with the same thread count.
//!
//! `cargo bench -p idflow-dataset --bench formats_read [-- --images N --threads T]`
//! The Python side runs in the venv at `IDFLOW_PY_VENV` (default: `<target>/py-venv-formats`,
//! shared with the cross-check test); Pillow, protobuf and numpy are installed on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use idflow_dataset::formats::image_folder::{list_image_folder, write_image};
use idflow_dataset::formats::recordio::{RecordIoFaceWriter, RecordIoReader};
use idflow_dataset::formats::tfrecord::{decode_example, read_index, read_record_at, TfRecordShardWriter};
use idflow_dataset::rng::KeyedRng;

const PER_IDENTITY: usize = 20;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn make_jpeg(i: usize) -> Vec<u8> {
    let mut rng = KeyedRng::new(&[0xbe4c, i as u64]);
    let (fx, fy, ph) = (rng.range(0.02, 0.2), rng.range(0.02, 0.2), rng.range(0.0, std::f64::consts::TAU));
    let img = image::RgbImage::from_fn(112, 112, |x, y| {
        let v = ((x as f64 * fx + y as f64 * fy + ph).sin() * 0.5 + 0.5) * 200.0;
        let n = (rng.next_u64() % 40) as f64;
        image::Rgb([(v + n) as u8, (255.0 - v) as u8, ((v * 0.5) + n) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
    out
}

fn decode(bytes: &[u8]) -> usize {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8();
    img.as_raw().len()
}

/// Runs `work(i)` for i in 0..n over `threads` threads (contiguous chunks); returns rows/s.
fn timed(n: usize, threads: usize, work: impl Fn(std::ops::Range<usize>) + Sync) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let chunk = n.div_ceil(threads);
        for t in 0..threads {
            let w = &work;
            s.spawn(move || w(t * chunk..((t + 1) * chunk).min(n)));
        }
    });
    n as f64 / t0.elapsed().as_secs_f64()
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("IDFLOW_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap().ancestors().nth(3).unwrap().join("py-venv-formats"));
    let py = venv.join("bin/python");
    let ok = |py: &Path| Command::new(py).args(["-c", "import PIL, google.protobuf, numpy"]).output().is_ok_and(|o| o.status.success());
    if !ok(&py) {
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
        assert!(st.success(), "cannot create venv {}", venv.display());
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pillow", "protobuf>=4.21", "numpy"])
            .status()
            .unwrap();
        assert!(st.success(), "pip install failed");
    }
    py
}

fn main() {
    let n = arg("--images", 10_000);
    let threads = arg("--threads", std::thread::available_parallelism().map(|p| p.get()).unwrap_or(2));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    println!("generating {n} JPEGs (112x112) ...");
    let jpegs: Vec<Vec<u8>> = (0..n).map(make_jpeg).collect();
    let mut tw = TfRecordShardWriter::create(&root.join("tfr"), "faces", 500_000).unwrap();
    let mut rw = RecordIoFaceWriter::create(&root.join("rec"), (112, 112)).unwrap();
    for (i, j) in jpegs.iter().enumerate() {
        let (id, s) = (i / PER_IDENTITY, i % PER_IDENTITY);
        tw.write(&format!("{id}/{s}.jpg"), j, id as i64).unwrap();
        rw.add(id, j).unwrap();
        write_image(&root.join("folder"), &format!("id{id:06}"), &format!("{s:04}"), "jpg", j).unwrap();
    }
    let tsum = tw.finish().unwrap();
    rw.finish().unwrap();
    let mb = jpegs.iter().map(|j| j.len()).sum::<usize>() as f64 / 1e6;
    println!("{n} images, {mb:.1} MB of JPEG, {threads} threads");

    // TFRecord: random access through the index (what a shuffled loader does), CRC verified.
    let index = read_index(&tsum.index).unwrap();
    let shards = tsum.shards.clone();
    let tfr = timed(n, threads, |r| {
        let mut files: Vec<std::fs::File> = shards.iter().map(|p| std::fs::File::open(p).unwrap()).collect();
        for e in &index[r] {
            let p = read_record_at(&mut files[e.shard], &shards[e.shard], e.offset).unwrap();
            decode(&decode_example(&p, &shards[e.shard], e.offset).unwrap().image);
        }
    });
    let rec_dir = root.join("rec");
    let keys = RecordIoReader::open_dir(&rec_dir).unwrap().records().unwrap();
    let rec = timed(n, threads, |r| {
        let mut reader = RecordIoReader::open_dir(&rec_dir).unwrap();
        for k in &keys[r] {
            decode(&reader.read_image(k.key).unwrap().1);
        }
    });
    let listing = list_image_folder(&root.join("folder"), &["jpg"], None, None).unwrap();
    let folder = timed(n, threads, |r| {
        for (_, _, p) in &listing[r] {
            decode(&std::fs::read(p).unwrap());
        }
    });

    let py = venv_python();
    let script = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()))
        .join("benches/formats_read_bench.py");
    let out = Command::new(&py).arg(&script).arg(root).arg(threads.to_string()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pyres: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{:<12} {:>12} {:>12} {:>8}", "format", "idflow rows/s", "python rows/s", "ratio");
    for (name, ours) in [("tfrecord", tfr), ("recordio", rec), ("imagefolder", folder)] {
        let theirs = pyres[name].as_f64().unwrap();
        println!("{name:<12} {ours:>12.0} {theirs:>12.0} {:>7.2}x", ours / theirs);
    }
}
