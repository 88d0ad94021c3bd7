//! The command service: loads an aggregate through cqrs-es's `PersistedEventStore`, lets the domain decide,
//! and appends the events with their envelope. It reports a refusal, a lost race for the aggregate's next
//! sequence, and an unavailable database as three different things.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use recall_domain::index::IndexKey;
use recall_domain::{Aggregate, CommandMeta};
use uuid::Uuid;

use crate::adapter::{Adapted, EventOf};
use crate::log::repository::{Taken, INDEX_KEY, META_KEY, RECEIPT};
use crate::log::{EventLog, LogRepository};

pub use crate::log::AppendedEvent;

/// What a command appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub aggregate_id: String,
    /// The command's correlation id (given, or made for it).
    pub correlation_id: Uuid,
    /// The events, in sequence order; empty when the command changed nothing.
    pub events: Vec<AppendedEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused the command; nothing was written.
    #[error(transparent)]
    Refused(E),
    /// Another command appended to the same aggregate first; nothing was written. Retrying re-decides.
    #[error("another change to {aggregate_type} {aggregate_id} was saved first; nothing was written, try again")]
    Conflict { aggregate_type: &'static str, aggregate_id: String },
    /// A name or number the command would take is held by another aggregate; nothing was written.
    #[error("the {0} is already taken")]
    Taken(IndexKey),
    /// The database could not be reached; nothing was acknowledged.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read, or the database failed in an unexpected way.
    #[error("the command could not be completed: {0}")]
    Internal(String),
}

/// Executes the commands of one aggregate type.
pub struct CommandService<A: Aggregate> {
    store: PersistedEventStore<LogRepository, Adapted<A>>,
    services: A::Services,
    log: Arc<EventLog>,
}

impl<A: Aggregate> std::fmt::Debug for CommandService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService").field("aggregate_type", &A::TYPE).finish()
    }
}

impl<A: Aggregate> CommandService<A> {
    /// Aggregates are rebuilt from all their events on every command.
    pub fn new(log: Arc<EventLog>, services: A::Services) -> Self {
        Self { store: PersistedEventStore::new_event_store(log.repository()), services, log }
    }

    /// For long-lived aggregates: state is loaded from a snapshot taken every `every` events.
    pub fn with_snapshots(log: Arc<EventLog>, services: A::Services, every: usize) -> Self {
        Self { store: PersistedEventStore::new_snapshot_store(log.repository(), every.max(1)), services, log }
    }

    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// The aggregate's current state, as the next command would see it (a default state if it has no events).
    pub async fn load(&self, aggregate_id: &str) -> Result<A, CommandError<A::Error>> {
        let context = self.store.load_aggregate(aggregate_id).await.map_err(|e| self.failure(aggregate_id, e))?;
        Ok(context.aggregate.0)
    }

    /// The aggregate's current state with the sequence of its last event (0: no events).
    pub async fn load_versioned(&self, aggregate_id: &str) -> Result<(A, u64), CommandError<A::Error>> {
        let context = self.store.load_aggregate(aggregate_id).await.map_err(|e| self.failure(aggregate_id, e))?;
        Ok((context.aggregate.0, context.current_sequence as u64))
    }

    /// Decides `command` against the aggregate's current state and appends the resulting events.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        mut meta: CommandMeta,
    ) -> Result<Receipt, CommandError<A::Error>> {
        let started = Instant::now();
        let correlation_id = *meta.correlation_id.get_or_insert_with(Uuid::now_v7);
        let result = self.decide_and_append(aggregate_id, command, &meta).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CommandError::Refused(_)) => "refused",
            Err(CommandError::Conflict { .. }) => "conflict",
            Err(CommandError::Taken(_)) => "taken",
            Err(CommandError::Unavailable(_)) => "unavailable",
            Err(CommandError::Internal(_)) => "error",
        };
        let metrics = self.log.metrics();
        metrics.commands.with_label_values(&[A::TYPE, outcome]).inc();
        metrics.command_seconds.with_label_values(&[A::TYPE]).observe(started.elapsed().as_secs_f64());
        let events = result?;
        if !events.is_empty() {
            self.log.appended();
        }
        Ok(Receipt { aggregate_id: aggregate_id.to_owned(), correlation_id, events })
    }

    async fn decide_and_append(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Vec<AppendedEvent>, CommandError<A::Error>> {
        let mut context = self.store.load_aggregate(aggregate_id).await.map_err(|e| self.failure(aggregate_id, e))?;
        // Decide on the loaded state without applying: cqrs-es 0.5's snapshot store applies the new events
        // to the context's aggregate itself, so events applied through its `EventSink` would count twice.
        let events: Vec<EventOf<A::Event>> = context
            .aggregate()
            .0
            .decide(command, &self.services)
            .await
            .map_err(CommandError::Refused)?
            .into_iter()
            .map(EventOf)
            .collect();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // What the events claim and release in the write side's index, each against the state before it.
        let mut state = context.aggregate().0.clone();
        let mut index = Vec::new();
        for event in &events {
            index.extend(state.index_changes(&event.0));
            state.apply(event.0.clone());
        }
        let internal = |e: serde_json::Error| CommandError::Internal(e.to_string());
        let mut metadata = HashMap::from([(META_KEY.to_owned(), serde_json::to_string(meta).map_err(internal)?)]);
        if !index.is_empty() {
            metadata.insert(INDEX_KEY.to_owned(), serde_json::to_string(&index).map_err(internal)?);
        }
        RECEIPT
            .scope(RefCell::new(Vec::new()), async {
                self.store.commit(events, context, metadata).await.map_err(|e| self.failure(aggregate_id, e))?;
                Ok(RECEIPT.with(|receipt| receipt.take()))
            })
            .await
    }

    #[allow(clippy::unused_self)]
    fn failure(&self, aggregate_id: &str, error: AggregateError<A::Error>) -> CommandError<A::Error> {
        match error {
            AggregateError::UserError(e) => CommandError::Refused(e),
            AggregateError::AggregateConflict => {
                CommandError::Conflict { aggregate_type: A::TYPE, aggregate_id: aggregate_id.to_owned() }
            }
            AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
            AggregateError::UnexpectedError(e) if e.is::<Taken>() => match e.downcast::<Taken>() {
                Ok(taken) => CommandError::Taken(taken.0),
                Err(e) => CommandError::Internal(e.to_string()),
            },
            AggregateError::UnexpectedError(e) if unavailable(e.as_ref()) => CommandError::Unavailable(e.to_string()),
            AggregateError::DeserializationError(e) => {
                CommandError::Internal(format!("{} {aggregate_id} could not be read: {e}", A::TYPE))
            }
            AggregateError::UnexpectedError(e) => CommandError::Internal(e.to_string()),
        }
    }
}

/// Whether an error (or its cause) is the database being out of reach rather than refusing something.
fn unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(sqlx) = e.downcast_ref::<sqlx::Error>() {
            return matches!(
                sqlx,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            );
        }
        current = e.source();
    }
    false
}
