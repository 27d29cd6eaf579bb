//! The metrics against the golden numbers of the reference tools (insightface `evaluate`,
//! pyeer `get_eer_stats`), read from the reference fixtures (`tests/fixtures/reference`).

use idflow_dataset::metrics::numeric::arange;
use idflow_dataset::metrics::scores::score_stats;
use idflow_dataset::metrics::verification::{self, evaluate, evaluate_f64, pair_distances};
use idflow_testkit::reference;
use safetensors::SafeTensors;
use serde_json::Value;

fn read(name: &str) -> Vec<u8> {
    let path = reference(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reference fixture {} is missing or unreadable: {e}", path.display()))
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}: bad JSON: {e}"))
}

fn f32s(st: &SafeTensors, key: &str) -> Vec<f32> {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("tensor {key}: {e}"));
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn f64s(st: &SafeTensors, key: &str) -> Vec<f64> {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("tensor {key}: {e}"));
    t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn bools(st: &SafeTensors, key: &str) -> Vec<bool> {
    st.tensor(key).unwrap_or_else(|e| panic!("tensor {key}: {e}")).data().iter().map(|&b| b != 0).collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("expected number at {key}"))
}

fn nums(v: &Value, key: &str) -> Vec<f64> {
    v[key].as_array().unwrap_or_else(|| panic!("expected array at {key}")).iter().map(|x| x.as_f64().unwrap()).collect()
}

fn assert_close(what: &str, got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (k, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "{what}[{k}]: got {g:.17}, expected {e:.17}");
    }
}

fn check_report(r: &verification::VerificationReport, e: &Value) {
    assert_eq!(r.accuracy_per_fold, nums(e, "accuracy_per_fold"), "accuracy per fold");
    assert_eq!(r.accuracy_mean, num(e, "accuracy_mean"), "accuracy mean");
    assert_eq!(r.accuracy_std, num(e, "accuracy_std"), "accuracy std");
    let idx: Vec<usize> = nums(e, "best_threshold_index_per_fold").iter().map(|&x| x as usize).collect();
    assert_eq!(r.best_threshold_index_per_fold, idx);
    assert_close("best thresholds", &r.best_threshold_per_fold, &nums(e, "best_threshold_per_fold"), 1e-9);
    assert_close("VAL thresholds", &r.val_threshold_per_fold, &nums(e, "val_threshold_per_fold"), 1e-9);
    assert_eq!(r.val_mean, num(e, "val_at_far_1e_3_mean"), "VAL mean");
    assert_eq!(r.val_std, num(e, "val_at_far_1e_3_std"), "VAL std");
    assert_eq!(r.far_mean, num(e, "far_mean"), "FAR mean");
    assert_close("TPR curve", &r.tpr_curve, &nums(e, "tpr_curve"), 1e-15);
    assert_close("FPR curve", &r.fpr_curve, &nums(e, "fpr_curve"), 1e-15);
}

#[test]
fn verification_embeddings_match_official_evaluate() {
    let bytes = read("verification_embeddings.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("verification_embeddings.safetensors");
    let (e1, e2) = (f32s(&st, "embeddings1"), f32s(&st, "embeddings2"));
    let issame = bools(&st, "issame");
    let dim = 32;
    let mut interleaved = Vec::with_capacity(e1.len() * 2);
    for (a, b) in e1.chunks_exact(dim).zip(e2.chunks_exact(dim)) {
        interleaved.extend_from_slice(a);
        interleaved.extend_from_slice(b);
    }
    let dist = pair_distances(&interleaved, dim).unwrap();
    assert_close("squared distances", &dist, &f64s(&st, "dist_sq_f64"), 1e-15);

    let report = evaluate(&interleaved, dim, &issame, 10).unwrap();
    let expected = json("verification_expected.json");
    check_report(&report, &expected["verification_embeddings"]);
}

#[test]
fn tiny_bin_embeddings_match_official_evaluate() {
    let bytes = read("tiny_verification_expected.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("tiny_verification_expected.safetensors");
    let emb = f64s(&st, "embeddings_tta_f64");
    let issame = bools(&st, "issame");
    let report = evaluate_f64(&emb, 16, &issame, 10).unwrap();
    let expected = json("verification_expected.json");
    check_report(&report, &expected["tiny_verification_bin"]);
}

#[test]
fn threshold_grids_are_numpy_arange() {
    let acc = verification::accuracy_thresholds();
    assert_eq!(acc.len(), 400);
    assert_eq!(acc, arange(0.0, 4.0, 0.01));
    assert_eq!(verification::val_thresholds().len(), 4000);
}

#[test]
fn scores_match_pyeer() {
    let bytes = read("scores.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("scores.safetensors");
    let genuine: Vec<f64> = f32s(&st, "genuine").into_iter().map(f64::from).collect();
    let impostor: Vec<f64> = f32s(&st, "impostor").into_iter().map(f64::from).collect();
    let s = score_stats(&genuine, &impostor).unwrap();
    let e = json("scores_expected.json");
    assert_eq!(s.n_thresholds, e["n_thresholds"].as_u64().unwrap() as usize);
    assert_eq!(s.n_genuine, 2000);
    assert_eq!(s.n_impostor, 5000);
    for (name, got) in [
        ("eer", s.eer),
        ("eer_low", s.eer_low),
        ("eer_high", s.eer_high),
        ("fmr100", s.fmr100),
        ("fmr1000", s.fmr1000),
        ("fmr0", s.fmr0),
        ("fnmr0", s.fnmr0),
        ("auc", s.auc),
        ("gmean", s.gmean),
        ("gstd", s.gstd),
        ("imean", s.imean),
        ("istd", s.istd),
        ("decidability", s.decidability),
        ("fdr", s.fdr),
    ] {
        assert_eq!(got, num(&e, name), "{name}");
    }
    for (name, got) in [("eer_th", s.eer_th), ("fmr100_th", s.fmr100_th), ("fmr1000_th", s.fmr1000_th)] {
        assert!((got - num(&e, name)).abs() <= 1e-9, "{name}: got {got}, expected {}", num(&e, name));
    }
}
