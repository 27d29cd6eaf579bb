//! Data side of idflow: the face-data file formats (TFRecord, RecordIO, verification `.bin`,
//! context files, image folders), the procedural toy-faces world, the verification /
//! dataset metrics used by the `evaluate` operator, and the `max_similarity` spread of identity
//! contexts (numeric kernels live in this crate, which dev builds optimise).
//!
//! Nothing here knows about the dataflow engine or Arrow: readers yield plain Rust records and
//! writers take them, so the formats can be tested, fuzzed and benchmarked on their own.

pub mod formats;
pub mod metrics;
pub mod rng;
pub mod spread;
pub mod toy;
