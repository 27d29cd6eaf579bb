//! MXNet RecordIO: framing (incl. magic splitting), IRHeader, insightface layout round trip,
//! damaged files.

use std::io::Cursor;
use std::path::Path;

use idflow_dataset::formats::recordio::{
    encode_record, pack, read_property, read_record, unpack, IrHeader, RecordIoFaceWriter, RecordIoReader, MAGIC,
};
use idflow_dataset::formats::FormatError;

fn roundtrip(payload: &[u8]) -> Vec<u8> {
    let framed = encode_record(payload).unwrap();
    assert_eq!(framed.len() % 4, 0);
    let (out, used) = read_record(&mut Cursor::new(&framed), Path::new("m.rec"), 0, framed.len() as u64).unwrap();
    assert_eq!(used, framed.len() as u64);
    out
}

#[test]
fn framing_matches_dmlc_layout() {
    // plain 5-byte record: magic, lrecord = 5, data, 3 zero bytes of padding
    let f = encode_record(b"hello").unwrap();
    let mut expect = MAGIC.to_le_bytes().to_vec();
    expect.extend_from_slice(&5u32.to_le_bytes());
    expect.extend_from_slice(b"hello\0\0\0");
    assert_eq!(f, expect);
    // payload with the magic at aligned offset 4: split into cflag 1 (4 bytes) and 3 (rest)
    let m = MAGIC.to_le_bytes();
    let mut p = b"abcd".to_vec();
    p.extend_from_slice(&m);
    p.extend_from_slice(b"xyz");
    let f = encode_record(&p).unwrap();
    let w1 = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    assert_eq!((w1 >> 29, w1 & ((1 << 29) - 1)), (1, 4));
    let w2 = u32::from_le_bytes([f[16], f[17], f[18], f[19]]);
    assert_eq!((w2 >> 29, w2 & ((1 << 29) - 1)), (3, 3));
    assert_eq!(roundtrip(&p), p);
    // magic at 0, twice in a row, at the end, and unaligned (not split)
    for p in [
        [m.as_slice(), b"tail"].concat(),
        [m.as_slice(), m.as_slice(), m.as_slice()].concat(),
        [b"head".as_slice(), m.as_slice()].concat(),
        [b"h".as_slice(), m.as_slice(), b"xyz".as_slice()].concat(),
        vec![],
    ] {
        assert_eq!(roundtrip(&p), p);
    }
}

#[test]
fn irheader_pack_unpack() {
    let h = IrHeader { flag: 0, label: vec![17.0], id: 5, id2: 0 };
    let rec = pack(&h, b"JPEG");
    assert_eq!(rec.len(), 24 + 4);
    let (h2, img) = unpack(&rec, Path::new("x.rec"), 0).unwrap();
    assert_eq!((h2, img), (h, b"JPEG".as_slice()));
    let h = IrHeader { flag: 2, label: vec![3.0, 9.0], id: 0, id2: 0 };
    let packed = pack(&h, &[]);
    let (h2, img) = unpack(&packed, Path::new("x.rec"), 0).unwrap();
    assert_eq!((h2, img.len()), (h, 0));
    let err = unpack(&[0u8; 10], Path::new("x.rec"), 96).unwrap_err();
    assert!(err.to_string().contains("x.rec") && err.to_string().contains("byte 96"));
    let mut lie = pack(&IrHeader { flag: 0, label: vec![1.0], id: 1, id2: 0 }, &[]);
    lie[0] = 200; // flag says 200 labels follow
    assert!(unpack(&lie, Path::new("x.rec"), 0).is_err());
}

fn dataset(dir: &Path) -> Vec<(usize, Vec<u8>)> {
    let mut w = RecordIoFaceWriter::create(dir, (112, 112)).unwrap();
    let mut items = Vec::new();
    for identity in 0..5usize {
        for sample in 0..(identity % 3 + 1) {
            let mut img = vec![0xff, 0xd8, identity as u8, sample as u8];
            img.extend_from_slice(&MAGIC.to_le_bytes()); // forces multi-part records
            img.extend((0..(identity * 13 + sample * 7)).map(|i| i as u8));
            w.add(identity, &img).unwrap();
            items.push((identity, img));
        }
    }
    let s = w.finish().unwrap();
    assert_eq!((s.identities, s.images), (5, items.len() as u64));
    items
}

#[test]
fn insightface_layout_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let items = dataset(dir.path());
    assert_eq!(read_property(&dir.path().join("property")).unwrap(), (5, 112, 112));
    let mut r = RecordIoReader::open_dir(dir.path()).unwrap();
    assert_eq!(r.keys().len(), items.len() + 5 + 1);
    // header record: [id_start, id_end) = [N + 1, N + 6)
    let (h0, _) = r.read_image(0).unwrap();
    let n = items.len() as f32;
    assert_eq!((h0.flag, h0.label.clone()), (2, vec![n + 1.0, n + 6.0]));
    let recs = r.records().unwrap();
    assert_eq!(recs.len(), items.len());
    let mut expected_sample = 0;
    for (i, (rec, (identity, img))) in recs.iter().zip(&items).enumerate() {
        assert_eq!(rec.identity, *identity);
        if i > 0 && items[i - 1].0 != *identity {
            expected_sample = 0;
        }
        assert_eq!(rec.sample, expected_sample);
        expected_sample += 1;
        let (h, bytes) = r.read_image(rec.key).unwrap();
        assert_eq!(h.label, vec![*identity as f32]);
        assert_eq!(&bytes, img);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn damaged_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let rec = dir.path().join("train.rec");
    let good = std::fs::read(&rec).unwrap();
    // wrong magic at the first record
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&rec, &bad).unwrap();
    let mut r = RecordIoReader::open_dir(dir.path()).unwrap();
    let err = r.read_idx(1).unwrap_err();
    assert!(matches!(err, FormatError::Corrupt { offset: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("train.rec") && err.to_string().contains("magic"), "{err}");
    // a length word that runs past the end
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&((1u32 << 29) - 1).to_le_bytes());
    std::fs::write(&rec, &bad).unwrap();
    let err = RecordIoReader::open_dir(dir.path()).unwrap().read_idx(1).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    // truncation: every record either reads or fails cleanly
    for cut in (0..good.len()).step_by(7) {
        std::fs::write(&rec, &good[..cut]).unwrap();
        match RecordIoReader::open_dir(dir.path()) {
            Ok(mut r) => {
                let _ = r.records();
                for k in r.keys().to_vec() {
                    let _ = r.read_idx(k);
                }
            }
            Err(e) => assert!(e.to_string().contains("train")),
        }
    }
    // bad index line
    std::fs::write(&rec, &good).unwrap();
    std::fs::write(dir.path().join("train.idx"), "1\tnot-a-number\n").unwrap();
    let err = RecordIoReader::open_dir(dir.path()).err().unwrap();
    assert!(err.to_string().contains("train.idx") && err.to_string().contains("line 1"), "{err}");
    // writer refuses identities out of order
    let d2 = tempfile::tempdir().unwrap();
    let mut w = RecordIoFaceWriter::create(d2.path(), (112, 112)).unwrap();
    w.add(0, b"a").unwrap();
    assert!(w.add(2, b"b").is_err());
}
