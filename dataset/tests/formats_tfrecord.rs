//! TFRecord shards: framing, Example payloads, sharding, index files, damage detection.

use idflow_dataset::formats::tfrecord::{
    decode_example, encode_example, encode_record, masked_crc32c, read_converted_index, read_index, read_record_at, shard_path,
    TfRecordReader, TfRecordShardWriter, RECORD_OVERHEAD,
};
use idflow_dataset::formats::FormatError;

fn fake_image(i: usize) -> Vec<u8> {
    let mut v = vec![0xff, 0xd8];
    v.extend((0..(i * 37) % 500 + 1).map(|j| (i * 31 + j) as u8));
    v
}

#[test]
#[allow(clippy::manual_rotate)]
fn masked_crc_matches_the_published_definition() {
    // CRC-32C check value of "123456789" is 0xE3069283; TFRecord rotates right by 15 and adds.
    let crc: u32 = 0xe306_9283;
    assert_eq!(masked_crc32c(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
    let r = encode_record(b"abc");
    assert_eq!(r.len(), 3 + RECORD_OVERHEAD as usize);
    assert_eq!(&r[..8], &3u64.to_le_bytes());
    assert_eq!(&r[12..15], b"abc");
}

#[test]
fn sharded_round_trip_with_index_and_random_access() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TfRecordShardWriter::create(dir.path(), "faces", 10).unwrap();
    let mut expect = Vec::new();
    for i in 0..25 {
        let key = format!("{}/{}.jpg", i / 4, i % 4);
        let img = fake_image(i);
        let loc = w.write(&key, &img, (i / 4) as i64).unwrap();
        expect.push((key, img, (i / 4) as i64, loc));
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.records, 25);
    assert_eq!(summary.shards.len(), 3);
    assert_eq!(summary.shards[2], shard_path(dir.path(), "faces", 2));
    assert!(summary.shards[0].ends_with("faces-00000.tfrecord"));
    // sequential read
    let mut all = Vec::new();
    for s in &summary.shards {
        let mut prev_end = 0;
        for rec in TfRecordReader::open(s).unwrap() {
            let (off, payload) = rec.unwrap();
            assert_eq!(off, prev_end, "offsets advance by len + 16");
            prev_end = off + payload.len() as u64 + RECORD_OVERHEAD;
            all.push(decode_example(&payload, s, off).unwrap());
        }
    }
    assert_eq!(all.len(), 25);
    for (ex, (_, img, label, _)) in all.iter().zip(&expect) {
        assert_eq!(&ex.image, img);
        assert_eq!(ex.label, Some(*label));
    }
    // index + random access, in reverse order
    let index = read_index(&summary.index).unwrap();
    assert_eq!(index.len(), 25);
    for (e, (key, img, label, (shard, offset))) in index.iter().zip(&expect).rev() {
        assert_eq!((&e.key, e.shard, e.offset), (key, *shard, *offset));
        let path = &summary.shards[e.shard];
        let mut f = std::fs::File::open(path).unwrap();
        let ex = decode_example(&read_record_at(&mut f, path, e.offset).unwrap(), path, e.offset).unwrap();
        assert_eq!((&ex.image, ex.label), (img, Some(*label)));
    }
    // deterministic bytes: writing again gives identical shards
    let dir2 = tempfile::tempdir().unwrap();
    let mut w2 = TfRecordShardWriter::create(dir2.path(), "faces", 10).unwrap();
    for (key, img, label, _) in &expect {
        w2.write(key, img, *label).unwrap();
    }
    let s2 = w2.finish().unwrap();
    for (a, b) in summary.shards.iter().zip(&s2.shards) {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    // only the shards and the index exist (no temporaries)
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[test]
fn flipped_bits_and_truncation_name_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TfRecordShardWriter::create(dir.path(), "d", 100).unwrap();
    for i in 0..3 {
        w.write(&i.to_string(), &fake_image(i), 0).unwrap();
    }
    let shard = w.finish().unwrap().shards[0].clone();
    let good = std::fs::read(&shard).unwrap();
    let second = read_index(&dir.path().join("d.index")).unwrap()[1].offset;
    // flip one payload bit of record 1
    let mut bad = good.clone();
    bad[second as usize + 20] ^= 0x04;
    std::fs::write(&shard, &bad).unwrap();
    let results: Vec<_> = TfRecordReader::open(&shard).unwrap().collect();
    assert_eq!(results.len(), 2, "reader stops at the damaged record");
    assert!(results[0].is_ok());
    match results[1].as_ref().unwrap_err() {
        FormatError::Checksum { offset, what, path, .. } => {
            assert_eq!((*offset, *what), (second, "payload"));
            assert_eq!(path, &shard);
        }
        other => panic!("{other:?}"),
    }
    let msg = results[1].as_ref().unwrap_err().to_string();
    assert!(msg.contains("d-00000.tfrecord") && msg.contains(&format!("byte {second}")), "{msg}");
    // flip a bit in the length field
    let mut bad = good.clone();
    bad[second as usize + 1] ^= 0x01;
    std::fs::write(&shard, &bad).unwrap();
    let mut f = std::fs::File::open(&shard).unwrap();
    let err = read_record_at(&mut f, &shard, second).unwrap_err();
    assert!(matches!(err, FormatError::Checksum { what: "length", .. }), "{err:?}");
    // truncation at every length
    for cut in 1..good.len() {
        std::fs::write(&shard, &good[..cut]).unwrap();
        let r: Result<Vec<_>, _> = TfRecordReader::open(&shard).unwrap().collect();
        let reached_end_cleanly = r.is_ok();
        if reached_end_cleanly {
            // the cut fell exactly on a record boundary
            let n = r.unwrap().iter().map(|(_, p)| p.len() + 16).sum::<usize>();
            assert_eq!(n, cut);
        } else {
            assert!(r.unwrap_err().to_string().contains("d-00000.tfrecord"));
        }
    }
    // garbage instead of a record
    std::fs::write(&shard, b"this is not a tfrecord file at all").unwrap();
    let err = TfRecordReader::open(&shard).unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, FormatError::Checksum { offset: 0, .. }));
    // offset past the end
    let mut f = std::fs::File::open(&shard).unwrap();
    assert!(read_record_at(&mut f, &shard, 1 << 40).is_err());
}

#[test]
fn example_payload_errors_and_converted_index() {
    let p = std::path::Path::new("x.tfrecord");
    let ex = decode_example(&encode_example(b"img", None), p, 0).unwrap();
    assert_eq!(ex.label, None);
    assert!(decode_example(b"\xff\xff\xff", p, 64).unwrap_err().to_string().contains("byte 64"));
    assert!(decode_example(&[], p, 0).unwrap_err().to_string().contains("no 'image'"));

    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("conv.txt");
    std::fs::write(&idx, "train-00000.tfrecord\t0\t0\t5\ntrain-00000.tfrecord\t1\t1234\t7\n").unwrap();
    let e = read_converted_index(&idx).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!((e[1].tfr_name.as_str(), e[1].idx, e[1].offset, e[1].label), ("train-00000.tfrecord", 1, 1234, 7));
    std::fs::write(&idx, "a\tb\n").unwrap();
    assert!(read_converted_index(&idx).unwrap_err().to_string().contains("line 1"));
    assert!(read_index(&idx).is_err());
}
