//! `idflow validate`, `graph` and `ops`: what a pipeline or the operators look like, without
//! running anything.

use super::{config_failure, load_plan, PipelineArgs};
use idflow::graph::{self, GraphFormat};
use idflow::operators;
use std::process::ExitCode;

/// `idflow validate`: the plan builds (exit 0), or the configuration error (exit 78).
pub fn validate(pipeline: &PipelineArgs) -> anyhow::Result<ExitCode> {
    match load_plan(pipeline) {
        Ok(plan) => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok ({} nodes)", pipeline.pipeline.display(), plan.nodes.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(config_failure(e)),
    }
}

/// `idflow graph`: the plan's graph as DOT or Mermaid.
pub fn graph(pipeline: &PipelineArgs, format: GraphFormat) -> anyhow::Result<ExitCode> {
    match load_plan(pipeline) {
        Ok(plan) => print_quietly(&graph::render(&plan, format)),
        Err(e) => Ok(config_failure(e)),
    }
}

/// `idflow ops [NAME]`: every operator (or one) with its parameters.
pub fn ops(name: Option<String>) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for info in operators::registry().iter().filter(|i| name.as_deref().is_none_or(|n| n == i.name)) {
        writeln!(text, "{} ({:?}): {}", info.name, info.role, info.summary)?;
        for p in info.param_docs() {
            writeln!(text, "    {:<20} {:<18} default {:<16} {}", p.name, p.ty, p.default, p.doc)?;
        }
        writeln!(text, "    {:<20} {:<18} default {:<16} what to do with a bad row", "on_error", "fail | skip", "fail")?;
    }
    if text.is_empty() {
        anyhow::bail!("no operator named `{}`", name.unwrap_or_default());
    }
    print_quietly(&text)
}

/// Writes `text` to standard output. A reader that closed the pipe early (`idflow ops | head`)
/// is not an error: the command ends quietly with success, as Unix filters do.
pub(crate) fn print_quietly(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
