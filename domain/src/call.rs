//! The call aggregate (keyed by call id): one recorded call, as the recorder reports it (start, the
//! participants as the metadata names them, pauses, DTMF, the end, the stored file or what was lost) and
//! as administrators assign it. A call whose extension matched no user is unassigned; the write side's
//! index lists unassigned calls by extension so an administrator can assign them all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{IndexChange, IndexKey, Namespace};
use crate::names::{self, NameError};
use crate::recording_policy::AudioFormat;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    call_id: Uuid,
    tenant_id: Option<Uuid>,
    extension: Option<String>,
    user_id: Option<Uuid>,
    started_at: Option<DateTime<Utc>>,
    /// Since when the recording is paused, while it is.
    paused_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// The SHA-256 of the stored recording, once stored.
    stored: Option<String>,
    /// When the last DTMF digit came: a digit reported again (a redelivery) is not a new digit.
    last_dtmf_at: Option<DateTime<Utc>>,
}

/// Why a call's recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// A party hung up (BYE).
    Bye,
    /// The call was cancelled before it was answered (CANCEL).
    Cancel,
    /// No RTP arrived for longer than the configured inactivity timeout.
    RtpTimeout,
    /// The recorder was shut down during the call.
    RecorderShutdown,
    /// The recorder stopped without finishing the call; a restarted recorder finalised it.
    RecorderRestarted,
}

/// The stored file of a call's recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecording {
    /// Where the file is: the storage target's id and the object's path within it.
    pub storage_target_id: Option<Uuid>,
    pub location: String,
    pub format: AudioFormat,
    pub size_bytes: u64,
    pub duration_ms: u64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// How the file is encrypted; `None`: stored in plain (every recording stored before encryption was built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<RecordingEncryption>,
}

/// An encrypted recording's facts a reader needs besides the tenant's private key: which key (the file's
/// header names it too, but the log says which keys a recording needs without fetching it), the file
/// format's version, and how a file whose writer died ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingEncryption {
    /// The tenant key the recording's data key is wrapped with.
    pub key_id: Uuid,
    /// The encrypted file format's version (recall-crypto's `FORMAT_VERSION`).
    pub format_version: u8,
    /// `Some(k)` when the file was stored without its final chunk (recovered after a crash): it holds exactly
    /// `k` sealed chunks, and a reader must be told so, since such a file has no footer to say where it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unterminated_chunks: Option<u64>,
    /// The key id the file's header names, when it is not `key_id`: a recording restored on another
    /// installation, whose key was imported there under an id of its own (the same key: the restore matched
    /// it by its fingerprint). The header's id stays part of the data key's wrapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_key_id: Option<Uuid>,
}

impl RecordingEncryption {
    /// The key id the file's header must name.
    pub fn header_key_id(&self) -> Uuid {
        self.file_key_id.unwrap_or(self.key_id)
    }
}

/// How a restored call ended (the facts of its `CallEnded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEnd {
    pub reason: CallEndReason,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// A call a restore job adds from a backup archive: its start (with the participants as last named, and
/// this installation's tenant; a user only if this tenant has them), its end, how long it was paused, and
/// the recording, already copied to this installation's storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredCall {
    pub call_id: Uuid,
    pub start: CallStart,
    pub end: CallEnd,
    pub paused_ms: u64,
    pub recording: StoredRecording,
    pub source: RestoreSource,
}

impl RestoredCall {
    /// The call as the log would keep it, or why it cannot be restored (what `RestoreCall` decides, for a
    /// restore to ask before it copies the file).
    pub fn checked(self) -> Result<Self, CallError> {
        let start = valid_start(self.start)?;
        if self.end.at < start.started_at {
            return Err(CallError::BeforeStart);
        }
        let recording = valid_recording(self.recording)?;
        Ok(Self { start, recording, ..self })
    }
}

/// Where a restored call came from: the job run that read it and the installation that recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    pub job_id: Uuid,
    pub run_id: Uuid,
    /// The site that recorded the call and the tenant it belonged to there.
    pub origin_site: String,
    pub origin_tenant_id: Uuid,
    /// How many events the archive holds for the call (they are kept in the archive, not replayed).
    pub archived_events: u64,
}

/// Which way a call went, seen from the recorded party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Inbound,
    Outbound,
    Internal,
    Unknown,
}

/// One party of a call as the signalling named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The display name, when one was given.
    pub name: Option<String>,
    /// The address of record, e.g. `sip:2001@pbx.example.com` or `tel:+4930123456`.
    pub aor: String,
}

/// What the recorder saw when the call started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStart {
    pub tenant_id: Uuid,
    /// The SIP Call-ID of the recording session.
    pub sip_call_id: String,
    pub direction: CallDirection,
    pub participants: Vec<Participant>,
    /// The recorded party's extension, when one was recognised.
    pub extension: Option<String>,
    /// The user the extension belongs to, when it belongs to one.
    pub user_id: Option<Uuid>,
    pub site: String,
    pub recorder_node: String,
    pub started_at: DateTime<Utc>,
}

/// Serializable: the recorder keeps the commands it has yet to deliver in a journal on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallCommand {
    RecordCallStart {
        call_id: Uuid,
        start: CallStart,
    },
    /// An administrator assigns the call to a user; `extension` is the number the call is known by
    /// (the call's own, or one the administrator picked when the call had none).
    AssignCall {
        user_id: Uuid,
        extension: Option<String>,
    },
    /// The metadata named the participants (later than the start, or better): the recorder reports them,
    /// with the extension and user it now recognises. A call an administrator already assigned keeps its user.
    IdentifyParticipants {
        participants: Vec<Participant>,
        extension: Option<String>,
        user_id: Option<Uuid>,
    },
    PauseRecording {
        at: DateTime<Utc>,
    },
    ResumeRecording {
        at: DateTime<Utc>,
    },
    RecordDtmf {
        /// One of `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
        at: DateTime<Utc>,
        duration_ms: u32,
    },
    EndCall {
        reason: CallEndReason,
        at: DateTime<Utc>,
    },
    RecordStoredRecording {
        recording: StoredRecording,
    },
    /// Part of a recording could not be kept (what and why); the call goes on or ends as it does.
    RecordFailure {
        lost: String,
        reason: String,
    },
    /// Someone played back or downloaded the stored recording (the envelope says who).
    RecordAccess {
        access: RecordingAccess,
    },
    /// A restore job adds a call this installation does not have, from a backup archive.
    RestoreCall(Box<RestoredCall>),
    /// A restore job put a stored recording this installation had lost back where the log says it is.
    RecordRecordingPutBack {
        job_id: Uuid,
        run_id: Uuid,
    },
}

/// What a user did with a stored recording, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingAccess {
    Playback,
    Download,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    CallStarted {
        call_id: Uuid,
        start: CallStart,
    },
    CallAssigned {
        user_id: Uuid,
        extension: Option<String>,
        previous_user_id: Option<Uuid>,
    },
    ParticipantsIdentified {
        participants: Vec<Participant>,
        extension: Option<String>,
        user_id: Option<Uuid>,
    },
    RecordingPaused {
        at: DateTime<Utc>,
    },
    RecordingResumed {
        at: DateTime<Utc>,
        paused_ms: u64,
    },
    /// `offset_ms` counts from the call's start.
    DtmfReceived {
        digit: char,
        at: DateTime<Utc>,
        offset_ms: u64,
        duration_ms: u32,
    },
    CallEnded {
        reason: CallEndReason,
        at: DateTime<Utc>,
        duration_ms: u64,
    },
    RecordingStored {
        recording: StoredRecording,
    },
    RecordingFailed {
        lost: String,
        reason: String,
    },
    RecordingAccessed {
        access: RecordingAccess,
    },
    CallRestored(Box<RestoredCall>),
    RecordingPutBack {
        job_id: Uuid,
        run_id: Uuid,
    },
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CallStarted { .. } => "CallStarted",
            Self::CallAssigned { .. } => "CallAssigned",
            Self::ParticipantsIdentified { .. } => "ParticipantsIdentified",
            Self::RecordingPaused { .. } => "RecordingPaused",
            Self::RecordingResumed { .. } => "RecordingResumed",
            Self::DtmfReceived { .. } => "DtmfReceived",
            Self::CallEnded { .. } => "CallEnded",
            Self::RecordingStored { .. } => "RecordingStored",
            Self::RecordingFailed { .. } => "RecordingFailed",
            Self::RecordingAccessed { .. } => "RecordingAccessed",
            Self::CallRestored(_) => "CallRestored",
            Self::RecordingPutBack { .. } => "RecordingPutBack",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("this call was already recorded")]
    AlreadyStarted,
    #[error("no such call")]
    NotFound,
    #[error("{0}")]
    InvalidExtension(NameError),
    #[error("a SIP Call-ID must be 1 to 1024 printable characters")]
    InvalidSipCallId,
    #[error("this call has ended")]
    AlreadyEnded,
    #[error("the call has not ended yet; its recording is stored when it has")]
    NotEnded,
    #[error("a different recording of this call is stored already")]
    AlreadyStored,
    #[error("a time before the call's start")]
    BeforeStart,
    #[error("a DTMF digit is one of 0-9, *, #, A-D")]
    InvalidDigit,
    #[error("a stored recording needs a location and a SHA-256 of 64 hex digits")]
    InvalidRecording,
    #[error("a participant's address must be 1 to 2048 printable characters")]
    InvalidParticipant,
    #[error("say what was lost and why, in 1 to 2000 characters each")]
    InvalidFailure,
    #[error("this call has no stored recording")]
    NotStored,
}

impl Call {
    pub fn exists(&self) -> bool {
        self.tenant_id.is_some()
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    /// The user the call is assigned to; `None` for an unassigned call.
    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }

    /// Milliseconds from the call's start to `at` (0 before it).
    fn offset_ms(&self, at: DateTime<Utc>) -> u64 {
        self.started_at.map_or(0, |start| u64::try_from((at - start).num_milliseconds()).unwrap_or(0))
    }

    /// Refuses what cannot happen to this call any more (or yet): unknown, ended, or `at` before its start.
    fn ongoing_at(&self, at: DateTime<Utc>) -> Result<(), CallError> {
        if !self.exists() {
            return Err(CallError::NotFound);
        }
        if self.ended_at.is_some() {
            return Err(CallError::AlreadyEnded);
        }
        if self.started_at.is_some_and(|start| at < start) {
            return Err(CallError::BeforeStart);
        }
        Ok(())
    }

    /// The index key that lists this call among the unassigned calls of its extension.
    pub fn unassigned_key(tenant_id: Uuid, extension: &str, call_id: Uuid) -> IndexKey {
        IndexKey::new(Namespace::UnassignedCalls(tenant_id), format!("{extension}/{call_id}"))
    }

    fn listed_as_unassigned(&self) -> Option<IndexKey> {
        match (self.tenant_id, &self.extension, self.user_id) {
            (Some(tenant), Some(extension), None) => Some(Self::unassigned_key(tenant, extension, self.call_id)),
            _ => None,
        }
    }
}

fn valid_participants(participants: &[Participant]) -> Result<(), CallError> {
    let bad = |p: &Participant| {
        p.aor.trim().is_empty()
            || p.aor.len() > 2048
            || p.aor.chars().any(char::is_control)
            || p.name.as_ref().is_some_and(|n| n.len() > 512 || n.chars().any(char::is_control))
    };
    if participants.len() > 64 || participants.iter().any(bad) {
        return Err(CallError::InvalidParticipant);
    }
    Ok(())
}

/// The start as the log keeps it: Call-ID and extension trimmed; refused when they or a party are unusable.
fn valid_start(start: CallStart) -> Result<CallStart, CallError> {
    let sip_call_id = start.sip_call_id.trim().to_owned();
    if sip_call_id.is_empty() || sip_call_id.len() > 1024 || sip_call_id.chars().any(char::is_control) {
        return Err(CallError::InvalidSipCallId);
    }
    let extension = optional_extension(start.extension)?;
    valid_participants(&start.participants)?;
    Ok(CallStart { sip_call_id, extension, ..start })
}

/// The recording as the log keeps it: location trimmed, SHA-256 in lower case; refused without either.
fn valid_recording(recording: StoredRecording) -> Result<StoredRecording, CallError> {
    let sha256 = recording.sha256.to_ascii_lowercase();
    let location = recording.location.trim().to_owned();
    if location.is_empty()
        || location.len() > 4096
        || sha256.len() != 64
        || !sha256.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(CallError::InvalidRecording);
    }
    Ok(StoredRecording { location, sha256, ..recording })
}

fn optional_extension(extension: Option<String>) -> Result<Option<String>, CallError> {
    extension
        .filter(|e| !e.trim().is_empty())
        .map(|e| names::extension(&e))
        .transpose()
        .map_err(CallError::InvalidExtension)
}

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    async fn decide(&self, command: CallCommand, _: &()) -> Result<Vec<CallEvent>, CallError> {
        match command {
            CallCommand::RecordCallStart { call_id, start } => {
                if self.exists() {
                    return Err(CallError::AlreadyStarted);
                }
                Ok(vec![CallEvent::CallStarted { call_id, start: valid_start(start)? }])
            }
            CallCommand::AssignCall { user_id, extension } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                let extension = optional_extension(extension)?.or_else(|| self.extension.clone());
                if self.user_id == Some(user_id) && extension == self.extension {
                    return Ok(vec![]);
                }
                Ok(vec![CallEvent::CallAssigned { user_id, extension, previous_user_id: self.user_id }])
            }
            CallCommand::IdentifyParticipants { participants, extension, user_id } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                valid_participants(&participants)?;
                // An assigned call keeps its user and extension: an administrator's assignment (or the
                // start's match) is not undone by later metadata.
                let (extension, user_id) = match self.user_id {
                    Some(user) => (self.extension.clone(), Some(user)),
                    None => (optional_extension(extension)?.or_else(|| self.extension.clone()), user_id),
                };
                Ok(vec![CallEvent::ParticipantsIdentified { participants, extension, user_id }])
            }
            CallCommand::PauseRecording { at } => {
                self.ongoing_at(at)?;
                if self.paused_at.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![CallEvent::RecordingPaused { at }])
            }
            CallCommand::ResumeRecording { at } => {
                self.ongoing_at(at)?;
                let Some(paused_at) = self.paused_at else { return Ok(vec![]) };
                if at < paused_at {
                    return Err(CallError::BeforeStart);
                }
                let paused_ms = u64::try_from((at - paused_at).num_milliseconds()).unwrap_or(0);
                Ok(vec![CallEvent::RecordingResumed { at, paused_ms }])
            }
            CallCommand::RecordDtmf { digit, at, duration_ms } => {
                self.ongoing_at(at)?;
                if !matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D') {
                    return Err(CallError::InvalidDigit);
                }
                if self.last_dtmf_at.is_some_and(|last| at <= last) {
                    return Ok(vec![]);
                }
                Ok(vec![CallEvent::DtmfReceived { digit, at, offset_ms: self.offset_ms(at), duration_ms }])
            }
            CallCommand::EndCall { reason, at } => {
                if self.ended_at.is_some() && self.exists() {
                    // The end may be reported again (a retry, a restarted recorder): it happened once.
                    return Ok(vec![]);
                }
                self.ongoing_at(at)?;
                Ok(vec![CallEvent::CallEnded { reason, at, duration_ms: self.offset_ms(at) }])
            }
            CallCommand::RecordStoredRecording { recording } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                if self.ended_at.is_none() {
                    return Err(CallError::NotEnded);
                }
                let recording = valid_recording(recording)?;
                match &self.stored {
                    Some(stored) if *stored == recording.sha256 => Ok(vec![]),
                    Some(_) => Err(CallError::AlreadyStored),
                    None => Ok(vec![CallEvent::RecordingStored { recording }]),
                }
            }
            CallCommand::RecordFailure { lost, reason } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                let (lost, reason) = (lost.trim().to_owned(), reason.trim().to_owned());
                let bad = |t: &str| t.is_empty() || t.len() > 2000;
                if bad(&lost) || bad(&reason) {
                    return Err(CallError::InvalidFailure);
                }
                Ok(vec![CallEvent::RecordingFailed { lost, reason }])
            }
            CallCommand::RecordAccess { access } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                if self.stored.is_none() {
                    return Err(CallError::NotStored);
                }
                Ok(vec![CallEvent::RecordingAccessed { access }])
            }
            CallCommand::RestoreCall(restored) => {
                if self.exists() {
                    // Restored before, or recorded here: a restore run twice adds nothing.
                    return Ok(vec![]);
                }
                Ok(vec![CallEvent::CallRestored(Box::new(restored.checked()?))])
            }
            CallCommand::RecordRecordingPutBack { job_id, run_id } => {
                if !self.exists() {
                    return Err(CallError::NotFound);
                }
                if self.stored.is_none() {
                    return Err(CallError::NotStored);
                }
                Ok(vec![CallEvent::RecordingPutBack { job_id, run_id }])
            }
        }
    }

    fn apply(&mut self, event: CallEvent) {
        match event {
            CallEvent::CallStarted { call_id, start } => {
                self.call_id = call_id;
                self.tenant_id = Some(start.tenant_id);
                self.extension = start.extension;
                self.user_id = start.user_id;
                self.started_at = Some(start.started_at);
            }
            CallEvent::CallAssigned { user_id, extension, .. } => {
                self.user_id = Some(user_id);
                self.extension = extension;
            }
            CallEvent::ParticipantsIdentified { extension, user_id, .. } => {
                self.extension = extension;
                self.user_id = user_id;
            }
            CallEvent::RecordingPaused { at } => self.paused_at = Some(at),
            CallEvent::RecordingResumed { .. } => self.paused_at = None,
            CallEvent::DtmfReceived { at, .. } => self.last_dtmf_at = Some(at),
            CallEvent::RecordingFailed { .. } | CallEvent::RecordingAccessed { .. } => {}
            CallEvent::CallEnded { at, .. } => {
                self.ended_at = Some(at);
                self.paused_at = None;
            }
            CallEvent::RecordingStored { recording } => self.stored = Some(recording.sha256),
            CallEvent::CallRestored(restored) => {
                let RestoredCall { call_id, start, end, recording, .. } = *restored;
                self.call_id = call_id;
                self.tenant_id = Some(start.tenant_id);
                self.extension = start.extension;
                self.user_id = start.user_id;
                self.started_at = Some(start.started_at);
                self.ended_at = Some(end.at);
                self.stored = Some(recording.sha256);
            }
            CallEvent::RecordingPutBack { .. } => {}
        }
    }

    fn index_changes(&self, event: &CallEvent) -> Vec<IndexChange> {
        let listed_from_start = |call_id: Uuid, start: &CallStart| match (&start.extension, start.user_id) {
            (Some(extension), None) => {
                vec![IndexChange::Claim(Self::unassigned_key(start.tenant_id, extension, call_id))]
            }
            _ => Vec::new(),
        };
        match event {
            CallEvent::CallStarted { call_id, start } => listed_from_start(*call_id, start),
            CallEvent::CallRestored(restored) => listed_from_start(restored.call_id, &restored.start),
            CallEvent::CallAssigned { .. } => {
                self.listed_as_unassigned().map(IndexChange::Release).into_iter().collect()
            }
            CallEvent::ParticipantsIdentified { extension, user_id, .. } => {
                let before = self.listed_as_unassigned();
                let after = match (self.tenant_id, extension, user_id) {
                    (Some(tenant), Some(extension), None) => {
                        Some(Self::unassigned_key(tenant, extension, self.call_id))
                    }
                    _ => None,
                };
                if before == after {
                    return Vec::new();
                }
                before.map(IndexChange::Release).into_iter().chain(after.map(IndexChange::Claim)).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const CALL: Uuid = Uuid::from_u128(0xCA11);
    const ALICE: Uuid = Uuid::from_u128(0xA11CE);

    fn start(extension: Option<&str>, user_id: Option<Uuid>) -> CallStart {
        CallStart {
            tenant_id: TENANT,
            sip_call_id: "a84b4c76e66710@pc33.example.com".into(),
            direction: CallDirection::Inbound,
            participants: vec![Participant { name: Some("Bob".into()), aor: "sip:+4930123@carrier.example".into() }],
            extension: extension.map(Into::into),
            user_id,
            site: "paris".into(),
            recorder_node: "rec-1".into(),
            started_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        }
    }

    fn started(extension: Option<&str>, user_id: Option<Uuid>) -> Vec<CallEvent> {
        vec![CallEvent::CallStarted { call_id: CALL, start: start(extension, user_id) }]
    }

    #[test]
    fn playback_and_download_are_recorded_only_for_a_stored_recording() {
        let access = || CallCommand::RecordAccess { access: RecordingAccess::Playback };
        assert_eq!(when::<Call>([], access(), &()), Err(CallError::NotFound));
        assert_eq!(when::<Call>(started(None, None), access(), &()), Err(CallError::NotStored));
        let mut stored = started(None, None);
        let recording: StoredRecording = serde_json::from_value(serde_json::json!({
            "storage_target_id": null, "location": "t/c.mp3", "format": "mp3_stereo32", "size_bytes": 1,
            "duration_ms": 1, "sha256": "ab".repeat(32)
        }))
        .expect("a stored recording");
        stored.push(CallEvent::RecordingStored { recording });
        let download = CallCommand::RecordAccess { access: RecordingAccess::Download };
        assert_eq!(
            when::<Call>(stored, download, &()),
            Ok(vec![CallEvent::RecordingAccessed { access: RecordingAccess::Download }])
        );
    }

    #[test]
    fn a_restored_call_is_added_once_and_listed_unassigned_without_a_user_here() {
        let recording: StoredRecording = serde_json::from_value(serde_json::json!({
            "storage_target_id": null, "location": " t/c.mp3 ", "format": "mp3_stereo32", "size_bytes": 1,
            "duration_ms": 1, "sha256": "AB".repeat(32)
        }))
        .expect("a stored recording");
        let start = start(Some("2001"), None);
        let end = CallEnd {
            reason: CallEndReason::Bye,
            at: start.started_at + chrono::Duration::seconds(5),
            duration_ms: 5000,
        };
        let source = RestoreSource {
            job_id: Uuid::from_u128(1),
            run_id: Uuid::from_u128(2),
            origin_site: "east".into(),
            origin_tenant_id: Uuid::from_u128(3),
            archived_events: 4,
        };
        let restore = |start: CallStart, end: CallEnd| {
            CallCommand::RestoreCall(Box::new(RestoredCall {
                call_id: CALL,
                start,
                end,
                paused_ms: 0,
                recording: recording.clone(),
                source: source.clone(),
            }))
        };
        let events = when::<Call>([], restore(start.clone(), end), &()).expect("restored");
        let [CallEvent::CallRestored(restored)] = events.as_slice() else { panic!("{events:?}") };
        let kept = &restored.recording;
        assert_eq!((kept.location.as_str(), kept.sha256.clone()), ("t/c.mp3", "ab".repeat(32)));
        assert_eq!(
            Call::default().index_changes(&events[0]),
            vec![IndexChange::Claim(Call::unassigned_key(start.tenant_id, "2001", CALL))]
        );
        let call = crate::testing::given::<Call>(events.clone());
        assert!(call.exists() && call.ended_at() == Some(end.at));
        assert_eq!(when::<Call>(events.clone(), restore(start.clone(), end), &()), Ok(vec![]), "restored twice: once");
        assert_eq!(when::<Call>(started(None, None), restore(start.clone(), end), &()), Ok(vec![]), "recorded here");
        let early = CallEnd { at: start.started_at - chrono::Duration::seconds(1), ..end };
        assert_eq!(when::<Call>([], restore(start.clone(), early), &()), Err(CallError::BeforeStart));
        let put_back = CallCommand::RecordRecordingPutBack { job_id: source.job_id, run_id: source.run_id };
        assert_eq!(when::<Call>(started(None, None), put_back.clone(), &()), Err(CallError::NotStored));
        assert_eq!(
            when::<Call>(events, put_back, &()),
            Ok(vec![CallEvent::RecordingPutBack { job_id: source.job_id, run_id: source.run_id }])
        );
    }

    #[test]
    fn a_call_starts_once_with_a_valid_call_id_and_extension() {
        let record = |start| CallCommand::RecordCallStart { call_id: CALL, start };
        assert_eq!(when::<Call>([], record(start(Some("2001"), None)), &()), Ok(started(Some("2001"), None)));
        assert_eq!(when::<Call>(started(None, None), record(start(None, None)), &()), Err(CallError::AlreadyStarted));
        let mut bad = start(None, None);
        bad.sip_call_id = " ".into();
        assert_eq!(when::<Call>([], record(bad), &()), Err(CallError::InvalidSipCallId));
        assert!(matches!(
            when::<Call>([], record(start(Some("20 01"), None)), &()),
            Err(CallError::InvalidExtension(_))
        ));
    }

    #[test]
    fn an_unassigned_call_is_listed_by_extension_until_assigned() {
        let key = Call::unassigned_key(TENANT, "2001", CALL);
        let events = started(Some("2001"), None);
        assert_eq!(Call::default().index_changes(&events[0]), vec![IndexChange::Claim(key.clone())]);
        let call = given::<Call>(events.clone());
        let assigned = when::<Call>(events, CallCommand::AssignCall { user_id: ALICE, extension: None }, &());
        let expected =
            CallEvent::CallAssigned { user_id: ALICE, extension: Some("2001".into()), previous_user_id: None };
        assert_eq!(assigned, Ok(vec![expected.clone()]));
        assert_eq!(call.index_changes(&expected), vec![IndexChange::Release(key)]);
    }

    #[test]
    fn an_assigned_call_is_not_listed_and_reassigning_to_the_same_user_is_no_event() {
        let events = started(Some("2001"), Some(ALICE));
        assert!(Call::default().index_changes(&events[0]).is_empty());
        assert_eq!(
            when::<Call>(events.clone(), CallCommand::AssignCall { user_id: ALICE, extension: None }, &()),
            Ok(vec![])
        );
        let bob = Uuid::from_u128(0xB0B);
        assert_eq!(
            when::<Call>(events, CallCommand::AssignCall { user_id: bob, extension: None }, &()),
            Ok(vec![CallEvent::CallAssigned {
                user_id: bob,
                extension: Some("2001".into()),
                previous_user_id: Some(ALICE)
            }])
        );
    }

    #[test]
    fn assigning_an_unknown_call_is_refused() {
        assert_eq!(
            when::<Call>([], CallCommand::AssignCall { user_id: ALICE, extension: None }, &()),
            Err(CallError::NotFound)
        );
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    #[test]
    fn pauses_dtmf_and_the_end_are_recorded_once_with_their_times_from_the_start() {
        let mut events = started(Some("2001"), Some(ALICE));
        let mut run = |command| {
            let result = when::<Call>(events.clone(), command, &());
            if let Ok(new) = &result {
                events.extend(new.iter().cloned());
            }
            result
        };
        assert_eq!(
            run(CallCommand::PauseRecording { at: at(10) }),
            Ok(vec![CallEvent::RecordingPaused { at: at(10) }])
        );
        assert_eq!(run(CallCommand::PauseRecording { at: at(11) }), Ok(vec![]), "already paused");
        assert_eq!(run(CallCommand::ResumeRecording { at: at(9) }), Err(CallError::BeforeStart));
        assert_eq!(
            run(CallCommand::ResumeRecording { at: at(25) }),
            Ok(vec![CallEvent::RecordingResumed { at: at(25), paused_ms: 15_000 }])
        );
        assert_eq!(run(CallCommand::ResumeRecording { at: at(26) }), Ok(vec![]), "not paused");
        assert_eq!(
            run(CallCommand::RecordDtmf { digit: '#', at: at(30), duration_ms: 120 }),
            Ok(vec![CallEvent::DtmfReceived { digit: '#', at: at(30), offset_ms: 30_000, duration_ms: 120 }])
        );
        assert_eq!(
            run(CallCommand::RecordDtmf { digit: 'x', at: at(31), duration_ms: 80 }),
            Err(CallError::InvalidDigit)
        );
        let again = CallCommand::RecordDtmf { digit: '#', at: at(30), duration_ms: 120 };
        assert_eq!(run(again), Ok(vec![]), "a digit delivered again is the same digit");
        assert_eq!(run(CallCommand::PauseRecording { at: at(-5) }), Err(CallError::BeforeStart));
        let end = CallCommand::EndCall { reason: CallEndReason::Bye, at: at(60) };
        assert_eq!(
            run(end),
            Ok(vec![CallEvent::CallEnded { reason: CallEndReason::Bye, at: at(60), duration_ms: 60_000 }])
        );
        let again = CallCommand::EndCall { reason: CallEndReason::RecorderRestarted, at: at(70) };
        assert_eq!(run(again), Ok(vec![]), "a call ends once");
        assert_eq!(run(CallCommand::PauseRecording { at: at(61) }), Err(CallError::AlreadyEnded));
        assert_eq!(
            run(CallCommand::RecordDtmf { digit: '1', at: at(61), duration_ms: 80 }),
            Err(CallError::AlreadyEnded)
        );
    }

    #[test]
    fn a_recording_is_stored_once_after_the_end() {
        let recording = |sha: &str| StoredRecording {
            storage_target_id: None,
            location: "tenant/2026/12/03/call.mp3".into(),
            format: AudioFormat::Mp3Stereo32,
            size_bytes: 240_000,
            duration_ms: 60_000,
            sha256: sha.into(),
            encryption: None,
        };
        let sha = "ab".repeat(32);
        let store = |sha: &str| CallCommand::RecordStoredRecording { recording: recording(sha) };
        let ongoing = started(None, None);
        assert_eq!(when::<Call>(ongoing.clone(), store(&sha), &()), Err(CallError::NotEnded));
        let mut ended = ongoing;
        ended.push(CallEvent::CallEnded { reason: CallEndReason::RtpTimeout, at: at(60), duration_ms: 60_000 });
        assert_eq!(when::<Call>(ended.clone(), store("abc"), &()), Err(CallError::InvalidRecording));
        let stored = CallEvent::RecordingStored { recording: recording(&sha) };
        assert_eq!(when::<Call>(ended.clone(), store(&sha.to_uppercase()), &()), Ok(vec![stored.clone()]));
        ended.push(stored);
        assert_eq!(when::<Call>(ended.clone(), store(&sha), &()), Ok(vec![]), "the same file again");
        assert_eq!(when::<Call>(ended.clone(), store(&"cd".repeat(32)), &()), Err(CallError::AlreadyStored));
        let failure = CallCommand::RecordFailure { lost: "the last 2 s".into(), reason: "spool full".into() };
        assert_eq!(
            when::<Call>(ended, failure, &()),
            Ok(vec![CallEvent::RecordingFailed { lost: "the last 2 s".into(), reason: "spool full".into() }])
        );
    }

    #[test]
    fn participants_named_later_assign_an_unassigned_call_but_never_reassign_one() {
        let agent = vec![Participant { name: Some("Alice".into()), aor: "sip:2001@pbx.example".into() }];
        let identify = |user_id| CallCommand::IdentifyParticipants {
            participants: agent.clone(),
            extension: Some("2001".into()),
            user_id,
        };
        // Started without a recognised extension: unassigned under "placeholder" until the metadata names it.
        let unassigned = started(Some("9999"), None);
        let identified = CallEvent::ParticipantsIdentified {
            participants: agent.clone(),
            extension: Some("2001".into()),
            user_id: Some(ALICE),
        };
        assert_eq!(when::<Call>(unassigned.clone(), identify(Some(ALICE)), &()), Ok(vec![identified.clone()]));
        let call = given::<Call>(unassigned);
        assert_eq!(
            call.index_changes(&identified),
            vec![IndexChange::Release(Call::unassigned_key(TENANT, "9999", CALL))]
        );
        // An assigned call keeps its user whatever the metadata says later.
        let bob = Uuid::from_u128(0xB0B);
        let assigned = started(Some("2001"), Some(ALICE));
        assert_eq!(
            when::<Call>(assigned, identify(Some(bob)), &()),
            Ok(vec![CallEvent::ParticipantsIdentified {
                participants: agent.clone(),
                extension: Some("2001".into()),
                user_id: Some(ALICE)
            }])
        );
        let hostile = vec![Participant { name: None, aor: "sip:\u{0}@x".into() }];
        let refused = CallCommand::IdentifyParticipants { participants: hostile, extension: None, user_id: None };
        assert_eq!(when::<Call>(started(None, None), refused, &()), Err(CallError::InvalidParticipant));
    }

    #[test]
    fn a_stored_recording_reads_from_events_written_before_encryption_and_round_trips_its_encryption() {
        let old = r#"{"RecordingStored":{"recording":{"storage_target_id":null,"location":"t/c.wav","format":"wav_stereo",
            "size_bytes":44,"duration_ms":0,"sha256":"00"}}}"#;
        let CallEvent::RecordingStored { recording } = serde_json::from_str(old).expect("an old event") else {
            panic!("not a RecordingStored")
        };
        assert_eq!(recording.encryption, None);
        let plain = serde_json::to_value(&recording).expect("json");
        assert!(plain.get("encryption").is_none(), "a plain recording is written as before: {plain}");

        let encrypted = StoredRecording {
            encryption: Some(RecordingEncryption {
                key_id: Uuid::from_u128(0x4e7),
                format_version: 1,
                unterminated_chunks: Some(3),
                file_key_id: None,
            }),
            ..recording
        };
        let text = serde_json::to_string(&encrypted).expect("json");
        assert_eq!(serde_json::from_str::<StoredRecording>(&text).expect("reads back"), encrypted);
    }
}
