//! `encode-latent` against the reference first stage: PNG faces through `read` →
//! `encode-latent` (tiny VQ encoder fixture) → Parquet give the official encoder's latents of
//! the same images (the fixture's `h`, computed in PyTorch from float inputs; the PNGs carry
//! those inputs rounded to 8 bits, hence the tolerance).

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use common::{read_batches, reference, run_pipeline};

#[test]
fn encode_latent_matches_the_reference_encoder() {
    let encoder = reference("vq_tiny_first_stage_encoder_state_dict.pt");
    let io = reference("vq_tiny_io.safetensors");
    let tensors = candle_core::safetensors::load(&io, &candle_core::Device::Cpu).unwrap();
    let x: Vec<f32> = tensors["x"].flatten_all().unwrap().to_vec1().unwrap();
    let h: Vec<f32> = tensors["h"].flatten_all().unwrap().to_vec1().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (side, plane) = (32u32, 32 * 32);
    for n in 0..2 {
        let img = image::RgbImage::from_fn(side, side, |px, py| {
            let i = (py * side + px) as usize;
            image::Rgb(std::array::from_fn(|c| ((x[n * 3 * plane + c * plane + i] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8))
        });
        let d = dir.path().join("faces").join(format!("person_{n}"));
        std::fs::create_dir_all(&d).unwrap();
        img.save(d.join("0.png")).unwrap();
    }
    let text = format!(
        "name: enc\nseed: 1\nworkers: 1\nnodes:\n  faces:\n    op: read\n    root: {}\n  latents:\n    op: encode-latent\n    input: faces\n    first_stage: {{checkpoint: {}, config: reference-tiny}}\n    size: 32\n  out:\n    op: write-records\n    input: latents\n    path: {}\n    columns: [identity, latent]\n",
        dir.path().join("faces").display(),
        encoder.display(),
        dir.path().join("out").display()
    );
    run_pipeline(dir.path(), "p.yaml", &text);
    let mut rows = Vec::new();
    for b in read_batches(&dir.path().join("out")) {
        let id = b.column_by_name("identity").unwrap().as_primitive::<UInt32Type>();
        let lat = b.column_by_name("latent").unwrap().as_fixed_size_list();
        for i in 0..b.num_rows() {
            rows.push((id.value(i), lat.value(i).as_primitive::<Float32Type>().values().to_vec()));
        }
    }
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows.len(), 2);
    let scale = h.iter().map(|v| v.abs()).fold(0f32, f32::max);
    for (n, (_, latent)) in rows.iter().enumerate() {
        assert_eq!(latent.len(), 3 * 8 * 8);
        let want = &h[n * 192..(n + 1) * 192];
        let diff = latent.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 0.02 * scale, "image {n}: latent differs from the reference by {diff} (scale {scale})");
    }
}
