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

/// One written toy face: identity, sample, PNG bytes and the identity's skin tone.
type ToyRow = (u32, u32, Vec<u8>, f32);

fn toy_rows(dir: &Path) -> Vec<ToyRow> {
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

/// Runs a `toy-faces` node with the given YAML parameter lines (each indented as under the node)
/// into a `write-records` sink once per worker count, and returns each run's rows.
fn toy_faces_runs(d: &Path, params: &str, worker_counts: [usize; 2]) -> [Vec<ToyRow>; 2] {
    worker_counts.map(|workers| {
        let out = d.join(format!("out{workers}"));
        let yaml = format!(
            "name: t\nnodes:\n  faces:\n    op: toy-faces\n{params}  out:\n    op: write-records\n    input: faces\n    path: {}\n",
            out.display()
        );
        write_pipeline(d, "p.yaml", &yaml);
        run_ok(d, &["run", "p.yaml", "-q", "-w", &workers.to_string()]);
        toy_rows(&out)
    })
}

#[test]
fn toy_faces_are_deterministic_across_worker_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let params = "    identities: 6\n    images_per_identity: 3\n    size: 32\n    identity_offset: 100\n    batch_rows: 4\n";
    let runs = toy_faces_runs(d, params, [1, 3]);
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
    let params = "    identities: 4\n    images_per_identity: 3\n    size: 32\n    identity_offset: 10\n    age: 0.2\n    age_max: 0.9\n";
    let runs = toy_faces_runs(d, params, [1, 2]);
    assert_eq!(runs[0], runs[1]);
    // every image is the library's render at the toy world's age draw for (world, identity, sample)
    let mut ages = Vec::new();
    for (identity, sample, png, _) in &runs[0] {
        let world_identity = 10 + *identity as u64;
        let age = idflow_dataset::toy::sample_age(0, world_identity, *sample as u64, 0.2, 0.9);
        let lib = idflow_dataset::toy::render_png(0, world_identity, *sample as u64, age, 32, &Default::default()).unwrap();
        assert_eq!(png, &lib, "identity {identity} sample {sample}");
        ages.push(age);
    }
    // the ages differ between samples, so the images are not all rendered at one age
    let spread = ages.iter().cloned().fold(f32::MIN, f32::max) - ages.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.3, "ages {ages:?}");

    let stderr = validate_fails(d, "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 2\n    images_per_identity: 2\n    age: 0.5\n    age_max: 0.4\n  out:\n    op: write-records\n    input: faces\n    path: out\n");
    assert!(stderr.contains("node `faces`") && stderr.contains("age_max"), "{stderr}");
}

#[test]
fn difficulty_knobs_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = validate_fails(dir.path(), "name: t\nnodes:\n  faces:\n    op: toy-faces\n    identities: 2\n    images_per_identity: 2\n    difficulty:\n      yaww: 0.5\n  out:\n    op: write-records\n    input: faces\n    path: out\n");
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
    let mut complete = 0;
    for f in files {
        let out = idflow_command()
            .args(["validate", f.to_str().unwrap()])
            .env("FACES_ROOT", "pipelines/data/toy-faces")
            .current_dir(&root)
            .output()
            .expect("run idflow");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Pipelines over data or weights a user supplies (the official checkpoints, benchmark
        // files, an earlier pipeline's output) validate up to the first input that is not there,
        // which `validate` names as a configuration error.
        let missing_input = out.status.code() == Some(78) && stderr.contains("does not exist");
        assert!(out.status.success() || missing_input, "{}: {stderr}", f.display());
        complete += usize::from(out.status.success());
    }
    assert!(complete >= 3, "only {complete} shipped pipelines validate completely");
}

/// Writes `yaml` as a pipeline in `dir`, asserts `idflow validate` refuses it as a configuration
/// error (exit 78) and returns its standard error.
fn validate_fails(dir: &Path, yaml: &str) -> String {
    write_pipeline(dir, "bad.yaml", yaml);
    let out = idflow(dir, &["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}
