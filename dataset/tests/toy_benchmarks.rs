//! The toy benchmarks: pair counts, fold structure, identity disjointness, the raw-pixel bound,
//! and the written `.bin` files.

use std::collections::{BTreeSet, HashSet};

use idflow_dataset::formats::verification_bin::read_bin;
use idflow_dataset::metrics::verification::kfold_ranges;
use idflow_dataset::toy::benchmarks::{
    pairs, raw_pixel_report, render_benchmark, write_benchmarks, Benchmark, ImageSpec, FOLDS, GENUINE_PER_FOLD, IDENTITY_BASE,
    IMPOSTOR_PER_FOLD,
};

const WORLD: u64 = 0;

fn identities(s: &ImageSpec) -> Vec<u64> {
    std::iter::once(s.identity).chain(s.lookalike_of).collect()
}

#[test]
fn every_benchmark_has_ten_folds_of_300_plus_300_pairs_in_fold_order() {
    let per_fold = GENUINE_PER_FOLD + IMPOSTOR_PER_FOLD;
    for bench in Benchmark::ALL {
        let p = pairs(bench, WORLD);
        assert_eq!(p.len(), FOLDS * per_fold, "{}", bench.name());
        // The protocol's contiguous folds are exactly the benchmark's folds.
        for (fold, range) in kfold_ranges(p.len(), FOLDS).unwrap().into_iter().enumerate() {
            assert_eq!(range, fold * per_fold..(fold + 1) * per_fold);
            let slice = &p[range];
            assert!(slice.iter().all(|q| q.fold == fold));
            assert_eq!(slice.iter().filter(|q| q.issame).count(), GENUINE_PER_FOLD);
            assert!(slice[..GENUINE_PER_FOLD].iter().all(|q| q.issame), "genuine pairs first");
        }
        for q in &p {
            if q.issame {
                assert_eq!(q.a.identity, q.b.identity);
                assert_eq!((q.a.lookalike_of, q.b.lookalike_of), (None, None));
                assert_ne!(q.a.sample, q.b.sample);
            } else {
                assert_ne!(q.a.identity, q.b.identity);
                let lookalike = matches!(bench, Benchmark::Cplfw | Benchmark::Calfw);
                assert_eq!(q.b.lookalike_of.is_some(), lookalike, "{}", bench.name());
                if let Some(src) = q.b.lookalike_of {
                    assert_eq!(src, q.a.identity);
                }
            }
        }
    }
}

#[test]
fn identities_are_disjoint_across_folds_benchmarks_and_training_ranges() {
    let mut all_benchmarks: HashSet<u64> = HashSet::new();
    for bench in Benchmark::ALL {
        let p = pairs(bench, WORLD);
        let mut per_fold: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); FOLDS];
        for q in &p {
            for id in identities(&q.a).into_iter().chain(identities(&q.b)) {
                per_fold[q.fold].insert(id);
            }
        }
        for f in 0..FOLDS {
            for g in f + 1..FOLDS {
                assert!(per_fold[f].is_disjoint(&per_fold[g]), "{}: folds {f} and {g} share identities", bench.name());
            }
        }
        let ids: HashSet<u64> = per_fold.into_iter().flatten().collect();
        assert!(ids.iter().all(|&i| i >= IDENTITY_BASE && i >= bench.identity_offset() && i < bench.identity_offset() + 100_000));
        assert!(all_benchmarks.is_disjoint(&ids), "{} shares identities with another benchmark", bench.name());
        all_benchmarks.extend(ids);
    }
}

#[test]
fn pose_and_age_conditions_follow_the_benchmark_kind() {
    for q in pairs(Benchmark::CfpFp, WORLD) {
        assert!(q.a.yaw.unwrap().abs() < 0.08 + 1e-6);
        assert!((0.55..=0.8).contains(&q.b.yaw.unwrap().abs()));
    }
    for q in pairs(Benchmark::Cplfw, WORLD) {
        assert!(q.a.yaw.unwrap().abs() >= 0.25 && q.b.yaw.unwrap().abs() >= 0.25);
    }
    for bench in [Benchmark::AgeDb, Benchmark::Calfw] {
        for q in pairs(bench, WORLD) {
            assert!((q.a.age - q.b.age).abs() >= 0.4, "{}: age gap {} vs {}", bench.name(), q.a.age, q.b.age);
        }
    }
    for q in pairs(Benchmark::Lfw, WORLD) {
        assert_eq!((q.a.yaw, q.b.yaw), (None, None));
        assert!((q.a.age - q.b.age).abs() <= 0.12 + 1e-6);
    }
}

#[test]
fn raw_pixels_do_not_solve_toy_lfw() {
    let (images, issame) = render_benchmark(Benchmark::Lfw, WORLD, 64).unwrap();
    assert_eq!(images.len(), 12_000);
    let report = raw_pixel_report(&images, &issame).unwrap();
    eprintln!("toy_lfw raw-pixel accuracy {:.4} ± {:.4}", report.accuracy_mean, report.accuracy_std);
    assert!(report.accuracy_mean < 0.75, "raw-pixel accuracy {} is not below 75 %", report.accuracy_mean);
    // Still a signal: the same identity is somewhat closer in pixels than chance.
    assert!(report.accuracy_mean > 0.52, "raw-pixel accuracy {} suspiciously at chance", report.accuracy_mean);
}

#[test]
fn written_benchmark_files_hold_the_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let size = 12; // small images keep this test fast; the structure is size-independent
    let paths = write_benchmarks(dir.path(), size, WORLD).unwrap();
    let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["toy_lfw.bin", "toy_cfp_fp.bin", "toy_cplfw.bin", "toy_agedb.bin", "toy_calfw.bin"]);
    for (path, bench) in paths.iter().zip(Benchmark::ALL) {
        let bin = read_bin(path).unwrap();
        assert_eq!(bin.pairs(), 6000);
        let expected: Vec<bool> = pairs(bench, WORLD).iter().map(|q| q.issame).collect();
        assert_eq!(bin.issame, expected);
        let first = image::load_from_memory(&bin.images[0]).unwrap().to_rgb8();
        assert_eq!(first.dimensions(), (size, size));
    }
}
