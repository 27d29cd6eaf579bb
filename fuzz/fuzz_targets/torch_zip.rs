//! torch.save zip archives (zip + restricted pickle + tensor views) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idflow_formats_fuzz::torch_zip(data);
});
