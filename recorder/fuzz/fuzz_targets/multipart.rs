//! Any bytes as a Content-Type line and a multipart body: the first line is the header value, the rest
//! the body. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recall_recorder::multipart::{self, ContentType};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    if let Ok(content_type) = ContentType::parse(&String::from_utf8_lossy(header)) {
        let _ = multipart::split(&content_type, body);
    }
    let _ = multipart::split_with_boundary("uniqueBoundary", data);
});
