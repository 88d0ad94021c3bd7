//! From a parsed INVITE, re-INVITE or UPDATE to what the recorder sets up: SIPREC (RFC 7866) or plain SIP,
//! the offered streams, the metadata, the parties, and each stream's channel. Pure decisions: it opens and
//! looks up nothing; whether an AOR is one of a user's extensions comes in as the caller's closure.

use crate::multipart::{self, MultipartError};
use crate::sdp::{self, Direction, SdpError, SessionDescription};
use crate::sip::{Message, Method, NameAddr};
use crate::siprec_metadata::{self, MetadataError, Participant, RecordingMetadata};

/// RFC 7866 §12.2 option tag.
pub const SIPREC_OPTION_TAG: &str = "siprec";
/// RFC 7866 §12.1 feature tag a recording client puts in its Contact.
pub const SRC_FEATURE_TAG: &str = "+sip.src";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("{0} requests carry no recording offer")]
    NotAnOffer(String),
    #[error("the request carries no SDP offer")]
    NoSdp,
    #[error("unsupported body type {0}")]
    UnsupportedBody(String),
    #[error("multipart body: {0}")]
    Multipart(#[from] MultipartError),
    #[error("SDP offer: {0}")]
    Sdp(#[from] SdpError),
    #[error("recording metadata: {0}")]
    Metadata(#[from] MetadataError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// A recording client: SIPREC indicated and a metadata part present.
    Siprec,
    /// An ordinary call (or a forked leg) sent to the recorder.
    PlainSip,
}

/// One offered m-line, in SDP order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedStream {
    pub index: usize,
    pub label: Option<String>,
    pub audio: bool,
    /// Zero: the offerer disabled this stream.
    pub port: u16,
    /// Media-level direction, else session-level, else sendrecv.
    pub direction: Direction,
    /// `c=0.0.0.0` or a direction in which the offerer sends nothing.
    pub on_hold: bool,
}

impl OfferedStream {
    /// Audio on a real port: the streams that get a channel.
    pub fn is_recordable(&self) -> bool {
        self.audio && self.port != 0
    }
}

/// A party of the recorded call: from the metadata's participants (SIPREC), or From and To (plain SIP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallParty {
    /// The metadata participant id; None for plain SIP.
    pub participant_id: Option<String>,
    pub aor: Option<String>,
    pub display_name: Option<String>,
}

/// Everything the recorder needs from an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingOffer {
    pub kind: OfferKind,
    /// `siprec` in Require or Supported, or `+sip.src` in Contact, whatever the body holds.
    pub siprec_indicated: bool,
    pub sdp: SessionDescription,
    pub streams: Vec<OfferedStream>,
    /// Present whenever a metadata part was sent (a re-INVITE may omit it: merge with
    /// [`siprec_metadata::merge_update`] and keep the result).
    pub metadata: Option<RecordingMetadata>,
    pub parties: Vec<CallParty>,
}

impl RecordingOffer {
    /// [`assign_channels`] with this offer's streams and metadata.
    pub fn assign_channels(&self, is_agent: impl Fn(&str) -> bool) -> ChannelAssignment {
        assign_channels(&self.streams, self.metadata.as_ref(), is_agent)
    }
}

/// Reads the offer of an INVITE, re-INVITE or UPDATE: an `application/sdp` body, or a `multipart/mixed`
/// one with an SDP part and optionally a metadata part (other parts are ignored).
pub fn recording_offer(request: &Message) -> Result<RecordingOffer, OfferError> {
    if !request.is_request() || !matches!(request.method(), Method::Invite | Method::Update) {
        return Err(OfferError::NotAnOffer(request.method().to_string()));
    }
    let siprec_indicated = request.has_option_tag("Require", SIPREC_OPTION_TAG)
        || request.has_option_tag("Supported", SIPREC_OPTION_TAG)
        || request.contact().is_some_and(|contact| contact.param(SRC_FEATURE_TAG).is_some());

    let body = request.body();
    let content_type = match request.content_type() {
        Some(content_type) => content_type,
        None if body.iter().all(u8::is_ascii_whitespace) => return Err(OfferError::NoSdp),
        None => return Err(OfferError::UnsupportedBody("(none)".into())),
    };
    let (sdp, metadata) = if content_type.is("application/sdp") {
        (sdp::parse(body)?, None)
    } else if content_type.essence().starts_with("multipart/") {
        let parts = multipart::split(content_type, body)?;
        let sdp_part = parts.find(&["application/sdp"]).ok_or(OfferError::NoSdp)?;
        let metadata = match parts.find(&siprec_metadata::CONTENT_TYPES) {
            Some(part) => Some(siprec_metadata::parse(part.body)?),
            None => None,
        };
        (sdp::parse(sdp_part.body)?, metadata)
    } else {
        return Err(OfferError::UnsupportedBody(content_type.essence().to_owned()));
    };

    let streams = sdp
        .media
        .iter()
        .enumerate()
        .map(|(index, media)| OfferedStream {
            index,
            label: media.label.clone(),
            audio: media.is_audio(),
            port: media.port,
            direction: sdp.direction_of(index),
            on_hold: sdp.is_on_hold(index),
        })
        .collect();
    let kind = if siprec_indicated && metadata.is_some() { OfferKind::Siprec } else { OfferKind::PlainSip };
    let parties = match (&metadata, kind) {
        (Some(metadata), OfferKind::Siprec) => metadata.participants.iter().map(party_of_participant).collect(),
        _ => vec![party_of_name_addr(request.from()), party_of_name_addr(request.to())],
    };
    Ok(RecordingOffer { kind, siprec_indicated, sdp, streams, metadata, parties })
}

fn party_of_participant(participant: &Participant) -> CallParty {
    CallParty {
        participant_id: Some(participant.id.clone()),
        aor: participant.aors().next().map(str::to_owned),
        display_name: participant.display_name().map(str::to_owned),
    }
}

fn party_of_name_addr(name_addr: &NameAddr) -> CallParty {
    CallParty { participant_id: None, aor: Some(name_addr.uri.aor()), display_name: name_addr.display_name.clone() }
}

/// The user part of an AOR as SBCs write it (`sip:7301@192.0.2.1`, `7301@192.0.2.1`, `tel:+15551234567`),
/// for closures that match extensions by number.
pub fn aor_user(aor: &str) -> Option<&str> {
    let aor = aor.trim();
    let without_scheme = match aor.split_once(':') {
        Some((scheme, rest)) if !scheme.contains('@') => rest,
        _ => aor,
    };
    let user = match without_scheme.split_once('@') {
        Some((user, _)) => user,
        None if aor.to_ascii_lowercase().starts_with("tel:") => without_scheme.split(';').next().unwrap_or_default(),
        None => return None,
    };
    let user = user.split_once(':').map_or(user, |(user, _password)| user);
    (!user.is_empty()).then_some(user)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Left,
    Right,
    /// A single mixed stream: recorded mono, on both channels.
    Both,
}

/// Which rule decided the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentRule {
    /// Only one recordable stream.
    SingleStream,
    /// The participant whose AOR is one of the user's extensions sends the left stream(s).
    AgentMatched,
    /// No agent matched: the metadata's first participant sends the left stream(s).
    FirstParticipant,
    /// No usable metadata (plain SIP, or streams the metadata does not attribute): first m-line left.
    MediaOrder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChannel {
    /// The m-line index.
    pub index: usize,
    pub label: Option<String>,
    pub channel: Channel,
    /// The metadata participant sending the stream, when known.
    pub participant_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAssignment {
    pub rule: AssignmentRule,
    /// The recordable streams in m-line order (disabled and non-audio lines get no channel).
    pub streams: Vec<StreamChannel>,
    /// The participant recorded on the left, for AgentMatched and FirstParticipant.
    pub left_participant_id: Option<String>,
}

/// Decides the channel of each recordable stream, deterministically from its inputs:
/// - one recordable stream: both channels (mono);
/// - with metadata: the first participant (document order) with an AOR for which `is_agent` holds sends the
///   left stream(s), every other stream goes right; with no such participant, the metadata's first
///   participant is left;
/// - otherwise, or when the metadata does not say who sends any of the streams: the first m-line is left,
///   the others right.
pub fn assign_channels(
    streams: &[OfferedStream],
    metadata: Option<&RecordingMetadata>,
    is_agent: impl Fn(&str) -> bool,
) -> ChannelAssignment {
    let recordable: Vec<&OfferedStream> = streams.iter().filter(|stream| stream.is_recordable()).collect();
    let sender = |stream: &OfferedStream| -> Option<&Participant> {
        let (metadata, label) = (metadata?, stream.label.as_deref()?);
        metadata.sender_of_label(label)
    };
    let channel = |stream: &OfferedStream, channel| StreamChannel {
        index: stream.index,
        label: stream.label.clone(),
        channel,
        participant_id: sender(stream).map(|participant| participant.id.clone()),
    };

    if recordable.len() == 1 {
        let streams = recordable.iter().map(|stream| channel(stream, Channel::Both)).collect();
        return ChannelAssignment { rule: AssignmentRule::SingleStream, streams, left_participant_id: None };
    }
    if let Some(metadata) = metadata {
        let agent = metadata.participants.iter().find(|participant| participant.aors().any(&is_agent));
        let (left, rule) = match agent {
            Some(agent) => (Some(agent), AssignmentRule::AgentMatched),
            None => (metadata.participants.first(), AssignmentRule::FirstParticipant),
        };
        if let Some(left) = left {
            let sends_left = |stream: &OfferedStream| sender(stream).is_some_and(|sender| sender.id == left.id);
            if recordable.iter().any(|stream| sends_left(stream)) {
                let streams = recordable
                    .iter()
                    .map(|stream| channel(stream, if sends_left(stream) { Channel::Left } else { Channel::Right }))
                    .collect();
                return ChannelAssignment { rule, streams, left_participant_id: Some(left.id.clone()) };
            }
        }
    }
    let streams = recordable
        .iter()
        .enumerate()
        .map(|(position, stream)| channel(stream, if position == 0 { Channel::Left } else { Channel::Right }))
        .collect();
    ChannelAssignment { rule: AssignmentRule::MediaOrder, streams, left_participant_id: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{self, Transport};

    fn invite(extra_headers: &str, content_type: &str, body: &str) -> Message {
        let text = format!(
            "INVITE sip:srs@203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bK-1\r\n\
             From: \"Front Desk\" <sip:2001@pbx.example.com>;tag=f1\r\nTo: <sip:+15550100@example.com>\r\n\
             Call-ID: c1@192.0.2.10\r\nCSeq: 1 INVITE\r\n{extra_headers}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        sip::parse(text.as_bytes(), Transport::Stream).unwrap()
    }

    const TWO_STREAMS: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 10000 RTP/AVP 0\r\na=label:a\r\na=sendonly\r\nm=audio 10002 RTP/AVP 0\r\na=label:b\r\na=sendonly\r\n";

    fn siprec_body(metadata: &str) -> String {
        format!(
            "--x\r\nContent-Type: application/sdp\r\n\r\n{TWO_STREAMS}\r\n--x\r\nContent-Type: \
             application/rs-metadata+xml\r\n\r\n{metadata}\r\n--x--\r\n"
        )
    }

    const METADATA: &str = "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\
        <participant participant_id='caller'><nameID aor='sip:+15550199@carrier.example.net'/></participant>\
        <participant participant_id='agent'><nameID aor='sip:2001@pbx.example.com'><name>Agent</name></nameID></participant>\
        <stream stream_id='sa' session_id='s'><label>a</label></stream><stream stream_id='sb' session_id='s'><label>b</label></stream>\
        <participantstreamassoc participant_id='caller'><send>sa</send><recv>sb</recv></participantstreamassoc>\
        <participantstreamassoc participant_id='agent'><send>sb</send><recv>sa</recv></participantstreamassoc></recording>";

    #[test]
    fn siprec_offer_assigns_the_agent_left() {
        let request = invite("Require: siprec\r\n", "multipart/mixed;boundary=x", &siprec_body(METADATA));
        let offer = recording_offer(&request).unwrap();
        assert_eq!(offer.kind, OfferKind::Siprec);
        assert_eq!(offer.parties.len(), 2);
        let assignment = offer.assign_channels(|aor| aor_user(aor) == Some("2001"));
        assert_eq!(assignment.rule, AssignmentRule::AgentMatched);
        assert_eq!(assignment.left_participant_id.as_deref(), Some("agent"));
        let channels: Vec<(Option<&str>, Channel)> =
            assignment.streams.iter().map(|s| (s.label.as_deref(), s.channel)).collect();
        assert_eq!(channels, vec![(Some("a"), Channel::Right), (Some("b"), Channel::Left)]);

        let nobody = offer.assign_channels(|_| false);
        assert_eq!(nobody.rule, AssignmentRule::FirstParticipant);
        assert_eq!(nobody.streams[0].channel, Channel::Left);
        assert_eq!(nobody.streams[0].participant_id.as_deref(), Some("caller"));
    }

    #[test]
    fn metadata_without_stream_associations_falls_back_to_media_order() {
        let unassociated = "<recording><participant participant_id='p'><nameID aor='sip:2001@pbx.example.com'/></participant></recording>";
        let request = invite("Supported: timer, siprec\r\n", "multipart/mixed;boundary=x", &siprec_body(unassociated));
        let assignment = recording_offer(&request).unwrap().assign_channels(|aor| aor_user(aor) == Some("2001"));
        assert_eq!(assignment.rule, AssignmentRule::MediaOrder);
        assert_eq!(
            assignment.streams.iter().map(|s| s.channel).collect::<Vec<_>>(),
            vec![Channel::Left, Channel::Right]
        );
    }

    #[test]
    fn plain_sip_takes_parties_from_from_and_to() {
        let request = invite("", "application/sdp", TWO_STREAMS);
        let offer = recording_offer(&request).unwrap();
        assert_eq!(offer.kind, OfferKind::PlainSip);
        assert!(!offer.siprec_indicated);
        assert_eq!(offer.parties[0].display_name.as_deref(), Some("Front Desk"));
        assert_eq!(offer.parties[1].aor.as_deref(), Some("sip:+15550100@example.com"));
        assert_eq!(offer.assign_channels(|_| true).rule, AssignmentRule::MediaOrder);
    }

    #[test]
    fn metadata_without_siprec_indication_is_kept_but_the_call_is_plain() {
        let request = invite("", "multipart/mixed;boundary=x", &siprec_body(METADATA));
        let offer = recording_offer(&request).unwrap();
        assert_eq!(offer.kind, OfferKind::PlainSip);
        assert!(offer.metadata.is_some());
    }

    #[test]
    fn offers_without_sdp_are_typed_errors() {
        assert_eq!(recording_offer(&invite("", "application/sdp", "")), Err(OfferError::Sdp(SdpError::MissingVersion)));
        let metadata_only = format!("--x\r\nContent-Type: application/rs-metadata\r\n\r\n{METADATA}\r\n--x--");
        assert_eq!(recording_offer(&invite("", "multipart/mixed;boundary=x", &metadata_only)), Err(OfferError::NoSdp));
        assert_eq!(
            recording_offer(&invite("", "text/plain", "hello")),
            Err(OfferError::UnsupportedBody("text/plain".into()))
        );
    }

    #[test]
    fn aor_users() {
        assert_eq!(aor_user("sip:7301@192.0.2.1"), Some("7301"));
        assert_eq!(aor_user("2249888500@172.16.198.55"), Some("2249888500"));
        assert_eq!(aor_user("sips:alice:secret@example.com"), Some("alice"));
        assert_eq!(aor_user("tel:+15551234567;phone-context=x"), Some("+15551234567"));
        assert_eq!(aor_user("sip:example.com"), None);
        assert_eq!(aor_user(""), None);
    }
}
