//! Shared operator support: what more than one operator (or the engine outside `operators/`)
//! uses, in one place. Operator files import from here and from the traits of
//! [`crate::operators`], never from each other.
//!
//! * [`model_ref`] — the YAML model reference `{checkpoint, config}`, the `backend` / `threads` /
//!   `providers` block and their plan-time resolution and checks;
//!   [`loading`] opens the referenced models at run time (native or ONNX Runtime).
//! * [`generator`], [`latent_decoder`], [`face_embedder`] — the model components of the
//!   generation chain: the `diffuse`, `decode-latent` and `embed` operators run them over their
//!   rows, `filter` runs the same components to re-draw rejected samples.
//! * [`columns`] — `FixedSizeList<Float32, n>` tensor columns; [`rows`] — row labels for errors and
//!   the per-row pass over an image column; [`finite`] — the non-finite value checks of tensor columns.
//! * [`images`] — image sizes, decoding to model input, area resampling.
//! * [`pending`] — the samples a resumed run still has to produce.
//! * [`parquet`] — Parquet file listings; [`benchmarks`] — benchmark table columns.
//! * [`param_table`] — the operators' parameter tables (`operators/params/*.md`) for `idflow ops`.

pub mod benchmarks;
pub mod columns;
pub mod face_embedder;
pub mod finite;
pub mod generator;
pub mod images;
pub mod latent_decoder;
pub mod loading;
pub mod model_ref;
pub mod param_table;
pub mod parquet;
pub mod pending;
pub mod rows;
