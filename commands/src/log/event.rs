//! Events as the log stores them: the seven postgres-es columns, the envelope columns, and, once the
//! sequencer has numbered it, the event's position and chain hash. Text columns are kept exactly as stored
//! (the chain hashes what is stored); typed views parse on demand, so a foreign writer's odd row is
//! reported, never mistaken.

use chrono::{DateTime, Utc};
use recall_domain::{CommandMeta, Envelope};
use serde_json::Value;
use uuid::Uuid;

/// Columns of `events e` read into a [`StoredEvent`].
pub(crate) const EVENT_COLUMNS: &str = "e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, \
     e.event_version, e.payload::text AS payload, e.metadata::text AS metadata, e.event_id, e.tenant_id, \
     e.actor, e.impersonator, e.session_id, e.device_id, host(e.source_addr) AS source_addr, \
     e.correlation_id, e.causation_id, e.origin_site, e.origin_pos, e.hlc, e.recorded_at";

/// One row of `events`, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload's JSON text exactly as stored.
    pub payload: String,
    /// The metadata's JSON text exactly as stored.
    pub metadata: String,
    pub event_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub actor: String,
    pub impersonator: Option<String>,
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub source_addr: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub origin_site: String,
    pub origin_pos: Option<i64>,
    pub hlc: String,
    pub recorded_at: DateTime<Utc>,
}

/// A stored envelope column that does not read as what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event_id}: column {column} holds {value:?}, which is not valid: {reason}")]
pub struct EnvelopeError {
    pub event_id: Uuid,
    pub column: &'static str,
    pub value: String,
    pub reason: String,
}

impl StoredEvent {
    /// The payload as JSON.
    pub fn payload_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The envelope, typed.
    pub fn envelope(&self) -> Result<Envelope, EnvelopeError> {
        let bad = |column: &'static str, value: &str, reason: String| EnvelopeError {
            event_id: self.event_id,
            column,
            value: value.to_owned(),
            reason,
        };
        let actor =
            self.actor.parse().map_err(|e: recall_domain::ActorParseError| bad("actor", &self.actor, e.to_string()))?;
        let impersonator = match &self.impersonator {
            Some(text) => Some(
                text.parse().map_err(|e: recall_domain::ActorParseError| bad("impersonator", text, e.to_string()))?,
            ),
            None => None,
        };
        let source_addr = match &self.source_addr {
            Some(text) => {
                Some(text.parse().map_err(|e: std::net::AddrParseError| bad("source_addr", text, e.to_string()))?)
            }
            None => None,
        };
        let hlc = self.hlc.parse().map_err(|e: recall_domain::HlcParseError| bad("hlc", &self.hlc, e.to_string()))?;
        let origin_pos = match self.origin_pos {
            Some(pos) => Some(u64::try_from(pos).map_err(|e| bad("origin_pos", &pos.to_string(), e.to_string()))?),
            None => None,
        };
        Ok(Envelope {
            event_id: self.event_id,
            meta: CommandMeta {
                tenant_id: self.tenant_id,
                actor,
                impersonator,
                session_id: self.session_id,
                device_id: self.device_id,
                source_addr,
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
            },
            origin_site: self.origin_site.clone(),
            origin_pos,
            hlc,
            recorded_at: self.recorded_at,
        })
    }
}

/// An event at its place in this site's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// 1-based, dense: position N is the N-th event this site sequenced.
    pub position: u64,
    /// SHA-256 over the previous position's hash and this event's canonical encoding.
    pub hash: [u8; 32],
    pub event: StoredEvent,
}
