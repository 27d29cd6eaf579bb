//! The toy world through the engine: the `toy-faces` source, the benchmark command, and the
//! shipped pipelines.

mod common;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use common::*;
use std::path::Path;

fn run_ok(dir: &Path, args: &[&str]) {
    let out = idflow(dir, args);
    assert!(out.status.success(), "idflow {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn toy_rows(dir: &Path) -> Vec<(u32, u32, Vec<u8>, f32)> {
    let mut v = Vec::new();
    for b in read_batches(dir) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>().clone();
        let sample = b.column_by_name("sample").unwrap().as_primitive::<UInt32Type>().clone();
        let img = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        let tone = b.column_by_name("face_skin_tone").unwrap().as_primitive::<Float32Type>().clone();
        for i in 0..b.num_rows() {
            v.push((id.value(i), sample.value(i), img.value(i).to_vec(), tone.value(i)));
        }
    }
    v.sort_by_key(|r| (r.0, r.1));
    v
}

#[test]
fn toy_faces_are_deterministic_across_worker_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let out = d.join(format!("out{workers}"));
        write_pipeline(
            d,
            "p.yaml",
            &format!(
                "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 6\n    images_per_identity: 3\n    size: 32\n    identity_offset: 100\n    batch_rows: 4\n  out:\n    op: write-records\n    input: faces\n    path: {}\n",
                out.display()
            ),
        );
        run_ok(d, &["run", "p.yaml", "-q", "-w", &workers.to_string()]);
        runs.push(toy_rows(&out));
    }
    assert_eq!(runs[0], runs[1]);
    let rows = &runs[0];
    assert_eq!(rows.len(), 18);
    // identity traits are the same for every sample of an identity, images differ
    for w in rows.windows(2).filter(|w| w[0].0 == w[1].0) {
        assert_eq!(w[0].3, w[1].3);
        assert_ne!(w[0].2, w[1].2);
    }
    // the rendered image is the library's image for world identity offset + i
    let lib = idflow_dataset::toy::render_png(0, 102, 1, 0.0, 32, &Default::default()).unwrap();
    assert_eq!(rows.iter().find(|r| r.0 == 2 && r.1 == 1).unwrap().2, lib);
}

#[test]
fn age_range_draws_a_keyed_age_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut runs = Vec::new();
    for workers in [1, 2] {
        let out = d.join(format!("out{workers}"));
        write_pipeline(
            d,
            "p.yaml",
            &format!(
                "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 4\n    images_per_identity: 3\n    size: 32\n    identity_offset: 10\n    age: 0.2\n    age_max: 0.9\n  out:\n    op: write-records\n    input: faces\n    path: {}\n",
                out.display()
            ),
        );
        run_ok(d, &["run", "p.yaml", "-q", "-w", &workers.to_string()]);
        runs.push(toy_rows(&out));
    }
    assert_eq!(runs[0], runs[1]);
    // every image is the library's render at the age drawn from (world, identity, sample)
    let mut ages = Vec::new();
    for (identity, sample, png, _) in &runs[0] {
        let world_identity = 10 + *identity as u64;
        let mut rng = idflow_dataset::rng::KeyedRng::new(&[0, world_identity, *sample as u64, 0x6167_6573]);
        let age = rng.range(0.2, 0.9) as f32;
        assert!((0.2..=0.9).contains(&age));
        let lib = idflow_dataset::toy::render_png(0, world_identity, *sample as u64, age, 32, &Default::default()).unwrap();
        assert_eq!(png, &lib, "identity {identity} sample {sample}");
        ages.push(age);
    }
    let spread = ages.iter().cloned().fold(f32::MIN, f32::max) - ages.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.3, "ages {ages:?}");

    write_pipeline(
        d,
        "bad.yaml",
        "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 2\n    images_per_identity: 2\n    age: 0.5\n    age_max: 0.4\n  out:\n    op: write-records\n    input: faces\n    path: out\n",
    );
    let out = idflow(d, &["validate", "bad.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr.contains("node `faces`") && stderr.contains("age_max"), "{stderr}");
}

#[test]
fn difficulty_knobs_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        "p.yaml",
        "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 2\n    images_per_identity: 2\n    difficulty:\n      yaww: 0.5\n  out:\n    op: write-records\n    input: faces\n    path: out\n",
    );
    let out = idflow(dir.path(), &["validate", "p.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr.contains("node `faces`") && stderr.contains("yaww"), "{stderr}");
}

#[test]
fn benchmark_command_writes_five_verification_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    run_ok(dir.path(), &["toy", "benchmarks", "--out", out.to_str().unwrap(), "--size", "16"]);
    for name in ["toy_lfw", "toy_cfp_fp", "toy_cplfw", "toy_agedb", "toy_calfw"] {
        let bin = idflow_dataset::formats::verification_bin::read_bin(&out.join(format!("{name}.bin"))).unwrap();
        assert_eq!(bin.issame.len(), 6000, "{name}");
        assert_eq!(bin.images.len(), 12000, "{name}");
        assert_eq!(bin.issame.iter().filter(|s| **s).count(), 3000, "{name}");
    }
}

#[test]
fn shipped_pipelines_validate() {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()));
    let mut files = Vec::new();
    for dir in ["pipelines", "pipelines/toy", "pipelines/examples", "pipelines/idiff-face"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")));
        }
    }
    assert!(files.len() >= 3);
    for f in files {
        let out = idflow(&root, &["validate", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}
