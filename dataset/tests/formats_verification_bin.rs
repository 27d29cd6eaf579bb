//! Verification `.bin` files: the Python 3 (protocol 5) and Python 2 (protocol 2) references,
//! round trips in both byte spellings, hostile and damaged files.

mod formats_common;

use formats_common::{reference, safetensor};
use idflow_dataset::formats::pickle::BytesStyle;
use idflow_dataset::formats::verification_bin::{read_bin, write_bin, write_bin_with_style};
use idflow_dataset::formats::FormatError;

#[test]
fn python3_bin_reads_and_decodes_to_reference_pixels() {
    let bin = read_bin(&reference("tiny_verification.bin")).unwrap();
    assert_eq!(bin.images.len(), 120);
    assert_eq!(bin.pairs(), 60);
    let expected = reference("tiny_verification_expected.safetensors");
    let (_, _, issame) = safetensor(&expected, "issame");
    assert_eq!(bin.issame, issame.iter().map(|&b| b != 0).collect::<Vec<_>>());
    let (_, shape, pixels) = safetensor(&expected, "decoded_first4_hwc_uint8");
    assert_eq!(shape, vec![4, 112, 112, 3]);
    let per = 112 * 112 * 3;
    let mut max_diff = 0u8;
    let mut differing = 0usize;
    for i in 0..4 {
        let img = image::load_from_memory(&bin.images[i]).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (112, 112));
        for (a, b) in img.as_raw().iter().zip(&pixels[i * per..(i + 1) * per]) {
            let d = a.abs_diff(*b);
            max_diff = max_diff.max(d);
            differing += usize::from(d != 0);
        }
    }
    // The README allows ±1 between JPEG decoders (reference: libjpeg-turbo via Pillow). The
    // `image` crate's decoder (zune-jpeg) rounds its IDCT differently: measured max 2, on under
    // 1% of the values; anything beyond that is a decoding bug.
    assert!(max_diff <= 2, "max pixel difference {max_diff} ({differing} values differ)");
    assert!(differing * 100 < 4 * per, "{differing} of {} values differ", 4 * per);
    eprintln!("decoded pixels: max |diff| {max_diff}, {differing} of {} values differ", 4 * per);
}

#[test]
fn python2_bin_matches_first_ten_pairs() {
    let py3 = read_bin(&reference("tiny_verification.bin")).unwrap();
    let py2 = read_bin(&reference("tiny_verification_py2.bin")).unwrap();
    assert_eq!(py2.pairs(), 10);
    assert_eq!(py2.images[..], py3.images[..20]);
    assert_eq!(py2.issame[..], py3.issame[..10]);
}

#[test]
fn write_then_read_round_trips_in_both_spellings() {
    let src = read_bin(&reference("tiny_verification.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.bin");
    write_bin(&p, &src.images, &src.issame).unwrap();
    assert_eq!(read_bin(&p).unwrap(), src);
    let p2 = dir.path().join("out_py2.bin");
    write_bin_with_style(&p2, &src.images, &src.issame, BytesStyle::Py2Str).unwrap();
    assert_eq!(read_bin(&p2).unwrap(), src);
    // no temporary files left behind
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // mismatched counts are refused before anything is written
    let bad = dir.path().join("bad.bin");
    assert!(write_bin(&bad, &src.images[..3], &src.issame[..2]).is_err());
    assert!(!bad.exists());
}

#[test]
fn damaged_and_hostile_bins_are_clear_errors() {
    let full = std::fs::read(reference("tiny_verification_py2.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.bin");
    for len in [0, 1, 2, 50, full.len() / 3, full.len() - 1] {
        std::fs::write(&p, &full[..len]).unwrap();
        let err = read_bin(&p).unwrap_err();
        assert!(err.to_string().contains("cut.bin"), "{err}");
    }
    let evil = dir.path().join("evil.bin");
    std::fs::write(&evil, b"\x80\x02csubprocess\ncheck_output\n]\x85R.").unwrap();
    let err = read_bin(&evil).unwrap_err();
    assert!(matches!(&err, FormatError::ForbiddenGlobal { global, offset: 2, .. } if global == "subprocess.check_output"));
    let wrong = dir.path().join("wrong.bin");
    std::fs::write(&wrong, b"\x80\x02]\x85.").unwrap();
    assert!(read_bin(&wrong).unwrap_err().to_string().contains("expected 2"));
    std::fs::write(&wrong, b"\x80\x02]C\x01aa]\x86.").unwrap();
    assert!(read_bin(&wrong).unwrap_err().to_string().contains("images for"));
    std::fs::write(&wrong, b"\x80\x02]\x00.").unwrap();
    assert!(matches!(read_bin(&wrong), Err(FormatError::PickleOpcode { offset: 3, opcode: 0, .. })));
}
