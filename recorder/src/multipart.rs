//! Content-Type values and `multipart/mixed` bodies (RFC 2046 §5.1) as SIPREC INVITEs carry them: the SDP
//! offer, the recording metadata and whatever else an SBC adds (PIDF, ISUP, GTD). This module only frames:
//! it never decodes a transfer encoding, never interprets a part's content and never copies a body.

use std::fmt;

/// More parts than any SBC sends; a bound so a hostile body cannot make us build a huge list.
pub const MAX_PARTS: usize = 32;
/// Header lines of one part; real parts have one to three.
pub const MAX_PART_HEADERS: usize = 32;
/// RFC 2046 limits a boundary to 70 characters.
const MAX_BOUNDARY_LEN: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("content type {0:?} cannot be parsed")]
    InvalidContentType(String),
    #[error("content type {0:?} is not multipart")]
    NotMultipart(String),
    #[error("multipart content type has no boundary parameter")]
    MissingBoundary,
    #[error("multipart boundary is empty or longer than 70 characters")]
    InvalidBoundary,
    #[error("the body contains no delimiter line for its boundary")]
    NoParts,
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("part {0} ends inside its headers")]
    TruncatedPartHeaders(usize),
    #[error("part {part} has a malformed header line")]
    InvalidPartHeader { part: usize },
    #[error("part {0} has more than {MAX_PART_HEADERS} header lines")]
    TooManyPartHeaders(usize),
}

/// A parsed Content-Type: the media type in lower case and its parameters (names in lower case, values as
/// sent, quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    essence: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses a Content-Type header value. Whitespace around `;` and `=` is tolerated (some SBCs send
    /// `multipart/mixed ; boundary = x`), which the `mime` grammar alone would refuse.
    pub fn parse(value: &str) -> Result<Self, MultipartError> {
        let compact = squeeze_parameter_whitespace(value.trim());
        let parsed: mime::Mime = compact.parse().map_err(|_| MultipartError::InvalidContentType(truncated(value)))?;
        Ok(Self {
            essence: parsed.essence_str().to_owned(),
            params: parsed
                .params()
                .map(|(name, value)| (name.as_str().to_ascii_lowercase(), value.as_str().to_owned()))
                .collect(),
        })
    }

    /// `type/subtype`, lower case.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    /// A parameter's value by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, essence: &str) -> bool {
        self.essence.eq_ignore_ascii_case(essence)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.essence)?;
        for (name, value) in &self.params {
            write!(f, ";{name}={value}")?;
        }
        Ok(())
    }
}

/// One body part: its headers, its content type (None when absent or unparseable: such a part is kept so
/// the caller can see it, but nothing will match it) and its content, borrowed from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub headers: Vec<(String, String)>,
    pub content_type: Option<ContentType>,
    pub body: &'a [u8],
}

impl Part<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, essence: &str) -> bool {
        self.content_type.as_ref().is_some_and(|ct| ct.is(essence))
    }
}

/// The parts of a multipart body in order. `terminated` is false when the closing delimiter was missing: the
/// SIP layer has already checked the body against Content-Length, so a missing close delimiter is the
/// sender's omission rather than a cut message, and the parts are still given (the caller may log it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart<'a> {
    pub parts: Vec<Part<'a>>,
    pub terminated: bool,
}

impl<'a> Multipart<'a> {
    /// The first part whose content type is one of `essences`.
    pub fn find(&self, essences: &[&str]) -> Option<&Part<'a>> {
        self.parts.iter().find(|part| essences.iter().any(|essence| part.is(essence)))
    }
}

/// Splits `body` according to `content_type` (which must be `multipart/*` with a boundary).
pub fn split<'a>(content_type: &ContentType, body: &'a [u8]) -> Result<Multipart<'a>, MultipartError> {
    if !content_type.essence().starts_with("multipart/") {
        return Err(MultipartError::NotMultipart(content_type.essence().to_owned()));
    }
    let boundary = content_type.param("boundary").ok_or(MultipartError::MissingBoundary)?;
    split_with_boundary(boundary, body)
}

/// Splits `body` at the delimiter lines of `boundary`. Line ends may be CRLF or bare LF; the preamble
/// before the first delimiter and the epilogue after the closing one are ignored.
pub fn split_with_boundary<'a>(boundary: &str, body: &'a [u8]) -> Result<Multipart<'a>, MultipartError> {
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
        return Err(MultipartError::InvalidBoundary);
    }
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary.as_bytes());

    let mut parts = Vec::new();
    // Where the content of the part being read starts (just after its delimiter line).
    let mut open: Option<usize> = None;
    let mut terminated = false;
    let mut search_from = 0;
    while let Some(found) = find_delimiter(body, &delimiter, search_from) {
        let after = found.start + delimiter.len();
        let closing = body[after..].starts_with(b"--");
        let line_end = match line_end_after(body, if closing { after + 2 } else { after }) {
            Some(end) => end,
            // Text after the boundary on the same line: not a delimiter (RFC 2046 forbids the boundary
            // appearing in content, but a prefix of a longer line is just content).
            None => {
                search_from = after;
                continue;
            }
        };
        if let Some(start) = open.take() {
            if parts.len() == MAX_PARTS {
                return Err(MultipartError::TooManyParts);
            }
            // Back-to-back delimiter lines share one line break: the part between them is empty.
            let end = found.content_end.max(start);
            parts.push(parse_part(parts.len(), &body[start..end])?);
        }
        if closing {
            terminated = true;
            break;
        }
        open = Some(line_end);
        search_from = line_end;
    }
    match open {
        Some(start) => {
            if parts.len() == MAX_PARTS {
                return Err(MultipartError::TooManyParts);
            }
            let end = trim_final_line_break(body, start);
            parts.push(parse_part(parts.len(), &body[start..end])?);
        }
        None if parts.is_empty() => return Err(MultipartError::NoParts),
        None => {}
    }
    Ok(Multipart { parts, terminated })
}

struct Found {
    /// Index of the first `-` of the delimiter.
    start: usize,
    /// Where the previous part's content ends: the line break before the delimiter belongs to it.
    content_end: usize,
}

/// The next occurrence of `delimiter` at the start of a line, at or after `from`.
fn find_delimiter(body: &[u8], delimiter: &[u8], mut from: usize) -> Option<Found> {
    while from + delimiter.len() <= body.len() {
        let offset = body[from..].windows(delimiter.len()).position(|window| window == delimiter)?;
        let start = from + offset;
        if start == 0 {
            return Some(Found { start, content_end: 0 });
        }
        if body[start - 1] == b'\n' {
            let content_end = if start >= 2 && body[start - 2] == b'\r' { start - 2 } else { start - 1 };
            return Some(Found { start, content_end });
        }
        from = start + 1;
    }
    None
}

/// After a delimiter, only transport padding (spaces, tabs) may precede the line end. Returns the index
/// just past the line break, or the body's end; None if other text follows on the line.
fn line_end_after(body: &[u8], mut index: usize) -> Option<usize> {
    while index < body.len() {
        match body[index] {
            b' ' | b'\t' | b'\r' => index += 1,
            b'\n' => return Some(index + 1),
            _ => return None,
        }
    }
    Some(body.len())
}

/// An unterminated last part: drop the line break that would have preceded the missing delimiter.
fn trim_final_line_break(body: &[u8], start: usize) -> usize {
    let mut end = body.len();
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

fn parse_part(index: usize, raw: &[u8]) -> Result<Part<'_>, MultipartError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut position = 0;
    loop {
        let Some(newline) = raw[position..].iter().position(|&b| b == b'\n') else {
            // A part without headers may also be just content with no blank line only if it is empty.
            if raw[position..].iter().all(|b| b.is_ascii_whitespace()) && headers.is_empty() {
                return Ok(Part { headers, content_type: None, body: &raw[raw.len()..] });
            }
            return Err(MultipartError::TruncatedPartHeaders(index));
        };
        let line_end = position + newline;
        let line = strip_cr(&raw[position..line_end]);
        position = line_end + 1;
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Folded continuation of the previous header.
            let Some((_, value)) = headers.last_mut() else {
                return Err(MultipartError::InvalidPartHeader { part: index });
            };
            value.push(' ');
            value.push_str(String::from_utf8_lossy(line).trim());
            continue;
        }
        if headers.len() == MAX_PART_HEADERS {
            return Err(MultipartError::TooManyPartHeaders(index));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(MultipartError::InvalidPartHeader { part: index })?;
        let name = std::str::from_utf8(&line[..colon])
            .ok()
            .map(str::trim)
            .filter(|name| !name.is_empty() && name.bytes().all(is_token_byte))
            .ok_or(MultipartError::InvalidPartHeader { part: index })?;
        headers.push((name.to_owned(), String::from_utf8_lossy(&line[colon + 1..]).trim().to_owned()));
    }
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Content-Type"))
        .and_then(|(_, value)| ContentType::parse(value).ok());
    Ok(Part { headers, content_type, body: &raw[position..] })
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Removes whitespace around `;` and `=` outside quoted strings, so `mime` sees `a/b;name=value`.
fn squeeze_parameter_whitespace(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_quotes = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            out.push(c);
            if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                out.push(c);
            }
            ';' | '=' => {
                while out.ends_with([' ', '\t']) {
                    out.pop();
                }
                out.push(c);
                while chars.peek().is_some_and(|next| *next == ' ' || *next == '\t') {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Error messages quote at most a short prefix of hostile input.
pub(crate) fn truncated(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> ContentType {
        ContentType::parse(value).unwrap()
    }

    #[test]
    fn content_type_parameters_quoted_or_not_and_with_loose_whitespace() {
        assert_eq!(ct("multipart/mixed;boundary=unique-boundary-1").param("boundary"), Some("unique-boundary-1"));
        assert_eq!(
            ct("Multipart/Mixed; Boundary=\"sonus content delim\"").param("boundary"),
            Some("sonus content delim")
        );
        assert_eq!(
            ct("multipart/mixed ; boundary = OSS-unique-boundary-42").param("boundary"),
            Some("OSS-unique-boundary-42")
        );
        assert_eq!(ct("APPLICATION/SDP").essence(), "application/sdp");
        assert!(ct("application/rs-metadata+xml").is("application/rs-metadata+xml"));
        assert!(ContentType::parse("application/ +xml").is_err());
        assert!(ContentType::parse("").is_err());
    }

    const CRLF_BODY: &str = "--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b1\r\ncontent-type: \
                             application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n<recording/>\r\n--b1--\r\n";

    #[test]
    fn splits_crlf_parts_keeping_content_exact() {
        let multipart = split(&ct("multipart/mixed;boundary=b1"), CRLF_BODY.as_bytes()).unwrap();
        assert!(multipart.terminated);
        assert_eq!(multipart.parts.len(), 2);
        assert!(multipart.parts[0].is("application/sdp"));
        assert_eq!(multipart.parts[0].body, b"v=0\r\n");
        assert_eq!(multipart.parts[1].header("CONTENT-DISPOSITION"), Some("recording-session"));
        assert_eq!(multipart.parts[1].body, b"<recording/>");
        assert!(multipart.find(&["application/rs-metadata", "application/rs-metadata+xml"]).is_some());
    }

    #[test]
    fn bare_lf_preamble_epilogue_and_padding_after_the_delimiter() {
        let body = "This is a preamble.\n--b1 \t\nContent-Type: application/sdp\n\nv=0\n--b1\nContent-Type: \
                    application/gtd\n\nIAM,\n--b1-- \nepilogue --b1\n";
        let multipart = split_with_boundary("b1", body.as_bytes()).unwrap();
        assert!(multipart.terminated);
        assert_eq!(multipart.parts.len(), 2);
        assert_eq!(multipart.parts[0].body, b"v=0");
        assert_eq!(multipart.parts[1].body, b"IAM,");
    }

    #[test]
    fn boundary_text_inside_a_line_is_content() {
        let body = "--b1\r\nContent-Type: text/plain\r\n\r\nsee --b1 here\r\nx--b1\r\n--b1extra\r\n--b1--";
        let multipart = split_with_boundary("b1", body.as_bytes()).unwrap();
        assert_eq!(multipart.parts.len(), 1);
        assert_eq!(multipart.parts[0].body, b"see --b1 here\r\nx--b1\r\n--b1extra");
    }

    #[test]
    fn back_to_back_delimiters_make_an_empty_part() {
        // Found by the multipart fuzz target: the line break between two delimiter lines was counted twice.
        for body in ["--b\n--b\nContent-Type: text/plain\n\nx\n--b--", "--b\r\n--b\r\n\r\nx\r\n--b--"] {
            let multipart = split_with_boundary("b", body.as_bytes()).unwrap();
            assert_eq!(multipart.parts.len(), 2);
            assert!(multipart.parts[0].body.is_empty() && multipart.parts[0].headers.is_empty());
            assert_eq!(multipart.parts[1].body, b"x");
        }
    }

    #[test]
    fn missing_closing_delimiter_still_gives_the_parts() {
        let body = "--b1\nContent-Type: application/sdp\n\nv=0\n--b1\nContent-Type: application/gtd\n\nIAM,\n";
        let multipart = split_with_boundary("b1", body.as_bytes()).unwrap();
        assert!(!multipart.terminated);
        assert_eq!(multipart.parts[1].body, b"IAM,");
    }

    #[test]
    fn truncated_or_malformed_bodies_are_typed_errors() {
        assert_eq!(split_with_boundary("b1", b"no delimiter at all"), Err(MultipartError::NoParts));
        assert_eq!(
            split_with_boundary("b1", b"--b1\r\nContent-Type: application/sdp\r\nContent-Dispo"),
            Err(MultipartError::TruncatedPartHeaders(0))
        );
        assert_eq!(
            split_with_boundary("b1", b"--b1\r\nnot a header\r\n\r\nx\r\n--b1--"),
            Err(MultipartError::InvalidPartHeader { part: 0 })
        );
        assert_eq!(split_with_boundary("", b"--\r\n"), Err(MultipartError::InvalidBoundary));
        assert_eq!(split(&ct("application/sdp"), b"v=0"), Err(MultipartError::NotMultipart("application/sdp".into())));
        assert_eq!(split(&ct("multipart/mixed"), b"--x"), Err(MultipartError::MissingBoundary));
        let many: String = (0..=MAX_PARTS).map(|_| "--b\r\n\r\nx\r\n").collect::<String>() + "--b--";
        assert_eq!(split_with_boundary("b", many.as_bytes()), Err(MultipartError::TooManyParts));
    }
}
