//! `idflow run`: plan the pipeline, run it on timely dataflow, publish its outputs, report.

use super::{config_failure, load_plan, PipelineArgs};
use anyhow::Context;
use idflow::exec::{self, RunOptions};
use idflow::{plan, report};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The options of `idflow run` besides the pipeline.
pub struct RunArgs {
    /// Worker threads per process (overrides `workers:`).
    pub workers: Option<usize>,
    /// Processes in a cluster run.
    pub processes: usize,
    /// This process's index.
    pub process_id: usize,
    /// One `host:port` per process.
    pub hostfile: Option<PathBuf>,
    /// Where to write the JSON run report.
    pub report: Option<PathBuf>,
    /// No progress display and no summary table.
    pub quiet: bool,
    /// Source batches in flight per source.
    pub max_in_flight: usize,
    /// Replace finished outputs of another plan.
    pub overwrite: bool,
}

/// Runs the pipeline; exit 0 when it ran or had nothing to do, 78 on a configuration error, 1
/// when it failed.
pub fn run(pipeline: &PipelineArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = match load_plan(pipeline) {
        Ok(p) => p,
        Err(e) => return Ok(config_failure(e)),
    };
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let opts = RunOptions {
        workers: args.workers.unwrap_or(plan.spec.workers).max(1),
        processes: args.processes.max(1),
        process_id: args.process_id,
        hostfile: args.hostfile,
        progress: !args.quiet,
        max_in_flight: args.max_in_flight,
        overwrite: args.overwrite,
    };
    if args.processes > 1 {
        exit_quietly_on_lost_peer();
    }
    let plan = Arc::new(plan);
    let (rep, result) = exec::run(plan.clone(), &opts);
    if let Some(path) = &args.report {
        let text = serde_json::to_vec_pretty(&rep)?;
        idflow::fsutil::atomic_write(path, &text).with_context(|| format!("cannot write report {}", path.display()))?;
    }
    match result {
        Ok(exec::Outcome::UpToDate) => {
            println!(
                "nothing to do: every output of this plan is already complete (change a parameter, or remove an output, to run again)"
            );
            print_outputs(&plan);
            Ok(ExitCode::SUCCESS)
        }
        Ok(exec::Outcome::Ran) => {
            if !args.quiet {
                eprint!("{}", report::summary_table(&rep));
            }
            print_outputs(&plan);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if !args.quiet {
                eprint!("{}", report::summary_table(&rep));
            }
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// In a cluster run, a peer process that exits or is killed makes timely's network threads
/// (`timely:recv-P` / `timely:send-P`, P the peer's index) panic. That is not a bug of this
/// process: say which peer was lost in one line and exit 1, instead of a panic and a backtrace.
/// Staged outputs stay unpublished, for a rerun to resume.
fn exit_quietly_on_lost_peer() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or_default().to_string();
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        let peer = thread.strip_prefix("timely:recv-").or_else(|| thread.strip_prefix("timely:send-"));
        match (peer, msg) {
            (Some(peer), Some(msg)) if msg.contains("timely communication error") => {
                let cause = msg.trim_start_matches("timely communication error: ");
                eprintln!("error: lost the connection to process {peer} ({cause}): it exited or was killed; nothing was published");
                std::process::exit(1);
            }
            _ => default(info),
        }
    }));
}

/// Lists what the run wrote (each node's outputs that exist), one `node label: path` line each.
fn print_outputs(plan: &plan::Plan) {
    let written: Vec<String> = plan
        .nodes
        .iter()
        .flat_map(|n| n.op.outputs().into_iter().map(move |(label, path)| (n, label, path)))
        .filter(|(_, _, path)| path.exists())
        .map(|(n, label, path)| format!("  {} {label}: {}", n.spec.id, path.display()))
        .collect();
    if !written.is_empty() {
        println!("outputs:\n{}", written.join("\n"));
    }
}
