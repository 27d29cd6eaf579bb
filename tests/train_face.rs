//! End-to-end tests of `train` with `task: face-recognition`: a small IResNet learns toy-face
//! identities, checkpoints are written atomically and load back, a stopped-and-resumed run
//! equals an uninterrupted one, and the final backbone embeds images.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::Array;
use common::{idflow, read_batches, run_ok, write_pipeline};
use std::path::Path;

/// `(epoch, step, loss, accuracy)` rows written by the stats sink.
fn stats(dir: &Path) -> Vec<(u64, u64, f64, f64)> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let epoch = b.column_by_name("epoch").unwrap().as_primitive::<UInt64Type>();
        let step = b.column_by_name("step").unwrap().as_primitive::<UInt64Type>();
        let loss = b.column_by_name("loss").unwrap().as_primitive::<Float64Type>();
        let acc = b.column_by_name("accuracy").unwrap().as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((epoch.value(i), step.value(i), loss.value(i), acc.value(i)));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

fn pipeline(out: &Path, stats_dir: &Path, epochs: u64, extra: &str) -> String {
    format!(
        "name: train-face\nseed: 3\nworkers: 2\nnodes:\n  faces:\n    op: toy-faces\n    identities: 8\n    images_per_identity: 16\n    size: 32\n    batch_rows: 20\n    difficulty: {{rotation: 0.3, yaw: 0.3, pitch: 0.3, translation: 0.3, scale: 0.3, expression: 0.3, lighting: 0.3, background: 0.3, blur: 0.3, noise: 0.3, occlusion: 0.3, jpeg: 0.3}}\n  trained:\n    op: train\n    input: faces\n    task: face-recognition\n    output: {}\n    backbone: {{layers: [1, 1, 1, 1], widths: [16, 32, 64, 128], num_features: 64, input_size: 32}}\n    head: {{type: cosface, s: 16, m: 0.1}}\n    lr: {{type: cosine, lr: 0.1, warmup_steps: 4}}\n    batch_size: 32\n    epochs: {epochs}\n{extra}  stats:\n    op: write-records\n    input: trained\n    path: {}\n",
        out.display(),
        stats_dir.display()
    )
}

fn run(dir: &Path, name: &str, text: &str) {
    let p = write_pipeline(dir, name, text);
    let out = idflow(dir, &["run", p.to_str().unwrap()]);
    assert!(out.status.success(), "idflow run {name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A small toy LFW-like benchmark (every 20th pair of `toy_lfw`) at 32 px.
fn small_benchmark(path: &Path) {
    use idflow_dataset::toy::benchmarks::{pairs, render_image, Benchmark};
    let specs: Vec<_> = pairs(Benchmark::Lfw, 0).into_iter().step_by(20).collect();
    let mut images = Vec::new();
    for p in &specs {
        for spec in [&p.a, &p.b] {
            let img = render_image(spec, 0, 32, &Default::default()).unwrap();
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            images.push(png);
        }
    }
    let issame: Vec<bool> = specs.iter().map(|p| p.issame).collect();
    assert!(issame.iter().any(|s| *s) && issame.iter().any(|s| !*s));
    idflow_dataset::formats::verification_bin::write_bin(path, &images, &issame).unwrap();
}

/// Per-epoch values of a nullable Float64 stats column.
fn stats_column(dir: &Path, name: &str) -> Vec<(u64, Option<f64>)> {
    let mut rows = Vec::new();
    for b in read_batches(dir) {
        let epoch = b.column_by_name("epoch").unwrap().as_primitive::<UInt64Type>();
        let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).as_primitive::<Float64Type>();
        rows.extend((0..b.num_rows()).map(|i| (epoch.value(i), (!col.is_null(i)).then(|| col.value(i)))));
    }
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn iresnet_learns_toy_identities_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let bench = dir.path().join("toy_lfw_small.bin");
    small_benchmark(&bench);
    let extra = format!("    eval: [{}]\n    eval_every: 3\n", bench.display());
    run(dir.path(), "p.yaml", &pipeline(&out, &dir.path().join("stats"), 6, &extra));
    let evals = stats_column(&dir.path().join("stats"), "eval_toy_lfw_small");
    assert!(evals[0].1.is_none() && evals[1].1.is_none(), "evaluated only every 3 epochs: {evals:?}");
    for (epoch, acc) in [evals[2], evals[5]] {
        let acc = acc.unwrap_or_else(|| panic!("no evaluation at epoch {epoch}"));
        assert!((0.5..=1.0).contains(&acc), "epoch {epoch}: verification accuracy {acc}");
    }
    let s = stats(&dir.path().join("stats"));
    assert_eq!(s.len(), 6);
    let (first, last) = (s[0], s[s.len() - 1]);
    assert_eq!(last.1, 6 * 4, "128 rows in batches of 32: 4 steps per epoch");
    assert!(last.2 < first.2 * 0.5, "loss did not fall: {first:?} -> {last:?}");
    assert!(last.3 >= 0.9, "training accuracy {:.3} < 0.9 after {} steps: {s:?}", last.3, last.1);
    // checkpoint: written atomically (no temporary siblings left), loadable, with the state
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "temporary files left: {names:?}");
    let ckpt = idflow_models::io::checkpoint::StateDict::from_file(out.join("checkpoint.safetensors")).unwrap();
    assert!(ckpt.get("head.kernel").is_some());
    assert!(ckpt.get("momentum_buffer.conv1.weight").is_some(), "momentum buffers missing");
    assert!(ckpt.get("momentum_buffer.bn1.running_mean").is_none(), "BatchNorm buffers are not parameters");
    // the final backbone has exactly the model's keys (no head, no optimiser state)
    let backbone = idflow_models::io::checkpoint::StateDict::from_file(out.join("backbone.safetensors")).unwrap();
    assert!(backbone.keys().all(|k| !k.starts_with("head.") && !k.starts_with("momentum_buffer.")));
    assert!(backbone.get("layer4.0.conv2.weight").is_some() && backbone.get("features.running_var").is_some());

    // the toy-sized backbone feeds `embed` directly (inline config with its widths and input size)
    let emb_dir = dir.path().join("emb");
    let text = format!(
        "name: emb\nseed: 3\nnodes:\n  faces:\n    op: toy-faces\n    identities: 8\n    images_per_identity: 2\n    size: 32\n    difficulty: {{rotation: 0.3, yaw: 0.3, pitch: 0.3, translation: 0.3, scale: 0.3, expression: 0.3, lighting: 0.3, background: 0.3, blur: 0.3, noise: 0.3, occlusion: 0.3, jpeg: 0.3}}\n  emb:\n    op: embed\n    input: faces\n    encoder:\n      checkpoint: {}\n      config: {{layers: [1, 1, 1, 1], widths: [16, 32, 64, 128], num_features: 64, input_size: 32}}\n  out:\n    op: write-records\n    input: emb\n    path: {}\n    columns: [identity, sample, embedding]\n",
        out.join("backbone.safetensors").display(),
        emb_dir.display()
    );
    run(dir.path(), "emb.yaml", &text);
    let mut rows: Vec<(u32, Vec<f32>)> = Vec::new();
    for f in std::fs::read_dir(&emb_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = b.column_by_name("identity").unwrap().as_primitive::<arrow_array::types::UInt32Type>().clone();
            let emb = b.column_by_name("embedding").unwrap().as_fixed_size_list().clone();
            for i in 0..b.num_rows() {
                rows.push((ids.value(i), emb.value(i).as_primitive::<arrow_array::types::Float32Type>().values().to_vec()));
            }
        }
    }
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r.1.len() == 64));
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            let c = cos(&rows[i].1, &rows[j].1);
            if rows[i].0 == rows[j].0 {
                same.push(c)
            } else {
                diff.push(c)
            }
        }
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&same) > mean(&diff) + 0.1, "trained embeddings separate identities: same {} vs different {}", mean(&same), mean(&diff));
}

#[test]
fn stopped_and_resumed_training_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    run(
        dir.path(),
        "a.yaml",
        &pipeline(&straight, &dir.path().join("s-straight"), 2, "    clip_grad_norm: 5.0\n    random_resized_crop: 0.2\n"),
    );
    let resumed = dir.path().join("resumed");
    run(
        dir.path(),
        "b.yaml",
        &pipeline(
            &resumed,
            &dir.path().join("s-first"),
            2,
            "    resume: true\n    stop_after_epochs: 1\n    clip_grad_norm: 5.0\n    random_resized_crop: 0.2\n",
        ),
    );
    let second =
        pipeline(&resumed, &dir.path().join("s-second"), 2, "    resume: true\n    clip_grad_norm: 5.0\n    random_resized_crop: 0.2\n");
    run(dir.path(), "c.yaml", &second);
    let a = stats(&dir.path().join("s-straight"));
    let first = stats(&dir.path().join("s-first"));
    let b = stats(&dir.path().join("s-second"));
    assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1], "the first run stops after epoch 1");
    assert_eq!(b.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2], "the resumed run reports its whole history");
    assert_eq!(b[0], first[0], "epoch 1 of the resumed run's statistics is the first run's");
    // rerunning the finished pipeline trains nothing and rewrites the same statistics
    run(dir.path(), "c.yaml", &second);
    assert_eq!(stats(&dir.path().join("s-second")), b);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.1, y.1);
        assert!((x.2 - y.2).abs() <= 1e-5 * x.2.abs().max(1.0), "loss differs at epoch {}: {} vs {}", x.0, x.2, y.2);
        assert_eq!(x.3, y.3, "accuracy differs at epoch {}", x.0);
    }
    let wa = idflow_models::io::checkpoint::StateDict::from_file(straight.join("backbone.safetensors")).unwrap();
    let wb = idflow_models::io::checkpoint::StateDict::from_file(resumed.join("backbone.safetensors")).unwrap();
    for (k, t) in wa.entries() {
        let u = wb.get(k).unwrap();
        let d: f32 = (t - u).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(d <= 1e-5, "{k} differs by {d}");
    }
}

#[test]
fn bad_train_parameters_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline(&dir.path().join("m"), &dir.path().join("s"), 2, "    learning_rate: 0.1\n");
    let p = write_pipeline(dir.path(), "bad.yaml", &text);
    let out = idflow(dir.path(), &["validate", p.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("learning_rate"));
    let p = write_pipeline(dir.path(), "bad2.yaml", &pipeline(&dir.path().join("m"), &dir.path().join("s"), 0, ""));
    let out = idflow(dir.path(), &["validate", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("epochs"), "{err}");
    for (name, extra, needle) in
        [("bad3.yaml", "    replicas: 0\n", "must be at least 1"), ("bad4.yaml", "    replicas: 17\n", "fewer than 2 rows")]
    {
        let p = write_pipeline(dir.path(), name, &pipeline(&dir.path().join("m"), &dir.path().join("s"), 2, extra));
        let out = idflow(dir.path(), &["validate", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("node `trained`") && err.contains("replicas") && err.contains(needle),
            "{name}: {err}"
        );
    }
}

#[test]
fn two_data_parallel_replicas_learn_the_toy_identities_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let text = |name: &str| pipeline(&dir.path().join(format!("m-{name}")), &dir.path().join(format!("s-{name}")), 6, "    replicas: 2\n");
    run(dir.path(), "a.yaml", &text("a"));
    run(dir.path(), "b.yaml", &text("b").replace("workers: 2", "workers: 1"));
    let (a, b) = (stats(&dir.path().join("s-a")), stats(&dir.path().join("s-b")));
    assert_eq!(a, b, "the replicas' result depends on the worker count");
    let (first, last) = (a[0], a[a.len() - 1]);
    assert!(last.2 < first.2 * 0.5, "loss did not fall: {first:?} -> {last:?}");
    assert!(last.3 >= 0.9, "training accuracy {:.3} < 0.9 with two replicas: {a:?}", last.3);
}

#[test]
fn train_nodes_on_one_worker_train_side_by_side_with_the_results_of_a_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    run(dir.path(), "single.yaml", &pipeline(&single, &dir.path().join("s-single"), 2, ""));
    // two identical `train` nodes (and their stats sinks) on worker 0 of a one-worker run
    let mut text = pipeline(&dir.path().join("a"), &dir.path().join("s-a"), 2, "    worker: 0\n").replace("workers: 2", "workers: 1");
    let trained = &text[text.find("  trained:\n").unwrap()..];
    let twin =
        trained.replace("  trained:", "  trained_b:").replace("  stats:", "  stats_b:").replace("input: trained", "input: trained_b");
    let twin = twin.replace(&dir.path().join("a").display().to_string(), &dir.path().join("b").display().to_string());
    let twin = twin.replace(&dir.path().join("s-a").display().to_string(), &dir.path().join("s-b").display().to_string());
    text.push_str(&twin);
    let p = write_pipeline(dir.path(), "twins.yaml", &text);
    let report = dir.path().join("report.json");
    run_ok(dir.path(), &["run", p.to_str().unwrap(), "--report", report.to_str().unwrap()]);

    let want = stats(&dir.path().join("s-single"));
    assert_eq!(want.len(), 2);
    assert_eq!(stats(&dir.path().join("s-a")), want, "node `trained` equals the single run");
    assert_eq!(stats(&dir.path().join("s-b")), want, "node `trained_b` equals the single run");

    // Both trained at once: one after the other, their busy times could not add up to more
    // than the run's wall time.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let busy =
        |node: &str| r["operators"].as_array().unwrap().iter().find(|o| o["node"] == node).unwrap()["busy_seconds"].as_f64().unwrap();
    let wall = r["wall_seconds"].as_f64().unwrap();
    let (a, b) = (busy("trained"), busy("trained_b"));
    assert!(a + b > wall * 1.2, "busy {a:.2} s + {b:.2} s against {wall:.2} s of wall time: the trainings did not overlap");
}

#[test]
fn a_failing_training_fails_the_run_with_the_node_named_and_writes_no_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let stats_dir = dir.path().join("s");
    let text = pipeline(&dir.path().join("m"), &stats_dir, 2, "")
        .replace("identities: 8\n    images_per_identity: 16", "identities: 1\n    images_per_identity: 1");
    let p = write_pipeline(dir.path(), "one-row.yaml", &text);
    let out = idflow(dir.path(), &["run", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node `trained`") && err.contains("at least 2 rows, got 1"), "{err}");
    let shards = std::fs::read_dir(&stats_dir)
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "parquet")).count())
        .unwrap_or(0);
    assert_eq!(shards, 0, "no statistics are written for a failed training");
}

#[test]
fn evaluations_on_onnx_runtime_equal_the_native_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("toy_lfw_small.bin");
    small_benchmark(&bench);
    let mut evals = Vec::new();
    for backend in ["onnx", "native"] {
        let stats_dir = dir.path().join(format!("s-{backend}"));
        let extra = format!("    eval: [{}]\n    eval_backend: {backend}\n", bench.display());
        run(dir.path(), &format!("{backend}.yaml"), &pipeline(&dir.path().join(backend), &stats_dir, 2, &extra));
        evals.push((stats(&stats_dir), stats_column(&stats_dir, "eval_toy_lfw_small")));
    }
    let ((onnx_stats, onnx), (native_stats, native)) = (&evals[0], &evals[1]);
    assert_eq!(onnx_stats, native_stats, "the evaluation backend does not touch training");
    assert_eq!(onnx.len(), 2);
    for ((epoch, a), (_, b)) in onnx.iter().zip(native) {
        let (a, b) = (a.expect("onnx evaluation"), b.expect("native evaluation"));
        assert!((0.5..=1.0).contains(&a), "epoch {epoch}: accuracy {a}");
        assert!((a - b).abs() <= 0.005, "epoch {epoch}: ONNX Runtime {a} vs candle {b}");
    }
}

#[test]
fn a_missing_onnx_runtime_fails_an_evaluating_training_before_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("toy_lfw_small.bin");
    small_benchmark(&bench);
    let out_dir = dir.path().join("m");
    let extra = format!("    eval: [{}]\n", bench.display());
    let p = write_pipeline(dir.path(), "p.yaml", &pipeline(&out_dir, &dir.path().join("s"), 2, &extra));
    let out = common::idflow_command()
        .current_dir(dir.path())
        .env("ORT_DYLIB_PATH", dir.path().join("libonnxruntime.so.missing"))
        .args(["run", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node `trained`") && err.contains("eval_backend") && err.contains("libonnxruntime.so.missing"), "{err}");
    assert!(!out_dir.join("checkpoint.safetensors").exists(), "nothing was trained");
}
