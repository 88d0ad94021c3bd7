//! SDP offers (RFC 8866 lines, RFC 3264 offer/answer, RFC 4574 labels) and the answer a recording server
//! gives: every stream received, none sent. Strict on what the recorder relies on (m=, c=, rtpmap), tolerant
//! of line order, bare LF and unused lines; it never picks ports or addresses itself: the caller passes them.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Beyond any real offer (SIPREC sends two to four audio streams); bounds the work on hostile input.
pub const MAX_MEDIA: usize = 16;
/// Lines in one description; a real SIPREC offer has about thirty.
pub const MAX_LINES: usize = 1024;
/// Attributes of one media section.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest line we read; real lines stay under 200 bytes.
pub const MAX_LINE_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8 text")]
    NotText,
    #[error("SDP does not start with v=0")]
    MissingVersion,
    #[error("line {line}: {reason}")]
    InvalidLine { line: usize, reason: &'static str },
    #[error("line {line}: malformed {field}")]
    InvalidField { line: usize, field: &'static str },
    #[error("more than {MAX_LINES} lines, {MAX_MEDIA} media sections or {MAX_ATTRIBUTES} attributes in one")]
    TooLarge,
    #[error("{ports} ports given for {media} media sections")]
    PortCountMismatch { ports: usize, media: usize },
}

/// Media direction (RFC 3264 §5.1 / RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// Whether the offerer will send media in this direction.
    pub fn offerer_sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

/// A `c=` line. Only IN IP4/IP6 are accepted; multicast TTL and ranges are kept in `address` as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub ipv6: bool,
    pub address: String,
}

impl Connection {
    /// `c=IN IP4 0.0.0.0` (RFC 2543 hold, still sent by many SBCs) or its IPv6 equivalent.
    pub fn is_hold(&self) -> bool {
        self.address.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

/// One `m=` section with the attributes the recorder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub port_count: Option<u16>,
    pub protocol: String,
    /// Formats in the offerer's order of preference (payload type numbers for RTP profiles).
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    /// The media-level direction attribute, if any; see [`SessionDescription::direction_of`].
    pub direction: Option<Direction>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    /// RFC 4574 label: what SIPREC metadata streams refer to.
    pub label: Option<String>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
}

impl MediaDescription {
    /// A port of zero rejects or disables the stream (RFC 3264 §6).
    pub fn is_disabled(&self) -> bool {
        self.port == 0
    }

    pub fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// Plain (unencrypted) RTP profiles, the only ones the recorder receives.
    pub fn is_plain_rtp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/AVP") || self.protocol.eq_ignore_ascii_case("RTP/AVPF")
    }

    /// Payload type numbers of the formats, skipping any that are not numbers (non-RTP media).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|format| format.parse::<u8>().ok().filter(|pt| *pt <= 127))
    }

    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|map| map.payload_type == payload_type)
    }

    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps.iter().find(|(pt, _)| *pt == payload_type).map(|(_, params)| params.as_str())
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line's fields after `o=`, as sent (informational).
    pub origin: Option<String>,
    pub session_name: Option<String>,
    pub connection: Option<Connection>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// The direction of media section `index`: its own attribute, else the session's, else sendrecv.
    pub fn direction_of(&self, index: usize) -> Direction {
        self.media.get(index).and_then(|media| media.direction).or(self.direction).unwrap_or(Direction::SendRecv)
    }

    /// The connection of media section `index`: its own `c=`, else the session's.
    pub fn connection_of(&self, index: usize) -> Option<&Connection> {
        self.media.get(index).and_then(|media| media.connection.as_ref()).or(self.connection.as_ref())
    }

    /// Media section `index` is on hold: `c=0.0.0.0`, or a direction in which the offerer sends nothing.
    pub fn is_on_hold(&self, index: usize) -> bool {
        self.connection_of(index).is_some_and(Connection::is_hold) || !self.direction_of(index).offerer_sends()
    }
}

/// Parses an SDP body. CRLF and bare LF line ends are both accepted, blank lines are skipped, and lines the
/// recorder does not use (b=, k=, unknown attributes, out-of-order session lines) are ignored.
pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SdpError::NotText)?;
    let mut description =
        SessionDescription { origin: None, session_name: None, connection: None, direction: None, media: Vec::new() };
    let mut seen_version = false;
    let mut attribute_count = 0;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        if number > MAX_LINES {
            return Err(SdpError::TooLarge);
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_end_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_LEN {
            return Err(SdpError::InvalidLine { line: number, reason: "line too long" });
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
            return Err(SdpError::InvalidLine { line: number, reason: "not <type>=<value>" });
        }
        let kind = bytes[0];
        let value = &line[2..];
        if !seen_version {
            if kind != b'v' || value.trim() != "0" {
                return Err(SdpError::MissingVersion);
            }
            seen_version = true;
            continue;
        }
        match kind {
            b'o' => description.origin = Some(value.to_owned()),
            b's' => description.session_name = Some(value.to_owned()),
            b'c' => {
                let connection = parse_connection(value).ok_or(SdpError::InvalidField { line: number, field: "c=" })?;
                match description.media.last_mut() {
                    Some(media) => media.connection = Some(connection),
                    None => description.connection = Some(connection),
                }
            }
            b'm' => {
                if description.media.len() == MAX_MEDIA {
                    return Err(SdpError::TooLarge);
                }
                description.media.push(parse_media(value).ok_or(SdpError::InvalidField { line: number, field: "m=" })?);
                attribute_count = 0;
            }
            b'a' => {
                attribute_count += 1;
                if attribute_count > MAX_ATTRIBUTES {
                    return Err(SdpError::TooLarge);
                }
                apply_attribute(&mut description, value, number)?;
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::MissingVersion);
    }
    Ok(description)
}

fn parse_connection(value: &str) -> Option<Connection> {
    let mut fields = value.split_ascii_whitespace();
    let (network, address_type, address) = (fields.next()?, fields.next()?, fields.next()?);
    if !network.eq_ignore_ascii_case("IN") || fields.next().is_some() {
        return None;
    }
    let ipv6 = match address_type {
        t if t.eq_ignore_ascii_case("IP4") => false,
        t if t.eq_ignore_ascii_case("IP6") => true,
        _ => return None,
    };
    Some(Connection { ipv6, address: address.to_owned() })
}

fn parse_media(value: &str) -> Option<MediaDescription> {
    let mut fields = value.split_ascii_whitespace();
    let media = fields.next()?;
    let (port, port_count) = match fields.next()?.split_once('/') {
        Some((port, count)) => (port.parse().ok()?, Some(count.parse().ok()?)),
        None => (value.split_ascii_whitespace().nth(1)?.parse().ok()?, None),
    };
    let protocol = fields.next()?;
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    if formats.is_empty() || !media.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let rtp = protocol.to_ascii_uppercase().contains("RTP/");
    if rtp && !formats.iter().all(|format| format.parse::<u8>().is_ok_and(|pt| pt <= 127)) {
        return None;
    }
    Some(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        direction: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        label: None,
        ptime: None,
        maxptime: None,
    })
}

fn apply_attribute(description: &mut SessionDescription, value: &str, line: usize) -> Result<(), SdpError> {
    let (name, argument) = match value.split_once(':') {
        Some((name, argument)) => (name, Some(argument.trim())),
        None => (value, None),
    };
    if let Some(direction) = Direction::from_attribute(name) {
        match description.media.last_mut() {
            Some(media) => media.direction = Some(direction),
            None => description.direction = Some(direction),
        }
        return Ok(());
    }
    // The remaining attributes the recorder uses are media-level only.
    let Some(media) = description.media.last_mut() else {
        return Ok(());
    };
    let invalid = |field| SdpError::InvalidField { line, field };
    match (name, argument) {
        ("rtpmap", Some(argument)) => media.rtpmaps.push(parse_rtpmap(argument).ok_or(invalid("a=rtpmap"))?),
        ("fmtp", Some(argument)) => {
            let (payload_type, params) = argument.split_once([' ', '\t']).unwrap_or((argument, ""));
            let payload_type = payload_type.parse::<u8>().ok().filter(|pt| *pt <= 127).ok_or(invalid("a=fmtp"))?;
            media.fmtps.push((payload_type, params.trim().to_owned()));
        }
        ("label", Some(argument)) if !argument.is_empty() => media.label = Some(argument.to_owned()),
        ("ptime", Some(argument)) => media.ptime = Some(parse_milliseconds(argument).ok_or(invalid("a=ptime"))?),
        ("maxptime", Some(argument)) => {
            media.maxptime = Some(parse_milliseconds(argument).ok_or(invalid("a=maxptime"))?);
        }
        _ => {}
    }
    Ok(())
}

fn parse_rtpmap(argument: &str) -> Option<RtpMap> {
    let (payload_type, encoding) = argument.split_once([' ', '\t'])?;
    let payload_type = payload_type.parse::<u8>().ok().filter(|pt| *pt <= 127)?;
    let mut pieces = encoding.trim().split('/');
    let name = pieces.next().filter(|name| !name.is_empty())?;
    let clock_rate = pieces.next()?.parse().ok()?;
    let channels = match pieces.next() {
        Some(channels) => Some(channels.parse().ok()?),
        None => None,
    };
    if pieces.next().is_some() {
        return None;
    }
    Some(RtpMap { payload_type, encoding: name.to_owned(), clock_rate, channels })
}

/// ptime is an integer in practice, but RFC 4566 allows a decimal (`a=ptime:20.0` from some gateways).
fn parse_milliseconds(argument: &str) -> Option<u32> {
    let whole = argument.split_once('.').map_or(argument, |(whole, _)| whole);
    whole.parse().ok()
}

/// Codecs the recorder decodes, by their static payload types (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
            Self::G722 => 9,
        }
    }

    pub fn rtpmap(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU/8000",
            Self::Pcma => "PCMA/8000",
            // RFC 3551 §4.5.2: G.722's RTP clock rate is 8000 although it samples at 16 kHz.
            Self::G722 => "G722/8000",
        }
    }

    /// Static payload types name their codec; a static number mapped by rtpmap to another codec is refused,
    /// as is a dynamic number for one of these (static types are fixed by RFC 3551).
    fn of(media: &MediaDescription, payload_type: u8) -> Option<Self> {
        let codec = match payload_type {
            0 => Self::Pcmu,
            8 => Self::Pcma,
            9 => Self::G722,
            _ => return None,
        };
        match media.rtpmap(payload_type) {
            Some(map) if !map.encoding.eq_ignore_ascii_case(codec.encoding_name()) => None,
            _ => Some(codec),
        }
    }

    fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
        }
    }
}

/// What the recorder answers for one offered media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredStream {
    /// Position of the m-line in offer and answer.
    pub index: usize,
    /// False when the answer rejects the section (port 0): not audio, not plain RTP, no codec in common,
    /// disabled in the offer, or no port given for it.
    pub accepted: bool,
    pub port: u16,
    /// Accepted codecs in the offerer's order: the sender will use one of them.
    pub codecs: Vec<Codec>,
    /// The offerer's telephone-event payload type, when accepted.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    pub label: Option<String>,
}

/// Our side of the answer; the session id and version come from the caller (no clock or randomness here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerConfig {
    pub address: IpAddr,
    pub session_id: u64,
    pub session_version: u64,
}

/// A generated answer: the SDP text and what it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: String,
    pub streams: Vec<AnsweredStream>,
}

/// Builds the answer of a recording server: the same m-lines in the same order (RFC 3264 §6), each
/// accepted stream `recvonly` (or `inactive` when the offer sends nothing), on `config.address` and the
/// port given for it in `ports` (one entry per offered m-line; None rejects that line).
pub fn answer(offer: &SessionDescription, config: &AnswerConfig, ports: &[Option<u16>]) -> Result<Answer, SdpError> {
    if ports.len() != offer.media.len() {
        return Err(SdpError::PortCountMismatch { ports: ports.len(), media: offer.media.len() });
    }
    let address_type = if config.address.is_ipv6() { "IP6" } else { "IP4" };
    let mut sdp = String::with_capacity(256 + 160 * offer.media.len());
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        sdp,
        "v=0\r\no=recall {} {} IN {address_type} {}\r\ns=recall\r\nc=IN {address_type} {}\r\nt=0 0\r\n",
        config.session_id, config.session_version, config.address, config.address
    );
    let mut streams = Vec::with_capacity(offer.media.len());
    for (index, (media, port)) in offer.media.iter().zip(ports).enumerate() {
        let stream = answer_stream(offer, index, media, *port);
        if stream.accepted {
            let mut formats: Vec<u8> = stream.codecs.iter().map(|codec| codec.payload_type()).collect();
            formats.extend(stream.telephone_event);
            let formats: Vec<String> = formats.iter().map(u8::to_string).collect();
            let _ = write!(sdp, "m={} {} {} {}\r\n", media.media, stream.port, media.protocol, formats.join(" "));
            for codec in &stream.codecs {
                let _ = write!(sdp, "a=rtpmap:{} {}\r\n", codec.payload_type(), codec.rtpmap());
            }
            if let Some(pt) = stream.telephone_event {
                let _ = write!(sdp, "a=rtpmap:{pt} telephone-event/8000\r\n");
                let events = media.fmtp(pt).filter(|events| is_event_list(events)).unwrap_or("0-15");
                let _ = write!(sdp, "a=fmtp:{pt} {events}\r\n");
            }
            if let Some(ptime) = media.ptime {
                let _ = write!(sdp, "a=ptime:{ptime}\r\n");
            }
            if let Some(label) = stream.label.as_deref().filter(|label| is_token(label)) {
                let _ = write!(sdp, "a=label:{label}\r\n");
            }
            let _ = write!(sdp, "a={}\r\n", stream.direction.as_str());
        } else {
            // A rejected line keeps media, protocol and one format of the offer (RFC 3264 §6).
            let format = media.formats.first().map_or("0", String::as_str);
            let _ = write!(sdp, "m={} 0 {} {}\r\n", media.media, media.protocol, format);
        }
        streams.push(stream);
    }
    Ok(Answer { sdp, streams })
}

fn answer_stream(
    offer: &SessionDescription,
    index: usize,
    media: &MediaDescription,
    port: Option<u16>,
) -> AnsweredStream {
    let offered = offer.direction_of(index);
    let direction = if offered.offerer_sends() { Direction::RecvOnly } else { Direction::Inactive };
    let mut stream = AnsweredStream {
        index,
        accepted: false,
        port: 0,
        codecs: Vec::new(),
        telephone_event: None,
        direction,
        label: media.label.clone(),
    };
    let Some(port) = port.filter(|port| *port != 0) else {
        return stream;
    };
    if media.is_disabled() || !media.is_audio() || !media.is_plain_rtp() {
        return stream;
    }
    for payload_type in media.payload_types() {
        if let Some(codec) = Codec::of(media, payload_type) {
            if !stream.codecs.contains(&codec) {
                stream.codecs.push(codec);
            }
        } else if stream.telephone_event.is_none()
            && media
                .rtpmap(payload_type)
                .is_some_and(|map| map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000)
        {
            stream.telephone_event = Some(payload_type);
        }
    }
    if stream.codecs.is_empty() {
        stream.telephone_event = None;
        return stream;
    }
    stream.accepted = true;
    stream.port = port;
    stream
}

/// `0-15`, `0-16`, `0-15,32,36`: only digits, commas and dashes are echoed back.
fn is_event_list(events: &str) -> bool {
    !events.is_empty() && events.bytes().all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
}

fn is_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(crate::multipart::is_token_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like a Cisco CUBE SIPREC offer: session and media c=, two labelled sendonly streams.
    const CUBE: &str = "v=0\r\no=CiscoSystemsSIP-GW-UserAgent 4410 2231 IN IP4 192.0.2.10\r\ns=SIP Call\r\n\
                        c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0 101\r\nc=IN IP4 192.0.2.11\r\n\
                        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
                        a=ptime:20\r\na=sendonly\r\na=label:1\r\nm=audio 16386 RTP/AVP 0 101\r\n\
                        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
                        a=ptime:20\r\na=sendonly\r\na=label:2\r\n";

    #[test]
    fn parses_a_two_stream_siprec_offer() {
        let sdp = parse(CUBE.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), 2);
        let first = &sdp.media[0];
        assert_eq!((first.port, first.protocol.as_str()), (16384, "RTP/AVP"));
        assert_eq!(first.payload_types().collect::<Vec<_>>(), vec![0, 101]);
        assert_eq!(first.label.as_deref(), Some("1"));
        assert_eq!(first.fmtp(101), Some("0-16"));
        assert_eq!(first.rtpmap(101).map(|m| m.encoding.as_str()), Some("telephone-event"));
        assert_eq!(first.ptime, Some(20));
        assert_eq!(sdp.connection_of(0).unwrap().address, "192.0.2.11");
        assert_eq!(sdp.connection_of(1).unwrap().address, "192.0.2.10");
        assert_eq!(sdp.direction_of(1), Direction::SendOnly);
        assert!(!sdp.is_on_hold(0), "sendonly: the offerer sends");
    }

    #[test]
    fn bare_lf_session_direction_hold_and_out_of_order_lines() {
        let text = "v=0\nb=AS:64\no=- 1 1 IN IP4 198.51.100.7\ns=-\na=inactive\nt=0 0\nc=IN IP4 0.0.0.0\n\
                    m=audio 20000 RTP/AVP 8 0\na=rtpmap:8 PCMA/8000\nm=audio 20002 RTP/AVP 8\na=sendrecv\n";
        let sdp = parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.direction, Some(Direction::Inactive));
        assert_eq!(sdp.direction_of(0), Direction::Inactive);
        assert_eq!(sdp.direction_of(1), Direction::SendRecv, "media level overrides session level");
        assert!(sdp.connection.as_ref().unwrap().is_hold());
        assert!(sdp.is_on_hold(1), "c=0.0.0.0 holds even a sendrecv stream");
    }

    #[test]
    fn answer_is_recvonly_with_our_address_ports_and_common_codecs() {
        let offer = parse(CUBE.as_bytes()).unwrap();
        let config = AnswerConfig { address: "203.0.113.5".parse().unwrap(), session_id: 7, session_version: 1 };
        let answer = answer(&offer, &config, &[Some(40000), Some(40002)]).unwrap();
        assert_eq!(
            answer.sdp,
            "v=0\r\no=recall 7 1 IN IP4 203.0.113.5\r\ns=recall\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na=label:1\r\na=recvonly\r\n\
             m=audio 40002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na=label:2\r\na=recvonly\r\n"
        );
        assert!(answer.streams.iter().all(|s| s.accepted && s.codecs == vec![Codec::Pcmu]));
        let reparsed = parse(answer.sdp.as_bytes()).unwrap();
        assert_eq!(reparsed.direction_of(0), Direction::RecvOnly);
    }

    #[test]
    fn answer_rejects_what_it_cannot_record_and_keeps_inactive_inactive() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                    m=audio 5000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                    m=audio 5002 RTP/AVP 9 8 0\r\na=inactive\r\n\
                    m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                    m=audio 5006 RTP/SAVP 0\r\n\
                    m=audio 0 RTP/AVP 0\r\n";
        let offer = parse(text.as_bytes()).unwrap();
        let config = AnswerConfig { address: "2001:db8::5".parse().unwrap(), session_id: 1, session_version: 2 };
        let ports = [Some(6000), Some(6002), Some(6004), Some(6006), Some(6008)];
        let answer = answer(&offer, &config, &ports).unwrap();
        let accepted: Vec<bool> = answer.streams.iter().map(|s| s.accepted).collect();
        assert_eq!(accepted, vec![false, true, false, false, false]);
        assert_eq!(answer.streams[1].codecs, vec![Codec::G722, Codec::Pcma, Codec::Pcmu]);
        assert_eq!(answer.streams[1].direction, Direction::Inactive);
        assert!(answer.sdp.contains("c=IN IP6 2001:db8::5\r\n"));
        assert!(answer.sdp.contains("m=audio 0 RTP/AVP 18\r\n"));
        assert!(answer.sdp.contains("m=audio 6002 RTP/AVP 9 8 0\r\na=rtpmap:9 G722/8000\r\n"));
        assert!(answer.sdp.contains("a=inactive\r\nm=video 0 RTP/AVP 96\r\n"));
        assert_eq!(parse(answer.sdp.as_bytes()).unwrap().media.len(), 5);
        assert_eq!(super::answer(&offer, &config, &[Some(1)]), Err(SdpError::PortCountMismatch { ports: 1, media: 5 }));
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        assert_eq!(parse(b""), Err(SdpError::MissingVersion));
        assert_eq!(parse(b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n"), Err(SdpError::MissingVersion));
        assert_eq!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"), Err(SdpError::InvalidField { line: 2, field: "m=" }));
        assert_eq!(parse(b"v=0\r\nm=audio 1 RTP/AVP 300\r\n"), Err(SdpError::InvalidField { line: 2, field: "m=" }));
        assert_eq!(parse(b"v=0\r\nc=IN IP9 1.2.3.4\r\n"), Err(SdpError::InvalidField { line: 2, field: "c=" }));
        assert_eq!(
            parse(b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n"),
            Err(SdpError::InvalidField { line: 3, field: "a=rtpmap" })
        );
        assert_eq!(parse(b"v=0\r\ngarbage\r\n"), Err(SdpError::InvalidLine { line: 2, reason: "not <type>=<value>" }));
        assert_eq!(parse(&[b'v', b'=', b'0', b'\n', 0xff]), Err(SdpError::NotText));
        let many = "v=0\r\n".to_owned() + &"m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1);
        assert_eq!(parse(many.as_bytes()), Err(SdpError::TooLarge));
    }
}
