//! The envelope every event carries: who acted (and on whose behalf), from where, why, on which site and
//! when. The domain only describes it; the command service fills it in, the log stores it in columns.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hlc::HlcTimestamp;

/// Who performed an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Actor {
    /// A signed-in user.
    User(Uuid),
    /// A program using an API token.
    ApiToken(Uuid),
    /// A component of recall itself, e.g. `recorder:node-1` or `sequencer`.
    System(String),
    /// A writer outside recall that appended straight to the database, named by its database role.
    Database(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::ApiToken(id) => write!(f, "token:{id}"),
            Self::System(component) => write!(f, "system:{component}"),
            Self::Database(role) => write!(f, "db:{role}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an actor (expected user:<uuid>, token:<uuid>, system:<component> or db:<role>): {0:?}")]
pub struct ActorParseError(pub String);

impl FromStr for Actor {
    type Err = ActorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ActorParseError(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        match kind {
            "user" => Uuid::parse_str(rest).map(Self::User).map_err(|_| err()),
            "token" => Uuid::parse_str(rest).map(Self::ApiToken).map_err(|_| err()),
            "system" if !rest.is_empty() => Ok(Self::System(rest.to_owned())),
            "db" if !rest.is_empty() => Ok(Self::Database(rest.to_owned())),
            _ => Err(err()),
        }
    }
}

impl From<Actor> for String {
    fn from(value: Actor) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for Actor {
    type Error = ActorParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// What the caller of a command knows about the request: the same for every event the command produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMeta {
    /// The tenant the action belongs to; `None` for service-wide actions.
    pub tenant_id: Option<Uuid>,
    pub actor: Actor,
    /// The administrator acting as `actor` during an impersonation.
    pub impersonator: Option<Actor>,
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub source_addr: Option<IpAddr>,
    /// Ties together everything one request caused; the command service fills it when absent.
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one.
    pub causation_id: Option<Uuid>,
}

impl CommandMeta {
    /// Metadata for an action of recall itself, e.g. `CommandMeta::system("recorder:node-1")`.
    pub fn system(component: impl Into<String>) -> Self {
        Self::by(Actor::System(component.into()))
    }

    /// Metadata for an action by `actor`, with nothing else known yet.
    pub fn by(actor: Actor) -> Self {
        Self {
            tenant_id: None,
            actor,
            impersonator: None,
            session_id: None,
            device_id: None,
            source_addr: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    pub fn in_tenant(mut self, tenant_id: Uuid) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }
}

/// The full envelope of one stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7; the idempotency key of the event everywhere (replication, imports).
    pub event_id: Uuid,
    #[serde(flatten)]
    pub meta: CommandMeta,
    /// The site whose log the event was first appended to.
    pub origin_site: String,
    /// The event's position in its origin site's log, for events that arrived by replication.
    pub origin_pos: Option<u64>,
    pub hlc: HlcTimestamp,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_through_their_text_form() {
        let id = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001);
        for actor in [
            Actor::User(id),
            Actor::ApiToken(id),
            Actor::System("recorder:node-1".into()),
            Actor::Database("postgres".into()),
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor));
        }
    }

    #[test]
    fn malformed_actors_are_refused() {
        for bad in ["", "user", "user:", "user:not-a-uuid", "system:", "root:x", "db:"] {
            assert!(bad.parse::<Actor>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn envelope_serializes_flat_and_back() {
        let envelope = Envelope {
            event_id: Uuid::from_u128(7),
            meta: CommandMeta::system("sequencer").in_tenant(Uuid::from_u128(9)),
            origin_site: "paris".into(),
            origin_pos: Some(12),
            hlc: HlcTimestamp::new(42, 3),
            recorded_at: DateTime::from_timestamp(1_795_629_600, 0).unwrap_or_default(),
        };
        let json = serde_json::to_value(&envelope).unwrap_or_default();
        assert_eq!(json["actor"], "system:sequencer");
        assert_eq!(json["hlc"], "000000000000002a/3");
        let back: Envelope = serde_json::from_value(json).expect("envelope reads back");
        assert_eq!(back, envelope);
    }
}
