//! The ONNX Runtime backend of the model operators: checkpoints compiled once into the cache and
//! reused, `.onnx` checkpoints run as they are, `filter`'s regeneration chain equal to the native
//! one, the ONNX Runtime settings (`threads`, `providers`), and set-up errors (a missing library)
//! that name the node and say how to get the runtime.

mod gen_support;
use gen_support::*;

use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs `idflow run <yaml>` in `dir` with the ONNX cache in `cache`.
fn run_with_cache(dir: &Path, yaml: &str, cache: &Path) -> Output {
    idflow_command().args(["run", yaml, "-q"]).current_dir(dir).env("IDFLOW_CACHE", cache).output().unwrap()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The `.onnx` files in `cache/onnx`, sorted, with their modification times.
fn cached(cache: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let dir = cache.join("onnx");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "onnx")).collect())
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|p| (p.clone(), std::fs::metadata(&p).unwrap().modified().unwrap())).collect()
}

#[test]
fn checkpoints_are_compiled_once_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let t = Tiny { identities: 2, samples: 2, workers: 2, ..Tiny::default() };
    std::fs::write(d.join("a.yaml"), tiny_pipeline(&t, &d.join("a"))).unwrap();
    assert_ok(&run_with_cache(d, "a.yaml", &cache), "first run");
    let first = cached(&cache);
    let names: Vec<String> = first.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("unet-") && names[1].starts_with("vq-decoder-"), "{names:?}");
    // the second run (another output) reuses both files untouched and gives the same rows
    std::fs::write(d.join("b.yaml"), tiny_pipeline(&t, &d.join("b"))).unwrap();
    assert_ok(&run_with_cache(d, "b.yaml", &cache), "second run");
    assert_eq!(cached(&cache), first, "cache entries are reused, not rewritten");
    assert_eq!(generated_rows(&d.join("a")), generated_rows(&d.join("b")));
    // another configuration of the same decoder weights is another entry
    let yaml = tiny_pipeline(&t, &d.join("c"))
        .replace("  faces:\n    op: decode-latent\n", "  faces:\n    op: decode-latent\n    quantize: false\n");
    std::fs::write(d.join("c.yaml"), yaml).unwrap();
    assert_ok(&run_with_cache(d, "c.yaml", &cache), "unquantised run");
    assert_eq!(cached(&cache).len(), 3);
}

#[test]
fn an_onnx_checkpoint_runs_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unet = d.join("unet.onnx");
    let vq = d.join("decoder.onnx");
    // `idflow compile --model M --checkpoint C --config F [extra] --out O`
    let compile = |model: &str, checkpoint: &std::path::Path, config: &std::path::Path, extra: &[&str], out: &std::path::Path| {
        let mut args = vec!["--model", model, "--checkpoint", checkpoint.to_str().unwrap(), "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        let run = idflow_command().arg("compile").args(&args).current_dir(d).output().unwrap();
        assert_ok(&run, "idflow compile");
    };
    let (ckpt, unet_cfg) = (reference("idiff_unet_tiny.ckpt"), reference("idiff_unet_tiny_config.json"));
    let dec = reference("vq_tiny_first_stage_decoder_state_dict.pt");
    compile("unet", &ckpt, &unet_cfg, &["--dropout-mask"], &unet);
    compile("vq-decoder", &dec, &reference("vq_tiny_config.json"), &[], &vq);

    let t = Tiny { identities: 2, samples: 2, ..Tiny::default() };
    let cache = d.join("cache");
    std::fs::write(d.join("ckpt.yaml"), tiny_pipeline(&t, &d.join("ckpt"))).unwrap();
    assert_ok(&run_with_cache(d, "ckpt.yaml", &cache), "checkpoint run");
    let yaml = tiny_pipeline(&t, &d.join("onnx"))
        .replace(&format!("checkpoint: {}\n", ckpt.display()), &format!("checkpoint: {}\n", unet.display()))
        .replace(&format!("checkpoint: {}\n", dec.display()), &format!("checkpoint: {}\n", vq.display()));
    assert_eq!(yaml.matches(".onnx\n").count(), 2);
    let cache2 = d.join("cache2");
    std::fs::write(d.join("onnx.yaml"), yaml).unwrap();
    assert_ok(&run_with_cache(d, "onnx.yaml", &cache2), ".onnx run");
    assert!(cached(&cache2).is_empty(), "an .onnx checkpoint is not compiled again");
    // same graphs (and the schedule recorded in the file): identical rows
    assert_eq!(generated_rows(&d.join("ckpt")), generated_rows(&d.join("onnx")));

    // a file compiled for another configuration is refused, naming the file
    let mut other: serde_json::Value = serde_json::from_slice(&std::fs::read(&unet_cfg).unwrap()).unwrap();
    other["eps_model"]["attention_head_channels"] = 16.into();
    let other_cfg = d.join("other_config.json");
    std::fs::write(&other_cfg, other.to_string()).unwrap();
    let yaml = tiny_pipeline(&t, &d.join("bad")).replace(
        &format!("checkpoint: {}\n      config: {}\n", ckpt.display(), unet_cfg.display()),
        &format!("checkpoint: {}\n      config: {}\n", unet.display(), other_cfg.display()),
    );
    assert!(yaml.contains("other_config.json"));
    std::fs::write(d.join("bad.yaml"), yaml).unwrap();
    let out = run_with_cache(d, "bad.yaml", &cache2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unet.onnx") && stderr.contains("compiled for configuration") && !stderr.contains("panicked"), "{stderr}");
    // the native backend cannot read an ONNX file
    let yaml = tiny_pipeline(&t, &d.join("native"))
        .replace(&format!("checkpoint: {}\n", dec.display()), &format!("checkpoint: {}\n", vq.display()))
        .replace("  faces:\n    op: decode-latent\n", "  faces:\n    op: decode-latent\n    backend: native\n");
    std::fs::write(d.join("native.yaml"), yaml).unwrap();
    let out = run_with_cache(d, "native.yaml", &cache2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("decoder.onnx") && stderr.contains("backend: onnx"), "{stderr}");
}

#[test]
fn a_missing_runtime_names_the_node_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty_venv = d.join("no-venv");
    std::fs::create_dir_all(&empty_venv).unwrap();
    std::fs::write(d.join("p.yaml"), tiny_pipeline(&Tiny::default(), &d.join("out"))).unwrap();
    let out = idflow_command()
        .args(["run", "p.yaml", "-q"])
        .current_dir(d)
        .env_remove("ORT_DYLIB_PATH")
        .env("IDFLOW_ORT_VENV", &empty_venv)
        .env("IDFLOW_CACHE", d.join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    for want in [
        "node `latents`",
        "ONNX Runtime library not available",
        "tests/py/ort_env.sh",
        "onnxruntime==1.32.0",
        "ORT_DYLIB_PATH",
        "backend: native",
    ] {
        assert!(stderr.contains(want), "`{want}` in: {stderr}");
    }
    assert!(stderr.contains(&empty_venv.display().to_string()), "the searched venv is named: {stderr}");
    // a wrong ORT_DYLIB_PATH names the file
    let out = idflow_command()
        .args(["run", "p.yaml", "-q"])
        .current_dir(d)
        .env("ORT_DYLIB_PATH", d.join("libonnxruntime.so.missing"))
        .env("IDFLOW_CACHE", d.join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("libonnxruntime.so.missing") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_ort_dylib_path_the_ort_env_venv_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // <venv>/lib/python3.X/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0
    let venv = ort_dylib().ancestors().nth(6).unwrap().to_path_buf();
    let t = Tiny { identities: 1, samples: 2, ..Tiny::default() };
    std::fs::write(d.join("p.yaml"), tiny_pipeline(&t, &d.join("out"))).unwrap();
    let out = idflow_command()
        .args(["run", "p.yaml", "-q"])
        .current_dir(d)
        .env_remove("ORT_DYLIB_PATH")
        .env("IDFLOW_ORT_VENV", &venv)
        .output()
        .unwrap();
    assert_ok(&out, "run with IDFLOW_ORT_VENV");
    assert_eq!(generated_rows(&d.join("out")).len(), 2);
}

#[test]
fn threads_and_providers_are_checked_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = Tiny { identities: 1, samples: 2, ..Tiny::default() };
    let with = |extra: &str, out: &str| {
        tiny_pipeline(&t, &d.join(out)).replace("    samples_per_identity:", &format!("{extra}    samples_per_identity:"))
    };
    std::fs::write(d.join("base.yaml"), tiny_pipeline(&t, &d.join("base"))).unwrap();
    run_ok(d, &["run", "base.yaml", "-q"]);
    // one thread: same rows (the thread count does not change results)
    std::fs::write(d.join("one.yaml"), with("    threads: 1\n", "one")).unwrap();
    run_ok(d, &["run", "one.yaml", "-q"]);
    assert_eq!(generated_rows(&d.join("base")), generated_rows(&d.join("one")));
    // threads: 0 is a configuration error naming the field
    std::fs::write(d.join("zero.yaml"), with("    threads: 0\n", "zero")).unwrap();
    let out = idflow(d, &["validate", "zero.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("threads") && stderr.contains("latents"), "{stderr}");
    // an unknown provider is a configuration error
    std::fs::write(d.join("rocm.yaml"), with("    providers: [rocm]\n", "rocm")).unwrap();
    let out = idflow(d, &["validate", "rocm.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("rocm"), "{stderr}");
    // CUDA with the CPU wheel: an error naming the provider and the node…
    std::fs::write(d.join("cuda.yaml"), with("    providers: [cuda]\n", "cuda")).unwrap();
    let out = idflow(d, &["run", "cuda.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("CUDAExecutionProvider") && stderr.contains("node `latents`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // …or, with cpu listed after it, a logged fallback that names the provider in use
    std::fs::write(d.join("fallback.yaml"), with("    providers: [cuda, cpu]\n", "fallback")).unwrap();
    let out = idflow(d, &["run", "fallback.yaml", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("CUDAExecutionProvider unavailable") && stderr.contains("running on CPUExecutionProvider"), "{stderr}");
    assert_eq!(generated_rows(&d.join("base")), generated_rows(&d.join("fallback")));
}
