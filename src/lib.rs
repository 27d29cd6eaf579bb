//! idflow: declarative YAML pipelines that build synthetic face-recognition datasets.
//!
//! The flow of a run: [`spec`] parses the YAML (with `${ENV}` interpolation and `--set`
//! overrides) → [`plan`] builds every node's [`operators::Operator`], resolves inputs and
//! checks the Arrow schema of every edge → [`exec`] runs the plan on timely dataflow, with
//! [`batch::Batch`]es (Arrow record batches) as the data → [`report`] and [`progress`] tell the
//! user what happened. `docs/architecture.md` is the newcomer's map.

pub mod batch;
pub mod exec;
pub mod fsutil;
pub mod graph;
pub mod output;
pub mod plan;
pub mod progress;
pub mod report;
pub mod results;
pub mod spec;

#[path = "../operators/mod.rs"]
pub mod operators;

/// Exit code for configuration errors (EX_CONFIG from sysexits.h, as Vector uses).
pub const EXIT_CONFIG: i32 = 78;
