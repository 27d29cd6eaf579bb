//! The `idflow` command line: `run`, `validate`, `graph`, `ops`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use idflow::exec::{self, RunOptions};
use idflow::graph::{self, GraphFormat};
use idflow::spec::{self, Override};
use idflow::{operators, plan, report, EXIT_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Build synthetic face-recognition datasets with declarative pipelines.
#[derive(Parser)]
#[command(name = "idflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// The pipeline YAML file.
    pipeline: PathBuf,
    /// Override a value: `nodes.<id>.<param>=<value>`, `seed=N`, `workers=N`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<Override>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Worker threads per process (overrides `workers:` in the file).
        #[arg(short = 'w', long)]
        workers: Option<usize>,
        /// Number of processes in a cluster run.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// This process's index in a cluster run.
        #[arg(long, default_value_t = 0)]
        process_id: usize,
        /// File with one host:port per process.
        #[arg(long)]
        hostfile: Option<PathBuf>,
        /// Write a JSON run report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// No progress display and no summary table.
        #[arg(short, long)]
        quiet: bool,
        /// Source batches allowed in flight per source (memory bound).
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
        /// Replace finished outputs of another plan; they stay readable until this run succeeds.
        #[arg(long)]
        overwrite: bool,
    },
    /// Check a pipeline without running it (exit 0, or 78 on a configuration error).
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Print the pipeline's graph.
    Graph {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List operators with their parameters (or one operator in detail).
    Ops {
        /// Show only this operator.
        name: Option<String>,
    },
    /// Compile a checkpoint and its architecture config into an ONNX file for ONNX Runtime.
    Compile {
        /// Which network: unet, vq-encoder, vq-decoder, iresnet, tface-ir.
        #[arg(long, value_enum)]
        model: CompileModel,
        /// The weights (`.ckpt`, `.pt`, `.pth` or `.safetensors`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Architecture: a preset (`idiff-face-ca`, `reference-tiny`, `vq-f4`, `iresnet50`, ...)
        /// or a JSON file; the model's default preset when omitted.
        #[arg(long)]
        config: Option<String>,
        /// tface-ir: network depth (18, 34, 50, 100).
        #[arg(long, default_value_t = 50)]
        depth: usize,
        /// vq-decoder: decode the latent as it is, without nearest-codeword quantisation.
        #[arg(long)]
        no_quantize: bool,
        /// unet: add the `dropout_mask` input (empty-context rows for classifier-free guidance).
        #[arg(long)]
        dropout_mask: bool,
        /// Output `.onnx` file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the paper-style results tables of finished runs as Markdown: recognition accuracy
    /// from `train` statistics folders, dataset metrics from `evaluate` outputs.
    Table {
        /// `LABEL=DIR`: a train node's statistics folder (Parquet with `eval_*` columns); one
        /// row of the recognition table each, in order.
        #[arg(long = "recognition", value_parser = idflow::results::labelled_path)]
        recognition: Vec<(String, PathBuf)>,
        /// `LABEL=PATH`: an evaluate node's `metrics.json` (or its folder); one row of the
        /// dataset-metrics table each, in order.
        #[arg(long = "dataset", value_parser = idflow::results::labelled_path)]
        dataset: Vec<(String, PathBuf)>,
        /// Write the tables here (atomically) as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Toy-world utilities.
    Toy {
        #[command(subcommand)]
        command: ToyCommand,
    },
}

/// Networks `idflow compile` can emit.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CompileModel {
    /// IDiff-Face ConditionalUNet (inputs `x`, `t`, `context`; output `eps`).
    Unet,
    /// LDM VQ-f4 encoder + `quant_conv` (input `image`).
    VqEncoder,
    /// LDM VQ-f4 quantiser + `post_quant_conv` + decoder (input `z`).
    VqDecoder,
    /// ElasticFace IResNet (input `image`).
    Iresnet,
    /// TFace IR backbone (input `image`).
    TfaceIr,
}

#[derive(Subcommand)]
enum ToyCommand {
    /// Write the five toy verification benchmarks (toy_lfw, toy_cfp_fp, toy_cplfw, toy_agedb,
    /// toy_calfw) as verification `.bin` files.
    Benchmarks {
        /// Output folder.
        #[arg(long, default_value = "out/toy/benchmarks")]
        out: PathBuf,
        /// Image side in pixels.
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Toy-world seed.
        #[arg(long, default_value_t = 0)]
        world: u64,
    },
}

fn load_plan(args: &PipelineArgs) -> Result<plan::Plan, spec::ConfigError> {
    let spec = spec::load(&args.pipeline, &args.set)?;
    plan::build(spec)
}

fn config_failure(e: spec::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// The process allocator: mimalloc. Model steps allocate and free many tensor buffers of every
/// size from several threads. glibc's malloc either hoarded them (its dynamic mmap threshold let
/// a toy diffusion training grow past 10 GiB) or, with a fixed low threshold, mapped and unmapped
/// every large buffer, so training spent as much time in page faults as in arithmetic; mimalloc
/// reuses freed memory per thread and returns it to the system in bounded pieces.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3, which the Rust bindings do not
/// name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for reuse instead of purging it after 10 ms (mimalloc's
/// default), unless `MIMALLOC_PURGE_DELAY` is set. With transparent huge pages on, every purged
/// and re-touched buffer is a 2 MiB page the kernel zeroes again: a quarter of a toy-encoder
/// training step went to `clear_page`, and keeping memory made training 1.35x faster for 7 %
/// more peak RSS (`docs/performance.md`). The resident size stays bounded by the peak working
/// set, since mimalloc reuses what it keeps.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists; the option is a
        // plain integer that mimalloc reads when it considers purging.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IDFLOW_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { pipeline } => match load_plan(&pipeline) {
            Ok(plan) => {
                for w in &plan.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok ({} nodes)", pipeline.pipeline.display(), plan.nodes.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(config_failure(e)),
        },
        Command::Graph { pipeline, format } => match load_plan(&pipeline) {
            Ok(plan) => print_quietly(&graph::render(&plan, format)),
            Err(e) => Ok(config_failure(e)),
        },
        Command::Ops { name } => {
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
        Command::Compile { model, checkpoint, config, depth, no_quantize, dropout_mask, out } => {
            compile(model, &checkpoint, config, depth, !no_quantize, dropout_mask, &out)?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Table { recognition, dataset, out } => {
            if recognition.is_empty() && dataset.is_empty() {
                anyhow::bail!("give at least one --recognition or --dataset LABEL=PATH");
            }
            let mut text = String::new();
            if !recognition.is_empty() {
                let rows =
                    recognition.iter().map(|(label, dir)| idflow::results::recognition_row(label, dir)).collect::<Result<Vec<_>, _>>()?;
                text.push_str(&idflow::results::recognition_markdown(&rows));
            }
            if !dataset.is_empty() {
                let rows = dataset.iter().map(|(label, path)| idflow::results::dataset_row(label, path)).collect::<Result<Vec<_>, _>>()?;
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&idflow::results::dataset_markdown(&rows));
            }
            print!("{text}");
            if let Some(path) = &out {
                idflow::fsutil::atomic_write(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Toy { command: ToyCommand::Benchmarks { out, size, world } } => {
            let files = idflow_dataset::toy::benchmarks::write_benchmarks(&out, size, world)
                .with_context(|| format!("cannot write the toy benchmarks to {}", out.display()))?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { pipeline, workers, processes, process_id, hostfile, report: report_path, quiet, max_in_flight, overwrite } => {
            let plan = match load_plan(&pipeline) {
                Ok(p) => p,
                Err(e) => return Ok(config_failure(e)),
            };
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            let opts = RunOptions {
                workers: workers.unwrap_or(plan.spec.workers).max(1),
                processes: processes.max(1),
                process_id,
                hostfile,
                progress: !quiet,
                max_in_flight,
                overwrite,
            };
            if processes > 1 {
                exit_quietly_on_lost_peer();
            }
            let plan = Arc::new(plan);
            let (rep, result) = exec::run(plan.clone(), &opts);
            if let Some(path) = &report_path {
                let text = serde_json::to_vec_pretty(&rep)?;
                idflow::fsutil::atomic_write(path, &text).with_context(|| format!("cannot write report {}", path.display()))?;
            }
            match result {
                Ok(exec::Outcome::UpToDate) => {
                    println!("nothing to do: every output of this plan is already complete (change a parameter, or remove an output, to run again)");
                    print_outputs(&plan);
                    Ok(ExitCode::SUCCESS)
                }
                Ok(exec::Outcome::Ran) => {
                    if !quiet {
                        eprint!("{}", report::summary_table(&rep));
                    }
                    print_outputs(&plan);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if !quiet {
                        eprint!("{}", report::summary_table(&rep));
                    }
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
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

/// Writes `text` to standard output. A reader that closed the pipe early (`idflow ops | head`)
/// is not an error: the command ends quietly with success, as Unix filters do.
fn print_quietly(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
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

/// `idflow compile`: checkpoint + config → ONNX file (written atomically).
fn compile(
    model: CompileModel,
    checkpoint: &std::path::Path,
    config: Option<String>,
    depth: usize,
    quantize: bool,
    dropout_mask: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use idflow::operators::support::model_ref::{iresnet_config, unet_config, vq_config, ConfigRef};
    use idflow_models::onnx::{OnnxModelSpec, TimestepType, UNetExport};
    let cfg = config.map(ConfigRef::Name);
    let cfg = cfg.as_ref();
    let bad = |e: String| anyhow::anyhow!("--config: {e}");
    let spec = match model {
        CompileModel::Unet => OnnxModelSpec::Unet {
            config: unet_config(cfg).map_err(bad)?,
            export: UNetExport { timestep: TimestepType::Int64, dropout_mask },
        },
        CompileModel::VqEncoder => OnnxModelSpec::VqEncoder { config: vq_config(cfg).map_err(bad)? },
        CompileModel::VqDecoder => OnnxModelSpec::VqDecoder { config: vq_config(cfg).map_err(bad)?, quantize },
        CompileModel::Iresnet => OnnxModelSpec::IResNet { config: iresnet_config(cfg).map_err(bad)? },
        CompileModel::TfaceIr => OnnxModelSpec::TFaceIr { depth },
    };
    let dict =
        idflow_models::io::checkpoint::StateDict::from_file(checkpoint).with_context(|| format!("cannot load {}", checkpoint.display()))?;
    let bytes = spec.compile(&dict, &Default::default()).with_context(|| format!("cannot compile {}", checkpoint.display()))?;
    idflow_models::onnx::compile_to_file(&bytes, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
