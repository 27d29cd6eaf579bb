//! `train` with `task: autoencoder` on toy faces, then `encode-latent` with the trained encoder:
//! the reconstruction loss falls, the split first-stage files load as IDiff-Face's, and the
//! encoder feeds the latent pipeline.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use common::{epoch_losses, read_batches, run_pipeline, NO_NUISANCE};
use idflow_models::io::checkpoint::LoadOptions;
use idflow_models::vq::VqConfig;

/// A small VQ-f2 first stage, as JSON (also a YAML flow mapping for the pipelines).
const VQ: &str = r#"{"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "in_channels": 3, "out_ch": 3, "z_channels": 3, "embed_dim": 3, "resolution": 16, "attn_resolutions": []}"#;

fn vq() -> VqConfig {
    serde_json::from_str(VQ).unwrap()
}

#[test]
fn vq_first_stage_trains_and_feeds_encode_latent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vq");
    let faces = format!(
        "  faces:\n    op: toy-faces\n    identities: 4\n    images_per_identity: 4\n    size: 16\n    difficulty: {NO_NUISANCE}\n"
    );
    let text = format!(
        "name: train-vq\nseed: 2\nworkers: 2\nnodes:\n{faces}  trained:\n    op: train\n    input: faces\n    task: autoencoder\n    first_stage: {VQ}\n    n_embed: 32\n    codebook_decay: 0.9\n    size: 16\n    lr: {{type: constant, lr: 0.002}}\n    batch_size: 8\n    epochs: 12\n    output: {}\n  stats:\n    op: write-records\n    input: trained\n    path: {}\n",
        out.display(),
        dir.path().join("stats").display()
    );
    run_pipeline(dir.path(), "train.yaml", &text);
    let rows = epoch_losses(&dir.path().join("stats"));
    assert_eq!(rows.len(), 12);
    assert!(rows[11].1 < 0.5 * rows[0].1, "reconstruction loss did not halve: {rows:?}");
    let enc = out.join("first_stage_encoder_state_dict.safetensors");
    let dec = out.join("first_stage_decoder_state_dict.safetensors");
    let model =
        idflow_models::io::pretrained::load_vq_first_stage(&enc, &dec, &vq(), &LoadOptions::default()).expect("split files load strictly");
    assert_eq!(model.decoder.quantizer().codebook_shape(), (32, 3));
    // the torch.save split files load strictly too
    let (enc_pt, dec_pt) = (out.join("first_stage_encoder_state_dict.pt"), out.join("first_stage_decoder_state_dict.pt"));
    let from_pt =
        idflow_models::io::pretrained::load_vq_first_stage(&enc_pt, &dec_pt, &vq(), &LoadOptions::default()).expect(".pt files load");
    assert_eq!(from_pt.decoder.quantizer().codebook_shape(), (32, 3));
    // the trained encoder drives encode-latent
    let text = format!(
        "name: enc\nseed: 2\nworkers: 1\nnodes:\n{faces}  latents:\n    op: encode-latent\n    input: faces\n    first_stage: {{checkpoint: {}, config: {VQ}}}\n    size: 16\n  out:\n    op: write-records\n    input: latents\n    path: {}\n    columns: [identity, latent]\n",
        enc.display(),
        dir.path().join("latents").display()
    );
    run_pipeline(dir.path(), "enc.yaml", &text);
    let mut n = 0;
    for b in read_batches(&dir.path().join("latents")) {
        let lat = b.column_by_name("latent").unwrap().as_fixed_size_list();
        assert_eq!(lat.value_length(), 3 * 8 * 8);
        for i in 0..b.num_rows() {
            assert!(lat.value(i).as_primitive::<Float32Type>().values().iter().all(|v| v.is_finite()));
            n += 1;
        }
    }
    assert_eq!(n, 16);
}
