//! What the recorder's tests share: waiting for a condition, a backoff short enough for tests, and the
//! SBC-shaped fixtures in tests/fixtures: each is a whole SIP message written with LF line ends and a
//! `{len}` placeholder, turned here into CRLF or bare-LF bytes with the right Content-Length.
#![allow(dead_code)]

use std::time::Duration;

pub mod decode;

use recall_recorder::upload::Backoff;
use uuid::Uuid;

/// The tenant the tests' calls belong to.
pub const TENANT: Uuid = Uuid::from_u128(0x7e);

/// Waits until `done`, failing the test after `limit`.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries after 50 ms, at most 200 ms apart.
pub fn fast() -> Backoff {
    Backoff { first: Duration::from_millis(50), max: Duration::from_millis(200) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnds {
    Crlf,
    Lf,
}

/// Every fixture, for the tests that run over all of them.
pub const ALL: [&str; 11] = [
    "cisco_cube.sip",
    "cisco_inactive.sip",
    "oracle_acme.sip",
    "ribbon_sonus.sip",
    "audiocodes.sip",
    "audiocodes_update.sip",
    "avaya_sbce.sip",
    "drachtio_single_stream.sip",
    "compact_udp.sip",
    "plain_sip.sip",
    "plain_hold.sip",
];

pub fn fixture(name: &str, line_ends: LineEnds) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}")).replace("\r\n", "\n");
    let (text, separator) = match line_ends {
        LineEnds::Crlf => (text.replace('\n', "\r\n"), "\r\n\r\n"),
        LineEnds::Lf => (text, "\n\n"),
    };
    let (head, body) = text.split_once(separator).unwrap_or_else(|| panic!("{name} has no empty line"));
    let head = head.replace("{len}", &body.len().to_string());
    format!("{head}{separator}{body}").into_bytes()
}

/// The body part of a fixture whose content type is `essence`, with LF line ends.
pub fn part(name: &str, essence: &str) -> Vec<u8> {
    let bytes = fixture(name, LineEnds::Lf);
    let message = recall_recorder::sip::parse(&bytes, recall_recorder::sip::Transport::Stream).expect("fixture parses");
    let content_type = message.content_type().expect("fixture has a content type");
    let parts = recall_recorder::multipart::split(content_type, message.body()).expect("fixture body splits");
    parts.find(&[essence]).expect("fixture has the part").body.to_vec()
}
