//! Running pipelines: determinism across worker and process counts, error policies, atomic
//! output, and the Parquet files opening in independent readers.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn one_and_two_workers_write_identical_rows() {
    let (dir, faces, _) = faces_dir(7, 4);
    let mut results = Vec::new();
    for workers in [1, 2] {
        let out = dir.path().join(format!("out{workers}"));
        write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, workers, ""));
        run_ok(dir.path(), &["run", "p.yaml", "-q"]);
        let rows = image_rows(&out);
        assert_eq!(rows.len(), 28);
        let manifest = idflow::operators::write_records::read_manifest(&out).unwrap();
        assert_eq!(manifest["total_rows"], 28);
        let listed: Vec<String> = manifest["shards"].as_array().unwrap().iter().map(|s| s["file"].as_str().unwrap().to_string()).collect();
        let on_disk: Vec<String> = shards(&out).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(listed, on_disk, "manifest lists exactly the shards on disk");
        for s in manifest["shards"].as_array().unwrap() {
            let sha = idflow::fsutil::sha256_file(&out.join(s["file"].as_str().unwrap())).unwrap();
            assert_eq!(s["sha256"].as_str().unwrap(), sha);
        }
        results.push(rows);
    }
    assert_eq!(results[0], results[1]);
    // identities are dense indices in sorted folder order
    assert_eq!(results[0][0].1, "person_000");
    assert_eq!(results[0].last().unwrap().0, 6);
}

#[test]
fn workers_flag_and_set_override_change_the_run() {
    let (dir, faces, out) = faces_dir(5, 2);
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 1, ""));
    run_ok(dir.path(), &["run", "p.yaml", "-q", "-w", "3", "--set", "nodes.faces.limit_identities=2", "--report", "r.json"]);
    assert_eq!(image_rows(&out).len(), 4);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["workers"], 3);
    assert_eq!(report["ok"], true);
    let ops = report["operators"].as_array().unwrap();
    assert_eq!(ops.len(), 3);
    assert_eq!(ops[1]["node"], "tensors");
    assert_eq!(ops[1]["rows_in"], 4);
    assert_eq!(ops[1]["rows_out"], 4);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
}

#[test]
fn rerun_replaces_an_earlier_dataset() {
    let (dir, faces, out) = faces_dir(6, 4);
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 2, ""));
    run_ok(dir.path(), &["run", "p.yaml", "-q"]);
    assert!(shards(&out).len() >= 4);
    let refused = idflow(dir.path(), &["run", "p.yaml", "-q", "--set", "nodes.faces.limit_identities=1"]);
    assert_eq!(refused.status.code(), Some(1), "another plan over a finished dataset needs --overwrite");
    assert_eq!(image_rows(&out).len(), 24, "the refused run changed nothing");
    run_ok(dir.path(), &["run", "p.yaml", "-q", "--overwrite", "--set", "nodes.faces.limit_identities=1"]);
    assert_eq!(image_rows(&out).len(), 4, "stale shards of the first run must be gone");
}

fn corrupt_setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let faces = dir.join("faces");
    make_faces(&faces, 4, 3);
    let bad = faces.join("person_001").join("01.png");
    let good = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap(); // truncated: not decodable
    let bad_jpg = faces.join("person_002").join("00.jpg");
    std::fs::write(&bad_jpg, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    (faces, bad)
}

#[test]
fn corrupt_image_fails_the_run_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (faces, _) = corrupt_setup(dir.path());
    let out = dir.path().join("out");
    for workers in [1, 2] {
        let text = folder_pipeline(&faces, &out, workers, "").replace("rows_per_shard: 5", "rows_per_shard: 100");
        write_pipeline(dir.path(), "p.yaml", &text);
        let res = idflow(dir.path(), &["run", "p.yaml", "-q"]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("person_00") && stderr.contains("node `tensors`"), "error must name the file and node: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // Nothing is published; the hidden staging folder (which lets a fixed rerun resume)
        // holds no temporary file.
        assert!(!out.exists(), "no shard or manifest may appear at the output path");
        let staging = dir.path().join(".out.idflow-staging");
        let tmp: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect())
            .unwrap_or_default();
        assert!(tmp.is_empty(), "no temporary file may remain: {tmp:?}");
    }
}

#[test]
fn corrupt_image_is_skipped_and_counted_with_on_error_skip() {
    let dir = tempfile::tempdir().unwrap();
    let (faces, _) = corrupt_setup(dir.path());
    let out = dir.path().join("out");
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 2, "    on_error: skip\n"));
    run_ok(dir.path(), &["run", "p.yaml", "-q", "--report", "r.json"]);
    let rows = image_rows(&out);
    assert_eq!(rows.len(), 10);
    assert!(!rows.iter().any(|r| r.2.ends_with("person_001/01.png") || r.2.ends_with("person_002/00.jpg")));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["operators"][1]["skipped"], 2);
    assert_eq!(report["operators"][1]["rows_out"], 10);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_processes_on_loopback_match_one_process() {
    let (dir, faces, _) = faces_dir(9, 3);
    let single = dir.path().join("single");
    write_pipeline(dir.path(), "single.yaml", &folder_pipeline(&faces, &single, 1, ""));
    run_ok(dir.path(), &["run", "single.yaml", "-q"]);

    let cluster = dir.path().join("cluster");
    write_pipeline(dir.path(), "cluster.yaml", &folder_pipeline(&faces, &cluster, 1, ""));
    for (code, stderr) in cluster_run(dir.path(), "cluster.yaml", 2, &|_| vec![]) {
        assert_eq!(code, Some(0), "a cluster process failed: {stderr}");
    }
    assert_eq!(image_rows(&single), image_rows(&cluster));
    let manifest = idflow::operators::write_records::read_manifest(&cluster).unwrap();
    assert_eq!(manifest["total_rows"], 27, "process 0's manifest covers both processes' shards");
}

#[test]
fn parquet_opens_in_pyarrow_and_duckdb() {
    let (dir, faces, out) = faces_dir(6, 3);
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 2, ""));
    run_ok(dir.path(), &["run", "p.yaml", "-q"]);
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()));
    let env = Command::new("bash").arg(root.join("tests/py/env.sh")).output().unwrap();
    assert!(env.status.success(), "python env: {}", String::from_utf8_lossy(&env.stderr));
    let python = String::from_utf8(env.stdout).unwrap().trim().to_string();
    let check = Command::new(python).arg(root.join("tests/py/check_parquet.py")).arg(&out).args(["18", "6"]).output().unwrap();
    assert!(
        check.status.success(),
        "pyarrow/duckdb check failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Runs a two-process cluster of `pipeline` (`workers` workers each), with `env_for(pid)` added
/// to process `pid`; returns each process's exit code and stderr.
fn cluster_run(
    dir: &Path,
    pipeline: &str,
    workers: usize,
    env_for: &dyn Fn(usize) -> Vec<(&'static str, &'static str)>,
) -> Vec<(Option<i32>, String)> {
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let children: Vec<_> = (0..2)
        .map(|pid| {
            Command::new(bin())
                .args([
                    "run",
                    pipeline,
                    "-q",
                    "-w",
                    &workers.to_string(),
                    "--processes",
                    "2",
                    "--process-id",
                    &pid.to_string(),
                    "--hostfile",
                ])
                .arg(&hostfile)
                .current_dir(dir)
                .env("IDFLOW_LOG", "warn")
                .envs(env_for(pid))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    children
        .into_iter()
        .map(|mut c| {
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("cluster process did not finish in time");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = c.wait_with_output().unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect()
}

#[test]
fn a_killed_peer_process_is_a_one_line_error_without_a_panic() {
    let (dir, faces, out) = faces_dir(12, 4);
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 1, "").replace("rows_per_shard: 5", "rows_per_shard: 2"));
    let res = cluster_run(dir.path(), "p.yaml", 1, &|pid| if pid == 1 { vec![("IDFLOW_TEST_CRASH_AFTER_SHARDS", "1")] } else { vec![] });
    let (code, stderr) = &res[0];
    assert_eq!(*code, Some(1), "{stderr}");
    assert!(stderr.contains("lost the connection to process 1"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    assert!(!out.exists(), "nothing published");
}

#[test]
fn a_failing_peer_process_is_named_and_only_it_prints_the_error() {
    let (dir, faces, out) = faces_dir(4, 3);
    // identity 1 belongs to global worker 1, the only worker of process 1
    let bad = faces.join("person_001").join("01.png");
    std::fs::write(&bad, b"not an image").unwrap();
    write_pipeline(dir.path(), "p.yaml", &folder_pipeline(&faces, &out, 1, ""));
    let res = cluster_run(dir.path(), "p.yaml", 1, &|_| vec![]);
    let (code0, err0) = &res[0];
    let (code1, err1) = &res[1];
    assert_eq!((*code0, *code1), (Some(1), Some(1)), "{err0}\n---\n{err1}");
    assert!(err1.contains("person_001") && err1.contains("node `tensors`"), "{err1}");
    assert!(err0.contains("process 1 failed") && !err0.contains("person_001"), "{err0}");
    for e in [err0, err1] {
        assert!(!e.contains("panicked"), "{e}");
        assert!(!e.contains("another process failed"), "{e}");
    }
    assert!(!out.exists(), "nothing published");
}
