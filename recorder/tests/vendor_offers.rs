//! The parsing layer end to end on offers shaped like what SBCs and recording clients send (Cisco CUBE,
//! Oracle/Acme Packet, Ribbon/Sonus, AudioCodes, an Avaya-fronted SBC, a drachtio/FreeSWITCH client, a
//! compact-form UDP client, plain SIP), each with CRLF and with bare LF line ends.

mod common;

use common::{fixture, LineEnds, ALL};
use recall_recorder::sdp::{self, AnswerConfig, Codec, Direction};
use recall_recorder::sip::{self, Message, ResponseParts, Transport};
use recall_recorder::siprec::{
    aor_user, assign_channels, recording_offer, AssignmentRule, Channel, OfferKind, RecordingOffer,
};
use recall_recorder::siprec_metadata::{merge_update, DataMode, MetadataNamespace};

fn message(name: &str, line_ends: LineEnds) -> Message {
    sip::parse(&fixture(name, line_ends), Transport::Stream).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn offer(name: &str) -> RecordingOffer {
    recording_offer(&message(name, LineEnds::Crlf)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn config() -> AnswerConfig {
    AnswerConfig { address: [203, 0, 113, 20].into(), session_id: 42, session_version: 1 }
}

fn ports(offer: &RecordingOffer) -> Vec<Option<u16>> {
    (0..offer.sdp.media.len()).map(|index| Some(40000 + 2 * index as u16)).collect()
}

fn channels(offer: &RecordingOffer, agent_extension: &str) -> (AssignmentRule, Vec<Channel>) {
    let assignment = offer.assign_channels(|aor| aor_user(aor) == Some(agent_extension));
    (assignment.rule, assignment.streams.iter().map(|stream| stream.channel).collect())
}

#[test]
fn every_fixture_parses_the_same_with_crlf_and_bare_lf_and_gets_an_answer() {
    for name in ALL {
        let crlf = message(name, LineEnds::Crlf);
        let lf = message(name, LineEnds::Lf);
        let offer = recording_offer(&crlf).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(offer, recording_offer(&lf).unwrap(), "{name}: line ends change nothing");
        assert_eq!(crlf.call_id(), lf.call_id());

        let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
        assert_eq!(answer.streams.len(), offer.streams.len(), "{name}: one answer line per offered line");
        for (stream, offered) in answer.streams.iter().zip(&offer.streams) {
            let expected = if offered.direction.offerer_sends() { Direction::RecvOnly } else { Direction::Inactive };
            assert_eq!(stream.direction, expected, "{name}: stream {}", stream.index);
        }
        let reparsed = sdp::parse(answer.sdp.as_bytes()).unwrap();
        assert_eq!(reparsed.media.len(), offer.sdp.media.len());
        assert!(reparsed.connection.is_some_and(|c| c.address == "203.0.113.20"));

        let parts = ResponseParts {
            to_tag: Some("rec-9f2"),
            headers: vec![("Contact", "<sip:srs@203.0.113.20:5060>".to_owned()), ("Require", "siprec".to_owned())],
            body: Some(("application/sdp", answer.sdp.as_bytes())),
        };
        let response = sip::build_response(&crlf, 200, "OK", &parts).unwrap();
        let response = sip::parse(&response, Transport::Stream).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(response.status(), Some(200));
        assert_eq!((response.call_id(), response.cseq()), (crlf.call_id(), crlf.cseq()));
        assert_eq!(response.vias(), crlf.vias());
        assert_eq!(response.to().tag(), crlf.to().tag().or(Some("rec-9f2")), "{name}: an existing To tag is kept");
        assert_eq!(response.body(), answer.sdp.as_bytes());
    }
}

#[test]
fn cisco_cube_two_labelled_streams_rfc_metadata_and_an_ignored_gtd_part() {
    let message = message("cisco_cube.sip", LineEnds::Crlf);
    assert_eq!(
        message.header("Session-ID"),
        Some("7b1d1e6a2c0d5b3d9a2e4f6a8c0e1f2a;remote=00000000000000000000000000000000")
    );
    let offer = recording_offer(&message).unwrap();
    assert_eq!(offer.kind, OfferKind::Siprec);
    let labels: Vec<_> = offer.streams.iter().map(|s| (s.label.as_deref(), s.direction, s.on_hold)).collect();
    assert_eq!(labels, vec![(Some("1"), Direction::SendOnly, false), (Some("2"), Direction::SendOnly, false)]);
    let metadata = offer.metadata.as_ref().unwrap();
    assert_eq!(metadata.namespace, MetadataNamespace::Rfc7865);
    assert_eq!(metadata.data_mode, Some(DataMode::Complete));
    assert_eq!(metadata.sessions[0].start_time.as_deref(), Some("2024-03-04T09:12:44.061Z"));
    assert_eq!(offer.parties[0].display_name, None, "an empty nameID");
    assert_eq!(offer.parties[1].display_name.as_deref(), Some("Dana Ortiz"));

    assert_eq!(channels(&offer, "4102"), (AssignmentRule::AgentMatched, vec![Channel::Right, Channel::Left]));
    assert_eq!(channels(&offer, "9999"), (AssignmentRule::FirstParticipant, vec![Channel::Left, Channel::Right]));

    let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
    assert!(answer.sdp.contains(
        "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=label:1\r\na=recvonly\r\n"
    ));
}

#[test]
fn oracle_acme_draft_namespace_with_streams_listed_in_participants() {
    let offer = offer("oracle_acme.sip");
    let metadata = offer.metadata.as_ref().unwrap();
    assert_eq!(metadata.namespace, MetadataNamespace::Draft);
    assert_eq!(metadata.participants[0].session_id.as_deref(), Some("Qm9vbXNDbG9ja3dvcmsxMg=="));
    assert_eq!(metadata.sender_of_label("16777228").map(|p| p.display_name()), Some(Some("5307")));
    assert_eq!(offer.sdp.media[1].maxptime, Some(150));
    assert_eq!(channels(&offer, "5307"), (AssignmentRule::AgentMatched, vec![Channel::Right, Channel::Left]));
    let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
    assert!(answer.streams.iter().all(|s| s.codecs == vec![Codec::Pcma] && s.telephone_event == Some(101)));
}

#[test]
fn ribbon_sonus_prefixed_namespace_supported_tag_and_media_level_connections() {
    let offer = offer("ribbon_sonus.sip");
    assert_eq!(offer.kind, OfferKind::Siprec, "Supported: siprec and +sip.src, without Require");
    assert_eq!(offer.metadata.as_ref().unwrap().namespace, MetadataNamespace::Draft);
    assert_eq!(offer.sdp.connection, None);
    assert_eq!(offer.sdp.connection_of(1).map(|c| c.address.as_str()), Some("192.0.2.92"));
    assert_eq!(offer.parties[0].display_name.as_deref(), Some("Reception"));
    assert_eq!(offer.parties[1].display_name, None, "a name of one space is no name");
    assert_eq!(offer.parties[1].aor.as_deref(), Some("2249888012@192.0.2.95"), "AOR without scheme, as sent");
    assert_eq!(channels(&offer, "2249888012"), (AssignmentRule::AgentMatched, vec![Channel::Left, Channel::Right]));
}

#[test]
fn audiocodes_placeholder_participant_named_by_a_partial_update() {
    let first = offer("audiocodes.sip");
    let metadata = first.metadata.as_ref().unwrap();
    assert!(metadata.participants[1].names.is_empty(), "the callee is a placeholder while ringing");
    assert_eq!(channels(&first, "6114"), (AssignmentRule::FirstParticipant, vec![Channel::Left, Channel::Right]));

    let update = offer("audiocodes_update.sip");
    let partial = update.metadata.as_ref().unwrap();
    assert_eq!(partial.data_mode, Some(DataMode::Partial));
    let merged = merge_update(metadata, partial);
    assert_eq!(merged.participants[1].aors().collect::<Vec<_>>(), vec!["sip:6114@pbx.example.com"]);
    assert_eq!(merged.participants[1].display_name(), Some("Sam Lee"));
    assert_eq!(merged.participants[1].send, vec!["1+1496641520+2"], "what the update leaves out is kept");
    let assignment = assign_channels(&update.streams, Some(&merged), |aor| aor_user(aor) == Some("6114"));
    assert_eq!(assignment.rule, AssignmentRule::AgentMatched);
    assert_eq!(assignment.left_participant_id.as_deref(), Some("2+1496641520"));
    assert_eq!(assignment.streams.iter().map(|s| s.channel).collect::<Vec<_>>(), vec![Channel::Right, Channel::Left]);

    let answer = sdp::answer(&first.sdp, &config(), &ports(&first)).unwrap();
    assert_eq!(answer.streams[0].codecs, vec![Codec::G722, Codec::Pcma]);
    assert!(answer.sdp.contains("m=audio 40000 RTP/AVP 9 8 101\r\na=rtpmap:9 G722/8000\r\n"));
}

#[test]
fn avaya_fronted_sbc_unsupported_codec_is_left_out_of_the_answer() {
    let offer = offer("avaya_sbce.sip");
    let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
    assert_eq!(answer.streams[0].codecs, vec![Codec::Pcma], "G.729 is not recorded");
    assert!(answer.sdp.contains("m=audio 40000 RTP/AVP 8 101\r\n"));
    assert_eq!(channels(&offer, "4417"), (AssignmentRule::AgentMatched, vec![Channel::Right, Channel::Left]));
}

#[test]
fn drachtio_single_mixed_stream_without_namespace_is_mono() {
    let offer = offer("drachtio_single_stream.sip");
    assert_eq!(offer.kind, OfferKind::Siprec);
    let metadata = offer.metadata.as_ref().unwrap();
    assert_eq!((metadata.namespace, metadata.data_mode.clone()), (MetadataNamespace::None, Some(DataMode::Complete)));
    assert_eq!(offer.parties[0].display_name, None);
    let assignment = offer.assign_channels(|_| false);
    assert_eq!(assignment.rule, AssignmentRule::SingleStream);
    assert_eq!(assignment.streams.len(), 1);
    assert_eq!(assignment.streams[0].channel, Channel::Both);
    assert_eq!(assignment.streams[0].participant_id.as_deref(), Some("YTllOTVhZTgtZjY4MS00YTBjLWIxOGUtYTQw"));
}

#[test]
fn compact_headers_over_udp() {
    let bytes = fixture("compact_udp.sip", LineEnds::Crlf);
    let message = sip::parse(&bytes, Transport::Datagram).unwrap();
    assert_eq!(message.call_id(), "Yjc4ZTQxN2QxZjc2ZjE1OGM0MzUyMjQ5");
    assert_eq!(message.via_branch(), Some("z9hG4bK-524287-1---d1b2e6cbd3e8a0f1"));
    assert_eq!(message.from().display_name.as_deref(), Some("Queue 7"));
    assert!(message.has_option_tag("Supported", "timer"), "a folded compact Supported");
    assert_eq!(message.content_type().and_then(|ct| ct.param("boundary")), Some("----=_Part_7_1290"));
    assert_eq!(message.header("Content-Length"), Some(message.body().len().to_string().as_str()));
    let offer = recording_offer(&message).unwrap();
    assert_eq!(offer.kind, OfferKind::Siprec);
    assert_eq!(offer.parties[0].display_name.as_deref(), Some("Pat <Caller>"));
    assert_eq!(channels(&offer, "8120"), (AssignmentRule::AgentMatched, vec![Channel::Right, Channel::Left]));
}

#[test]
fn cisco_inactive_hold_offer_is_answered_inactive_and_falls_back_to_media_order() {
    let offer = offer("cisco_inactive.sip");
    assert!(offer.streams.iter().all(|s| s.direction == Direction::Inactive && s.on_hold));
    assert!(offer.sdp.connection.as_ref().unwrap().is_hold());
    let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
    assert!(answer.streams.iter().all(|s| s.accepted && s.direction == Direction::Inactive));
    assert_eq!(answer.sdp.matches("a=inactive\r\n").count(), 2);
    assert!(!answer.sdp.contains("0.0.0.0"), "we answer with our own address");
    assert_eq!(channels(&offer, "0733165805"), (AssignmentRule::MediaOrder, vec![Channel::Left, Channel::Right]));
}

#[test]
fn plain_sip_call_and_its_hold_reinvite() {
    let offer = offer("plain_sip.sip");
    assert_eq!(offer.kind, OfferKind::PlainSip);
    assert!(offer.metadata.is_none());
    assert_eq!(offer.parties[0].aor.as_deref(), Some("sip:4102@pbx.example.com"));
    assert_eq!(offer.parties[0].display_name.as_deref(), Some("Dana Ortiz"));
    assert_eq!(offer.parties[1].display_name.as_deref(), Some("Recorder"));
    assert_eq!(channels(&offer, "4102"), (AssignmentRule::SingleStream, vec![Channel::Both]));
    let answer = sdp::answer(&offer.sdp, &config(), &ports(&offer)).unwrap();
    assert_eq!(answer.streams[0].codecs, vec![Codec::G722, Codec::Pcmu, Codec::Pcma]);
    assert_eq!(answer.streams[0].direction, Direction::RecvOnly);

    let hold = self::offer("plain_hold.sip");
    assert!(hold.streams[0].on_hold, "c=0.0.0.0");
    let answer = sdp::answer(&hold.sdp, &config(), &ports(&hold)).unwrap();
    assert_eq!(answer.streams[0].codecs, vec![Codec::G722]);
    assert!(answer.sdp.contains("c=IN IP4 203.0.113.20\r\n"));
}
