//! Wakes the sequencer after an append. In this process the wake is a `Notify`; when the site's sequencer
//! runs in another process, one coalesced `NOTIFY recall_events` is sent instead. Writers never NOTIFY inside
//! their own transaction: Postgres serialises the commits of notifying transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) const APPENDED_CHANNEL: &str = "recall_events";
pub(crate) const SEQUENCED_CHANNEL: &str = "recall_log";

#[derive(Debug, Default)]
pub(crate) struct AppendSignal {
    /// Wakes the sequencer of this process.
    pub(crate) local: Notify,
    /// True while this process holds the site's sequencer lock.
    pub(crate) leader_here: AtomicBool,
    remote: Notify,
}

impl AppendSignal {
    pub(crate) fn appended(&self) {
        self.local.notify_one();
        if !self.leader_here.load(Ordering::Relaxed) {
            self.remote.notify_one();
        }
    }

    /// Sends the cross-process wake-ups: at most one NOTIFY in flight, however many appends asked.
    pub(crate) async fn pump(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.remote.notified() => {}
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(APPENDED_CHANNEL).execute(&pool).await {
                // The sequencer polls as well; a lost wake-up only costs latency.
                tracing::debug!(error = %e, "could not wake the site's sequencer");
            }
        }
    }
}
