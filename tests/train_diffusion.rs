//! End-to-end test of `train` with `task: diffusion`: a tiny unconditional ConditionalUNet on
//! trivially simple "latents" (8×8 toy faces decoded to tensors) drives its eps-MSE well below
//! the initial value and writes loadable checkpoints in the official wrapper layout.

mod common;

use common::{epoch_losses, run_pipeline, NO_NUISANCE};
use idflow_models::io::checkpoint::LoadOptions;
use idflow_models::unet::UNetConfig;

/// A tiny unconditional UNet, as JSON (also a YAML flow mapping for the pipeline).
const UNET: &str = r#"{"input_channels": 3, "initial_channels": 32, "channel_multipliers": [1, 1], "is_attention": [false, false], "attention_heads": -1, "attention_head_channels": 32, "n_blocks_per_resolution": 1, "condition_type": "CA", "context_input_channels": 16, "context_channels": 32, "is_context_conditional": false, "learn_empty_context": false, "context_dropout_probability": 0.0}"#;

fn tiny_unet() -> UNetConfig {
    serde_json::from_str(UNET).unwrap()
}

#[test]
fn tiny_unet_loss_falls_and_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ldm");
    let text = format!(
        "name: train-ldm\nseed: 5\nworkers: 1\nnodes:\n  faces:\n    op: toy-faces\n    identities: 4\n    images_per_identity: 8\n    size: 8\n    difficulty: {NO_NUISANCE}\n  latents:\n    op: decode\n    input: faces\n    size: 8\n  trained:\n    op: train\n    input: latents\n    task: diffusion\n    column: tensor\n    context: null\n    latent_shape: [3, 8, 8]\n    unet: {UNET}\n    timesteps: 100\n    lr: {{type: warm-restarts, lr: 0.002, t0: 100, t_mult: 1}}\n    batch_size: 16\n    epochs: 20\n    output: {}\n  stats:\n    op: write-records\n    input: trained\n    path: {}\n",
        out.display(),
        dir.path().join("stats").display()
    );
    run_pipeline(dir.path(), "p.yaml", &text);
    let rows = epoch_losses(&dir.path().join("stats"));
    assert_eq!(rows.len(), 20);
    let first = rows[0].1;
    let last = (rows[17].1 + rows[18].1 + rows[19].1) / 3.0;
    assert!(last < 0.5 * first, "eps-MSE did not fall well below its initial value: {rows:?}");
    // both weight files load as IDiff-Face checkpoints (schedule buffers + eps_model.*)
    for name in ["model.safetensors", "ema_averaged_model.safetensors", "model.ckpt", "ema_averaged_model.ckpt"] {
        let (_, schedule, report) = idflow_models::io::pretrained::load_idiff_face(out.join(name), &tiny_unet(), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(schedule.len(), 100, "{name}: the schedule buffers of T = 100 are stored");
        let _ = report;
    }
    // the torch.save archives hold exactly the safetensors weights
    for (a, b) in [("model.safetensors", "model.ckpt"), ("ema_averaged_model.safetensors", "ema_averaged_model.ckpt")] {
        let (x, y) = (
            idflow_models::io::checkpoint::StateDict::from_file(out.join(a)).unwrap(),
            idflow_models::io::checkpoint::StateDict::from_file(out.join(b)).unwrap(),
        );
        assert_eq!(x.keys().count(), y.keys().count(), "{b}");
        for (k, ta) in x.entries() {
            let tb = y.get(k).unwrap_or_else(|| panic!("{b}: missing {k}"));
            let d = (ta - tb).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{b}: {k}");
        }
    }
    let ckpt = idflow_models::io::checkpoint::StateDict::from_file(out.join("checkpoint.safetensors")).unwrap();
    assert!(ckpt.keys().any(|k| k.starts_with("ema.eps_model.")) && ckpt.keys().any(|k| k.starts_with("exp_avg_sq.")));
}
