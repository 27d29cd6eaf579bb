//! Helpers shared by the generation tests (`tests/gen_*.rs`): the tiny generation pipeline over
//! the reference fixtures, plus the root test helpers and the testkit's generated-row reader.
#![allow(dead_code)]

use std::path::Path;

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{bin, crashed_run, idflow, idflow_command, ort_dylib, read_batches, reference, reference_dir, run_ok, test_cache};
#[allow(unused_imports)]
pub use idflow_testkit::parquet::{generated_rows, list_row, GenRow};

/// The tiny UNet block (`model:`), indented for a node.
pub fn unet_block() -> String {
    format!(
        "    model:\n      checkpoint: {}\n      config: {}\n",
        reference("idiff_unet_tiny.ckpt").display(),
        reference("idiff_unet_tiny_config.json").display()
    )
}

/// The tiny first-stage block (`first_stage:`).
pub fn vq_block() -> String {
    format!(
        "    first_stage:\n      checkpoint: {}\n      config: {}\n",
        reference("vq_tiny_first_stage_decoder_state_dict.pt").display(),
        reference("vq_tiny_config.json").display()
    )
}

/// Settings of the tiny generation pipeline.
pub struct Tiny {
    /// Workers.
    pub workers: usize,
    /// `diffuse` batch.
    pub batch: usize,
    /// Extra `diffuse` lines (indented 4).
    pub diffuse_extra: String,
    /// Identities.
    pub identities: usize,
    /// Samples per identity.
    pub samples: usize,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            workers: 1,
            batch: 4,
            diffuse_extra: "    sampler: ddim\n    steps: 5\n    eta: 1.0\n    guidance: 1.5\n".into(),
            identities: 3,
            samples: 4,
        }
    }
}

/// contexts → diffuse → decode-latent → write-records into `out`.
pub fn tiny_pipeline(t: &Tiny, out: &Path) -> String {
    format!(
        "name: tiny-gen\nseed: 5\nworkers: {}\nnodes:\n  ids:\n    op: contexts\n    kind: synthetic-uniform\n    count: {}\n    batch_rows: 2\n  latents:\n    op: diffuse\n    input: ids\n{}    samples_per_identity: {}\n    latent_shape: [3, 8, 8]\n    batch: {}\n{}  faces:\n    op: decode-latent\n    input: latents\n{}  out:\n    op: write-records\n    input: faces\n    path: {}\n    rows_per_shard: 5\n    columns: [identity, identity_name, sample, seed, context, latent, image]\n",
        t.workers,
        t.identities,
        unet_block(),
        t.samples,
        t.batch,
        t.diffuse_extra,
        vq_block(),
        out.display()
    )
}
