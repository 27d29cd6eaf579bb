//! Every format through the engine: write with `write-records`, read back with `read`, and
//! compare identities and image bytes with the source; reference files read through `read`.

mod common;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt8Type};
use common::*;
use std::path::Path;

fn run_ok(dir: &Path, text: &str) {
    write_pipeline(dir, "p.yaml", text);
    let out = idflow(dir, &["run", "p.yaml", "-q"]);
    assert!(out.status.success(), "pipeline failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// (identity, image bytes) of a Parquet dataset written by idflow, sorted.
fn identity_images(dir: &Path) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    for b in read_batches(dir) {
        let ids = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>().clone();
        let img = b.column_by_name("image").unwrap();
        let bytes = img.as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            v.push((ids.value(i), bytes.value(i).to_vec()));
        }
    }
    v.sort();
    v
}

fn copy_to_parquet(reader: &str, out: &Path) -> String {
    format!("name: back\nnodes:\n  src:\n{reader}  out:\n    op: write-records\n    input: src\n    path: {}\n", out.display())
}

#[test]
fn every_output_format_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faces = d.join("faces");
    make_faces(&faces, 5, 3);
    // The source, as Parquet.
    let source = d.join("source");
    run_ok(d, &copy_to_parquet(&format!("    op: read\n    root: {}\n", faces.display()), &source));
    let expected = identity_images(&source);
    assert_eq!(expected.len(), 15);

    let formats = [
        ("image-folder", "    op: read\n    format: image-folder\n    root: {OUT}\n"),
        ("image-folder", "    op: read\n    format: image-list\n    root: {OUT}/images.lst\n"),
        ("tfrecord", "    op: read\n    format: tfrecord\n    root: {OUT}\n"),
        ("recordio", "    op: read\n    format: recordio\n    root: {OUT}\n"),
        ("parquet", "    op: read\n    format: parquet\n    root: {OUT}\n"),
    ];
    for (k, (format, reader)) in formats.iter().enumerate() {
        for workers in [1, 2] {
            let written = d.join(format!("w{k}-{workers}"));
            let extra = if *format == "tfrecord" { "    rows_per_shard: 4\n" } else { "" };
            run_ok(
                d,
                &format!(
                    "name: w\nworkers: {workers}\nnodes:\n  src:\n    op: read\n    root: {}\n  out:\n    op: write-records\n    input: src\n    format: {format}\n    path: {}\n{extra}",
                    faces.display(),
                    written.display()
                ),
            );
            let manifest = idflow::operators::write_records::read_manifest(&written).unwrap();
            assert_eq!(manifest["format"], *format);
            let back = d.join(format!("r{k}-{workers}"));
            let reader = reader.replace("{OUT}", &written.display().to_string());
            run_ok(d, &format!("workers: {workers}\n{}", copy_to_parquet(&reader, &back)));
            assert_eq!(identity_images(&back), expected, "{format} via `{reader}` with {workers} workers");
        }
    }
}

#[test]
fn verification_bin_reads_as_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = reference("tiny_verification.bin");
    let expected = idflow_dataset::formats::verification_bin::read_bin(&bin).unwrap();
    let out = d.join("pairs");
    run_ok(d, &format!("workers: 2\n{}", copy_to_parquet(&format!("    op: read\n    format: bin\n    root: {}\n", bin.display()), &out)));
    let mut rows = Vec::new();
    for b in read_batches(&out) {
        let pair = b.column_by_name("pair").unwrap().as_primitive::<UInt32Type>().clone();
        let member = b.column_by_name("member").unwrap().as_primitive::<UInt8Type>().clone();
        let same = b.column_by_name("issame").unwrap().as_boolean().clone();
        let img = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            rows.push((pair.value(i), member.value(i), same.value(i), img.value(i).to_vec()));
        }
    }
    rows.sort();
    assert_eq!(rows.len(), expected.images.len());
    for (pair, member, same, bytes) in rows {
        assert_eq!(same, expected.issame[pair as usize]);
        assert_eq!(bytes, expected.images[2 * pair as usize + member as usize]);
    }
}

#[test]
fn context_files_read_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["contexts_dict.npy", "contexts_dict_numpy2.npy", "contexts_plain.npy"] {
        let out = d.join(name);
        run_ok(d, &copy_to_parquet(&format!("    op: read\n    format: contexts\n    root: {}\n", reference(name).display()), &out));
        let mut n = 0;
        for b in read_batches(&out) {
            let ctx = b.column_by_name("context").unwrap().as_fixed_size_list().clone();
            assert_eq!(ctx.value_length(), 512);
            for i in 0..b.num_rows() {
                let v = ctx.value(i);
                let v = v.as_primitive::<arrow_array::types::Float32Type>();
                let norm: f32 = v.values().iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5, "{name}: row norm {norm}");
                n += 1;
            }
        }
        assert_eq!(n, 5, "{name}");
    }
    // a width mismatch is a clear error naming the file
    write_pipeline(
        d,
        "bad.yaml",
        &copy_to_parquet(
            &format!("    op: read\n    format: contexts\n    dim: 128\n    root: {}\n", reference("contexts_plain.npy").display()),
            &d.join("bad"),
        ),
    );
    let out = idflow(d, &["run", "bad.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("contexts_plain.npy") && stderr.contains("512") && stderr.contains("dim: 128"), "{stderr}");
}

#[test]
fn damaged_tfrecord_fails_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faces = d.join("faces");
    make_faces(&faces, 2, 2);
    let tf = d.join("tf");
    run_ok(d, &format!("name: w\nnodes:\n  src:\n    op: read\n    root: {}\n  out:\n    op: write-records\n    input: src\n    format: tfrecord\n    path: {}\n", faces.display(), tf.display()));
    let shard = tf.join("train-00000.tfrecord");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40; // flip a bit in the last record's payload
    std::fs::write(&shard, bytes).unwrap();
    write_pipeline(
        d,
        "p.yaml",
        &copy_to_parquet(&format!("    op: read\n    format: tfrecord\n    root: {}\n", tf.display()), &d.join("back")),
    );
    let out = idflow(d, &["run", "p.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("train-00000.tfrecord") && stderr.to_lowercase().contains("crc"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}
