//! RecordIO framing + IRHeader parsing on arbitrary bytes: errors, never panics.
#![no_main]
use idflow_dataset::formats::recordio::{parse_records, unpack};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.rec");
    let _ = unpack(data, path, 0);
    if let Ok(records) = parse_records(data, path) {
        for (off, payload) in records {
            let _ = unpack(&payload, path, off);
        }
    }
});
