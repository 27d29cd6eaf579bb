//! The entry points of the fuzz targets, one per reader: plain functions of the input bytes.
//!
//! The libFuzzer targets (`fuzz/fuzz_targets/*.rs`, nightly, `fuzz/run.sh`) call them, and so does
//! the stable corpus replay of the test suite (`dataset/tests/formats_fuzz_smoke.rs` includes this
//! file by path), so both run exactly the same reader calls. Each entry returns the first error of
//! the read: the readers must return an error naming the file (`fuzz…`), never panic. The fuzz
//! targets ignore the result; the replay checks it.

use std::path::Path;

use idflow_dataset::formats::contexts::parse_contexts;
use idflow_dataset::formats::torch_zip::parse_state_dict;
use idflow_dataset::formats::verification_bin::parse_bin;
use idflow_dataset::formats::{recordio, tfrecord, FormatError};

/// One entry point: the bytes of one input to the first error of reading them.
pub type Entry = fn(&[u8]) -> Result<(), FormatError>;

/// Every fuzz target by name (the `[[bin]]` names of `fuzz/Cargo.toml`), with its entry point.
pub const TARGETS: [(&str, Entry); 5] = [
    ("tfrecord", tfrecord),
    ("recordio", recordio),
    ("verification_bin", verification_bin),
    ("contexts", contexts),
    ("torch_zip", torch_zip),
];

/// Keeps the first error of `results`; every read still runs, as in the fuzz target.
fn first_error(results: impl Iterator<Item = Result<(), FormatError>>) -> Result<(), FormatError> {
    let mut first = Ok(());
    for r in results {
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// TFRecord framing + `tf.train.Example` decoding. Records after a checksum failure are
/// unreachable through the framing, so the payload decoder also runs on the whole input (that
/// probe's result is not reported: a whole file is rarely one Example).
pub fn tfrecord(data: &[u8]) -> Result<(), FormatError> {
    let path = Path::new("fuzz.tfrecord");
    let _ = tfrecord::decode_example(data, path, 0);
    let records = tfrecord::parse_records(data, path)?;
    first_error(records.into_iter().map(|(off, payload)| tfrecord::decode_example(&payload, path, off).map(|_| ())))
}

/// RecordIO framing + IRHeader parsing (the header parser also runs on the whole input; that
/// probe's result is not reported).
pub fn recordio(data: &[u8]) -> Result<(), FormatError> {
    let path = Path::new("fuzz.rec");
    let _ = recordio::unpack(data, path, 0);
    let records = recordio::parse_records(data, path)?;
    first_error(records.into_iter().map(|(off, payload)| recordio::unpack(&payload, path, off).map(|_| ())))
}

/// The restricted pickle VM behind verification `.bin` files.
pub fn verification_bin(data: &[u8]) -> Result<(), FormatError> {
    parse_bin(data, Path::new("fuzz.bin")).map(|_| ())
}

/// Context files (torch zip dict or `.npy`).
pub fn contexts(data: &[u8]) -> Result<(), FormatError> {
    parse_contexts(data.to_vec(), Path::new("fuzz_contexts.npy")).map(|_| ())
}

/// `torch.save` zip archives (zip + restricted pickle + tensor views).
pub fn torch_zip(data: &[u8]) -> Result<(), FormatError> {
    parse_state_dict(data.to_vec(), Path::new("fuzz.ckpt")).map(|_| ())
}
