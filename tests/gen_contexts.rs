//! The `contexts` source and `contexts-from-embeddings`: the greedy `max_similarity` spread
//! against a brute-force walk, context files (IDiff-Face dict, plain .npy, Parquet), and the
//! same rows for any worker count.

mod gen_support;
use gen_support::*;

use idflow::operators::contexts::{greedy_max_similarity, synthetic_uniform};
use idflow_dataset::rng::KeyedRng;

/// Unit rows of width `dim`, keyed by `seed`.
fn unit_rows(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; n * dim];
    for (i, row) in v.chunks_mut(dim).enumerate() {
        KeyedRng::new(&[seed, i as u64]).fill_normal_f32(row);
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The greedy walk, one pair at a time in f64.
fn brute_force(v: &[f32], dim: usize, tau: f32, limit: usize) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    for j in 0..v.len() / dim {
        if kept.len() == limit {
            break;
        }
        let ok = kept.iter().all(|&k| {
            let dot: f64 = (0..dim).map(|d| v[j * dim + d] as f64 * v[k * dim + d] as f64).sum();
            dot as f32 <= tau
        });
        if ok {
            kept.push(j);
        }
    }
    kept
}

#[test]
fn greedy_spread_equals_brute_force() {
    // 3000 rows cross block boundaries; dim 32 makes rejections common (cos std ≈ 0.18)
    let (n, dim) = (3000, 32);
    let v = unit_rows(3, n, dim);
    for (tau, limit) in [(0.5f32, usize::MAX), (0.3, usize::MAX), (0.5, 700)] {
        let fast = greedy_max_similarity(&v, dim, tau, (limit != usize::MAX).then_some(limit)).unwrap();
        let slow = brute_force(&v, dim, tau, limit);
        assert!(slow.len() < n && !slow.is_empty());
        assert_eq!(fast, slow, "tau {tau} limit {limit}");
    }
    assert!(greedy_max_similarity(&v[..10], 3, 0.5, None).is_err(), "ragged rows are refused");
}

#[test]
fn synthetic_uniform_is_keyed_and_unit_norm() {
    let a = synthetic_uniform(9, 20, 512);
    let b = synthetic_uniform(9, 30, 512);
    assert_eq!(a.values[..], b.values[..20 * 512], "candidate i does not depend on the count");
    assert_ne!(synthetic_uniform(10, 20, 512).values, a.values, "depends on the seed");
    for row in a.values.chunks(512) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
    assert_eq!(a.names[3], "000003");
}

fn contexts_pipeline(source: &str, out: &std::path::Path, workers: usize) -> String {
    format!(
        "name: ctx\nseed: 4\nworkers: {workers}\nnodes:\n  ids:\n    op: contexts\n{source}  out:\n    op: write-records\n    input: ids\n    path: {}\n    rows_per_shard: 7\n",
        out.display()
    )
}

type CtxRow = (u32, String, Vec<f32>);

fn read_contexts_out(dir: &std::path::Path) -> Vec<CtxRow> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt32Type;
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
        let name = b.column_by_name("identity_name").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.push((id.value(i), name.value(i).to_string(), list_row(&b, "context", i)));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn spread_contexts_are_the_same_for_one_and_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let src = "    kind: synthetic-uniform\n    count: 400\n    dim: 16\n    max_similarity: 0.5\n    limit: 50\n    batch_rows: 8\n";
    let mut results = Vec::new();
    for w in [1, 3] {
        let out = dir.path().join(format!("out{w}"));
        std::fs::write(dir.path().join("p.yaml"), contexts_pipeline(src, &out, w)).unwrap();
        run_ok(dir.path(), &["run", "p.yaml", "-q"]);
        results.push(read_contexts_out(&out));
    }
    assert_eq!(results[0], results[1]);
    let rows = &results[0];
    assert_eq!(rows.len(), 50);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>(), "dense identities");
    // identities are candidates in order, and every pair respects the bound
    let all = synthetic_uniform(4, 400, 16);
    let kept = greedy_max_similarity(&all.values, 16, 0.5, Some(50)).unwrap();
    for (r, &k) in rows.iter().zip(&kept) {
        assert_eq!(r.1, all.names[k]);
        assert_eq!(r.2, all.values[k * 16..(k + 1) * 16]);
    }
    for a in rows {
        for b in rows {
            if a.0 < b.0 {
                let dot: f32 = a.2.iter().zip(&b.2).map(|(x, y)| x * y).sum();
                assert!(dot <= 0.5 + 1e-6);
            }
        }
    }
}

#[test]
fn context_files_dict_npy_plain_npy_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    // IDiff-Face dict (.npy that is a torch zip) and ADMIS plain array hold the same identities
    let mut outs = Vec::new();
    for file in ["contexts_dict.npy", "contexts_dict_numpy2.npy", "contexts_plain.npy"] {
        let out = dir.path().join(file.replace('.', "_"));
        let src = format!("    kind: file\n    path: {}\n", fixture(file).display());
        std::fs::write(dir.path().join("p.yaml"), contexts_pipeline(&src, &out, 2)).unwrap();
        run_ok(dir.path(), &["run", "p.yaml", "-q"]);
        let rows = read_contexts_out(&out);
        assert_eq!(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["0", "1", "2", "3", "4"]);
        outs.push(rows);
    }
    assert_eq!(outs[0], outs[1]);
    for (a, b) in outs[0].iter().zip(&outs[2]) {
        let worst = a.2.iter().zip(&b.2).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "plain .npy rows are normalised to the dict's vectors ({worst})");
    }
    // Parquet: the dataset written above is itself a context file
    let shard = std::fs::read_dir(dir.path().join("contexts_dict_npy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let out = dir.path().join("from_parquet");
    let src = format!("    kind: file\n    path: {}\n    max_similarity: 0.99\n", shard.display());
    std::fs::write(dir.path().join("p.yaml"), contexts_pipeline(&src, &out, 1)).unwrap();
    run_ok(dir.path(), &["run", "p.yaml", "-q"]);
    let from_parquet = read_contexts_out(&out);
    let shard_rows: Vec<CtxRow> = {
        let mut v = read_contexts_out(&dir.path().join("contexts_dict_npy"));
        v.retain(|r| from_parquet.iter().any(|p| p.1 == r.1));
        v
    };
    assert!(!from_parquet.is_empty());
    assert_eq!(from_parquet.iter().map(|r| (&r.1, &r.2)).collect::<Vec<_>>(), shard_rows.iter().map(|r| (&r.1, &r.2)).collect::<Vec<_>>());
    // a wrong `dim` is a clear run-time error naming the file
    let src = format!("    kind: file\n    path: {}\n    dim: 128\n", fixture("contexts_plain.npy").display());
    std::fs::write(dir.path().join("p.yaml"), contexts_pipeline(&src, &dir.path().join("bad"), 1)).unwrap();
    let outp = idflow(dir.path(), &["run", "p.yaml", "-q"]);
    assert!(!outp.status.success());
    let err = String::from_utf8_lossy(&outp.stderr);
    assert!(err.contains("contexts_plain.npy") && err.contains("512") && err.contains("128"), "{err}");
}

/// 100,000 × 512 contexts through the greedy spread (run with `--ignored` to time it).
#[test]
#[ignore]
fn spread_of_100k_contexts_timing() {
    let set = synthetic_uniform(1, 100_000, 512);
    let t = std::time::Instant::now();
    let kept = greedy_max_similarity(&set.values, 512, 0.3, None).unwrap();
    eprintln!("100k contexts: {} kept in {:.2?}", kept.len(), t.elapsed());
}
