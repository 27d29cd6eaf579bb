//! Context files (torch zip dict or .npy) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idflow_formats_fuzz::contexts(data);
});
