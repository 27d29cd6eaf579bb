//! TFRecord framing + tf.train.Example decoding on arbitrary bytes: errors, never panics.
#![no_main]
use idflow_dataset::formats::tfrecord::{decode_example, parse_records};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.tfrecord");
    // Records after a checksum failure are unreachable, so also try the payload decoder directly.
    let _ = decode_example(data, path, 0);
    if let Ok(records) = parse_records(data, path) {
        for (off, payload) in records {
            let _ = decode_example(&payload, path, off);
        }
    }
});
