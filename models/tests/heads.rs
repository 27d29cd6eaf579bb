//! Margin heads against ElasticFace / TFace logits (`margin_heads.safetensors`).

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, get, load_io};
use idflow_dataset::rng::KeyedRng;
use idflow_models::heads::{Margin, MarginHead};

#[test]
fn margin_heads_match_reference_logits() {
    let io = load_io("margin_heads.safetensors");
    let (emb, kernel, labels) = (get(&io, "embeddings"), get(&io, "kernel"), get(&io, "labels"));
    let head = |margin| MarginHead::from_kernel(kernel.clone(), 64.0, margin);
    let arc = |threshold, easy_margin| Margin::ArcFace { m: 0.5, threshold, easy_margin };

    assert_close("cos_theta", &head(arc(false, false)).cos_theta(emb).unwrap(), get(&io, "cos_theta"), 1e-6);
    let cases = [
        ("elasticface_arcface_logits", arc(false, false)),
        ("tface_arcface_logits", arc(true, false)),
        ("tface_arcface_easy_margin_logits", arc(false, true)),
        ("elasticface_cosface_logits", Margin::CosFace { m: 0.35 }),
        ("tface_cosface_logits", Margin::CosFace { m: 0.35 }),
    ];
    for (key, margin) in cases {
        let logits = head(margin).logits(emb, labels, None).unwrap();
        assert_close(key, &logits, get(&io, key), 1e-3);
    }
    let scaled = (head(arc(false, false)).cos_theta(emb).unwrap() * 64.0).unwrap();
    assert_close("tface_origin_cos_scaled", &scaled, get(&io, "tface_origin_cos_scaled"), 1e-3);

    // elastic heads with zero spread are the plain heads
    let elastic = head(Margin::ElasticArc { m: 0.5, std: 0.0, plus: false });
    let mut rng = KeyedRng::new(&[5]);
    let l = elastic.logits(emb, labels, Some(&mut rng)).unwrap();
    assert_close("elastic arc, std 0", &l, get(&io, "elasticface_arcface_logits"), 1e-3);
    let elastic = head(Margin::ElasticCos { m: 0.35, std: 0.0, plus: true });
    let l = elastic.logits(emb, labels, Some(&mut rng)).unwrap();
    assert_close("elastic cos, std 0", &l, get(&io, "elasticface_cosface_logits"), 1e-3);
}

#[test]
fn elastic_margins_are_applied_per_row_and_sorted_for_plus() {
    let io = load_io("margin_heads.safetensors");
    let (emb, kernel, labels) = (get(&io, "embeddings"), get(&io, "kernel"), get(&io, "labels"));
    let cos: Vec<Vec<f32>> = get(&io, "cos_theta").to_vec2().unwrap();
    let lab: Vec<i64> = labels.to_vec1().unwrap();
    let margins: Vec<f64> = (0..8).map(|i| 0.3 + 0.05 * i as f64).collect();

    // independent evaluation: s·cos(acos(ct) + m_i) on the target, s·cos elsewhere
    let expected = |m_of_row: &dyn Fn(usize) -> f64| -> Tensor {
        let mut v = Vec::new();
        for (r, row) in cos.iter().enumerate() {
            for (c, &x) in row.iter().enumerate() {
                let y = if c as i64 == lab[r] { ((x as f64).acos() + m_of_row(r)).cos() } else { x as f64 };
                v.push((64.0 * y) as f32);
            }
        }
        Tensor::from_vec(v, (8, 10), &Device::Cpu).unwrap()
    };
    let head = MarginHead::from_kernel(kernel.clone(), 64.0, Margin::ElasticArc { m: 0.5, std: 0.05, plus: false });
    let got = head.logits_with_margins(emb, labels, &margins).unwrap();
    assert_close("elastic arc, given margins", &got, &expected(&|r| margins[r]), 1e-3);

    // plus: the row with the largest target cosine gets the smallest margin
    let target: Vec<f32> = (0..8).map(|r| cos[r][lab[r] as usize]).collect();
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by(|&i, &j| target[j].total_cmp(&target[i]));
    let mut assigned = [0.0; 8];
    for (rank, &row) in order.iter().enumerate() {
        assigned[row] = margins[rank]; // margins are already ascending
    }
    let head = MarginHead::from_kernel(kernel.clone(), 64.0, Margin::ElasticArc { m: 0.5, std: 0.05, plus: true });
    let got = head.logits_with_margins(emb, labels, &margins).unwrap();
    assert_close("elastic arc plus", &got, &expected(&|r| assigned[r]), 1e-3);

    // drawn margins are keyed: same rng key, same logits
    let a = head.logits(emb, labels, Some(&mut KeyedRng::new(&[9]))).unwrap();
    let b = head.logits(emb, labels, Some(&mut KeyedRng::new(&[9]))).unwrap();
    assert_close("keyed elastic draws", &a, &b, 0.0);
}
