//! `evaluate` on an embedded dataset: a Parquet file of identities, embeddings, contexts and
//! images read by `read` and scored end to end; the numbers are checked against an
//! independent enumeration of the pairs through the metrics library.

mod common;
use arrow_array::{ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use idflow_dataset::metrics::identity::{context_consistency, identity_metrics};
use idflow_dataset::metrics::scores::{genuine_pairs, score_stats};
use idflow_dataset::rng::KeyedRng;
use std::path::Path;
use std::sync::Arc;

const DIM: usize = 24;
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

struct Data {
    identities: Vec<u32>,
    embeddings: Vec<f32>,
    contexts: Vec<f32>,
}

/// `ids` × `per` rows: identity `i` has a random context direction; samples are the context
/// plus noise. Rows are written in a shuffled order, as a real dataset might be.
fn make_dataset(path: &Path, ids: u32, per: u32) -> Data {
    let mut rows = Vec::new();
    for id in 0..ids {
        let mut rng = KeyedRng::new(&[42, id as u64]);
        let context: Vec<f32> = (0..DIM).map(|_| rng.normal() as f32).collect();
        for s in 0..per {
            let emb: Vec<f32> = context.iter().map(|&c| c + 0.8 * rng.normal() as f32).collect();
            let img = image::RgbImage::from_fn(40, 48, |x, y| image::Rgb([(x * 6) as u8, (y * 5) as u8, (id * 40 + s * 10) as u8]));
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            rows.push((id, s, emb, context.clone(), png.into_inner()));
        }
    }
    let mut rng = KeyedRng::new(&[7]);
    for i in (1..rows.len()).rev() {
        rows.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let list = |vals: Vec<f32>| -> ArrayRef {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        Arc::new(FixedSizeListArray::try_new(item, DIM as i32, Arc::new(Float32Array::from(vals)), None).unwrap())
    };
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("identity", DataType::UInt32, false),
        Field::new("sample", DataType::UInt32, false),
        Field::new("embedding", DataType::FixedSizeList(item.clone(), DIM as i32), false),
        Field::new("context", DataType::FixedSizeList(item, DIM as i32), false),
        Field::new("image", DataType::Binary, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.1))),
            list(rows.iter().flat_map(|r| r.2.clone()).collect()),
            list(rows.iter().flat_map(|r| r.3.clone()).collect()),
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.4.as_slice()))),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    Data {
        identities: rows.iter().map(|r| r.0).collect(),
        embeddings: rows.iter().flat_map(|r| r.2.clone()).collect(),
        contexts: rows.iter().flat_map(|r| r.3.clone()).collect(),
    }
}

fn run_eval(dir: &Path, data: &Path, out: &Path, workers: usize) -> serde_json::Value {
    let pipeline = format!(
        "name: eval-dataset\nseed: 5\nworkers: {workers}\nnodes:\n  rows:\n    op: read\n    format: parquet\n    root: {}\n    batch_rows: 7\n  report:\n    op: evaluate\n    input: rows\n    output: {}\n    contact_identities: 4\n    contact_samples: 3\n    thumbnail: 48\n",
        data.display(),
        out.display()
    );
    write_pipeline(dir, "p.yaml", &pipeline);
    let run = idflow(dir, &["run", "p.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "idflow failed: {stderr}");
    assert!(stderr.contains("| EER (%) |"), "dataset table printed to stderr: {stderr}");
    serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap()
}

fn cosine(e: &[f32], a: usize, b: usize) -> f64 {
    let row = |i: usize| &e[i * DIM..(i + 1) * DIM];
    let norm = |r: &[f32]| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let (ra, rb) = (row(a), row(b));
    ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / (norm(ra) * norm(rb))
}

#[test]
fn dataset_metrics_match_an_independent_computation_and_plots_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("embedded.parquet");
    let (ids, per) = (9u32, 6u32);
    let data = make_dataset(&data_path, ids, per);

    // Independent: every within-identity pair, every cross-identity pair (36 × 35 / 2 − 135 =
    // 495 ≤ the default max_impostor_pairs, so the operator uses all of them too).
    let n = data.identities.len();
    let genuine: Vec<f64> = genuine_pairs(&data.identities).into_iter().map(|(a, b)| cosine(&data.embeddings, a, b)).collect();
    let mut impostor = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if data.identities[a] != data.identities[b] {
                impostor.push(cosine(&data.embeddings, a, b));
            }
        }
    }
    let expected = score_stats(&genuine, &impostor).unwrap();
    let ident = identity_metrics(&data.embeddings, DIM, &data.identities, 0.3).unwrap();
    let ctx = context_consistency(&data.embeddings, &data.contexts, DIM).unwrap();

    let mut dataset_sections = Vec::new();
    for workers in [1, 2] {
        let out = dir.path().join(format!("report{workers}"));
        let metrics = run_eval(dir.path(), &data_path, &out, workers);
        let d = metrics["dataset"].clone();
        assert_eq!(d["rows"], n);
        assert_eq!(d["identities"], ids);
        assert_eq!(d["genuine_pairs"], ids * per * (per - 1) / 2, "n(n-1)/2 genuine pairs per identity");
        assert_eq!(d["impostor_pairs"], impostor.len());
        assert_eq!(d["impostor_selection"], "all");
        assert_eq!(d["thresholds"], expected.n_thresholds);
        // Rates are counts over counts: exact. Moments depend on summation order: relative 1e-9.
        for (key, want, exact) in [
            ("eer", expected.eer, true),
            ("fmr100", expected.fmr100, true),
            ("fmr1000", expected.fmr1000, true),
            ("eer_low", expected.eer_low, true),
            ("eer_high", expected.eer_high, true),
            ("eer_threshold", expected.eer_th, false),
            ("auc", expected.auc, false),
            ("genuine_mean", expected.gmean, false),
            ("genuine_std", expected.gstd, false),
            ("impostor_mean", expected.imean, false),
            ("impostor_std", expected.istd, false),
            ("fdr", expected.fdr, false),
            ("u_class", ident.u_class, false),
            ("c_intra", ident.c_intra, false),
            ("context_consistency", ctx, false),
        ] {
            let got = d[key].as_f64().unwrap();
            if exact {
                assert_eq!(got, want, "{key}");
            } else {
                assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{key}: {got} vs {want}");
            }
        }
        assert!(expected.eer > 0.0 && expected.eer < 0.5, "the synthetic data is neither trivial nor random: EER {}", expected.eer);

        for png in ["score_histograms.png", "det_curve.png", "contact_sheet.png"] {
            let bytes = std::fs::read(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
            assert_eq!(bytes[..8], PNG_SIGNATURE, "{png}");
            assert!(bytes.len() > 1024, "{png} is {} bytes", bytes.len());
        }
        let sheet = image::load_from_memory(&std::fs::read(out.join("contact_sheet.png")).unwrap()).unwrap();
        assert_eq!((sheet.width(), sheet.height()), (3 * 52 + 4, 4 * 52 + 4), "4 identities × 3 samples of 48 px");
        let md = std::fs::read_to_string(out.join("dataset_metrics.md")).unwrap();
        assert!(md.contains("| Genuine pairs | 135 |"), "{md}");
        assert!(!out.join("benchmarks.md").exists());
        dataset_sections.push(d);
    }
    assert_eq!(dataset_sections[0], dataset_sections[1], "the report does not depend on the worker count");
}

#[test]
fn sampled_impostors_follow_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("embedded.parquet");
    make_dataset(&data_path, 6, 4);
    let mut eers = Vec::new();
    for (i, seed) in [5, 5, 6].into_iter().enumerate() {
        let out = dir.path().join(format!("r{i}"));
        let pipeline = format!(
            "name: eval-sampled\nseed: {seed}\nnodes:\n  rows:\n    op: read\n    format: parquet\n    root: {}\n  report:\n    op: evaluate\n    input: rows\n    output: {}\n    max_impostor_pairs: 10\n    plots: false\n",
            data_path.display(),
            out.display()
        );
        write_pipeline(dir.path(), "p.yaml", &pipeline);
        run_ok(dir.path(), &["run", "p.yaml", "-q"]);
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(m["dataset"]["impostor_selection"], "sampled");
        assert_eq!(m["dataset"]["impostor_pairs"], 6 * 6, "as many impostor pairs as genuine pairs");
        assert!(!out.join("det_curve.png").exists(), "plots: false");
        eers.push((m["dataset"]["impostor_mean"].as_f64().unwrap(), m["dataset"]["genuine_mean"].as_f64().unwrap()));
    }
    assert_eq!(eers[0], eers[1], "same seed, same draw");
    assert_ne!(eers[0].0, eers[2].0, "another seed draws other impostors");
    assert_eq!(eers[0].1, eers[2].1, "genuine pairs do not depend on the seed");
}
