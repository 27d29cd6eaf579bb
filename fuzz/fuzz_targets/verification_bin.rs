//! The restricted pickle VM behind verification `.bin` files on arbitrary bytes.
#![no_main]
use idflow_dataset::formats::verification_bin::parse_bin;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = parse_bin(data, Path::new("fuzz.bin"));
});
