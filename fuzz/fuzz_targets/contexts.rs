//! Context files (torch zip dict or .npy) on arbitrary bytes.
#![no_main]
use idflow_dataset::formats::contexts::parse_contexts;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = parse_contexts(data.to_vec(), Path::new("fuzz_contexts.npy"));
});
