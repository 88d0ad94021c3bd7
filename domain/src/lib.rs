//! recall's pure model: aggregates decide commands into events and apply events to state.
//! Nothing here does I/O, reads a clock or draws a random number: time, new ids and facts from outside
//! arrive in the command, in the envelope, or through a small trait the caller passes in.

pub mod access;
pub mod aggregate;
pub mod api_token;
pub mod call;
pub mod custom_field;
pub mod device;
pub mod encryption_key;
pub mod envelope;
pub mod evaluation_form;
pub mod failed_attempt;
pub mod field_visibility;
pub mod group;
pub mod hlc;
pub mod index;
pub mod job;
pub mod lifecycle;
pub mod names;
pub mod recording_policy;
pub mod role;
pub mod secret;
pub mod session;
pub mod site;
pub mod storage_target;
pub mod tenant;
pub mod user;

#[cfg(test)]
mod testing;

pub use aggregate::{Aggregate, DomainEvent};
pub use envelope::{Actor, ActorParseError, CommandMeta, Envelope};
pub use hlc::{HlcParseError, HlcTimestamp};
