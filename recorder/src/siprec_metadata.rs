//! SIPREC recording metadata (RFC 7865 XML as `application/rs-metadata+xml` or `application/rs-metadata`,
//! in the RFC, draft or no namespace) and the merging of later partial updates. Never reads a DTD or expands
//! an entity, and bounds document size, element count, depth and text; ids and times stay strings.

use std::collections::HashSet;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// RFC 7865 §9.
pub const RECORDING_NAMESPACE: &str = "urn:ietf:params:xml:ns:recording:1";
/// The draft namespace, still sent by Oracle/Acme Packet, Avaya and Ribbon/Sonus SBCs.
pub const DRAFT_RECORDING_NAMESPACE: &str = "urn:ietf:params:xml:ns:recording";
/// Both content types are seen on the wire.
pub const CONTENT_TYPES: [&str; 2] = ["application/rs-metadata+xml", "application/rs-metadata"];

/// A real document is 2–10 KiB; conferences with many participants stay far below this.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
pub const MAX_ELEMENTS: usize = 10_000;
pub const MAX_DEPTH: usize = 32;
/// Longest text or attribute value kept (ids, AORs, names, times are all far shorter).
pub const MAX_TEXT_BYTES: usize = 2048;
/// Attributes read from one of our elements; the schema has at most three.
const MAX_ATTRIBUTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("metadata document is not UTF-8")]
    NotText,
    #[error("metadata documents may not contain a DTD")]
    Doctype,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a text or attribute value is longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    #[error("undefined entity reference &{0};")]
    UnknownEntity(String),
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("root element is not <recording> in a recording namespace")]
    NotRecording,
    #[error("the document has no root element")]
    Empty,
    #[error("<{element}> has no id")]
    MissingId { element: &'static str },
}

/// Which namespace the document used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataNamespace {
    Rfc7865,
    Draft,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMode {
    /// The document describes the whole recording session (an update replaces what was known).
    Complete,
    /// Only what changed (an update is merged into what was known).
    Partial,
    Other(String),
}

/// When an element was associated with or dissociated from the recording, as sent (vendors send local
/// times without offset, so interpreting them is left to the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Association {
    pub associate_time: Option<String>,
    pub disassociate_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub association: Association,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    /// RFC 7989 Session-IDs of the recorded call.
    pub sip_session_ids: Vec<String>,
    pub group_ref: Option<String>,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub association: Association,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameId {
    pub aor: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    /// `<nameID aor=…><name>…</name></nameID>`, or the older `<aor>`/`<name>` children as one entry.
    pub names: Vec<NameId>,
    /// The draft form's `session` attribute.
    pub session_id: Option<String>,
    /// Streams sent and received, as the draft form lists them inside `<participant>`.
    pub send: Vec<String>,
    pub recv: Vec<String>,
    pub association: Association,
}

impl Participant {
    pub fn aors(&self) -> impl Iterator<Item = &str> {
        self.names.iter().filter_map(|name| name.aor.as_deref())
    }

    pub fn display_name(&self) -> Option<&str> {
        self.names.iter().find_map(|name| name.name.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub id: String,
    pub session_id: Option<String>,
    /// The SDP `a=label` of the media line carrying this stream.
    pub label: Option<String>,
    pub association: Association,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecordingAssoc {
    pub session_id: String,
    pub association: Association,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSessionAssoc {
    pub participant_id: String,
    pub session_id: Option<String>,
    pub association: Association,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantStreamAssoc {
    pub participant_id: String,
    pub send: Vec<String>,
    pub recv: Vec<String>,
    pub association: Association,
}

/// A recording metadata document (or the merge of several), elements in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMetadata {
    pub namespace: MetadataNamespace,
    pub data_mode: Option<DataMode>,
    pub groups: Vec<Group>,
    pub sessions: Vec<Session>,
    pub participants: Vec<Participant>,
    pub streams: Vec<Stream>,
    pub session_recording_assocs: Vec<SessionRecordingAssoc>,
    pub participant_session_assocs: Vec<ParticipantSessionAssoc>,
    pub participant_stream_assocs: Vec<ParticipantStreamAssoc>,
}

impl RecordingMetadata {
    fn empty(namespace: MetadataNamespace) -> Self {
        Self {
            namespace,
            data_mode: None,
            groups: Vec::new(),
            sessions: Vec::new(),
            participants: Vec::new(),
            streams: Vec::new(),
            session_recording_assocs: Vec::new(),
            participant_session_assocs: Vec::new(),
            participant_stream_assocs: Vec::new(),
        }
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|participant| participant.id == id)
    }

    /// Ids of the streams a participant sends, from both the RFC form (`<participantstreamassoc>`) and the
    /// draft form (`<send>` inside `<participant>`), in document order without repeats.
    pub fn streams_sent_by(&self, participant_id: &str) -> Vec<&str> {
        let own = self.participant(participant_id).into_iter().flat_map(|participant| &participant.send);
        let associated = self
            .participant_stream_assocs
            .iter()
            .filter(|assoc| assoc.participant_id == participant_id)
            .flat_map(|assoc| &assoc.send);
        let mut seen = HashSet::new();
        own.chain(associated).map(String::as_str).filter(|id| seen.insert(*id)).collect()
    }

    /// The participant sending the stream(s) whose SDP label is `label`: the first, in document order, that
    /// lists one of them in its own `<send>` or in a `<participantstreamassoc>`. Linear in the document, as
    /// a hostile one may hold thousands of elements.
    pub fn sender_of_label(&self, label: &str) -> Option<&Participant> {
        let stream_ids: HashSet<&str> = self
            .streams
            .iter()
            .filter(|stream| stream.label.as_deref() == Some(label))
            .map(|stream| stream.id.as_str())
            .collect();
        if stream_ids.is_empty() {
            return None;
        }
        let sends = |ids: &[String]| ids.iter().any(|id| stream_ids.contains(id.as_str()));
        let associated: HashSet<&str> = self
            .participant_stream_assocs
            .iter()
            .filter(|assoc| sends(&assoc.send))
            .map(|assoc| assoc.participant_id.as_str())
            .collect();
        self.participants
            .iter()
            .find(|participant| sends(&participant.send) || associated.contains(participant.id.as_str()))
    }

    fn upsert_group(&mut self, update: Group) {
        match self.groups.iter_mut().find(|group| group.id == update.id) {
            Some(group) => group.association.update(update.association),
            None => self.groups.push(update),
        }
    }

    fn upsert_session(&mut self, update: Session) {
        let Some(session) = self.sessions.iter_mut().find(|session| session.id == update.id) else {
            self.sessions.push(update);
            return;
        };
        for id in update.sip_session_ids {
            if !session.sip_session_ids.contains(&id) {
                session.sip_session_ids.push(id);
            }
        }
        replace_if_some(&mut session.group_ref, update.group_ref);
        replace_if_some(&mut session.start_time, update.start_time);
        replace_if_some(&mut session.stop_time, update.stop_time);
        session.association.update(update.association);
    }

    fn upsert_participant(&mut self, update: Participant) {
        let Some(participant) = self.participants.iter_mut().find(|participant| participant.id == update.id) else {
            self.participants.push(update);
            return;
        };
        // A placeholder participant gets its AOR and name later; a known AOR may get a new name (caller-ID
        // update).
        for name in update.names {
            match participant.names.iter_mut().find(|known| same_aor(known.aor.as_deref(), name.aor.as_deref())) {
                Some(known) => replace_if_some(&mut known.name, name.name),
                None => participant.names.push(name),
            }
        }
        replace_if_some(&mut participant.session_id, update.session_id);
        // Stream lists describe the current association: a participant element that lists any replaces them.
        if !update.send.is_empty() || !update.recv.is_empty() {
            participant.send = update.send;
            participant.recv = update.recv;
        }
        participant.association.update(update.association);
    }

    fn upsert_stream(&mut self, update: Stream) {
        match self.streams.iter_mut().find(|stream| stream.id == update.id) {
            Some(stream) => {
                replace_if_some(&mut stream.session_id, update.session_id);
                replace_if_some(&mut stream.label, update.label);
                stream.association.update(update.association);
            }
            None => self.streams.push(update),
        }
    }

    fn upsert_session_recording_assoc(&mut self, update: SessionRecordingAssoc) {
        match self.session_recording_assocs.iter_mut().find(|assoc| assoc.session_id == update.session_id) {
            Some(assoc) => assoc.association.update(update.association),
            None => self.session_recording_assocs.push(update),
        }
    }

    fn upsert_participant_session_assoc(&mut self, update: ParticipantSessionAssoc) {
        let known = self
            .participant_session_assocs
            .iter_mut()
            .find(|assoc| assoc.participant_id == update.participant_id && assoc.session_id == update.session_id);
        match known {
            Some(assoc) => assoc.association.update(update.association),
            None => self.participant_session_assocs.push(update),
        }
    }

    fn upsert_participant_stream_assoc(&mut self, update: ParticipantStreamAssoc) {
        match self.participant_stream_assocs.iter_mut().find(|assoc| assoc.participant_id == update.participant_id) {
            // The element states the participant's current streams, so it replaces the lists.
            Some(assoc) => {
                assoc.send = update.send;
                assoc.recv = update.recv;
                assoc.association.update(update.association);
            }
            None => self.participant_stream_assocs.push(update),
        }
    }

    fn absorb(&mut self, other: RecordingMetadata) {
        self.namespace = other.namespace;
        if other.data_mode.is_some() {
            self.data_mode = other.data_mode;
        }
        other.groups.into_iter().for_each(|group| self.upsert_group(group));
        other.sessions.into_iter().for_each(|session| self.upsert_session(session));
        other.participants.into_iter().for_each(|participant| self.upsert_participant(participant));
        other.streams.into_iter().for_each(|stream| self.upsert_stream(stream));
        other.session_recording_assocs.into_iter().for_each(|assoc| self.upsert_session_recording_assoc(assoc));
        other.participant_session_assocs.into_iter().for_each(|assoc| self.upsert_participant_session_assoc(assoc));
        other.participant_stream_assocs.into_iter().for_each(|assoc| self.upsert_participant_stream_assoc(assoc));
    }
}

impl Association {
    fn update(&mut self, update: Association) {
        replace_if_some(&mut self.associate_time, update.associate_time);
        replace_if_some(&mut self.disassociate_time, update.disassociate_time);
    }
}

fn replace_if_some(target: &mut Option<String>, update: Option<String>) {
    if update.is_some() {
        *target = update;
    }
}

fn same_aor(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

/// Applies the metadata of a later request (re-INVITE, UPDATE) to what was known. A `complete` document
/// replaces the previous one (RFC 7865 §6: it is a full snapshot); otherwise (`partial`, or no datamode)
/// elements are merged by id: fields present in the update win, fields it leaves out are kept.
pub fn merge_update(previous: &RecordingMetadata, update: &RecordingMetadata) -> RecordingMetadata {
    if update.data_mode == Some(DataMode::Complete) {
        return update.clone();
    }
    let mut merged = previous.clone();
    merged.absorb(update.clone());
    merged
}

/// Parses a recording metadata document.
pub fn parse(bytes: &[u8]) -> Result<RecordingMetadata, MetadataError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| MetadataError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Refused before parsing as well as on the DocType event: no DTD is ever looked at.
    if contains_ignore_ascii_case(text.as_bytes(), b"<!DOCTYPE")
        || contains_ignore_ascii_case(text.as_bytes(), b"<!ENTITY")
    {
        return Err(MetadataError::Doctype);
    }
    let (root, namespace) = read_tree(text)?;
    interpret(&root, namespace)
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle))
}

/// An element of ours (recording namespace or none) with its attributes and text; elements of other
/// namespaces (vendor extensions) are skipped with everything inside them.
#[derive(Debug)]
struct Node {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
    /// Once an element has child elements its text is whitespace between them, not content.
    has_children: bool,
    children: Vec<Node>,
}

impl Node {
    fn attribute(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|wanted| {
            self.attributes.iter().find(|(name, _)| name.eq_ignore_ascii_case(wanted)).map(|(_, value)| value.as_str())
        })
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |child| child.name.eq_ignore_ascii_case(name))
    }

    fn child_text(&self, name: &str) -> Option<String> {
        self.children(name).find_map(Node::content)
    }

    fn content(&self) -> Option<String> {
        let trimmed = self.text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

fn xml_error(error: quick_xml::Error) -> MetadataError {
    MetadataError::Xml(error.to_string())
}

fn classify(resolved: &ResolveResult<'_>) -> Option<MetadataNamespace> {
    match resolved {
        ResolveResult::Unbound => Some(MetadataNamespace::None),
        ResolveResult::Bound(namespace) if namespace.as_ref() == RECORDING_NAMESPACE.as_bytes() => {
            Some(MetadataNamespace::Rfc7865)
        }
        ResolveResult::Bound(namespace) if namespace.as_ref() == DRAFT_RECORDING_NAMESPACE.as_bytes() => {
            Some(MetadataNamespace::Draft)
        }
        _ => None,
    }
}

fn read_tree(text: &str) -> Result<(Node, MetadataNamespace), MetadataError> {
    let mut reader = NsReader::from_str(text);
    // None marks a skipped (foreign) element, kept on the stack only to match its end tag and count depth.
    let mut stack: Vec<Option<Node>> = Vec::new();
    let mut root: Option<(Node, MetadataNamespace)> = None;
    let mut root_namespace = MetadataNamespace::None;
    let mut elements = 0usize;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(xml_error)?;
        let namespace = classify(&resolved);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(MetadataError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(MetadataError::TooDeep);
                }
                let node = match stack.last_mut() {
                    None => {
                        if root.is_some() {
                            return Err(MetadataError::Xml("more than one root element".into()));
                        }
                        let local = start.local_name();
                        let Some(namespace) = namespace.filter(|_| local.as_ref().eq_ignore_ascii_case(b"recording"))
                        else {
                            return Err(MetadataError::NotRecording);
                        };
                        root_namespace = namespace;
                        Some(new_node(start)?)
                    }
                    Some(Some(parent)) => {
                        parent.has_children = true;
                        parent.text.clear();
                        match namespace {
                            Some(_) => Some(new_node(start)?),
                            None => None,
                        }
                    }
                    Some(None) => None,
                };
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, root_namespace, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| MetadataError::Xml("unmatched end tag".into()))?;
                close(&mut stack, &mut root, root_namespace, node);
            }
            Event::Text(content) => {
                let content = content.xml10_content().map_err(|error| MetadataError::Xml(error.to_string()))?;
                append_text(&mut stack, &content)?;
            }
            Event::CData(content) => {
                let content = content.decode().map_err(|error| MetadataError::Xml(error.to_string()))?;
                append_text(&mut stack, &content)?;
            }
            Event::GeneralRef(reference) => {
                let character = resolve_reference(&reference)?;
                append_text(&mut stack, character.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(MetadataError::Doctype),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(MetadataError::Xml("document ends inside an element".into()));
    }
    root.ok_or(MetadataError::Empty)
}

fn close(
    stack: &mut [Option<Node>],
    root: &mut Option<(Node, MetadataNamespace)>,
    namespace: MetadataNamespace,
    node: Option<Node>,
) {
    match (stack.last_mut(), node) {
        (None, Some(node)) => *root = Some((node, namespace)),
        (Some(Some(parent)), Some(node)) => parent.children.push(node),
        _ => {}
    }
}

fn new_node(start: &BytesStart<'_>) -> Result<Node, MetadataError> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes().take(MAX_ATTRIBUTES) {
        let attribute = attribute.map_err(|error| MetadataError::Xml(error.to_string()))?;
        if attribute.key.as_namespace_binding().is_some() {
            continue;
        }
        let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|error| match error {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, entity)) => {
                MetadataError::UnknownEntity(entity)
            }
            other => xml_error(other),
        })?;
        if value.len() > MAX_TEXT_BYTES {
            return Err(MetadataError::TextTooLong);
        }
        let key = String::from_utf8_lossy(attribute.key.local_name().as_ref()).into_owned();
        attributes.push((key, value.into_owned()));
    }
    Ok(Node { name, attributes, text: String::new(), has_children: false, children: Vec::new() })
}

fn append_text(stack: &mut [Option<Node>], content: &str) -> Result<(), MetadataError> {
    match stack.last_mut() {
        Some(Some(node)) if !node.has_children => {
            if node.text.len() + content.len() > MAX_TEXT_BYTES {
                return Err(MetadataError::TextTooLong);
            }
            node.text.push_str(content);
            Ok(())
        }
        None if !content.trim().is_empty() => Err(MetadataError::Xml("text outside the root element".into())),
        _ => Ok(()),
    }
}

/// Only the five predefined entities and character references exist without a DTD.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<char, MetadataError> {
    if reference.is_char_ref() {
        return reference
            .resolve_char_ref()
            .map_err(xml_error)?
            .ok_or_else(|| MetadataError::Xml("invalid character reference".into()));
    }
    let name = reference.decode().map_err(|error| MetadataError::Xml(error.to_string()))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .and_then(|replacement| replacement.chars().next())
        .ok_or_else(|| MetadataError::UnknownEntity(crate::multipart::truncated(&name)))
}

fn interpret(root: &Node, namespace: MetadataNamespace) -> Result<RecordingMetadata, MetadataError> {
    let mut metadata = RecordingMetadata::empty(namespace);
    for element in &root.children {
        match element.name.to_ascii_lowercase().as_str() {
            "datamode" => {
                metadata.data_mode = element.content().map(|mode| match mode.to_ascii_lowercase().as_str() {
                    "complete" => DataMode::Complete,
                    "partial" => DataMode::Partial,
                    _ => DataMode::Other(mode),
                });
            }
            "group" => metadata.upsert_group(Group {
                id: id_of(element, &["group_id", "id"], "group")?,
                association: association_of(element),
            }),
            "session" => metadata.upsert_session(Session {
                id: id_of(element, &["session_id", "id"], "session")?,
                sip_session_ids: element.children("sipSessionID").filter_map(Node::content).collect(),
                group_ref: element.child_text("group-ref"),
                start_time: element.child_text("start-time"),
                stop_time: element.child_text("stop-time"),
                association: association_of(element),
            }),
            "participant" => metadata.upsert_participant(participant_of(element)?),
            "stream" => metadata.upsert_stream(Stream {
                id: id_of(element, &["stream_id", "id"], "stream")?,
                session_id: element.attribute(&["session_id", "session"]).map(str::to_owned),
                label: element.child_text("label"),
                association: association_of(element),
            }),
            "sessionrecordingassoc" => metadata.upsert_session_recording_assoc(SessionRecordingAssoc {
                session_id: id_of(element, &["session_id", "session"], "sessionrecordingassoc")?,
                association: association_of(element),
            }),
            "participantsessionassoc" => metadata.upsert_participant_session_assoc(ParticipantSessionAssoc {
                participant_id: id_of(element, &["participant_id", "participant"], "participantsessionassoc")?,
                session_id: element.attribute(&["session_id", "session"]).map(str::to_owned),
                association: association_of(element),
            }),
            "participantstreamassoc" => metadata.upsert_participant_stream_assoc(ParticipantStreamAssoc {
                participant_id: id_of(element, &["participant_id", "participant"], "participantstreamassoc")?,
                send: element.children("send").filter_map(Node::content).collect(),
                recv: element.children("recv").filter_map(Node::content).collect(),
                association: association_of(element),
            }),
            _ => {}
        }
    }
    Ok(metadata)
}

fn participant_of(element: &Node) -> Result<Participant, MetadataError> {
    let mut names: Vec<NameId> = element
        .children("nameID")
        .map(|name_id| NameId {
            aor: name_id.attribute(&["aor"]).map(str::trim).filter(|aor| !aor.is_empty()).map(str::to_owned),
            name: name_id.child_text("name"),
        })
        .collect();
    // The older form: <aor> and <name> directly inside <participant>.
    let (aor, name) = (element.child_text("aor"), element.child_text("name"));
    if aor.is_some() || name.is_some() {
        names.push(NameId { aor, name });
    }
    Ok(Participant {
        id: id_of(element, &["participant_id", "id"], "participant")?,
        names,
        session_id: element.attribute(&["session_id", "session"]).map(str::to_owned),
        send: element.children("send").filter_map(Node::content).collect(),
        recv: element.children("recv").filter_map(Node::content).collect(),
        association: association_of(element),
    })
}

fn id_of(element: &Node, names: &[&str], kind: &'static str) -> Result<String, MetadataError> {
    element
        .attribute(names)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or(MetadataError::MissingId { element: kind })
}

fn association_of(element: &Node) -> Association {
    Association {
        associate_time: element.child_text("associate-time"),
        disassociate_time: element.child_text("disassociate-time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <start-time>2024-03-01T09:12:44.120Z</start-time>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:alice@example.com"><name xml:lang="en">Alice &amp; Co &#x263A;</name></nameID>
    <ext:data xmlns:ext="http://example.com/ext"><participant participant_id="ignored"/></ext:data>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw=="><nameID aor="sip:bob@example.net"/></participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>96</label></stream>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
  </participantstreamassoc>
</recording>"#;

    #[test]
    fn parses_the_rfc_form_and_skips_extensions() {
        let metadata = parse(RFC.as_bytes()).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::Rfc7865);
        assert_eq!(metadata.data_mode, Some(DataMode::Complete));
        assert_eq!(metadata.sessions[0].sip_session_ids.len(), 1);
        assert_eq!(metadata.participants.len(), 2);
        assert_eq!(metadata.participants[0].display_name(), Some("Alice & Co \u{263a}"));
        assert_eq!(metadata.participants[1].display_name(), None);
        assert_eq!(metadata.participants[1].aors().collect::<Vec<_>>(), vec!["sip:bob@example.net"]);
        assert_eq!(metadata.sender_of_label("96").map(|p| p.id.as_str()), Some("srfBElmCRp2QB23b7Mpk0w=="));
        assert_eq!(metadata.sender_of_label("97"), None);
    }

    #[test]
    fn draft_namespace_with_prefix_and_no_namespace_at_all() {
        let prefixed =
            "<tns:recording xmlns:tns='urn:ietf:params:xml:ns:recording'><tns:dataMode>partial</tns:dataMode>\
                        <tns:participant participant_id='p1'><tns:nameID aor='1001@192.0.2.1'/></tns:participant>\
                        </tns:recording>";
        let metadata = parse(prefixed.as_bytes()).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::Draft);
        assert_eq!(metadata.data_mode, Some(DataMode::Partial));
        assert_eq!(metadata.participants[0].aors().next(), Some("1001@192.0.2.1"));

        let bare = "<recording><participant id='p1' session='s1'><aor>sip:a@example.com</aor><name>A</name>\
                    <send>st1</send></participant><stream id='st1' session='s1'><label>1</label></stream></recording>";
        let metadata = parse(bare.as_bytes()).unwrap();
        assert_eq!(metadata.namespace, MetadataNamespace::None);
        assert_eq!(
            metadata.participants[0].names,
            vec![NameId { aor: Some("sip:a@example.com".into()), name: Some("A".into()) }]
        );
        assert_eq!(metadata.participants[0].session_id.as_deref(), Some("s1"));
        assert_eq!(metadata.sender_of_label("1").map(|p| p.id.as_str()), Some("p1"));

        assert_eq!(parse(b"<other xmlns='urn:ietf:params:xml:ns:recording:1'/>"), Err(MetadataError::NotRecording));
        assert_eq!(parse(b"<recording xmlns='urn:example'/>"), Err(MetadataError::NotRecording));
    }

    #[test]
    fn partial_updates_merge_and_complete_ones_replace() {
        let first = parse(
            b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode>\
              <participant participant_id='p1'/><participant participant_id='p2'><nameID aor='sip:b@example.com'><name>B</name></nameID></participant>\
              <stream stream_id='s1'><label>1</label></stream>\
              <participantstreamassoc participant_id='p1'><send>s1</send></participantstreamassoc></recording>",
        )
        .unwrap();
        assert!(first.participants[0].names.is_empty(), "placeholder");
        let update = parse(
            b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>\
              <participant participant_id='p1'><nameID aor='sip:agent@example.com'><name>Agent</name></nameID></participant>\
              <participant participant_id='p2'><nameID aor='sip:b@example.com'><name>Bea</name></nameID>\
              <disassociate-time>2024-03-01T10:00:00Z</disassociate-time></participant></recording>",
        )
        .unwrap();
        let merged = merge_update(&first, &update);
        assert_eq!(merged.participants.len(), 2);
        assert_eq!(merged.participants[0].aors().next(), Some("sip:agent@example.com"));
        assert_eq!(merged.participants[1].display_name(), Some("Bea"));
        assert_eq!(merged.participants[1].names.len(), 1);
        assert!(merged.participants[1].association.disassociate_time.is_some());
        assert_eq!(merged.sender_of_label("1").map(|p| p.id.as_str()), Some("p1"), "associations kept");
        assert_eq!(merged.data_mode, Some(DataMode::Partial));

        let complete =
            parse(b"<recording><datamode>complete</datamode><participant participant_id='p9'/></recording>").unwrap();
        assert_eq!(merge_update(&merged, &complete), complete);
    }

    #[test]
    fn hostile_documents_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'><participant participant_id="&lol2;"/></recording>"#;
        assert_eq!(parse(bomb.as_bytes()), Err(MetadataError::Doctype));
        assert_eq!(parse(b"<!doctype recording SYSTEM 'file:///etc/passwd'><recording/>"), Err(MetadataError::Doctype));
        assert_eq!(
            parse(b"<recording><participant participant_id='&xxe;'/></recording>"),
            Err(MetadataError::UnknownEntity("xxe".into()))
        );
        assert_eq!(
            parse(b"<recording><datamode>&xxe;</datamode></recording>"),
            Err(MetadataError::UnknownEntity("xxe".into()))
        );

        let deep = "<recording>".to_owned() + &"<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH) + "</recording>";
        assert_eq!(parse(deep.as_bytes()), Err(MetadataError::TooDeep));
        let wide = "<recording>".to_owned() + &"<x/>".repeat(MAX_ELEMENTS) + "</recording>";
        assert_eq!(parse(wide.as_bytes()), Err(MetadataError::TooManyElements));
        let huge = "<recording>".to_owned() + &" ".repeat(MAX_DOCUMENT_BYTES) + "</recording>";
        assert_eq!(parse(huge.as_bytes()), Err(MetadataError::TooLarge));
        let long = format!("<recording><datamode>{}</datamode></recording>", "x".repeat(MAX_TEXT_BYTES + 1));
        assert_eq!(parse(long.as_bytes()), Err(MetadataError::TextTooLong));

        assert!(matches!(parse(b"<recording><participant>"), Err(MetadataError::Xml(_))));
        assert!(matches!(parse(b"<recording></other>"), Err(MetadataError::Xml(_))));
        assert!(matches!(parse(b"<recording/><recording/>"), Err(MetadataError::Xml(_))));
        assert_eq!(parse(b"   "), Err(MetadataError::Empty));
        assert_eq!(
            parse(b"<recording><participant/></recording>"),
            Err(MetadataError::MissingId { element: "participant" })
        );
        assert_eq!(parse(&[0xff, 0xfe]), Err(MetadataError::NotText));
    }
}
