//! Bad pipeline files: each case must exit 78 with a message naming what is wrong.

mod common;
use common::*;

const GOOD_READ: &str = "  faces:\n    op: read\n    root: /tmp\n";

/// A pipeline of [`GOOD_READ`] followed by `rest`.
fn read_then(rest: &str) -> String {
    format!("name: x\nnodes:\n{GOOD_READ}{rest}")
}

/// A pipeline of toy faces into a `train` node of `task` whose last line (line 14) is `extra`.
fn train_pipeline(task: &str, extra: &str) -> String {
    format!(
        "name: x\nnodes:\n  faces:\n    op: toy-faces\n    identities: 2\n    images_per_identity: 2\n    size: 8\n  trained:\n    op: train\n    input: faces\n    task: {task}\n    epochs: 1\n    output: out\n    {extra}\n"
    )
}

/// Every bad pipeline: (case, pipeline text, extra CLI args, fragments the error must contain).
fn cases() -> Vec<(String, String, Vec<&'static str>, Vec<String>)> {
    let owned = |fragments: &[&str]| fragments.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let plain = plain_cases().into_iter().map(|(case, text, fragments)| (case.to_string(), text, vec![], owned(fragments)));
    let overrides = [
        ("override of unknown node", vec!["--set", "nodes.nope.root=/x"], owned(&["no node `nope`"])),
        (
            "override with wrong type",
            vec!["--set", "nodes.faces.batch_rows=lots"],
            owned(&["node `faces`", "field `batch_rows`", "invalid type"]),
        ),
    ]
    .into_iter()
    .map(|(case, extra, fragments)| (case.to_string(), read_then(""), extra, fragments));
    let train = TRAIN_FIELD_CASES.iter().map(|&(case, task, line, field, message)| {
        let fragments = vec!["node `trained`".to_string(), format!("field `{field}`"), message.to_string(), "bad.yaml:14".to_string()];
        (case.to_string(), train_pipeline(task, line), vec![], fragments)
    });
    plain.chain(overrides).chain(train).collect()
}

/// Misplaced or malformed fields of a `train` node: (case, task, the extra line, the field the
/// error names, what it says about the field).
const TRAIN_FIELD_CASES: &[(&str, &str, &str, &str, &str)] = &[
    ("diffusion field on a face-recognition train node", "face-recognition", "cpd: 0.25", "cpd", "belongs to task: diffusion"),
    ("face-recognition field on a diffusion train node", "diffusion", "eval: [lfw.bin]", "eval", "belongs to task: face-recognition"),
    ("diffusion field on an autoencoder train node", "autoencoder", "timesteps: 10", "timesteps", "belongs to task: diffusion"),
    ("autoencoder field on a face-recognition train node", "face-recognition", "n_embed: 16", "n_embed", "belongs to task: autoencoder"),
    ("face-recognition field on an autoencoder train node", "autoencoder", "replicas: 2", "replicas", "belongs to task: face-recognition"),
    ("unknown field on a train node", "diffusion", "epoch: 3", "epoch", "unknown field"),
    ("wrong type of a common train field", "diffusion", "batch_size: many", "batch_size", "invalid type"),
    ("wrong type of a task's train field", "face-recognition", "momentum: high", "momentum", "invalid type"),
];

/// (case, pipeline text, fragments the error must contain)
fn plain_cases() -> Vec<(&'static str, String, &'static [&'static str])> {
    vec![
        ("not yaml", "name: x\nnodes: [\n".into(), &["bad.yaml:"]),
        ("unknown top-level field", format!("name: x\nnodez: 1\nnodes:\n{GOOD_READ}"), &["unknown field", "nodez"]),
        ("missing name", format!("nodes:\n{GOOD_READ}"), &["name"]),
        (
            "unknown operator",
            "name: x\nnodes:\n  a:\n    op: reed\n".into(),
            &["node `a`", "field `op`", "unknown operator `reed`", "bad.yaml:4"],
        ),
        ("missing op", "name: x\nnodes:\n  a:\n    root: /tmp\n".into(), &["node `a`", "missing field `op`"]),
        ("unknown parameter", read_then("    rooot: /x\n"), &["node `faces`", "field `rooot`", "unknown field", "bad.yaml:6"]),
        ("wrong type", read_then("    batch_rows: many\n"), &["node `faces`", "field `batch_rows`", "invalid type", "bad.yaml:6"]),
        ("missing parameter", "name: x\nnodes:\n  faces:\n    op: read\n".into(), &["node `faces`", "missing field `root`"]),
        (
            "dangling input",
            read_then("  d:\n    op: decode\n    input: nope\n    size: 8\n"),
            &["node `d`", "field `input`", "`nope` is not a node"],
        ),
        (
            "cycle",
            read_then("  a:\n    op: decode\n    input: b\n    size: 8\n  b:\n    op: decode\n    input: a\n    size: 8\n"),
            &["cycle: b -> a -> b", "node `a`"],
        ),
        (
            "schema mismatch (type)",
            read_then("  d:\n    op: decode\n    input: faces\n    column: identity_name\n    size: 8\n"),
            &["node `d`", "column `identity_name`", "Utf8", "Binary"],
        ),
        (
            "schema mismatch (missing column)",
            read_then("  d:\n    op: decode\n    input: faces\n    column: pixels\n    size: 8\n"),
            &["node `d`", "needs column `pixels`", "from input `faces`"],
        ),
        ("source with input", read_then("  again:\n    op: read\n    input: faces\n    root: /tmp\n"), &["node `again`", "takes no input"]),
        ("transform without input", read_then("  d:\n    op: decode\n    size: 8\n"), &["node `d`", "needs an input"]),
        (
            "missing environment variable",
            "name: x\nnodes:\n  faces:\n    op: read\n    root: ${IDFLOW_TEST_SURELY_UNSET}/faces\n".into(),
            &["node `faces`", "field `root`", "IDFLOW_TEST_SURELY_UNSET", "not set"],
        ),
        ("bad on_error", read_then("    on_error: maybe\n"), &["node `faces`", "field `on_error`", "`fail` or `skip`"]),
        ("decode without size", read_then("  d:\n    op: decode\n    input: faces\n"), &["node `d`", "field `size`"]),
        ("empty nodes", "name: x\nnodes: {}\n".into(), &["nodes", "empty"]),
        (
            "a preset name misspelt",
            read_then("  e:\n    op: embed\n    input: faces\n    encoder: {checkpoint: enc.safetensors, config: iresnet-100}\n"),
            &["node `e`", "`iresnet-100` is not a preset", "iresnet50, iresnet100"],
        ),
    ]
}

#[test]
fn bad_pipelines_exit_78_with_precise_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (case, text, extra, fragments) in cases() {
        write_pipeline(dir.path(), "bad.yaml", &text);
        for cmd in ["validate", "run"] {
            let mut args = vec![cmd, "bad.yaml"];
            args.extend(extra.iter().copied());
            let out = idflow(dir.path(), &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(78) {
                failures.push(format!("{case} ({cmd}): exit {:?}, stderr: {stderr}", out.status.code()));
                continue;
            }
            for f in &fragments {
                if !stderr.contains(f) {
                    failures.push(format!("{case} ({cmd}): missing `{f}` in: {stderr}"));
                }
            }
            assert!(!stderr.contains("panicked"), "{case}: panic: {stderr}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn toy_train_pipelines_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["train-encoder", "train-recognizer", "train-autoencoder", "train-denoiser", "train-ldm", "reproduce"] {
        let out = idflow(root, &["validate", &format!("pipelines/toy/{name}.yaml")]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn good_pipeline_validates_and_warns_on_unread_output() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), "ok.yaml", &format!("name: x\nnodes:\n{GOOD_READ}  d:\n    op: decode\n    input: faces\n    size: 8\n"));
    let out = idflow(dir.path(), &["validate", "ok.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning") && stderr.contains("node `d`") && stderr.contains("not read"), "{stderr}");
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), "g.yaml", &format!("name: g\nnodes:\n{GOOD_READ}  d:\n    op: decode\n    input: faces\n    size: 8\n"));
    let dot = idflow(dir.path(), &["graph", "g.yaml"]);
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.contains("digraph") && dot.contains("\"faces\" -> \"d\""), "{dot}");
    let mm = idflow(dir.path(), &["graph", "g.yaml", "--format", "mermaid"]);
    let mm = String::from_utf8_lossy(&mm.stdout);
    assert!(mm.starts_with("flowchart LR") && mm.contains("n0 --> n1"), "{mm}");
}

#[test]
fn ops_lists_every_operator_with_parameters() {
    let out = idflow(std::path::Path::new("."), &["ops"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["read", "decode", "write-records"] {
        assert!(text.contains(&format!("{name} (")), "{name} missing in:\n{text}");
    }
    assert!(text.contains("rows_per_shard") && text.contains("limit_per_identity"));
}

/// `idflow ops | head`: a reader that closes the pipe before the listing is written ends the
/// command quietly with success, not with a "Broken pipe" panic.
#[test]
fn ops_into_a_closed_pipe_exits_quietly() {
    let mut child = idflow_command().arg("ops").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader is gone before idflow writes
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status.code());
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    let unknown = idflow(std::path::Path::new("."), &["ops", "no-such-op"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no operator named `no-such-op`"));
}
