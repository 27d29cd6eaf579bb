//! TFRecord framing + tf.train.Example decoding on arbitrary bytes: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idflow_formats_fuzz::tfrecord(data);
});
