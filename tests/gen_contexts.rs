//! The `contexts` source and `contexts-from-embeddings`: the greedy `max_similarity` spread
//! against a brute-force walk, context files (IDiff-Face dict, plain .npy, Parquet), and the
//! same rows for any worker count.

mod gen_support;
use gen_support::*;

use idflow::operators::contexts::{greedy_max_similarity, greedy_max_similarity_with, synthetic_uniform, ScreenKernel};
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
    for (tau, limit) in [(0.5f32, usize::MAX), (-0.05, usize::MAX), (0.3, 40)] {
        let portable = greedy_max_similarity_with(&v, dim, tau, (limit != usize::MAX).then_some(limit), ScreenKernel::Portable).unwrap();
        assert_eq!(portable, brute_force(&v, dim, tau, limit), "portable kernel, tau {tau} limit {limit}");
    }
    let mut bad = v[..64].to_vec();
    bad[5] = f32::NAN;
    assert!(greedy_max_similarity(&bad, dim, 0.5, None).unwrap_err().contains("row 0"), "non-finite values are refused");
}

/// `a` scaled by `c` plus `w` (orthogonal to `a`) scaled by `sqrt(1 − c²)`, normalised in f64.
fn at_cosine(a: &[f32], w: &[f32], c: f64) -> Vec<f32> {
    let aw: f64 = a.iter().zip(w).map(|(&x, &y)| x as f64 * y as f64).sum();
    let perp: Vec<f64> = a.iter().zip(w).map(|(&x, &y)| y as f64 - aw * x as f64).collect();
    let pn = perp.iter().map(|x| x * x).sum::<f64>().sqrt();
    let s = (1.0 - c * c).sqrt();
    let row: Vec<f64> = a.iter().zip(&perp).map(|(&x, &p)| c * x as f64 + s * p / pn).collect();
    let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
    row.iter().map(|x| (x / n) as f32).collect()
}

/// Pairs placed right at the threshold (cosines within a few f32 ulps of τ, on both sides),
/// and rows that quantise badly (one large coordinate sets the int8 scale), go through the
/// exact re-check: both kernels still equal the one-by-one walk.
#[test]
fn screening_is_exact_at_the_threshold() {
    let (dim, tau) = (64, 0.3f32);
    let base = unit_rows(11, 400, dim);
    let mut v: Vec<f32> = Vec::new();
    let mut near = 0;
    for i in 0..200 {
        let a = &base[i * dim..(i + 1) * dim];
        v.extend_from_slice(a);
        // a partner at cos ≈ τ ± a few 1e-8 to the row just pushed
        let w = &base[(200 + i) * dim..(201 + i) * dim];
        let c = tau as f64 + (i as f64 - 100.0) * 1.5e-8;
        v.extend_from_slice(&at_cosine(a, w, c));
        near += 1;
    }
    // a one-hot row: max |v| = 1 makes the quantisation of every other row coarse
    let mut one_hot = vec![0f32; dim];
    one_hot[3] = 1.0;
    v.extend_from_slice(&one_hot);
    v.extend_from_slice(&unit_rows(12, 300, dim));
    let n = v.len() / dim;
    let cos = |j: usize, k: usize| (0..dim).map(|d| v[j * dim + d] as f64 * v[k * dim + d] as f64).sum::<f64>() as f32;
    let (mut above, mut at_or_below) = (0, 0);
    for i in 0..near {
        let c = cos(2 * i + 1, 2 * i);
        assert!((c - tau).abs() < 4e-6, "pair {i} is near the threshold: {c}");
        if c > tau {
            above += 1;
        } else {
            at_or_below += 1;
        }
    }
    assert!(above > 20 && at_or_below > 20, "both sides of τ are exercised ({above} above, {at_or_below} at or below)");
    let slow = brute_force(&v, dim, tau, usize::MAX);
    assert!(slow.len() < n, "some rows are rejected");
    for kernel in [ScreenKernel::Auto, ScreenKernel::Portable] {
        assert_eq!(greedy_max_similarity_with(&v, dim, tau, None, kernel).unwrap(), slow, "{kernel:?}");
    }
    // odd widths (padded to whole groups of 4) and a negative threshold
    let odd = unit_rows(13, 700, 7);
    for kernel in [ScreenKernel::Auto, ScreenKernel::Portable] {
        for tau in [0.2f32, -0.2, 0.9] {
            assert_eq!(
                greedy_max_similarity_with(&odd, 7, tau, None, kernel).unwrap(),
                brute_force(&odd, 7, tau, usize::MAX),
                "{kernel:?} {tau}"
            );
        }
    }
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

/// `contexts-from-embeddings` with a spread gathers on worker 0, then hands every kept identity
/// back to the worker that owns it: the shards of a 3-worker run come from all workers, each
/// holding only its own identities, and the rows equal a 1-worker run's.
#[test]
fn spread_from_embeddings_is_redistributed_to_owners() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for w in [1, 3] {
        let out = dir.path().join(format!("emb{w}"));
        let yaml = format!(
            "name: emb\nseed: 4\nworkers: {w}\nnodes:\n  seeds:\n    op: contexts\n    kind: synthetic-uniform\n    count: 300\n    dim: 16\n    batch_rows: 8\n  ids:\n    op: contexts-from-embeddings\n    input: seeds\n    column: context\n    max_similarity: 0.5\n    limit: 40\n  out:\n    op: write-records\n    input: ids\n    path: {}\n    rows_per_shard: 4\n",
            out.display()
        );
        std::fs::write(dir.path().join("e.yaml"), yaml).unwrap();
        run_ok(dir.path(), &["run", "e.yaml", "-q"]);
        if w == 3 {
            use arrow_array::cast::AsArray;
            use arrow_array::types::UInt32Type;
            let mut writers = std::collections::BTreeSet::new();
            for e in std::fs::read_dir(&out).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let Some(index) = name.strip_prefix("part-").and_then(|n| n.strip_suffix(".parquet")) else { continue };
                let worker = index.parse::<u32>().unwrap() % 3;
                writers.insert(worker);
                let f = std::fs::File::open(&path).unwrap();
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
                for b in reader {
                    let b = b.unwrap();
                    let ids = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
                    assert!(ids.values().iter().all(|&i| i % 3 == worker), "shard {name} (worker {worker}) holds {:?}", ids.values());
                }
            }
            assert_eq!(writers.len(), 3, "every worker wrote its identities: {writers:?}");
        }
        results.push(read_contexts_out(&out));
    }
    assert_eq!(results[0], results[1], "same rows for 1 and 3 workers");
    // the node normalises its input again, then spreads in (identity, sample) order
    let mut values = synthetic_uniform(4, 300, 16).values;
    idflow_dataset::formats::contexts::normalise_rows(&mut values, 16).unwrap();
    let kept = greedy_max_similarity(&values, 16, 0.5, Some(40)).unwrap();
    assert_eq!(results[0].len(), 40);
    for (i, (r, &k)) in results[0].iter().zip(&kept).enumerate() {
        assert_eq!((r.0, r.1.as_str()), (i as u32, format!("{k}_0").as_str()));
        assert_eq!(r.2, values[k * 16..(k + 1) * 16]);
    }
}

#[test]
fn context_files_dict_npy_plain_npy_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    // IDiff-Face dict (.npy that is a torch zip) and ADMIS plain array hold the same identities
    let mut outs = Vec::new();
    for file in ["contexts_dict.npy", "contexts_dict_numpy2.npy", "contexts_plain.npy"] {
        let out = dir.path().join(file.replace('.', "_"));
        let src = format!("    kind: file\n    path: {}\n", reference(file).display());
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
    let src = format!("    kind: file\n    path: {}\n    dim: 128\n", reference("contexts_plain.npy").display());
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
