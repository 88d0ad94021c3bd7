//! Any bytes as a recording metadata document, merged as an update into itself. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recall_recorder::siprec_metadata;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = siprec_metadata::parse(data) else { return };
    let merged = siprec_metadata::merge_update(&metadata, &metadata);
    for stream in &merged.streams {
        if let Some(label) = &stream.label {
            let _ = merged.sender_of_label(label);
        }
    }
});
