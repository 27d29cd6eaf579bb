//! torch.save zip archives (zip + restricted pickle + tensor views) on arbitrary bytes.
#![no_main]
use idflow_dataset::formats::torch_zip::parse_state_dict;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = parse_state_dict(data.to_vec(), Path::new("fuzz.ckpt"));
});
