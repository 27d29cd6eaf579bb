//! VQ-f4 first stage against the official outputs (`vq_tiny_*`).

mod common;

use candle_core::DType;
use common::{assert_close, get, load_io, reference};
use idflow_models::io::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::traits::FirstStage;
use idflow_models::vq::{VqConfig, VqDecoder, VqEncoder, VqModel};

fn tiny_config() -> VqConfig {
    idflow_models::io::presets::reference_tiny_vq()
}

fn load() -> VqModel {
    let cfg = tiny_config();
    let enc = StateDict::from_torch_file(reference("vq_tiny_first_stage_encoder_state_dict.pt")).unwrap();
    let dec = StateDict::from_torch_file(reference("vq_tiny_first_stage_decoder_state_dict.pt")).unwrap();
    assert_eq!((enc.len(), dec.len()), (88, 113));
    let (encoder, er) = load_model(&enc, &LoadOptions::default(), |vb| VqEncoder::new(&cfg, vb)).unwrap();
    // the codebook size comes from the stored codebook
    let n_embed = dec.get("quantize.embedding.weight").unwrap().dim(0).unwrap();
    assert_eq!(n_embed, 64);
    let (decoder, dr) = load_model(&dec, &LoadOptions::default(), |vb| VqDecoder::new(&cfg, n_embed, vb)).unwrap();
    for r in [&er, &dr] {
        assert!(r.missing.is_empty() && r.unexpected.is_empty() && r.outside_prefix.is_empty());
    }
    assert_eq!((er.consumed.len(), dr.consumed.len()), (88, 113));
    VqModel { encoder, decoder, force_not_quantize: false }
}

#[test]
fn tiny_vq_matches_official_outputs() {
    let vq = load();
    let io = load_io("vq_tiny_io.safetensors");
    let h = vq.encode(get(&io, "x")).unwrap();
    assert_close("h", &h, get(&io, "h"), 1e-4);

    let q = vq.decoder.quantizer();
    let z = get(&io, "z");
    let idx = q.indices(z).unwrap().to_dtype(DType::I64).unwrap();
    assert_eq!(
        idx.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        get(&io, "z_q_indices").flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        "z code indices"
    );
    let (zq, _) = q.quantize(z).unwrap();
    assert_close("z_q", &zq, get(&io, "z_q"), 1e-6);
    let h_idx = q.indices(get(&io, "h")).unwrap().to_dtype(DType::I64).unwrap();
    assert_eq!(
        h_idx.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        get(&io, "h_q_indices").flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        "h code indices"
    );

    assert_close("decoded_quantized", &vq.decode(z).unwrap(), get(&io, "decoded_quantized"), 1e-4);
    let raw = vq.decoder.decode(z, true).unwrap();
    assert_close("decoded_not_quantized", &raw, get(&io, "decoded_not_quantized"), 1e-4);
    assert_close("decoded_h_quantized", &vq.decode(get(&io, "h")).unwrap(), get(&io, "decoded_h_quantized"), 1e-4);
}
