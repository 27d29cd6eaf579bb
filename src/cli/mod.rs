//! The `idflow` command line: its arguments ([`Cli`]) and one module per group of subcommands
//! (`run`; `validate`, `graph`, `ops`; `compile`; `table` and `toy`).

mod compile;
mod inspect;
mod run;
mod tables;

use clap::{Parser, Subcommand};
use idflow::graph::GraphFormat;
use idflow::spec::{self, Override};
use idflow::{plan, EXIT_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;

/// Build synthetic face-recognition datasets with declarative pipelines.
#[derive(Parser)]
#[command(name = "idflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline YAML file.
    pub pipeline: PathBuf,
    /// Override a value: `nodes.<id>.<param>=<value>`, `seed=N`, `workers=N`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<Override>,
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
pub enum CompileModel {
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

pub(crate) fn load_plan(args: &PipelineArgs) -> Result<plan::Plan, spec::ConfigError> {
    let spec = spec::load(&args.pipeline, &args.set)?;
    plan::build(spec)
}

pub(crate) fn config_failure(e: spec::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { pipeline } => inspect::validate(&pipeline),
        Command::Graph { pipeline, format } => inspect::graph(&pipeline, format),
        Command::Ops { name } => inspect::ops(name),
        Command::Compile { model, checkpoint, config, depth, no_quantize, dropout_mask, out } => {
            compile::compile(model, &checkpoint, config, depth, !no_quantize, dropout_mask, &out)?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Table { recognition, dataset, out } => tables::table(&recognition, &dataset, out.as_deref()),
        Command::Toy { command: ToyCommand::Benchmarks { out, size, world } } => tables::toy_benchmarks(&out, size, world),
        Command::Run { pipeline, workers, processes, process_id, hostfile, report, quiet, max_in_flight, overwrite } => {
            let opts = run::RunArgs { workers, processes, process_id, hostfile, report, quiet, max_in_flight, overwrite };
            run::run(&pipeline, opts)
        }
    }
}
