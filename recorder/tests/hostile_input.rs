//! Hostile and broken input: entity bombs, deep nesting, oversized documents, truncated bodies, garbage.
//! Every parser must answer with a typed error and never panic; the smoke test at the end feeds a few
//! thousand seeded random and mutated inputs through all of them (the cargo-fuzz targets in fuzz/ do the
//! same without end, on nightly).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{fixture, part, LineEnds, ALL};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recall_recorder::multipart::{self, ContentType, MultipartError};
use recall_recorder::sdp::{self, AnswerConfig};
use recall_recorder::sip::{self, SipError, Transport};
use recall_recorder::siprec::{assign_channels, recording_offer, OfferError};
use recall_recorder::siprec_metadata::{self, merge_update, MetadataError, MAX_DOCUMENT_BYTES};

/// A SIPREC INVITE whose metadata part is `metadata`.
fn invite_with_metadata(metadata: &str) -> Vec<u8> {
    let body = format!(
        "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
         t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n\r\n--b\r\nContent-Type: application/rs-metadata+xml\r\n\r\n\
         {metadata}\r\n--b--\r\n"
    );
    format!(
        "INVITE sip:srs@203.0.113.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-h\r\nFrom: <sip:src@192.0.2.1>;tag=1\r\n\
         To: <sip:srs@203.0.113.20>\r\nCall-ID: hostile@192.0.2.1\r\nCSeq: 1 INVITE\r\nRequire: siprec\r\n\
         Content-Type: multipart/mixed;boundary=b\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn offer_error(bytes: &[u8]) -> OfferError {
    let message = sip::parse(bytes, Transport::Stream).expect("the SIP message itself is fine");
    recording_offer(&message).expect_err("the offer is refused")
}

#[test]
fn entity_bombs_and_external_entities_are_refused_inside_an_invite() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE recording [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="p"><nameID aor="sip:a@b"><name>&d;</name></nameID></participant></recording>"#;
    assert_eq!(offer_error(&invite_with_metadata(bomb)), OfferError::Metadata(MetadataError::Doctype));
    let external = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording>&x;</recording>"#;
    assert_eq!(offer_error(&invite_with_metadata(external)), OfferError::Metadata(MetadataError::Doctype));
    let undeclared = "<recording><datamode>&x;</datamode></recording>";
    assert_eq!(
        offer_error(&invite_with_metadata(undeclared)),
        OfferError::Metadata(MetadataError::UnknownEntity("x".into()))
    );
}

#[test]
fn deep_nesting_many_elements_and_long_texts_are_refused() {
    let deep = "<recording>".to_owned() + &"<x>".repeat(1000) + &"</x>".repeat(1000) + "</recording>";
    assert_eq!(offer_error(&invite_with_metadata(&deep)), OfferError::Metadata(MetadataError::TooDeep));
    // Inside an extension (foreign namespace) the depth still counts.
    let deep_extension = "<recording><e:x xmlns:e='urn:example'>".to_owned()
        + &"<e:x>".repeat(40)
        + &"</e:x>".repeat(40)
        + "</e:x></recording>";
    assert_eq!(siprec_metadata::parse(deep_extension.as_bytes()), Err(MetadataError::TooDeep));
    let many = "<recording>".to_owned() + &"<s/>".repeat(10_001) + "</recording>";
    assert_eq!(siprec_metadata::parse(many.as_bytes()), Err(MetadataError::TooManyElements));
    let long_attribute = format!("<recording><participant participant_id='{}'/></recording>", "p".repeat(5000));
    assert_eq!(siprec_metadata::parse(long_attribute.as_bytes()), Err(MetadataError::TextTooLong));
}

#[test]
fn huge_documents_and_messages_are_refused_before_parsing() {
    let huge = "<recording>".to_owned() + &"<x/>".repeat(MAX_DOCUMENT_BYTES / 4) + "</recording>";
    assert_eq!(siprec_metadata::parse(huge.as_bytes()), Err(MetadataError::TooLarge));
    let padded = "<recording>".to_owned() + &" ".repeat(70 * 1024) + "</recording>";
    assert_eq!(sip::parse(&invite_with_metadata(&padded), Transport::Stream), Err(SipError::TooLarge));
    assert_eq!(sip::stream_message_len(&invite_with_metadata(&padded)), Err(SipError::TooLarge));
}

#[test]
fn truncated_multipart_bodies_are_typed_errors() {
    let complete = String::from_utf8(fixture("cisco_cube.sip", LineEnds::Crlf)).unwrap();
    let (head, body) = complete.split_once("\r\n\r\n").unwrap();
    let truncate = |at: &str| {
        let cut = &body[..body.find(at).unwrap()];
        let head = head.replace(&format!("Content-Length: {}", body.len()), &format!("Content-Length: {}", cut.len()));
        format!("{head}\r\n\r\n{cut}").into_bytes()
    };
    // Cut inside the second part's headers.
    assert_eq!(
        offer_error(&truncate("Disposition: recording-session")),
        OfferError::Multipart(MultipartError::TruncatedPartHeaders(1))
    );
    // Cut inside the metadata document.
    assert!(matches!(offer_error(&truncate("<participantstreamassoc")), OfferError::Metadata(MetadataError::Xml(_))));
    // Cut before the first delimiter.
    assert_eq!(offer_error(&truncate("--uniqueBoundary")), OfferError::Multipart(MultipartError::NoParts));
    // The declared length says more than arrived.
    let short = &complete.as_bytes()[..complete.len() - 10];
    assert!(matches!(sip::parse(short, Transport::Datagram), Err(SipError::BodyTruncated { .. })));
    assert!(matches!(sip::parse(short, Transport::Stream), Err(SipError::ContentLengthMismatch { .. })));
    assert_eq!(sip::stream_message_len(short), Ok(None));
}

#[test]
fn garbage_gives_errors() {
    let garbage: &[&[u8]] =
        &[b"", b"\0\0\0\0", b"\xff\xfe\xfd", b"SIP/2.0", b"INVITE", b"\r\n\r\n\r\n", b"<<<<>>>>", b"v=0"];
    for bytes in garbage {
        assert!(sip::parse(bytes, Transport::Datagram).is_err());
        assert!(siprec_metadata::parse(bytes).is_err());
        assert!(multipart::split_with_boundary("b", bytes).is_err());
    }
    assert!(sdp::parse(b"\xff\xfe").is_err());
    assert!(ContentType::parse("\u{0}/\u{0}").is_err());
}

/// Random bytes, and the fixtures (whole messages, SDP and metadata parts) with random edits.
#[test]
fn seeded_random_and_mutated_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5195_ec00);
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for name in ALL {
        seeds.push(fixture(name, LineEnds::Crlf));
        seeds.push(fixture(name, LineEnds::Lf));
    }
    for name in ["cisco_cube.sip", "oracle_acme.sip", "ribbon_sonus.sip", "audiocodes.sip"] {
        seeds.push(part(name, "application/sdp"));
    }
    for (name, essence) in [
        ("cisco_cube.sip", "application/rs-metadata+xml"),
        ("oracle_acme.sip", "application/rs-metadata+xml"),
        ("ribbon_sonus.sip", "application/rs-metadata+xml"),
        ("audiocodes.sip", "application/rs-metadata"),
        ("drachtio_single_stream.sip", "application/rs-metadata"),
    ] {
        seeds.push(part(name, essence));
    }
    let previous = siprec_metadata::parse(&part("audiocodes.sip", "application/rs-metadata")).unwrap();

    let mut cases = 0;
    for case in 0..4000 {
        let input = if case % 8 == 0 {
            let length = rng.random_range(0..2048);
            (0..length).map(|_| rng.random::<u8>()).collect()
        } else {
            let seed = rng.random_range(0..seeds.len());
            mutate(&mut rng, &seeds[seed])
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&input, &previous)));
        if outcome.is_err() {
            panic!("case {case} panicked on input {:?}", String::from_utf8_lossy(&input));
        }
        cases += 1;
    }
    assert_eq!(cases, 4000);
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    const INTERESTING: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"--",
        b"<",
        b">",
        b"&",
        b"&amp;",
        b"&#x0;",
        b";",
        b"=",
        b":",
        b"\"",
        b"/",
        b"<!DOCTYPE x>",
        b"]]>",
        b"<![CDATA[",
        b"0.0.0.0",
        b"[::1]",
        b"4294967296",
        b"99999",
        b"\xff",
        b"\0",
    ];
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..8) {
        let position = rng.random_range(0..=bytes.len());
        match rng.random_range(0..6) {
            0 => bytes.truncate(position),
            1 => {
                if position < bytes.len() {
                    bytes[position] = rng.random();
                }
            }
            2 => {
                let end = (position + rng.random_range(0..64)).min(bytes.len());
                bytes.drain(position..end);
            }
            3 => {
                let token = INTERESTING[rng.random_range(0..INTERESTING.len())];
                bytes.splice(position..position, token.iter().copied());
            }
            4 => {
                let end = (position + rng.random_range(0..128)).min(bytes.len());
                let copy = bytes[position..end].to_vec();
                bytes.splice(position..position, copy);
            }
            _ => {
                let byte = bytes.get(position).copied().unwrap_or(b'x');
                bytes.insert(position.min(bytes.len()), byte);
            }
        }
    }
    bytes
}

fn exercise(input: &[u8], previous: &siprec_metadata::RecordingMetadata) {
    for transport in [Transport::Datagram, Transport::Stream] {
        if let Ok(message) = sip::parse(input, transport) {
            if message.is_request() {
                let _ = sip::build_response(&message, 486, "Busy Here", &sip::ResponseParts::default());
            }
            if let Ok(offer) = recording_offer(&message) {
                let _ = offer.assign_channels(|aor| aor.contains('1'));
                let ports: Vec<Option<u16>> = (0..offer.sdp.media.len()).map(|i| Some(30000 + i as u16)).collect();
                let config = AnswerConfig { address: [192, 0, 2, 9].into(), session_id: 1, session_version: 1 };
                let _ = sdp::answer(&offer.sdp, &config, &ports);
            }
        }
    }
    let _ = sip::stream_message_len(input);
    if let Ok(description) = sdp::parse(input) {
        let config = AnswerConfig { address: std::net::Ipv6Addr::LOCALHOST.into(), session_id: 2, session_version: 3 };
        let _ = sdp::answer(&description, &config, &vec![Some(5000); description.media.len()]);
    }
    if let Ok(metadata) = siprec_metadata::parse(input) {
        let merged = merge_update(previous, &metadata);
        let _ = assign_channels(&[], Some(&merged), |_| true);
    }
    let text = String::from_utf8_lossy(input);
    if let Ok(content_type) = ContentType::parse(&text) {
        let _ = multipart::split(&content_type, input);
    }
    for boundary in ["uniqueBoundary", "unique-boundary-1", "sonus-content-delim", "b"] {
        let _ = multipart::split_with_boundary(boundary, input);
    }
}

/// A document within every limit but built to make naive lookups cubic: thousands of streams sharing one
/// label, participants and associations. Parsing, merging and assigning channels must stay fast.
#[test]
fn adversarial_metadata_within_the_limits_is_processed_quickly() {
    let mut document = String::from("<recording>");
    for index in 0..1500 {
        document.push_str(&format!("<stream stream_id='s{index}'><label>1</label></stream>"));
    }
    for index in 0..1000 {
        document.push_str(&format!("<participant participant_id='p{index}'><send>x{index}</send></participant>"));
    }
    for index in 0..1000 {
        document.push_str(&format!(
            "<participantstreamassoc participant_id='p{index}'><send>y</send></participantstreamassoc>"
        ));
    }
    document.push_str(
        "<participantstreamassoc participant_id='p999'><send>s1499</send></participantstreamassoc></recording>",
    );
    assert!(document.len() < MAX_DOCUMENT_BYTES);
    let started = std::time::Instant::now();
    let metadata = siprec_metadata::parse(document.as_bytes()).expect("within the limits");
    let merged = merge_update(&metadata, &metadata);
    let streams: Vec<_> = (0..16)
        .map(|index| recall_recorder::siprec::OfferedStream {
            index,
            label: Some("1".into()),
            audio: true,
            port: 4000,
            direction: recall_recorder::sdp::Direction::SendOnly,
            on_hold: false,
        })
        .collect();
    let assignment = assign_channels(&streams, Some(&merged), |_| false);
    assert_eq!(assignment.streams[0].participant_id.as_deref(), Some("p999"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
}
