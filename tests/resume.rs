//! Kill a run halfway, rerun it: nothing duplicated, nothing missing, identical final rows, and
//! the work already written is not redone.

mod common;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use common::*;
use std::path::Path;
use std::process::Command;

fn rows(dir: &Path) -> Vec<(u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    for b in read_batches(dir) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>().clone();
        let sample = b.column_by_name("sample").unwrap().as_primitive::<UInt32Type>().clone();
        let img = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            v.push((id.value(i), sample.value(i), img.value(i).to_vec()));
        }
    }
    v.sort();
    v
}

fn pipeline(out: &Path) -> String {
    format!(
        "name: gen\nseed: 3\nworkers: 2\nnodes:\n  faces:\n    op: toy-faces\n    identities: 8\n    images_per_identity: 5\n    size: 24\n    batch_rows: 3\n  out:\n    op: write-records\n    input: faces\n    path: {}\n    rows_per_shard: 4\n",
        out.display()
    )
}

fn rendered(dir: &Path, report: &str) -> u64 {
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(report)).unwrap()).unwrap();
    r["operators"][0]["rows_out"].as_u64().unwrap()
}

#[test]
fn nodes_after_a_resumed_sink_see_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let images = d.join("images");
    let text = format!(
        "{}  folder:\n    op: write-records\n    input: out\n    format: image-folder\n    path: {}\n",
        pipeline(&out),
        images.display()
    );
    write_pipeline(d, "p.yaml", &text);
    let killed = Command::new(bin())
        .args(["run", "p.yaml", "-q"])
        .current_dir(d)
        .env("IDFLOW_TEST_CRASH_AFTER_SHARDS", "2")
        .env("IDFLOW_LOG", "error")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let again = idflow(d, &["run", "p.yaml", "-q"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(rows(&out).len(), 40);
    let list = std::fs::read_to_string(images.join("images.lst")).unwrap();
    assert_eq!(list.lines().count(), 40, "the downstream node received the kept rows too");
}

#[test]
fn interrupted_run_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = d.join("full");
    write_pipeline(d, "full.yaml", &pipeline(&full));
    let out = idflow(d, &["run", "full.yaml", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = rows(&full);
    assert_eq!(expected.len(), 40);

    let crash = d.join("crash");
    write_pipeline(d, "crash.yaml", &pipeline(&crash));
    let killed = Command::new(bin())
        .args(["run", "crash.yaml", "-q"])
        .current_dir(d)
        .env("IDFLOW_TEST_CRASH_AFTER_SHARDS", "3")
        .env("IDFLOW_LOG", "error")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the crash hook must kill the run");
    let partial = rows(&crash);
    assert!(!partial.is_empty() && partial.len() < 40, "a partial dataset remains: {} rows", partial.len());
    assert!(!crash.join("_manifest.json").exists(), "no manifest after a crash");

    let again = idflow(d, &["run", "crash.yaml", "-q", "--report", "resume.json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(rows(&crash), expected, "resumed dataset equals the uninterrupted one");
    assert_eq!(rendered(d, "resume.json"), 40 - partial.len() as u64, "only the missing samples are rendered");
    let manifest = idflow::operators::write_records::read_manifest(&crash).unwrap();
    assert_eq!(manifest["total_rows"], 40);
    assert_eq!(manifest["shards"].as_array().unwrap().len(), shards(&crash).len());
    assert!(!crash.join("_progress.json").exists());

    // A finished output of the same plan: nothing to do, nothing changes.
    let noop = idflow(d, &["run", "crash.yaml", "-q", "--report", "noop.json", "-w", "3"]);
    assert!(noop.status.success());
    assert_eq!(rendered(d, "noop.json"), 0);
    assert_eq!(rows(&crash), expected);

    // A different plan is not resumed: the output is rewritten.
    let changed = idflow(d, &["run", "crash.yaml", "-q", "--set", "seed=4", "--set", "nodes.faces.identities=2", "--report", "c.json"]);
    assert!(changed.status.success());
    assert_eq!(rendered(d, "c.json"), 10);
    assert_eq!(rows(&crash).len(), 10);
}
