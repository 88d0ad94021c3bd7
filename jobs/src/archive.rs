//! The backup archive: what a backup writes under its path on a storage target, and a restore reads.
//!
//! ```text
//! <path>/archive.json                       what this is (format, version, tenant, site), written first
//! <path>/recordings/<call id>/<file name>   each recording exactly as stored (`….mp3.enc` stays encrypted)
//! <path>/calls/<call id>.json               the call: its events with their envelopes, the recording's
//!                                           facts and SHA-256, the key it needs; written after its file,
//!                                           so a call listed here is complete in the archive
//! <path>/keys.json                          the public part of every key the archived files need
//! <path>/runs/<run id>.json                 each backup run's summary
//! ```
//!
//! Nothing secret is in an archive: files stay encrypted, keys are public parts only, events hold no
//! secrets (the log never does).

use chrono::{DateTime, Utc};
use object_store::path::Path;
use recall_domain::call::{CallEnd, CallEvent, CallStart, StoredRecording};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `format` of `archive.json`.
pub const FORMAT: &str = "recall-backup";
/// The archive layout's version; a restore refuses versions it does not know.
pub const VERSION: u32 = 1;

/// `archive.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub format: String,
    pub version: u32,
    /// The tenant whose recordings these are (none: a bulk download, which may hold several tenants'), and
    /// the site that wrote the archive.
    pub tenant_id: Option<Uuid>,
    pub site: String,
    pub created_at: DateTime<Utc>,
}

/// `calls/<call id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedCall {
    pub call_id: Uuid,
    pub tenant_id: Uuid,
    pub origin_site: String,
    /// The call's last event's sequence when it was archived: a later backup rewrites the file only when the
    /// call has changed since.
    pub last_sequence: i64,
    /// The recording as the log describes it (location on the origin's storage, size, SHA-256, encryption).
    pub recording: StoredRecording,
    /// The file's path within the archive, relative to its root (`recordings/<call id>/<name>`).
    pub file: String,
    /// The key the file is encrypted with, when it is.
    pub key: Option<ArchivedKey>,
    /// Every event of the call, in order, with its envelope.
    pub events: Vec<ArchivedEvent>,
}

/// An entry of `keys.json`, and the key an archived call names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedKey {
    pub key_id: Uuid,
    /// Hex SHA-256 of the public key's SPKI DER: a restore finds the same key on another installation by it.
    pub fingerprint: String,
    /// The public key, PEM (`keys.json` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

/// One event as the archive keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    pub event_id: Uuid,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub actor: String,
    pub impersonator: Option<String>,
    pub session_id: Option<Uuid>,
    pub origin_site: String,
    pub hlc: String,
    pub recorded_at: DateTime<Utc>,
}

/// `runs/<run id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub site: String,
    pub finished_at: DateTime<Utc>,
    pub progress: recall_domain::job::RunProgress,
    pub notes: Vec<String>,
}

pub fn info_path(root: &str) -> Path {
    Path::from(format!("{root}/archive.json"))
}

pub fn calls_prefix(root: &str) -> Path {
    Path::from(format!("{root}/calls"))
}

pub fn call_path(root: &str, call_id: Uuid) -> Path {
    Path::from(format!("{root}/calls/{call_id}.json"))
}

/// Where a call's file goes within an archive (relative to its root): under its call id, with the name it
/// has on its storage.
pub fn recording_entry(call_id: Uuid, location: &str) -> String {
    let name = location.rsplit('/').next().filter(|n| !n.is_empty() && *n != "." && *n != "..").unwrap_or("recording");
    format!("recordings/{call_id}/{name}")
}

/// Whether `file` (from an archive's description of `call_id`, so not to be trusted) is a file of that call
/// where a backup puts it: `recordings/<call id>/<one plain name>`.
pub fn is_entry_of(call_id: Uuid, file: &str) -> bool {
    file.strip_prefix(&format!("recordings/{call_id}/")).is_some_and(|name| {
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\'])
            && !name.chars().any(char::is_control)
    })
}

/// A call's description for an archive, from its events as the log stores them (`None` when the log holds
/// no stored recording of it). `fingerprint`: of the key an encrypted recording needs.
pub fn describe(
    call_id: Uuid,
    tenant_id: Uuid,
    site: &str,
    events: &[recall_commands::StoredEvent],
    fingerprint: Option<String>,
) -> Option<ArchivedCall> {
    let recording = stored_recording(events)?;
    let last_sequence = events.last().map_or(0, |e| e.sequence);
    let key = recording.encryption.as_ref().map(|e| ArchivedKey {
        key_id: e.header_key_id(),
        fingerprint: fingerprint.unwrap_or_default(),
        public_key_pem: None,
    });
    let events = events
        .iter()
        .map(|e| ArchivedEvent {
            event_id: e.event_id,
            sequence: e.sequence,
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            payload: e.payload_json().unwrap_or(serde_json::Value::Null),
            actor: e.actor.clone(),
            impersonator: e.impersonator.clone(),
            session_id: e.session_id,
            origin_site: e.origin_site.clone(),
            hlc: e.hlc.clone(),
            recorded_at: e.recorded_at,
        })
        .collect();
    Some(ArchivedCall {
        call_id,
        tenant_id,
        origin_site: site.to_owned(),
        last_sequence,
        file: recording_entry(call_id, &recording.location),
        recording,
        key,
        events,
    })
}

impl ArchivedCall {
    /// The description without who did what: for someone who may download the call but not read the audit
    /// trail. Plays and downloads are left out, and people (users, API tokens, impersonators, sessions) are
    /// not named; recall's own components still are.
    pub fn redacted(mut self) -> Self {
        self.events.retain(|e| e.event_type != "RecordingAccessed");
        for event in &mut self.events {
            if !event.actor.starts_with("system:") {
                event.actor = "redacted".to_owned();
            }
            event.impersonator = None;
            event.session_id = None;
        }
        self
    }
}

/// The public part of the keys `key_ids` (from the key store), as `keys.json` lists them.
pub async fn public_keys(pool: &sqlx::PgPool, key_ids: &[Uuid]) -> Result<Vec<ArchivedKey>, sqlx::Error> {
    let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, fingerprint, public_key FROM tenant_keys WHERE key_id = ANY($1) ORDER BY key_id",
    )
    .bind(key_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key_id, fingerprint, der)| ArchivedKey {
            key_id,
            fingerprint,
            public_key_pem: recall_crypto::PublicKey::from_der(&der).ok().map(|k| k.to_pem()),
        })
        .collect())
}

/// The recording the log says is stored for a call (the last one told).
pub fn stored_recording(events: &[recall_commands::StoredEvent]) -> Option<StoredRecording> {
    events.iter().rev().find_map(|e| match serde_json::from_str::<CallEvent>(&e.payload).ok()? {
        CallEvent::RecordingStored { recording } => Some(recording),
        CallEvent::CallRestored(restored) => Some(restored.recording),
        _ => None,
    })
}

pub fn keys_path(root: &str) -> Path {
    Path::from(format!("{root}/keys.json"))
}

pub fn run_path(root: &str, run_id: Uuid) -> Path {
    Path::from(format!("{root}/runs/{run_id}.json"))
}

/// The call id a `calls/<call id>.json` entry names, if it is one.
pub fn call_id_of(path: &Path) -> Option<Uuid> {
    path.filename()?.strip_suffix(".json").and_then(|id| Uuid::parse_str(id).ok())
}

/// What a restore needs of a call, read from its archived events: how it started (with the parties, the
/// extension and the user as last named or assigned), how it ended, how long it was paused.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHistory {
    pub start: CallStart,
    pub end: CallEnd,
    pub paused_ms: u64,
}

/// Why an archived call cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("event {sequence} ({event_type}) cannot be read: {reason}")]
    Unreadable { sequence: i64, event_type: String, reason: String },
    #[error("the archive holds no start of this call")]
    NoStart,
    #[error("the archive holds no end of this call")]
    NoEnd,
}

impl CallHistory {
    pub fn of(events: &[ArchivedEvent]) -> Result<Self, HistoryError> {
        let mut start: Option<CallStart> = None;
        let mut end = None;
        let mut paused_ms = 0;
        for archived in events {
            let event: CallEvent =
                serde_json::from_value(archived.payload.clone()).map_err(|e| HistoryError::Unreadable {
                    sequence: archived.sequence,
                    event_type: archived.event_type.clone(),
                    reason: e.to_string(),
                })?;
            match event {
                CallEvent::CallStarted { start: s, .. } => start = Some(s),
                CallEvent::CallRestored(restored) => {
                    start = Some(restored.start);
                    end = Some(restored.end);
                    paused_ms = restored.paused_ms;
                }
                CallEvent::CallAssigned { user_id, extension, .. } => {
                    if let Some(s) = start.as_mut() {
                        s.user_id = Some(user_id);
                        s.extension = extension;
                    }
                }
                CallEvent::ParticipantsIdentified { participants, extension, user_id } => {
                    if let Some(s) = start.as_mut() {
                        s.participants = participants;
                        s.extension = extension;
                        s.user_id = user_id;
                    }
                }
                CallEvent::RecordingResumed { paused_ms: p, .. } => paused_ms += p,
                CallEvent::CallEnded { reason, at, duration_ms } => end = Some(CallEnd { reason, at, duration_ms }),
                CallEvent::RecordingPaused { .. }
                | CallEvent::DtmfReceived { .. }
                | CallEvent::RecordingStored { .. }
                | CallEvent::RecordingFailed { .. }
                | CallEvent::RecordingAccessed { .. }
                | CallEvent::RecordingPutBack { .. } => {}
            }
        }
        Ok(Self { start: start.ok_or(HistoryError::NoStart)?, end: end.ok_or(HistoryError::NoEnd)?, paused_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recall_domain::call::{CallDirection, CallEndReason, Participant};

    fn archived(sequence: i64, event: &CallEvent) -> ArchivedEvent {
        use recall_domain::DomainEvent;
        ArchivedEvent {
            event_id: Uuid::now_v7(),
            sequence,
            event_type: event.event_type().to_owned(),
            event_version: "1".into(),
            payload: serde_json::to_value(event).unwrap(),
            actor: "system:recorder:n1".into(),
            impersonator: None,
            session_id: None,
            origin_site: "east".into(),
            hlc: String::new(),
            recorded_at: Utc::now(),
        }
    }

    fn start_at(started_at: DateTime<Utc>) -> CallStart {
        CallStart {
            tenant_id: Uuid::from_u128(1),
            sip_call_id: "abc".into(),
            direction: CallDirection::Inbound,
            participants: vec![],
            extension: None,
            user_id: None,
            site: "east".into(),
            recorder_node: "n1".into(),
            started_at,
        }
    }

    #[test]
    fn a_history_takes_the_last_named_parties_the_assignment_pauses_and_the_end() {
        let started_at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let start = start_at(started_at);
        let bob = vec![Participant { name: Some("Bob".into()), aor: "sip:bob@x".into() }];
        let at = |s: i64| started_at + chrono::Duration::seconds(s);
        let events = [
            CallEvent::CallStarted { call_id: Uuid::from_u128(9), start: start.clone() },
            CallEvent::ParticipantsIdentified {
                participants: bob.clone(),
                extension: Some("2001".into()),
                user_id: None,
            },
            CallEvent::RecordingPaused { at: at(5) },
            CallEvent::RecordingResumed { at: at(8), paused_ms: 3000 },
            CallEvent::CallAssigned {
                user_id: Uuid::from_u128(5),
                extension: Some("2001".into()),
                previous_user_id: None,
            },
            CallEvent::CallEnded { reason: CallEndReason::Bye, at: at(20), duration_ms: 20_000 },
        ];
        let archived: Vec<ArchivedEvent> = events.iter().enumerate().map(|(i, e)| archived(i as i64 + 1, e)).collect();
        let history = CallHistory::of(&archived).expect("a history");
        assert_eq!(history.start.participants, bob);
        assert_eq!(
            (history.start.extension.as_deref(), history.start.user_id),
            (Some("2001"), Some(Uuid::from_u128(5)))
        );
        assert_eq!(history.paused_ms, 3000);
        assert_eq!(history.end, CallEnd { reason: CallEndReason::Bye, at: at(20), duration_ms: 20_000 });
        assert_eq!(CallHistory::of(&archived[..2]), Err(HistoryError::NoEnd));
        assert_eq!(CallHistory::of(&archived[1..]), Err(HistoryError::NoStart));
    }

    #[test]
    fn a_redacted_description_names_no_person_and_no_access() {
        let start = start_at(Utc::now());
        let mut assigned = archived(
            2,
            &CallEvent::CallAssigned { user_id: Uuid::from_u128(5), extension: None, previous_user_id: None },
        );
        assigned.actor = format!("user:{}", Uuid::from_u128(7));
        assigned.impersonator = Some(format!("user:{}", Uuid::from_u128(8)));
        assigned.session_id = Some(Uuid::from_u128(9));
        let mut played =
            archived(3, &CallEvent::RecordingAccessed { access: recall_domain::call::RecordingAccess::Playback });
        played.actor = format!("user:{}", Uuid::from_u128(7));
        let call = ArchivedCall {
            call_id: Uuid::from_u128(9),
            tenant_id: Uuid::from_u128(1),
            origin_site: "east".into(),
            last_sequence: 3,
            recording: serde_json::from_value(serde_json::json!({
                "storage_target_id": null, "location": "t/c.mp3", "format": "mp3_stereo32", "size_bytes": 1,
                "duration_ms": 1, "sha256": "ab".repeat(32)
            }))
            .unwrap(),
            file: "recordings/x/c.mp3".into(),
            key: None,
            events: vec![archived(1, &CallEvent::CallStarted { call_id: Uuid::from_u128(9), start }), assigned, played],
        };
        let redacted = call.redacted();
        assert_eq!(redacted.events.len(), 2, "the playback is left out");
        assert_eq!(redacted.events[0].actor, "system:recorder:n1", "recall's own components are named");
        let text = serde_json::to_string(&redacted).unwrap();
        for person in [Uuid::from_u128(7), Uuid::from_u128(8)] {
            assert!(!text.contains(&person.to_string()), "{text}");
        }
        assert_eq!(redacted.events[1].session_id, None);
    }

    #[test]
    fn archive_names_keep_the_call_id_and_the_file_name_only() {
        let nil = Uuid::nil();
        assert_eq!(recording_entry(nil, "t/2026/03/01/x.mp3.enc"), format!("recordings/{nil}/x.mp3.enc"));
        assert_eq!(recording_entry(nil, "../.."), format!("recordings/{nil}/recording"));
        assert!(is_entry_of(nil, &recording_entry(nil, "t/x.wav")));
        let other = Uuid::from_u128(1);
        for hostile in [
            format!("recordings/{other}/x.wav"),
            format!("recordings/{nil}/../../etc/passwd"),
            format!("recordings/{nil}/.."),
            format!("recordings/{nil}/"),
            format!("/recordings/{nil}/x.wav"),
            "keys.json".to_owned(),
        ] {
            assert!(!is_entry_of(nil, &hostile), "{hostile}");
        }
        let id = Uuid::now_v7();
        assert_eq!(call_id_of(&call_path("a/b", id)), Some(id));
        assert_eq!(call_id_of(&Path::from("a/b/calls/notes.txt")), None);
    }
}
