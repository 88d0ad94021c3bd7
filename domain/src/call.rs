//! The call aggregate (keyed by call id): one recorded call. So far it knows how a call started (what the
//! recorder saw) and to whom it is assigned. A call whose extension matched no user is unassigned; the
//! write side's index lists unassigned calls by extension so an administrator can assign them all.
//! The recording itself (pauses, end, files) joins this aggregate with the recorder.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{IndexChange, IndexKey, Namespace};
use crate::names::{self, NameError};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    call_id: Uuid,
    tenant_id: Option<Uuid>,
    extension: Option<String>,
    user_id: Option<Uuid>,
    started_at: Option<DateTime<Utc>>,
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

#[derive(Debug, Clone, PartialEq)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    CallStarted { call_id: Uuid, start: CallStart },
    CallAssigned { user_id: Uuid, extension: Option<String>, previous_user_id: Option<Uuid> },
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CallStarted { .. } => "CallStarted",
            Self::CallAssigned { .. } => "CallAssigned",
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
                let sip_call_id = start.sip_call_id.trim().to_owned();
                if sip_call_id.is_empty() || sip_call_id.len() > 1024 || sip_call_id.chars().any(char::is_control) {
                    return Err(CallError::InvalidSipCallId);
                }
                let extension = optional_extension(start.extension)?;
                Ok(vec![CallEvent::CallStarted { call_id, start: CallStart { sip_call_id, extension, ..start } }])
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
        }
    }

    fn index_changes(&self, event: &CallEvent) -> Vec<IndexChange> {
        match event {
            CallEvent::CallStarted { call_id, start } => match (&start.extension, start.user_id) {
                (Some(extension), None) => {
                    vec![IndexChange::Claim(Self::unassigned_key(start.tenant_id, extension, *call_id))]
                }
                _ => Vec::new(),
            },
            CallEvent::CallAssigned { .. } => {
                self.listed_as_unassigned().map(IndexChange::Release).into_iter().collect()
            }
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
}
