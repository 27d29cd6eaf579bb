//! The README's quickstart (`pipelines/quickstart.yaml`, the whole method on the committed toy
//! models) at a reduced size: it finishes, says where its outputs are, and they read back —
//! the Parquet dataset (32 px PNG faces, one row per accepted (identity, sample)), the
//! evaluation report with its plots and contact sheet, and the filter's acceptance report.
//! Without the filter, the identity consistency of the generated faces equals the value
//! recorded for the committed LDM (a regression test of the embedded default).

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use common::read_batches;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the quickstart from the repository root with `IDFLOW_OUT=out` and extra `--set`s.
fn quickstart(out: &Path, sets: &[&str]) -> std::process::Output {
    quickstart_with(out, sets, &[], &[])
}

/// [`quickstart`] with extra environment variables and arguments.
fn quickstart_with(out: &Path, sets: &[&str], env: &[(&str, &str)], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run".to_string(), "pipelines/quickstart.yaml".to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    for s in sets {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let out_arg = format!("nodes.dataset.path={}", out.join("quickstart/dataset").display());
    let report_arg = format!("nodes.report.output={}", out.join("quickstart/report").display());
    let acc_arg = format!("nodes.consistent.report={}", out.join("quickstart/acceptance.json").display());
    for s in [out_arg, report_arg, acc_arg] {
        args.push("--set".into());
        args.push(s);
    }
    common::idflow_command().args(&args).envs(env.iter().copied()).current_dir(repo()).output().expect("run idflow")
}

#[test]
fn quickstart_writes_a_dataset_a_report_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let res = quickstart(dir.path(), &["nodes.identities.count=6", "nodes.latents.samples_per_identity=3"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let q = dir.path().join("quickstart");
    for (label, path) in [
        ("dataset", q.join("dataset")),
        ("report", q.join("report/metrics.json")),
        ("contact sheet", q.join("report/contact_sheet.png")),
        ("acceptance report", q.join("acceptance.json")),
    ] {
        assert!(path.exists(), "{} is missing", path.display());
        assert!(stdout.contains(&format!("{label}: {}", path.display())), "stdout does not name the {label}:\n{stdout}");
    }

    // the dataset: unique (identity, sample) rows of 32×32 PNG faces
    let mut keys = BTreeSet::new();
    for b in read_batches(&q.join("dataset")) {
        let ids = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
        let samples = b.column_by_name("sample").unwrap().as_primitive::<UInt32Type>();
        let seeds = b.column_by_name("seed").unwrap().as_primitive::<UInt64Type>();
        let images = b.column_by_name("image").unwrap().as_struct();
        let bytes = images.column_by_name("bytes").unwrap().as_binary::<i32>();
        for i in 0..b.num_rows() {
            assert!(ids.value(i) < 6 && samples.value(i) < 3, "unexpected key ({}, {})", ids.value(i), samples.value(i));
            assert!(keys.insert((ids.value(i), samples.value(i))), "duplicate row ({}, {})", ids.value(i), samples.value(i));
            assert_ne!(seeds.value(i), 0);
            let img = image::load_from_memory_with_format(bytes.value(i), image::ImageFormat::Png).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
    }
    let acceptance: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(q.join("acceptance.json")).unwrap()).unwrap();
    assert_eq!(acceptance["requested"].as_u64(), Some(18), "{acceptance}");
    assert_eq!(acceptance["accepted"].as_u64(), Some(keys.len() as u64), "{acceptance}");
    assert!(!keys.is_empty());

    // the report covers exactly the written rows
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(q.join("report/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["dataset"]["rows"].as_u64(), Some(keys.len() as u64), "{metrics}");
    for plot in ["score_histograms.png", "det_curve.png", "contact_sheet.png"] {
        image::open(q.join("report").join(plot)).unwrap_or_else(|e| panic!("{plot}: {e}"));
    }
}

/// Runs the quickstart at 8 identities × 4 samples without the filter on the committed LDM in
/// `models/toy/<model>` and checks the context consistency its `metrics.json` records.
fn generates_faces_as_consistent_as_recorded(model: &str) {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = format!("nodes.latents.model.checkpoint=models/toy/{model}/ema_averaged_model.safetensors");
    let config = format!("nodes.latents.model.config=models/toy/{model}/config.json");
    let res = quickstart(
        dir.path(),
        &[
            "nodes.identities.count=8",
            "nodes.latents.samples_per_identity=4",
            "nodes.consistent.threshold=-1",
            "nodes.consistent.max_retries=0",
            &checkpoint,
            &config,
        ],
    );
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("quickstart/report/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["dataset"]["rows"].as_u64(), Some(32), "{metrics}");
    let got = metrics["dataset"]["context_consistency"].as_f64().unwrap();
    let text = std::fs::read_to_string(repo().join(format!("models/toy/{model}/metrics.json"))).unwrap();
    let want = serde_json::from_str::<serde_json::Value>(&text).unwrap()["quickstart_8x4_context_consistency"].as_f64().unwrap();
    assert!((got - want).abs() < 0.01, "{model}: context consistency {got:.4}, recorded {want:.4}");
}

#[test]
fn toy_ldm_generates_faces_as_consistent_as_recorded() {
    generates_faces_as_consistent_as_recorded("ldm");
}

#[test]
fn toy_cpd0_ldm_generates_faces_as_consistent_as_recorded() {
    generates_faces_as_consistent_as_recorded("ldm-cpd0");
}

/// Every file under `dir` (recursively, hidden ones included) with its bytes, by relative path.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

const SMALL: [&str; 3] = ["nodes.identities.count=6", "nodes.latents.samples_per_identity=3", "nodes.dataset.rows_per_shard=2"];

#[test]
fn quickstart_twice_into_one_folder_is_a_no_op_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = quickstart(dir.path(), &SMALL);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let before = snapshot(dir.path());
    assert!(before.keys().any(|p| p.ends_with("report/metrics.json")));
    let second = quickstart(dir.path(), &SMALL);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("nothing to do") && stdout.contains("acceptance report:"), "{stdout}");
    assert_eq!(snapshot(dir.path()), before, "the second run changed nothing");
}

/// A JSON report without the fields that name the plan's paths (its fingerprint).
fn without_fingerprint(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("fingerprint");
    v
}

/// (identity, sample, attempt, similarity bits, image) of every dataset row, sorted.
fn dataset_rows(dir: &Path) -> Vec<(u32, u32, u32, u32, Vec<u8>)> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let col = |n: &str| b.column_by_name(n).unwrap().as_primitive::<UInt32Type>().clone();
        let (ids, samples, attempts) = (col("identity"), col("sample"), col("attempt"));
        let sims = b.column_by_name("similarity").unwrap().as_primitive::<arrow_array::types::Float32Type>().clone();
        let bytes = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            rows.push((ids.value(i), samples.value(i), attempts.value(i), sims.value(i).to_bits(), bytes.value(i).to_vec()));
        }
    }
    rows.sort();
    rows
}

#[test]
fn killed_quickstart_resumes_to_the_uninterrupted_dataset_and_reports() {
    let full = tempfile::tempdir().unwrap();
    let res = quickstart(full.path(), &SMALL);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));

    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("quickstart");
    let killed = quickstart_with(dir.path(), &SMALL, &[("IDFLOW_TEST_CRASH_AFTER_SHARDS", "2")], &[]);
    assert!(!killed.status.success(), "the crash hook must kill the run");
    assert!(!q.join("dataset").exists() && !q.join("acceptance.json").exists(), "nothing published by the killed run");

    // What the killed run settled: samples written, and samples finally rejected (journal).
    let written = dataset_rows(&dir.path().join("quickstart/.dataset.idflow-staging")).len();
    let journal_dir = dir.path().join("quickstart/.acceptance.json.idflow-staging");
    let mut rejected = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&journal_dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("decisions-")) {
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v["accepted"] == false {
                rejected.insert((v["identity"].as_u64().unwrap(), v["sample"].as_u64().unwrap()));
            }
        }
    }
    assert!(written > 0, "the killed run wrote some shards");

    let report = dir.path().join("resume.json");
    let resumed = quickstart_with(dir.path(), &SMALL, &[], &["--report", report.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let drawn = r["operators"].as_array().unwrap().iter().find(|o| o["node"] == "latents").unwrap()["rows_out"].as_u64().unwrap();
    assert_eq!(drawn as usize, 18 - written - rejected.len(), "written and finally rejected samples are not drawn again");
    let fq = full.path().join("quickstart");
    assert_eq!(dataset_rows(&q.join("dataset")), dataset_rows(&fq.join("dataset")));
    assert_eq!(without_fingerprint(&q.join("acceptance.json")), without_fingerprint(&fq.join("acceptance.json")));
    let metrics = |d: &Path| {
        let mut m = without_fingerprint(&d.join("report/metrics.json"));
        m.as_object_mut().unwrap().remove("files");
        m
    };
    assert_eq!(metrics(&q), metrics(&fq), "the report describes the whole dataset");
    for plot in ["score_histograms.png", "det_curve.png", "contact_sheet.png"] {
        assert_eq!(std::fs::read(q.join("report").join(plot)).unwrap(), std::fs::read(fq.join("report").join(plot)).unwrap(), "{plot}");
    }
}
