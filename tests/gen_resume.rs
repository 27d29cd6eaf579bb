//! Generation with the tiny reference models, killed after a few shards and rerun: the final
//! dataset equals an uninterrupted run, without duplicates, and `diffuse` only generates the
//! samples that were missing (planned minus done, a differential antijoin) — with one and
//! with two workers.

mod gen_support;
use gen_support::*;
use std::path::Path;

/// Kills a run of `t` after two shards, reruns it, and checks the result against `expected`.
fn kill_and_resume(d: &Path, t: &Tiny, expected: &[GenRow]) {
    let name = format!("w{}", t.workers);
    let out = d.join(&name);
    let yaml = format!("{name}.yaml");
    std::fs::write(d.join(&yaml), tiny_pipeline(t, &out)).unwrap();
    let killed = crashed_run(d, &["run", &yaml, "-q"], 2);
    assert!(!killed.status.success());
    assert!(!out.exists(), "a killed run publishes nothing");
    let survived = generated_rows(&d.join(format!(".{name}.idflow-staging")));
    let partial = survived.len();
    assert!(partial > 0 && partial < expected.len(), "{partial} rows survived the crash ({} workers)", t.workers);
    assert!(survived.iter().all(|r| expected.contains(r)), "what survived is part of the uninterrupted dataset");

    let report_file = format!("{name}.json");
    run_ok(d, &["run", &yaml, "-q", "--report", &report_file]);
    let rows = generated_rows(&out);
    assert_eq!(rows, expected, "resumed rows equal the uninterrupted run, none duplicated ({} workers)", t.workers);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(&report_file)).unwrap()).unwrap();
    let op = |name: &str| report["operators"].as_array().unwrap().iter().find(|o| o["op"] == name).unwrap().clone();
    let missing = (expected.len() - partial) as u64;
    assert_eq!(op("diffuse")["rows_out"].as_u64().unwrap(), missing, "only missing samples are generated ({} workers)", t.workers);
    assert_eq!(op("decode-latent")["rows_out"].as_u64().unwrap(), missing, "only missing samples are decoded");
    assert_eq!(op("write-records")["rows_in"].as_u64().unwrap(), missing, "only missing samples reach the sink");
}

#[test]
fn killed_generation_resumes_to_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = d.join("full");
    let t1 = Tiny { identities: 4, samples: 5, workers: 1, ..Tiny::default() };
    std::fs::write(d.join("full.yaml"), tiny_pipeline(&t1, &full)).unwrap();
    run_ok(d, &["run", "full.yaml", "-q"]);
    let expected = generated_rows(&full);
    assert_eq!(expected.len(), 20);

    kill_and_resume(d, &t1, &expected);
    kill_and_resume(d, &Tiny { identities: 4, samples: 5, workers: 2, ..Tiny::default() }, &expected);
}
