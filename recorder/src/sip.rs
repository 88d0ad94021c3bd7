//! SIP messages (RFC 3261) as the recorder receives them, parsed into the few typed fields it acts on, and
//! the responses it sends back. Never does I/O, keeps state or panics, and bounds every size; rsip (frozen
//! since 2022) is used only in here, so replacing it touches nothing else.

use std::fmt;
use std::str::FromStr;

use rsip::headers::UntypedHeader;

use crate::multipart::{is_token_byte, truncated, ContentType};

// rsip 0.4's tokenizer needs CRLF, long header names and unfolded lines, and its URI grammar puts dotted users
// into the host and refuses IPv6 references (pinned by the `rsip_alone_is_not_enough` test). So framing,
// compact names, folding and name-addr/URI parsing are done here; rsip names the methods and writes responses.

/// RFC 3261 §18.1.1 makes 64 KiB the practical ceiling of a SIP message (the largest UDP datagram); a
/// SIPREC INVITE is 3–8 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Header fields in one message; real INVITEs have 15–40.
pub const MAX_HEADERS: usize = 256;

/// How the message arrived: on a stream the body must be exactly Content-Length bytes (the caller frames
/// with [`stream_message_len`]); in a datagram a longer body is cut to Content-Length (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Datagram,
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    #[error("message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("message is empty")]
    Empty,
    #[error("the header section does not end with an empty line")]
    NoHeaderEnd,
    #[error("malformed start line")]
    InvalidStartLine,
    #[error("unsupported SIP version {0:?}")]
    UnsupportedVersion(String),
    #[error("header line {line} is malformed")]
    InvalidHeaderLine { line: usize },
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("mandatory header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {header} has an invalid value")]
    InvalidHeaderValue { header: &'static str },
    #[error("the body is shorter ({received} bytes) than Content-Length ({declared})")]
    BodyTruncated { declared: usize, received: usize },
    #[error("the body ({received} bytes) disagrees with Content-Length ({declared}) on a stream transport")]
    ContentLengthMismatch { declared: usize, received: usize },
    #[error("CSeq method {cseq} differs from the request method {method}")]
    CSeqMethodMismatch { method: String, cseq: String },
    #[error("cannot build response: {0}")]
    InvalidResponse(&'static str),
}

/// Request methods. Methods rsip does not know are kept by name (a UAS answers them 501, RFC 3261 §8.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Update,
    Info,
    Prack,
    Refer,
    Notify,
    Subscribe,
    Message,
    Register,
    Publish,
    Other(String),
}

impl Method {
    fn parse(token: &str) -> Option<Self> {
        if token.is_empty() || !token.bytes().all(is_token_byte) {
            return None;
        }
        // rsip matches case-insensitively, but RFC 3261 §7.1 method names are case-sensitive.
        if token.bytes().any(|b| b.is_ascii_lowercase()) {
            return Some(Self::Other(token.to_owned()));
        }
        Some(match rsip::Method::from_str(token) {
            Ok(rsip::Method::Invite) => Self::Invite,
            Ok(rsip::Method::Ack) => Self::Ack,
            Ok(rsip::Method::Bye) => Self::Bye,
            Ok(rsip::Method::Cancel) => Self::Cancel,
            Ok(rsip::Method::Options) => Self::Options,
            Ok(rsip::Method::Update) => Self::Update,
            Ok(rsip::Method::Info) => Self::Info,
            Ok(rsip::Method::PRack) => Self::Prack,
            Ok(rsip::Method::Refer) => Self::Refer,
            Ok(rsip::Method::Notify) => Self::Notify,
            Ok(rsip::Method::Subscribe) => Self::Subscribe,
            Ok(rsip::Method::Message) => Self::Message,
            Ok(rsip::Method::Register) => Self::Register,
            Ok(rsip::Method::Publish) => Self::Publish,
            Err(_) => Self::Other(token.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Prack => "PRACK",
            Self::Refer => "REFER",
            Self::Notify => "NOTIFY",
            Self::Subscribe => "SUBSCRIBE",
            Self::Message => "MESSAGE",
            Self::Register => "REGISTER",
            Self::Publish => "PUBLISH",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP, SIPS or tel URI split into what the recorder compares; anything else keeps only its scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower case.
    pub scheme: String,
    /// The user part of a sip/sips URI (password dropped), or a tel URI's number.
    pub user: Option<String>,
    /// Lower case; IPv6 references keep their brackets; empty for tel and unknown schemes.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
    /// The URI exactly as sent.
    pub raw: String,
}

impl Uri {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once(':')?;
        let mut scheme_bytes = scheme.bytes();
        if !scheme_bytes.next()?.is_ascii_alphabetic()
            || !scheme_bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let mut uri =
            Uri { scheme, user: None, host: String::new(), port: None, params: Vec::new(), raw: raw.to_owned() };
        match uri.scheme.as_str() {
            "sip" | "sips" => {
                let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
                let (user, host_and_params) = match rest.split_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                        (Some(user), host)
                    }
                    None => (None, rest),
                };
                let (host_port, params) = host_and_params.split_once(';').unwrap_or((host_and_params, ""));
                let (host, port) = split_host_port(host_port)?;
                uri.user = user.filter(|user| !user.is_empty()).map(str::to_owned);
                uri.host = host.to_ascii_lowercase();
                uri.port = port;
                uri.params = parse_params(params);
            }
            "tel" => {
                let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
                if number.is_empty() {
                    return None;
                }
                uri.user = Some(number.to_owned());
                uri.params = parse_params(params);
            }
            _ => {}
        }
        Some(uri)
    }

    /// The address of record: scheme, user and host, without port or parameters (`sip:alice@example.com`,
    /// `tel:+15551234567`). Unknown schemes give the raw URI.
    pub fn aor(&self) -> String {
        match (self.scheme.as_str(), &self.user) {
            ("sip" | "sips", Some(user)) => format!("{}:{}@{}", self.scheme, user, self.host),
            ("sip" | "sips", None) => format!("{}:{}", self.scheme, self.host),
            ("tel", Some(number)) => format!("tel:{number}"),
            _ => self.raw.clone(),
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

fn split_host_port(host_port: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &host_port[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            port => (host, Some(port.strip_prefix(':')?)),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>' || b == b'@') {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

fn parse_params(params: &str) -> Vec<(String, Option<String>)> {
    split_outside_quotes(params, b';')
        .into_iter()
        .map(str::trim)
        .filter(|param| !param.is_empty())
        .map(|param| match param.split_once('=') {
            Some((name, value)) => (name.trim().to_owned(), Some(value.trim().to_owned())),
            None => (param.to_owned(), None),
        })
        .collect()
}

fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_deref())
}

/// Splits at `separator` where it is outside double quotes and angle brackets.
fn split_outside_quotes(value: &str, separator: u8) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped, mut start) = (false, false, false, 0);
    for (index, byte) in value.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            _ if byte == separator && !in_quotes && !in_angle => {
                pieces.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces
}

/// A From, To or Contact value: `"Display" <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the URI), e.g. `tag`, `+sip.src`.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let (display_name, after_name) = if let Some(quoted) = value.strip_prefix('"') {
            let (name, rest) = unquote(quoted)?;
            (Some(name), rest.trim_start())
        } else {
            match value.find('<') {
                Some(open) => (Some(value[..open].trim().to_owned()), &value[open..]),
                None => (None, value),
            }
        };
        let (uri, params) = if let Some(inner) = after_name.strip_prefix('<') {
            let close = inner.find('>')?;
            (&inner[..close], &inner[close + 1..])
        } else if display_name.is_some() {
            return None;
        } else {
            // addr-spec without brackets: parameters after the URI belong to the header (RFC 3261 §20).
            after_name.split_at(after_name.find(';').unwrap_or(after_name.len()))
        };
        let params = params.trim();
        if !params.is_empty() && !params.starts_with(';') {
            return None;
        }
        Some(NameAddr {
            display_name: display_name.filter(|name| !name.is_empty()),
            uri: Uri::parse(uri)?,
            params: parse_params(params),
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// The quoted-string after its opening quote: the unescaped text and what follows the closing quote.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut text = String::new();
    let mut chars = quoted.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?.1),
            '"' => return Some((text, &quoted[index + 1..])),
            _ => text.push(c),
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub number: u32,
    pub method: Method,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { status: u16, reason: String },
}

/// A parsed SIP message. Header values are kept (compact names expanded, folded lines joined) so the
/// caller can read any header; the fields every message must have are checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    start: StartLine,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    vias: Vec<String>,
    via_branch: Option<String>,
    from: NameAddr,
    to: NameAddr,
    call_id: String,
    cseq: CSeq,
    max_forwards: Option<u32>,
    contact: Option<NameAddr>,
    content_type: Option<ContentType>,
}

impl Message {
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or for a response the method of the request it answers (from CSeq).
    pub fn method(&self) -> &Method {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => &self.cseq.method,
        }
    }

    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn from(&self) -> &NameAddr {
        &self.from
    }

    pub fn to(&self) -> &NameAddr {
        &self.to
    }

    pub fn cseq(&self) -> &CSeq {
        &self.cseq
    }

    /// The branch of the top Via (the transaction id of RFC 3261 §17.2.3).
    pub fn via_branch(&self) -> Option<&str> {
        self.via_branch.as_deref()
    }

    /// Every Via value, top first, comma-joined headers split.
    pub fn vias(&self) -> &[String] {
        &self.vias
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.max_forwards
    }

    /// The first Contact, if any.
    pub fn contact(&self) -> Option<&NameAddr> {
        self.contact.as_ref()
    }

    pub fn content_type(&self) -> Option<&ContentType> {
        self.content_type.as_ref()
    }

    /// The body, exactly Content-Length bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The first value of a header (case-insensitive long name; compact forms were expanded on parsing).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Whether a comma-separated option-tag header (Require, Supported, Proxy-Require) lists `tag`.
    pub fn has_option_tag(&self, header: &str, tag: &str) -> bool {
        self.headers(header).flat_map(|value| value.split(',')).any(|option| option.trim().eq_ignore_ascii_case(tag))
    }
}

/// RFC 3261 §7.3.3 and later extensions' compact forms.
fn long_header_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// The spelling we keep for the headers we read, whatever case they arrived in.
fn canonical_header_name(name: &str) -> String {
    const KNOWN: [&str; 12] = [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Type",
        "Content-Length",
        "Require",
        "Supported",
        "Session-ID",
    ];
    let long = long_header_name(name);
    KNOWN
        .iter()
        .find(|known| known.eq_ignore_ascii_case(long))
        .map_or_else(|| long.to_owned(), |known| (*known).to_owned())
}

/// The total length of the first complete message in a stream buffer (RFC 3261 §18.3: Content-Length frames
/// messages on TCP/TLS), Ok(None) while more bytes are needed. Leading CRLF keep-alives (RFC 5626 §3.5.1)
/// count towards the length so the caller drops them with the message.
pub fn stream_message_len(buffer: &[u8]) -> Result<Option<usize>, SipError> {
    let skipped = leading_line_breaks(buffer);
    let Some((head_end, body_start)) = find_header_end(&buffer[skipped..]) else {
        return if buffer.len() > MAX_MESSAGE_BYTES { Err(SipError::TooLarge) } else { Ok(None) };
    };
    let head = &buffer[skipped..skipped + head_end];
    let lines = unfold(head)?;
    let declared = lines
        .iter()
        .skip(1)
        .filter_map(|line| split_header(line))
        .find(|(name, _)| long_header_name(name).eq_ignore_ascii_case("Content-Length"))
        .ok_or(SipError::MissingHeader("Content-Length"))?
        .1
        .parse::<usize>()
        .map_err(|_| SipError::InvalidHeaderValue { header: "Content-Length" })?;
    let total = skipped + body_start + declared;
    if total > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge);
    }
    Ok((buffer.len() >= total).then_some(total))
}

fn leading_line_breaks(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

/// Where the header section ends (exclusive) and the body starts: at the first empty line, whether lines
/// end in CRLF or bare LF.
fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    while let Some(offset) = bytes[line_start..].iter().position(|&b| b == b'\n') {
        let newline = line_start + offset;
        let line = &bytes[line_start..newline];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, newline + 1));
        }
        line_start = newline + 1;
    }
    None
}

/// Header section lines with folded continuations (RFC 3261 §7.3.1) joined by a single space.
fn unfold(head: &[u8]) -> Result<Vec<String>, SipError> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(raw);
        if raw[0] == b' ' || raw[0] == b'\t' {
            // Only a header field can be continued, not the start line.
            if lines.len() < 2 {
                return Err(SipError::InvalidHeaderLine { line: lines.len() + 1 });
            }
            if let Some(previous) = lines.last_mut() {
                previous.push(' ');
                previous.push_str(text.trim());
            }
        } else {
            if lines.len() > MAX_HEADERS {
                return Err(SipError::TooManyHeaders);
            }
            lines.push(text.into_owned());
        }
    }
    Ok(lines)
}

fn split_header(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    (!name.is_empty() && name.bytes().all(is_token_byte)).then(|| (name, value.trim()))
}

/// Parses one SIP message (request or response).
pub fn parse(bytes: &[u8], transport: Transport) -> Result<Message, SipError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge);
    }
    let bytes = &bytes[leading_line_breaks(bytes)..];
    if bytes.is_empty() {
        return Err(SipError::Empty);
    }
    let (head_end, body_start) = find_header_end(bytes).ok_or(SipError::NoHeaderEnd)?;
    let lines = unfold(&bytes[..head_end])?;
    let (start_line, header_lines) = lines.split_first().ok_or(SipError::InvalidStartLine)?;
    let start = parse_start_line(start_line)?;

    let mut headers = Vec::with_capacity(header_lines.len());
    for (index, line) in header_lines.iter().enumerate() {
        let (name, value) = split_header(line).ok_or(SipError::InvalidHeaderLine { line: index + 2 })?;
        headers.push((canonical_header_name(name), value.to_owned()));
    }
    let first = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str());

    let vias: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name == "Via")
        .flat_map(|(_, value)| split_outside_quotes(value, b','))
        .map(|via| via.trim().to_owned())
        .filter(|via| !via.is_empty())
        .collect();
    let top_via = vias.first().ok_or(SipError::MissingHeader("Via"))?;
    let via_branch = parse_via_branch(top_via)?;
    let from = first("From").ok_or(SipError::MissingHeader("From"))?;
    let from = NameAddr::parse(from).ok_or(SipError::InvalidHeaderValue { header: "From" })?;
    let to = first("To").ok_or(SipError::MissingHeader("To"))?;
    let to = NameAddr::parse(to).ok_or(SipError::InvalidHeaderValue { header: "To" })?;
    let call_id = first("Call-ID").ok_or(SipError::MissingHeader("Call-ID"))?;
    if call_id.is_empty() || !call_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SipError::InvalidHeaderValue { header: "Call-ID" });
    }
    let call_id = call_id.to_owned();
    let cseq = parse_cseq(first("CSeq").ok_or(SipError::MissingHeader("CSeq"))?)?;
    if let StartLine::Request { method, .. } = &start {
        if *method != cseq.method {
            return Err(SipError::CSeqMethodMismatch { method: method.to_string(), cseq: cseq.method.to_string() });
        }
    }
    let max_forwards = match first("Max-Forwards") {
        Some(value) => Some(value.parse().map_err(|_| SipError::InvalidHeaderValue { header: "Max-Forwards" })?),
        None => None,
    };
    let contact = match first("Contact") {
        Some(value) => {
            let first_contact = split_outside_quotes(value, b',').into_iter().next().unwrap_or(value);
            Some(NameAddr::parse(first_contact).ok_or(SipError::InvalidHeaderValue { header: "Contact" })?)
        }
        None => None,
    };
    let content_type = match first("Content-Type") {
        Some(value) => {
            Some(ContentType::parse(value).map_err(|_| SipError::InvalidHeaderValue { header: "Content-Type" })?)
        }
        None => None,
    };
    let content_length = match first("Content-Length") {
        Some(value) => {
            Some(value.parse::<usize>().map_err(|_| SipError::InvalidHeaderValue { header: "Content-Length" })?)
        }
        None => None,
    };
    let received = &bytes[body_start..];
    let body = match (transport, content_length) {
        (Transport::Stream, None) => return Err(SipError::MissingHeader("Content-Length")),
        (Transport::Stream, Some(declared)) if declared != received.len() => {
            return Err(SipError::ContentLengthMismatch { declared, received: received.len() })
        }
        (_, Some(declared)) if declared > received.len() => {
            return Err(SipError::BodyTruncated { declared, received: received.len() })
        }
        (_, Some(declared)) => &received[..declared],
        (Transport::Datagram, None) => received,
    };

    Ok(Message {
        start,
        headers,
        body: body.to_vec(),
        vias,
        via_branch,
        from,
        to,
        call_id,
        cseq,
        max_forwards,
        contact,
        content_type,
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let mut pieces = rest.splitn(3, ' ');
        let version = pieces.next().unwrap_or_default();
        check_version(version)?;
        let status = pieces
            .next()
            .filter(|code| code.len() == 3)
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|code| (100..=699).contains(code))
            .ok_or(SipError::InvalidStartLine)?;
        return Ok(StartLine::Response { status, reason: pieces.next().unwrap_or_default().trim().to_owned() });
    }
    let mut pieces = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(SipError::InvalidStartLine);
    };
    let version = version.strip_prefix("SIP/").ok_or(SipError::InvalidStartLine)?;
    check_version(version)?;
    let method = Method::parse(method).ok_or(SipError::InvalidStartLine)?;
    let uri = Uri::parse(uri).ok_or(SipError::InvalidStartLine)?;
    Ok(StartLine::Request { method, uri })
}

fn check_version(version: &str) -> Result<(), SipError> {
    if version == "2.0" {
        Ok(())
    } else {
        Err(SipError::UnsupportedVersion(truncated(version)))
    }
}

fn parse_via_branch(via: &str) -> Result<Option<String>, SipError> {
    let invalid = SipError::InvalidHeaderValue { header: "Via" };
    let (protocol, rest) = via.split_once([' ', '\t']).ok_or(invalid.clone())?;
    let mut pieces = protocol.split('/');
    match (pieces.next(), pieces.next(), pieces.next(), pieces.next()) {
        (Some(name), Some("2.0"), Some(transport), None)
            if name.eq_ignore_ascii_case("SIP") && !transport.is_empty() => {}
        _ => return Err(invalid),
    }
    let params = rest.split_once(';').map_or("", |(_, params)| params);
    Ok(find_param(&parse_params(params), "branch").flatten().map(str::to_owned))
}

fn parse_cseq(value: &str) -> Result<CSeq, SipError> {
    let invalid = SipError::InvalidHeaderValue { header: "CSeq" };
    let mut pieces = value.split_ascii_whitespace();
    let (Some(number), Some(method), None) = (pieces.next(), pieces.next(), pieces.next()) else {
        return Err(invalid);
    };
    let number = number.parse::<u32>().map_err(|_| invalid.clone())?;
    let method = Method::parse(method).ok_or(invalid)?;
    Ok(CSeq { number, method })
}

/// What a response adds to the headers it copies from the request.
#[derive(Debug, Clone, Default)]
pub struct ResponseParts<'a> {
    /// Added to To when the request's To has no tag (not on 100 Trying, RFC 3261 §8.2.6.2).
    pub to_tag: Option<&'a str>,
    /// Further headers (Contact, Allow, Supported, Require, Server…), in order.
    pub headers: Vec<(&'a str, String)>,
    /// Content type and body.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// Builds the response to `request`: Via (all of them, in order), From, To (with our tag), Call-ID and
/// CSeq copied (RFC 3261 §8.2.6.2), Record-Route on 101–299, then `parts.headers`, Content-Type and
/// Content-Length.
pub fn build_response(
    request: &Message,
    status: u16,
    reason: &str,
    parts: &ResponseParts<'_>,
) -> Result<Vec<u8>, SipError> {
    if !request.is_request() {
        return Err(SipError::InvalidResponse("the message answered is not a request"));
    }
    if !(100..=699).contains(&status) {
        return Err(SipError::InvalidResponse("status code outside 100–699"));
    }
    if !is_header_safe(reason) {
        return Err(SipError::InvalidResponse("reason phrase contains a line break"));
    }
    let raw = |name: &str| request.header(name).unwrap_or_default().to_owned();
    let mut to = raw("To");
    if status != 100 && request.to().tag().is_none() {
        if let Some(tag) = parts.to_tag {
            if tag.is_empty() || !tag.bytes().all(is_token_byte) {
                return Err(SipError::InvalidResponse("To tag is not a token"));
            }
            to.push_str(";tag=");
            to.push_str(tag);
        }
    }
    let mut headers = rsip::Headers::default();
    for via in request.vias() {
        headers.push(rsip::Header::Via(rsip::headers::Via::new(via.clone())));
    }
    headers.push(rsip::Header::From(rsip::headers::From::new(raw("From"))));
    headers.push(rsip::Header::To(rsip::headers::To::new(to)));
    headers.push(rsip::Header::CallId(rsip::headers::CallId::new(request.call_id())));
    // RFC 3261 §12.1.1: responses that may establish a dialog carry the request's Record-Route, in order.
    if (101..300).contains(&status) {
        for route in request.headers("Record-Route") {
            headers.push(rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(route)));
        }
    }
    headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new(format!(
        "{} {}",
        request.cseq().number,
        request.cseq().method
    ))));
    for (name, value) in &parts.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) || !is_header_safe(value) {
            return Err(SipError::InvalidResponse("extra header is not a valid header line"));
        }
        headers.push(rsip::Header::Other((*name).to_owned(), value.clone()));
    }
    let body: &[u8] = match parts.body {
        Some((content_type, body)) => {
            if !is_header_safe(content_type) || ContentType::parse(content_type).is_err() {
                return Err(SipError::InvalidResponse("invalid body content type"));
            }
            headers.push(rsip::Header::ContentType(rsip::headers::ContentType::new(content_type)));
            body
        }
        None => &[],
    };
    headers.push(rsip::Header::ContentLength(rsip::headers::ContentLength::new(body.len().to_string())));
    let response = rsip::Response {
        // Other keeps our reason phrase (rsip's own names are written without spaces, "NotAcceptableHere").
        status_code: rsip::StatusCode::Other(status, reason.to_owned()),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    // rsip writes the body lossily as UTF-8, so it writes only the head and the body is appended as bytes.
    let mut bytes = response.to_string().into_bytes();
    bytes.extend_from_slice(body);
    Ok(bytes)
}

fn is_header_safe(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

#[cfg(test)]
mod tests {
    use rsip::message::HasHeaders;

    use super::*;

    const OPTIONS: &str = "OPTIONS sip:recorder@203.0.113.5:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-77a1;rport, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-01\r\n\
        Via: SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-v6\r\n\
        Max-Forwards: 70\r\n\
        From: \"Ops \\\"Night\\\" <Shift>\" <sip:ping.monitor@example.com>;tag=98asjd8\r\n\
        To: <sip:recorder@203.0.113.5>\r\n\
        Record-Route: <sip:proxy1.example.com;lr>\r\n\
        Record-Route: <sip:proxy2.example.com;lr>\r\n\
        Call-ID: 7bd0c9a2-options@192.0.2.10\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_vias_quoted_display_names_and_dotted_users() {
        let message = parse(OPTIONS.as_bytes(), Transport::Stream).unwrap();
        assert_eq!(message.method(), &Method::Options);
        assert_eq!(message.vias().len(), 3);
        assert_eq!(message.vias()[2], "SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-v6");
        assert_eq!(message.via_branch(), Some("z9hG4bK-77a1"));
        assert_eq!(message.from().display_name.as_deref(), Some("Ops \"Night\" <Shift>"));
        assert_eq!(message.from().uri.user.as_deref(), Some("ping.monitor"));
        assert_eq!(message.from().uri.aor(), "sip:ping.monitor@example.com");
        assert_eq!(message.from().tag(), Some("98asjd8"));
        assert_eq!(message.to().tag(), None);
        assert_eq!(message.max_forwards(), Some(70));
        assert!(message.body().is_empty());
    }

    /// Pins down why framing and URIs are parsed here rather than by rsip 0.4 (if this starts failing, rsip
    /// changed and may take over more of the work).
    #[test]
    fn rsip_alone_is_not_enough() {
        let dotted = rsip::Uri::try_from("sip:john.doe@example.com").unwrap();
        assert!(dotted.auth.is_none(), "rsip puts a dotted user into the host: {dotted:?}");
        assert!(rsip::Uri::try_from("sip:srs@[2001:db8::1]:5060").is_err(), "rsip refuses IPv6 references");
        let lf_only = "OPTIONS sip:srs@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\n";
        assert!(rsip::SipMessage::try_from(lf_only).is_err(), "rsip needs CRLF");
        let compact = "OPTIONS sip:srs@example.com SIP/2.0\r\ni: abc\r\n\r\n";
        let message = rsip::SipMessage::try_from(compact).unwrap();
        assert!(
            matches!(message.headers().iter().next(), Some(rsip::Header::Other(name, _)) if name == "i"),
            "rsip does not know compact forms"
        );
    }

    #[test]
    fn uris_tel_ipv6_and_parameters() {
        let uri = Uri::parse("sip:+15551234567;npdi@[2001:db8::1]:5061;user=phone;transport=tls").unwrap();
        assert_eq!(uri.user.as_deref(), Some("+15551234567;npdi"));
        assert_eq!((uri.host.as_str(), uri.port), ("[2001:db8::1]", Some(5061)));
        assert_eq!(uri.param("transport"), Some(Some("tls")));
        assert_eq!(uri.aor(), "sip:+15551234567;npdi@[2001:db8::1]");
        assert_eq!(Uri::parse("tel:+44-20-7946-0958;phone-context=example.com").unwrap().aor(), "tel:+44-20-7946-0958");
        assert_eq!(Uri::parse("SIP:Alice@EXAMPLE.com").unwrap().aor(), "sip:Alice@example.com");
        assert!(Uri::parse("sip:a@host:notaport").is_none());
        assert!(Uri::parse("no scheme").is_none());
        let contact = NameAddr::parse("<sip:src@192.0.2.10:5060;transport=tcp>;+sip.src;expires=60").unwrap();
        assert_eq!(contact.param("+sip.src"), Some(None));
        assert_eq!(contact.uri.param("transport"), Some(Some("tcp")));
        let bare = NameAddr::parse("sip:bob@example.com;tag=abc").unwrap();
        assert_eq!((bare.tag(), bare.uri.params.len()), (Some("abc"), 0));
        let unquoted = NameAddr::parse("Bob Smith <sip:bob@example.com>").unwrap();
        assert_eq!(unquoted.display_name.as_deref(), Some("Bob Smith"));
        assert!(NameAddr::parse("\"unterminated <sip:a@b>").is_none());
        assert!(NameAddr::parse("Name sip:a@b").is_none());
    }

    #[test]
    fn compact_forms_folding_and_bare_lf() {
        let text = "BYE sip:recorder@203.0.113.5 SIP/2.0\n\
            v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c1\n\
            f: <sip:src@example.com>;tag=a\n\
            t: <sip:recorder@203.0.113.5>;tag=b\n\
            i: compact-1@example.com\n\
            CSeq: 3\n  BYE\n\
            k: siprec, timer\n\
            l: 4\n\nabcdEXTRA";
        let message = parse(text.as_bytes(), Transport::Datagram).unwrap();
        assert_eq!(message.call_id(), "compact-1@example.com");
        assert_eq!(message.cseq(), &CSeq { number: 3, method: Method::Bye });
        assert!(message.has_option_tag("Supported", "SIPREC"));
        assert_eq!(message.body(), b"abcd", "a datagram's extra bytes are cut at Content-Length");
        assert_eq!(
            parse(text.as_bytes(), Transport::Stream),
            Err(SipError::ContentLengthMismatch { declared: 4, received: 9 })
        );
    }

    #[test]
    fn stream_framing() {
        let one = OPTIONS.as_bytes();
        let mut two = b"\r\n\r\n".to_vec();
        two.extend_from_slice(one);
        two.extend_from_slice(one);
        assert_eq!(stream_message_len(&two), Ok(Some(4 + one.len())));
        assert_eq!(stream_message_len(&one[..one.len() - 3]), Ok(None));
        assert_eq!(
            stream_message_len(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"),
            Err(SipError::MissingHeader("Content-Length"))
        );
        assert_eq!(stream_message_len(&vec![b'a'; MAX_MESSAGE_BYTES + 1]), Err(SipError::TooLarge));
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let replace = |from: &str, to: &str| OPTIONS.replacen(from, to, 1);
        let parse_stream = |text: &str| parse(text.as_bytes(), Transport::Stream);
        assert_eq!(parse(b"", Transport::Datagram), Err(SipError::Empty));
        assert_eq!(parse_stream(&OPTIONS[..60]), Err(SipError::NoHeaderEnd));
        assert_eq!(
            parse_stream(&replace("SIP/2.0\r\n", "SIP/3.0\r\n")),
            Err(SipError::UnsupportedVersion("3.0".into()))
        );
        assert_eq!(parse_stream(&replace("Call-ID", "X-Call-ID")), Err(SipError::MissingHeader("Call-ID")));
        assert_eq!(
            parse_stream(&replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")).unwrap_err().to_string(),
            "CSeq method INVITE differs from the request method OPTIONS"
        );
        assert_eq!(
            parse_stream(&replace("Max-Forwards: 70", "Max-Forwards: many")),
            Err(SipError::InvalidHeaderValue { header: "Max-Forwards" })
        );
        assert_eq!(
            parse_stream(&replace("Content-Length: 0", "Content-Length: 10")),
            Err(SipError::ContentLengthMismatch { declared: 10, received: 0 })
        );
        assert_eq!(
            parse(replace("Content-Length: 0", "Content-Length: 10").as_bytes(), Transport::Datagram),
            Err(SipError::BodyTruncated { declared: 10, received: 0 })
        );
        assert_eq!(parse_stream(&replace("Content-Length: 0\r\n", "")), Err(SipError::MissingHeader("Content-Length")));
        assert_eq!(
            parse_stream(&replace("Max-Forwards: 70", "Max Forwards 70")),
            Err(SipError::InvalidHeaderLine { line: 4 })
        );
        assert_eq!(parse(&vec![b'x'; MAX_MESSAGE_BYTES + 1], Transport::Datagram), Err(SipError::TooLarge));
        assert_eq!(parse(b"\x00\xff garbage\r\n\r\n", Transport::Datagram), Err(SipError::InvalidStartLine));
    }

    #[test]
    fn unknown_methods_are_kept_by_name() {
        let text = OPTIONS.replace("OPTIONS", "FROBNICATE");
        let message = parse(text.as_bytes(), Transport::Stream).unwrap();
        assert_eq!(message.method(), &Method::Other("FROBNICATE".into()));
    }

    #[test]
    fn responses_copy_the_dialog_headers_and_add_a_to_tag() {
        let request = parse(OPTIONS.as_bytes(), Transport::Stream).unwrap();
        let parts = ResponseParts {
            to_tag: Some("rec-1"),
            headers: vec![("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS".to_owned())],
            body: Some(("application/sdp", b"v=0\r\n")),
        };
        let bytes = build_response(&request, 200, "OK", &parts).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-77a1;rport\r\n"));
        assert!(text.contains("\r\nTo: <sip:recorder@203.0.113.5>;tag=rec-1\r\n"));
        assert!(text.ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
        let response = parse(&bytes, Transport::Stream).unwrap();
        assert_eq!(response.status(), Some(200));
        assert_eq!(response.vias(), request.vias());
        assert_eq!(response.to().tag(), Some("rec-1"));
        assert_eq!(response.method(), &Method::Options);
        assert_eq!(response.call_id(), request.call_id());

        assert_eq!(
            response.headers("Record-Route").collect::<Vec<_>>(),
            vec!["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
        );
        let refused = build_response(&request, 488, "Not Acceptable Here", &ResponseParts::default()).unwrap();
        let refused = parse(&refused, Transport::Stream).unwrap();
        assert_eq!(refused.header("Record-Route"), None, "a failure establishes no dialog");
        let trying = build_response(&request, 100, "Trying", &parts).unwrap();
        assert_eq!(parse(&trying, Transport::Stream).unwrap().to().tag(), None);
        let unsafe_header =
            ResponseParts { headers: vec![("X-Evil", "a\r\nInjected: 1".to_owned())], ..Default::default() };
        assert!(build_response(&request, 200, "OK", &unsafe_header).is_err());
        assert!(build_response(&request, 1000, "OK", &ResponseParts::default()).is_err());
        assert!(build_response(&response, 200, "OK", &ResponseParts::default()).is_err());
    }
}
