//! Generation with the tiny reference models, killed after a few shards and rerun: the final
//! dataset equals an uninterrupted run, without duplicates, and `diffuse` only generates the
//! samples that were missing.

mod gen_support;
use gen_support::*;

#[test]
fn killed_generation_resumes_to_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = Tiny { identities: 4, samples: 5, workers: 2, ..Tiny::default() };
    let full = d.join("full");
    std::fs::write(d.join("full.yaml"), tiny_pipeline(&t, &full)).unwrap();
    run_ok(d, &["run", "full.yaml", "-q"]);
    let expected = read_rows(&full);
    assert_eq!(expected.len(), 20);

    let out = d.join("out");
    std::fs::write(d.join("p.yaml"), tiny_pipeline(&t, &out)).unwrap();
    let killed = idflow_command()
        .args(["run", "p.yaml", "-q"])
        .current_dir(d)
        .env("IDFLOW_TEST_CRASH_AFTER_SHARDS", "2")
        .env("IDFLOW_LOG", "error")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let partial = read_rows(&out).len();
    assert!(partial > 0 && partial < 20, "{partial} rows survived the crash");

    run_ok(d, &["run", "p.yaml", "-q", "--report", "r.json"]);
    let rows = read_rows(&out);
    assert_eq!(rows, expected, "resumed rows equal the uninterrupted run, none duplicated");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    let diffuse = report["operators"].as_array().unwrap().iter().find(|o| o["op"] == "diffuse").unwrap();
    assert_eq!(diffuse["rows_out"].as_u64().unwrap(), (20 - partial) as u64, "only missing samples are generated");
}
