//! The restricted pickle VM behind verification `.bin` files on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idflow_formats_fuzz::verification_bin(data);
});
