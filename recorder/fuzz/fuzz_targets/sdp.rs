//! Any bytes as an SDP offer, and the recording server's answer to whatever parses. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recall_recorder::sdp::{self, AnswerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = sdp::parse(data) else { return };
    let config = AnswerConfig { address: [192, 0, 2, 1].into(), session_id: 1, session_version: 1 };
    let ports: Vec<Option<u16>> = (0..offer.media.len()).map(|i| (i % 3 != 2).then_some(10_000 + i as u16)).collect();
    let _ = sdp::answer(&offer, &config, &ports);
});
