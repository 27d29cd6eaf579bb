//! `embed` against the official IResNet features, the `filter` gate with re-draws and its
//! acceptance report, and the two-stage pipeline (unconditional samples → embeddings →
//! contexts → conditional samples).

mod gen_support;
use gen_support::*;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use candle_core::{DType, Device, Tensor};
use idflow_dataset::rng::KeyedRng;
use idflow_models::io::checkpoint::StateDict;
use std::path::{Path, PathBuf};

/// The tiny IResNet with its 16-feature head widened to 512 (keyed random values), so its
/// embeddings live in the 512-wide context space of the tiny UNet.
fn wide_iresnet(dir: &Path) -> PathBuf {
    let dict = StateDict::from_file(reference("iresnet_tiny.pth")).unwrap();
    let mut entries = Vec::new();
    for (k, t) in dict.entries() {
        let widened = match k.as_str() {
            "fc.weight" => {
                let n = 512 * 25088;
                let mut v = vec![0f32; n];
                KeyedRng::new(&[77, 1]).fill_normal_f32(&mut v);
                let scale = (1.0 / 25088f32).sqrt();
                Some(Tensor::from_vec(v.into_iter().map(|x| x * scale).collect::<Vec<_>>(), (512, 25088), &Device::Cpu).unwrap())
            }
            "fc.bias" | "features.bias" | "features.running_mean" => Some(Tensor::zeros(512, DType::F32, &Device::Cpu).unwrap()),
            "features.weight" | "features.running_var" => Some(Tensor::ones(512, DType::F32, &Device::Cpu).unwrap()),
            _ => None,
        };
        entries.push((k.clone(), widened.unwrap_or_else(|| t.clone())));
    }
    let path = dir.join("iresnet_wide.safetensors");
    StateDict::new("wide", entries).save_safetensors(&path).unwrap();
    path
}

fn embed_block(key: &str, checkpoint: &Path, indent: &str) -> String {
    format!(
        "{indent}{key}:\n{indent}  checkpoint: {}\n{indent}  config:\n{indent}    layers: [1, 1, 1, 1]\n{indent}    num_features: 512\n",
        checkpoint.display()
    )
}

fn indent(block: &str, by: &str) -> String {
    block.lines().map(|l| format!("{by}{l}\n")).collect()
}

const DIFFUSE: &str = "    sampler: ddim\n    steps: 4\n    eta: 1.0\n    latent_shape: [3, 8, 8]\n";

/// contexts → diffuse → decode-latent → embed → filter → write-records.
fn filter_pipeline(out: &Path, wide: &Path, threshold: f32, retries: u32, report: &Path) -> String {
    let generate = format!("{}{}", unet_block(), DIFFUSE);
    format!(
        "name: filtered\nseed: 8\nworkers: 2\nnodes:\n  ids:\n    op: contexts\n    kind: synthetic-uniform\n    count: 3\n  latents:\n    op: diffuse\n    input: ids\n    samples_per_identity: 4\n    batch: 3\n{generate}  faces:\n    op: decode-latent\n    input: latents\n{vq}  emb:\n    op: embed\n    input: faces\n{enc}  gate:\n    op: filter\n    input: emb\n    threshold: {threshold}\n    max_retries: {retries}\n    report: {report}\n    generate:\n{g2}    decode:\n{d2}    embed:\n{enc2}  out:\n    op: write-records\n    input: gate\n    path: {out}\n    columns: [identity, sample, seed, context, latent, image, embedding, attempt, similarity]\n",
        vq = vq_block(),
        enc = embed_block("encoder", wide, "    "),
        g2 = indent(&generate, "  "),
        d2 = indent(&vq_block(), "  "),
        enc2 = embed_block("encoder", wide, "      "),
        report = report.display(),
        out = out.display(),
    )
}

#[derive(Debug, Clone)]
struct Filtered {
    identity: u32,
    sample: u32,
    seed: u64,
    image: Vec<u8>,
    context: Vec<f32>,
    embedding: Vec<f32>,
    attempt: u32,
    similarity: f32,
}

fn read_filtered(dir: &Path) -> Vec<Filtered> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let u32c = |n: &str| b.column_by_name(n).unwrap().as_primitive::<UInt32Type>().clone();
        let (id, sample, attempt) = (u32c("identity"), u32c("sample"), u32c("attempt"));
        let seed = b.column_by_name("seed").unwrap().as_primitive::<arrow_array::types::UInt64Type>().clone();
        let sim = b.column_by_name("similarity").unwrap().as_primitive::<Float32Type>().clone();
        let image = b.column_by_name("image").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            rows.push(Filtered {
                identity: id.value(i),
                sample: sample.value(i),
                seed: seed.value(i),
                image: image.value(i).to_vec(),
                context: list_row(&b, "context", i),
                embedding: list_row(&b, "embedding", i),
                attempt: attempt.value(i),
                similarity: sim.value(i),
            });
        }
    }
    rows.sort_by_key(|r| (r.identity, r.sample));
    rows
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)) as f32
}

#[test]
fn filter_redraws_rejected_samples_and_reports_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let wide = wide_iresnet(dir.path());
    // pass 1: everything accepted on the first draw
    let all_out = dir.path().join("all");
    std::fs::write(dir.path().join("a.yaml"), filter_pipeline(&all_out, &wide, -1.0, 0, &dir.path().join("a.json"))).unwrap();
    run_ok(dir.path(), &["run", "a.yaml", "-q"]);
    let first = read_filtered(&all_out);
    assert_eq!(first.len(), 12);
    for r in &first {
        assert_eq!(r.attempt, 0);
        assert!((cos(&r.embedding, &r.context) - r.similarity).abs() < 1e-5);
        let n: f32 = r.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "embedding is L2-normalised");
    }
    let mut sims: Vec<f32> = first.iter().map(|r| r.similarity).collect();
    sims.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(sims[0] < sims[11], "similarities vary");
    let tau = (sims[5] + sims[6]) / 2.0;
    // pass 2: gate at the median, up to 3 re-draws
    let out = dir.path().join("gated");
    let report = dir.path().join("reports/acceptance.json");
    std::fs::write(dir.path().join("b.yaml"), filter_pipeline(&out, &wide, tau, 3, &report)).unwrap();
    run_ok(dir.path(), &["run", "b.yaml", "-q"]);
    let gated = read_filtered(&out);
    let mut draws = 12u32;
    let mut redrawn = 0;
    for f in &first {
        let g = gated.iter().find(|g| (g.identity, g.sample) == (f.identity, f.sample));
        if f.similarity >= tau {
            let g = g.expect("a first-draw pass is kept");
            assert_eq!((g.attempt, &g.image, g.seed), (0, &f.image, f.seed), "first-draw passes are unchanged");
        } else if let Some(g) = g {
            assert!(g.attempt >= 1 && g.attempt <= 3);
            assert!(g.similarity >= tau);
            assert!((cos(&g.embedding, &g.context) - g.similarity).abs() < 1e-5, "the row carries the re-drawn embedding");
            assert_ne!(g.image, f.image);
            assert_ne!(g.seed, f.seed);
            draws += g.attempt;
            redrawn += 1;
        } else {
            draws += 3;
        }
    }
    assert!(redrawn > 0, "some rejected samples were re-drawn successfully");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["requested"], 12);
    assert_eq!(r["accepted"], gated.len());
    assert_eq!(r["accepted_first_draw"], 6);
    assert_eq!(r["draws"], draws);
    assert_eq!(r["identities"], 3);
    let per = r["per_identity"].as_array().unwrap();
    assert_eq!(per.iter().map(|p| p["requested"].as_u64().unwrap()).sum::<u64>(), 12);
    for p in per {
        let id = p["identity"].as_u64().unwrap() as u32;
        assert_eq!(p["accepted"].as_u64().unwrap() as usize, gated.iter().filter(|g| g.identity == id).count());
    }
    assert!((r["acceptance_rate"].as_f64().unwrap() - gated.len() as f64 / 12.0).abs() < 1e-12);
}

#[test]
fn embed_matches_official_flip_tta_features() {
    let dir = tempfile::tempdir().unwrap();
    let io = candle_core::safetensors::load(reference("iresnet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let imgs = io["image_uint8"].to_dtype(DType::U8).unwrap();
    let faces = dir.path().join("faces");
    for n in 0..2 {
        let chw: Vec<u8> = imgs.get(n).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let img = image::RgbImage::from_fn(112, 112, |x, y| {
            let p = (y * 112 + x) as usize;
            image::Rgb([chw[p], chw[112 * 112 + p], chw[2 * 112 * 112 + p]])
        });
        let d = faces.join(format!("p{n}"));
        std::fs::create_dir_all(&d).unwrap();
        img.save(d.join("0.png")).unwrap();
    }
    for (flip, key, backend) in
        [(true, "embedding_flip_tta", "native"), (false, "embedding", "native"), (true, "embedding_flip_tta", "onnx")]
    {
        let out = dir.path().join(format!("out_{flip}_{backend}"));
        let yaml = format!(
            "name: emb\nnodes:\n  faces:\n    op: read\n    root: {}\n  emb:\n    op: embed\n    input: faces\n    flip: {flip}\n    backend: {backend}\n    encoder:\n      checkpoint: {}\n      config: {}\n  out:\n    op: write-records\n    input: emb\n    path: {}\n    columns: [identity, embedding]\n",
            faces.display(),
            reference("iresnet_tiny.pth").display(),
            reference("iresnet_tiny_config.json").display(),
            out.display()
        );
        std::fs::write(dir.path().join("e.yaml"), yaml).unwrap();
        run_ok(dir.path(), &["run", "e.yaml", "-q"]);
        let want: Vec<Vec<f32>> = io[key].to_vec2().unwrap();
        let mut got = Vec::new();
        for b in read_batches(&out) {
            let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
            for i in 0..b.num_rows() {
                got.push((id.value(i), list_row(&b, "embedding", i)));
            }
        }
        got.sort_by_key(|g| g.0);
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want) {
            let worst = g.1.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{key} ({backend}): max abs diff {worst}");
        }
    }
}

#[test]
fn two_stage_pipeline_turns_unconditional_samples_into_identities() {
    let dir = tempfile::tempdir().unwrap();
    let wide = wide_iresnet(dir.path());
    let out = dir.path().join("out");
    let yaml = format!(
        "name: two-stage\nseed: 3\nworkers: 2\nnodes:\n  seeds:\n    op: contexts\n    kind: synthetic-uniform\n    count: 2\n  uncond:\n    op: diffuse\n    input: seeds\n    condition: none\n    samples_per_identity: 2\n{unet}{d}  uncond_faces:\n    op: decode-latent\n    input: uncond\n{vq}  uncond_emb:\n    op: embed\n    input: uncond_faces\n{enc}  ids:\n    op: contexts-from-embeddings\n    input: uncond_emb\n    samples_per_identity: 2\n  latents:\n    op: diffuse\n    input: ids\n    samples_per_identity: 2\n{unet}{d}  faces:\n    op: decode-latent\n    input: latents\n{vq}  out:\n    op: write-records\n    input: faces\n    path: {}\n    columns: [identity, identity_name, sample, seed, context, latent, image]\n",
        out.display(),
        unet = unet_block(),
        d = DIFFUSE,
        vq = vq_block(),
        enc = embed_block("encoder", &wide, "    "),
    );
    std::fs::write(dir.path().join("t.yaml"), yaml).unwrap();
    run_ok(dir.path(), &["run", "t.yaml", "-q"]);
    let rows = generated_rows(&out);
    assert_eq!(rows.len(), 8, "2 seeds x 2 unconditional samples = 4 identities, x 2 samples");
    assert_eq!(rows.iter().map(|r| r.identity).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2, 3, 3]);
    let names: Vec<String> = read_batches(&out)
        .iter()
        .flat_map(|b| {
            let n = b.column_by_name("identity_name").unwrap().as_string::<i32>().clone();
            (0..b.num_rows()).map(move |i| n.value(i).to_string())
        })
        .collect();
    for want in ["0_0", "0_1", "1_0", "1_1"] {
        assert!(names.iter().any(|n| n == want), "identity_name {want} in {names:?}");
    }
    // the contexts are the (unit) embeddings of the unconditional faces: distinct per identity
    assert_ne!(rows[0].context, rows[2].context);
    let n: f32 = rows[0].context.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-5);
}

/// `backend: native` on every model of [`filter_pipeline`]'s YAML (three nodes, three blocks).
fn all_native(yaml: &str) -> String {
    let mut y = yaml.to_string();
    for (after, indent) in [
        ("    op: diffuse\n", "    "),
        ("    op: decode-latent\n", "    "),
        ("    op: embed\n", "    "),
        ("    generate:\n", "      "),
        ("    decode:\n", "      "),
        ("    embed:\n", "      "),
    ] {
        assert_eq!(y.matches(after).count(), 1, "{after:?}");
        y = y.replace(after, &format!("{after}{indent}backend: native\n"));
    }
    y
}

/// `filter` regenerates rejected samples with its own generation chain; on the default ONNX
/// Runtime backend it accepts, re-draws and reports exactly as on the native backend, with
/// embeddings and similarities equal up to float rounding.
#[test]
fn filter_chain_on_onnx_matches_native() {
    let dir = tempfile::tempdir().unwrap();
    let wide = wide_iresnet(dir.path());
    let probe = dir.path().join("probe");
    std::fs::write(dir.path().join("p.yaml"), filter_pipeline(&probe, &wide, -1.0, 0, &dir.path().join("p.json"))).unwrap();
    run_ok(dir.path(), &["run", "p.yaml", "-q"]);
    let mut sims: Vec<f32> = read_filtered(&probe).iter().map(|r| r.similarity).collect();
    sims.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let tau = (sims[5] + sims[6]) / 2.0;
    let mut runs = Vec::new();
    for backend in ["onnx", "native"] {
        let out = dir.path().join(format!("out-{backend}"));
        let report = dir.path().join(format!("{backend}.json"));
        let yaml = filter_pipeline(&out, &wide, tau, 3, &report);
        let yaml = if backend == "native" { all_native(&yaml) } else { yaml };
        std::fs::write(dir.path().join(format!("{backend}.yaml")), yaml).unwrap();
        run_ok(dir.path(), &["run", &format!("{backend}.yaml"), "-q"]);
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        runs.push((read_filtered(&out), r));
    }
    let ((onnx, ro), (native, rn)) = (&runs[0], &runs[1]);
    assert!(onnx.iter().any(|r| r.attempt > 0), "some samples were re-drawn");
    for key in ["requested", "accepted", "accepted_first_draw", "draws", "per_identity"] {
        assert_eq!(ro[key], rn[key], "{key}");
    }
    assert_eq!(onnx.len(), native.len());
    let mut worst = 0f32;
    for (a, b) in onnx.iter().zip(native) {
        assert_eq!((a.identity, a.sample, a.attempt, a.seed), (b.identity, b.sample, b.attempt, b.seed));
        assert!((a.similarity - b.similarity).abs() < 1e-3, "similarity {} vs {}", a.similarity, b.similarity);
        worst = a.embedding.iter().zip(&b.embedding).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
    }
    assert!(worst < 1e-2, "embeddings differ by {worst}");
}
