//! Any bytes as a SIP message over either transport, then everything built on a parsed one: the offer,
//! the channel rule and a response. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recall_recorder::sip::{self, ResponseParts, Transport};
use recall_recorder::siprec;

fuzz_target!(|data: &[u8]| {
    let _ = sip::stream_message_len(data);
    for transport in [Transport::Datagram, Transport::Stream] {
        let Ok(message) = sip::parse(data, transport) else { continue };
        if message.is_request() {
            let parts = ResponseParts { to_tag: Some("fuzz"), ..Default::default() };
            let _ = sip::build_response(&message, 200, "OK", &parts);
        }
        if let Ok(offer) = siprec::recording_offer(&message) {
            let _ = offer.assign_channels(|aor| aor.len() % 2 == 0);
        }
    }
});
