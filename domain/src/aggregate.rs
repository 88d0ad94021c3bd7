//! The shape every aggregate of recall has: decide (state + command → events or a refusal) and apply
//! (state + event → state). The write side adapts this to cqrs-es; the domain never sees a store.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::index::IndexChange;

/// A fact that happened. Its type string is frozen once shipped; a changed shape gets a new version.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync {
    /// The frozen name of the event, e.g. `NodeStarted`.
    fn event_type(&self) -> &'static str;
    /// The version of this event's shape, e.g. `1`.
    fn event_version(&self) -> &'static str;
}

/// An event-sourced aggregate.
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + Sync {
    /// The aggregate type as stored in the log (`aggregate_type`). Frozen once shipped.
    const TYPE: &'static str;
    type Command: Send;
    type Event: DomainEvent;
    /// Why a command was refused: "you may not / this is invalid", never "the database is down".
    type Error: std::error::Error + Send + Sync + 'static;
    /// What the aggregate may ask of the outside world while deciding (lookups, not effects).
    type Services: Send + Sync;

    /// Decide what a command means given the current state. Must not change `self`.
    fn decide(
        &self,
        command: Self::Command,
        services: &Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send;

    /// Move the state forward by one event. Never fails: the event already happened.
    fn apply(&mut self, event: Self::Event);

    /// What `event` claims or releases in the write side's index (unique names, memberships), given the
    /// state before it. The write side changes the index in the same transaction as it appends the event,
    /// so a claim that another aggregate holds refuses the whole command. Most events change nothing.
    fn index_changes(&self, _event: &Self::Event) -> Vec<IndexChange> {
        Vec::new()
    }
}
