//! Kill a run halfway, rerun it: nothing duplicated, nothing missing, identical final rows, and
//! the work already written is not redone.

mod common;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use common::*;
use std::path::Path;

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
    let killed = crashed_run(d, &["run", "p.yaml", "-q"], 2);
    assert!(!killed.status.success());
    // what a killed writer leaves half-written
    std::fs::write(d.join(".out.idflow-staging/.part-00099.parquet.tmp"), b"half a shard").unwrap();
    run_ok(d, &["run", "p.yaml", "-q"]);
    assert_eq!(rows(&out).len(), 40);
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "no temporary file is published: {names:?}");
    let list = std::fs::read_to_string(images.join("images.lst")).unwrap();
    assert_eq!(list.lines().count(), 40, "the downstream node received the kept rows too");

    // The image folder is never "complete", so the plan runs again: the published dataset of
    // this plan is reused (its shards staged again), nothing is rendered, every row reaches
    // the folder node.
    let before = rows(&out);
    run_ok(d, &["run", "p.yaml", "-q", "--report", "r.json"]);
    assert_eq!(rendered(d, "r.json"), 0, "the published dataset is reused, not regenerated");
    assert!(rows(&out) == before);
    assert_eq!(std::fs::read_to_string(images.join("images.lst")).unwrap().lines().count(), 40);
}

#[test]
fn interrupted_run_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = d.join("full");
    write_pipeline(d, "full.yaml", &pipeline(&full));
    run_ok(d, &["run", "full.yaml", "-q"]);
    let expected = rows(&full);
    assert_eq!(expected.len(), 40);

    let crash = d.join("crash");
    write_pipeline(d, "crash.yaml", &pipeline(&crash));
    let killed = crashed_run(d, &["run", "crash.yaml", "-q"], 3);
    assert!(!killed.status.success(), "the crash hook must kill the run");
    assert!(!crash.exists(), "a killed run leaves nothing at the output path for readers to glob");
    let staging = d.join(".crash.idflow-staging");
    let partial = rows(&staging);
    assert!(!partial.is_empty() && partial.len() < 40, "the staged partial dataset remains: {} rows", partial.len());
    assert!(!staging.join("_manifest.json").exists(), "no manifest after a crash");

    run_ok(d, &["run", "crash.yaml", "-q", "--report", "resume.json"]);
    assert_eq!(rows(&crash), expected, "resumed dataset equals the uninterrupted one");
    assert_eq!(rendered(d, "resume.json"), 40 - partial.len() as u64, "only the missing samples are rendered");
    let manifest = idflow::operators::write_records::read_manifest(&crash).unwrap();
    assert_eq!(manifest["total_rows"], 40);
    assert_eq!(manifest["shards"].as_array().unwrap().len(), shards(&crash).len());
    assert!(!staging.exists(), "the staging folder is gone once published");

    // A finished output of the same plan: nothing to do, nothing changes.
    let noop = idflow(d, &["run", "crash.yaml", "-q", "--report", "noop.json", "-w", "3"]);
    assert!(noop.status.success());
    assert!(String::from_utf8_lossy(&noop.stdout).contains("nothing to do"), "{}", String::from_utf8_lossy(&noop.stdout));
    assert_eq!(rendered(d, "noop.json"), 0);
    assert_eq!(rows(&crash), expected);

    // A different plan is refused, naming the folder and the way out; nothing changes.
    let changed = ["run", "crash.yaml", "-q", "--set", "seed=4", "--set", "nodes.faces.identities=2", "--report", "c.json"];
    let refused = idflow(d, &changed);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&crash.display().to_string()) && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(rows(&crash), expected);

    // With --overwrite it replaces the dataset.
    run_ok(d, &[&changed[..], &["--overwrite"]].concat());
    assert_eq!(rendered(d, "c.json"), 10);
    assert_eq!(rows(&crash).len(), 10);
}

/// The old dataset stays whole and readable while a replacing run works, and after that run is
/// killed: only a successful run swaps its output in.
#[test]
fn overwrite_keeps_the_old_dataset_until_the_new_one_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    write_pipeline(d, "p.yaml", &pipeline(&out));
    run_ok(d, &["run", "p.yaml", "-q"]);
    let old_rows = rows(&out);
    let old_manifest = std::fs::read(out.join("_manifest.json")).unwrap();

    let killed = crashed_run(d, &["run", "p.yaml", "-q", "--overwrite", "--set", "nodes.faces.images_per_identity=2"], 2);
    assert!(!killed.status.success());
    assert!(rows(&out) == old_rows, "the killed run left the old dataset as it was");
    assert_eq!(std::fs::read(out.join("_manifest.json")).unwrap(), old_manifest);
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    run_ok(d, &["run", "p.yaml", "-q", "--overwrite", "--set", "nodes.faces.images_per_identity=2"]);
    let new_rows = rows(&out);
    assert_eq!(new_rows.len(), 16, "the new plan's rows only");
    assert!(new_rows.iter().all(|r| old_rows.contains(r)), "the same world, fewer samples per identity");
    assert!(!d.join(".out.idflow-staging").exists());
    let manifest = idflow::operators::write_records::read_manifest(&out).unwrap();
    assert_eq!(manifest["shards"].as_array().unwrap().len(), shards(&out).len());
}
