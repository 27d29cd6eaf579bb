//! Context files (IDiff-Face dict, numpy 1 and 2 spellings; ADMIS plain .npy) and .npy writing.

mod formats_common;

use formats_common::{f32s, reference, safetensor};
use idflow_dataset::formats::contexts::{self, read_contexts};
use idflow_dataset::formats::npy::{read_npy, write_npy, NpyData};
use idflow_dataset::formats::FormatError;

#[test]
fn dict_contexts_read_exactly_in_both_numpy_spellings() {
    let (_, shape, bytes) = safetensor(&reference("contexts_dict.safetensors"), "contexts");
    assert_eq!(shape, vec![5, 512]);
    let expected = f32s(&bytes);
    for file in ["contexts_dict.npy", "contexts_dict_numpy2.npy"] {
        let c = read_contexts(&reference(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.names, vec!["0", "1", "2", "3", "4"], "{file}");
        assert_eq!(c.dim, 512);
        assert_eq!(c.renormalised, 0, "{file}: rows are already unit norm");
        assert_eq!(c.values.len(), expected.len());
        for (a, b) in c.values.iter().zip(&expected) {
            assert_eq!(a.to_bits(), b.to_bits(), "{file}");
        }
    }
}

#[test]
fn plain_npy_is_normalised_exactly_like_admis() {
    let st = reference("contexts_dict.safetensors");
    let raw = f32s(&safetensor(&st, "plain_raw").2);
    let normalized = f32s(&safetensor(&st, "plain_normalized").2);
    let arr = read_npy(&reference("contexts_plain.npy")).unwrap();
    assert_eq!(arr.shape, vec![5, 512]);
    assert_eq!(arr.data, NpyData::F32(raw));
    let c = read_contexts(&reference("contexts_plain.npy")).unwrap();
    assert_eq!(c.names.len(), 5);
    assert_eq!(c.renormalised, 5);
    let mismatches = c.values.iter().zip(&normalized).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(mismatches, 0, "values differ from numpy's float32 normalisation");
}

#[test]
fn pairwise_sum_matches_numpy_structure() {
    // exact small cases: below 8 sequential, 8..128 eight accumulators, above recursive halves
    let v: Vec<f32> = (0..300).map(|i| 1.0 + (i as f32) * 1e-3).collect();
    let seq: f32 = v.iter().sum();
    let pw = contexts::pairwise_sum_f32(&v);
    assert!((pw - seq).abs() < 1e-3);
    assert_eq!(contexts::pairwise_sum_f32(&[1.0, 2.0, 3.0]), 6.0);
}

#[test]
fn npy_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ctx.npy");
    let values: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_npy(&p, 3, 7, &values).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0);
    let arr = read_npy(&p).unwrap();
    assert_eq!(arr.shape, vec![3, 7]);
    assert_eq!(arr.data, NpyData::F32(values.clone()));
    let c = read_contexts(&p).unwrap();
    assert_eq!(c.renormalised, 3);
    for r in 0..3 {
        let n: f32 = c.row(r).unwrap().iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-6);
    }
    // truncated data
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let err = read_npy(&cut).unwrap_err();
    assert!(err.to_string().contains("cut.npy") && err.to_string().contains("truncated"), "{err}");
    // fortran order
    let fort = dir.path().join("f.npy");
    let mut h = bytes.clone();
    let pos = h.windows(5).position(|w| w == b"False").unwrap();
    h[pos..pos + 5].copy_from_slice(b"True ");
    std::fs::write(&fort, &h).unwrap();
    assert!(matches!(read_npy(&fort), Err(FormatError::Unsupported { .. })));
    // wrong magic
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPX\x01\x00\x00\x00").unwrap();
    assert!(matches!(read_npy(&bad), Err(FormatError::Corrupt { offset: 0, .. })));
    let err = read_contexts(&bad).unwrap_err();
    assert!(err.to_string().contains("bad.npy"), "{err}");
    // zero row
    let z = dir.path().join("z.npy");
    write_npy(&z, 2, 2, &[1.0, 0.0, 0.0, 0.0]).unwrap();
    assert!(read_contexts(&z).unwrap_err().to_string().contains("row 1"));
}

#[test]
fn truncated_dict_contexts_fail_cleanly() {
    let full = std::fs::read(reference("contexts_dict.npy")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ctx_cut.npy");
    for len in [4, 100, full.len() / 2, full.len() - 10] {
        std::fs::write(&p, &full[..len]).unwrap();
        let err = read_contexts(&p).unwrap_err();
        assert!(err.to_string().contains("ctx_cut.npy"), "{err}");
    }
}
