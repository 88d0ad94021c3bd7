//! recall's read side: projections turn the site's event log into read-model tables. Each projection owns a
//! schema (`rm_<name>`) holding its tables and its checkpoint; the runner applies the log in batches and moves
//! the checkpoint in the same transaction, so every event counts exactly once. A projection never skips an
//! event it cannot apply: it stops there, with the position and the error visible.

pub mod audit;
pub mod calls;
pub mod directory;
pub mod jobs;
pub mod rebuild;
pub mod runner;
mod schema;

use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use sqlx::PgConnection;

pub use rebuild::{rebuild, RebuildProgress};
pub use runner::{ProjectionMetrics, ProjectionStatus, Projector};
pub use schema::{live_schema, read_position};

/// A projection of the log into tables of its own.
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// Short name; the projection's tables live in schema `rm_<name>`.
    fn name(&self) -> &'static str;
    /// The shape of the tables. A projection whose stored version differs is rebuilt from the log.
    fn version(&self) -> i32;
    /// Statements that create the tables in `schema`, which is empty (with the keys `apply` relies on).
    fn create(&self, schema: &str) -> Vec<String>;
    /// Statements that create the secondary indexes, for reads only. A rebuild runs them after loading the
    /// whole log, which is much faster than keeping them up to date row by row; a new live projection
    /// creates them with its tables.
    fn indexes(&self, _schema: &str) -> Vec<String> {
        Vec::new()
    }
    /// Applies `events` (consecutive, in log order) to the tables in `schema`, inside the caller's transaction.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        schema: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at position {position} ({event_type}) cannot be read: {reason}")]
    Unreadable { position: u64, event_type: String, reason: String },
    #[error("the read model's database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the event log could not be read: {0}")]
    Log(#[from] recall_commands::LogError),
}

impl ProjectionError {
    pub(crate) fn unreadable(event: &LoggedEvent, reason: impl std::fmt::Display) -> Self {
        Self::Unreadable {
            position: event.position,
            event_type: event.event.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Reads an event's payload as the domain event type of its aggregate.
pub(crate) fn payload<E: serde::de::DeserializeOwned>(event: &LoggedEvent) -> Result<E, ProjectionError> {
    serde_json::from_str(&event.event.payload).map_err(|e| ProjectionError::unreadable(event, e))
}

/// The projections recall runs, in the order they are listed in `health`.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(directory::Directory),
        std::sync::Arc::new(calls::Calls),
        std::sync::Arc::new(jobs::Jobs),
        std::sync::Arc::new(audit::Audit),
    ]
}
