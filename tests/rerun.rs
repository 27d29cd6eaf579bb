//! Output ownership: one writer per output, never a user's files replaced, and I/O failures
//! that name the path and leave no temporary file behind.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pipeline(out: &Path) -> String {
    format!(
        "name: gen\nseed: 3\nworkers: 2\nnodes:\n  faces:\n    op: toy-faces\n    identities: 6\n    images_per_identity: 4\n    size: 24\n    batch_rows: 3\n  out:\n    op: write-records\n    input: faces\n    path: {}\n    rows_per_shard: 4\n",
        out.display()
    )
}

/// Every file below `dir` (recursively), hidden ones included.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_second_writer_is_refused_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    write_pipeline(d, "p.yaml", &pipeline(&out));
    // Another run holds the output: the lock beside it is taken.
    let lock_path = d.join(".out.idflow-lock");
    let holder = std::fs::File::create(&lock_path).unwrap();
    std::fs::write(&lock_path, "pipeline `other`, pid 4242 on somehost, since unix time 1").unwrap();
    holder.lock().unwrap();
    let res = idflow(d, &["run", "p.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&out.display().to_string()) && stderr.contains("pid 4242 on somehost"), "{stderr}");
    assert!(!out.exists() && !d.join(".out.idflow-staging").exists(), "the refused run wrote nothing");
    assert_eq!(stderr.matches("error").count(), 1, "one error, printed once: {stderr}");

    // A lock file nobody holds (its process died) does not block.
    drop(holder);
    assert!(lock_path.exists());
    run_ok(d, &["run", "p.yaml", "-q"]);
    assert_eq!(read_batches(&out).iter().map(|b| b.num_rows()).sum::<usize>(), 24);
    assert!(!lock_path.exists(), "the lock file is removed when the run ends");
}

#[test]
fn a_folder_with_files_idflow_did_not_write_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "my notes").unwrap();
    write_pipeline(d, "p.yaml", &pipeline(&out));
    for extra in [&[][..], &["--overwrite"][..]] {
        let res = idflow(d, &[&["run", "p.yaml", "-q"][..], extra].concat());
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("notes.txt") && stderr.contains(&out.display().to_string()), "{stderr}");
        assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "my notes");
    }
}

/// A size-limited writer (`ulimit -f`, with SIGXFSZ ignored so the write fails with EFBIG):
/// the error names the file, the run fails with 1, and no temporary file is left.
#[test]
fn a_full_disk_names_the_path_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    write_pipeline(d, "p.yaml", &pipeline(&out).replace("rows_per_shard: 4", "rows_per_shard: 1000"));
    let cmd = idflow_command();
    let program = cmd.get_program().to_owned();
    let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> =
        cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))).collect();
    let res = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16; exec \"$0\" run p.yaml -q")
        .arg(&program)
        .envs(envs)
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".part-00000.parquet.tmp") || stderr.contains(".part-00001.parquet.tmp"), "names the file: {stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let tmp: Vec<PathBuf> = all_files(d).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    assert!(!out.exists(), "nothing published");
}
