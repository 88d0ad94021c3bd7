//! The site's event log in Postgres: `events` (postgres-es's table plus the envelope), `event_log` (the
//! dense, hash-chained order the sequencer assigns) and the API to read it: a batch from a position, or a
//! stream that follows the log live. Readers only ever see whole prefixes: never N+1 before N, never a gap.

pub mod chain;
pub mod event;
pub mod repository;
pub(crate) mod sequencer;
pub(crate) mod signal;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use event::{EnvelopeError, LoggedEvent, StoredEvent};
pub use repository::{AppendedEvent, LogRepository};

use crate::clock::HybridClock;
use crate::metrics::LogMetrics;
use event::EVENT_COLUMNS;
use sequencer::Sequencer;
use signal::{AppendSignal, SEQUENCED_CHANNEL};

/// How this process takes part in the site's log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This site's name: every event appended here names it as its origin.
    pub site: String,
    /// This process's name within the site (node), e.g. the host name.
    pub node: String,
    /// Rows the sequencer numbers in one transaction at most.
    pub batch_size: usize,
    /// How often an idle sequencer looks for rows nobody told it about (foreign writers).
    pub idle_poll: Duration,
    /// How soon the sequencer looks again while an unfinished transaction holds rows back.
    pub held_back_retry: Duration,
    /// Shortest time from the start of one sequencer round to the next (unless a full batch is waiting).
    pub min_round_interval: Duration,
    /// How often a standing-by process tries to become the sequencer.
    pub standby_retry: Duration,
    /// How often followers check the head when no notification came.
    pub follow_poll: Duration,
}

impl LogConfig {
    pub fn new(site: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            site: site.into(),
            node: node.into(),
            batch_size: 2000,
            idle_poll: Duration::from_millis(200),
            held_back_retry: Duration::from_millis(5),
            min_round_interval: Duration::from_millis(10),
            standby_retry: Duration::from_secs(1),
            follow_poll: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the event log's database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("the event log's database refused the operation: {0}")]
    Database(#[source] sqlx::Error),
    #[error("this database belongs to site {database:?}, but this process was started as site {configured:?}")]
    SiteMismatch { database: String, configured: String },
    #[error("the log skipped from position {after} to {found}: a reader must never see a gap")]
    Gap { after: u64, found: u64 },
    #[error("a site name must be 1 to 100 characters of letters, digits, '-', '_' or '.': {0:?}")]
    InvalidSiteName(String),
}

impl From<sqlx::Error> for LogError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e),
            other => Self::Database(other),
        }
    }
}

/// `status` counts unsequenced events up to this many; a larger backlog reads as this number.
const UNSEQUENCED_CAP: i64 = 1_000_000;

/// Where the log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// Highest sequenced position (0 for an empty log).
    pub head_position: u64,
    /// Hash of the head position (all zeros for an empty log).
    pub head_hash: [u8; 32],
    /// Events appended but not sequenced yet (counted up to a million).
    pub unsequenced: u64,
}

#[derive(Debug)]
pub struct EventLog {
    pool: PgPool,
    config: LogConfig,
    clock: Arc<HybridClock>,
    signal: Arc<AppendSignal>,
    head: watch::Sender<u64>,
    metrics: LogMetrics,
}

pub(crate) fn valid_site_name(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= 100
        && site.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl EventLog {
    /// Opens the site's log on a migrated database, claiming the database for `config.site` on first use.
    pub async fn open(pool: PgPool, config: LogConfig, metrics: LogMetrics) -> Result<Arc<Self>, LogError> {
        if !valid_site_name(&config.site) {
            return Err(LogError::InvalidSiteName(config.site.clone()));
        }
        sqlx::query("INSERT INTO recall_site (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&config.site)
            .execute(&pool)
            .await?;
        let database: String = sqlx::query_scalar("SELECT name FROM recall_site").fetch_one(&pool).await?;
        if database != config.site {
            return Err(LogError::SiteMismatch { database, configured: config.site.clone() });
        }
        let head = head_position(&pool).await?;
        metrics.head_position.set(i64::try_from(head).unwrap_or(i64::MAX));
        Ok(Arc::new(Self {
            clock: Arc::new(HybridClock::for_node(&config.site, &config.node)),
            pool,
            config,
            signal: Arc::new(AppendSignal::default()),
            head: watch::channel(head).0,
            metrics,
        }))
    }

    /// The site a migrated database belongs to, if a recall process has opened its log before.
    pub async fn database_site(pool: &PgPool) -> Result<Option<String>, LogError> {
        Ok(sqlx::query_scalar("SELECT name FROM recall_site").fetch_optional(pool).await?)
    }

    /// Starts the background work: the sequencer (when `sequencer` is set; it stands by while another
    /// process leads), the head watcher for followers, and the cross-process wake-up pump.
    pub fn spawn(self: &Arc<Self>, sequencer: bool, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if sequencer {
            let sequencer = Sequencer {
                pool: self.pool.clone(),
                config: self.config.clone(),
                signal: self.signal.clone(),
                head: self.head.clone(),
                metrics: self.metrics.clone(),
            };
            tasks.push(tokio::spawn(sequencer.run(shutdown.clone())));
        }
        tasks.push(tokio::spawn(self.signal.clone().pump(self.pool.clone(), shutdown.clone())));
        let log = self.clone();
        tasks.push(tokio::spawn(async move { log.watch_head(shutdown).await }));
        tasks
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn clock(&self) -> Arc<HybridClock> {
        self.clock.clone()
    }

    pub fn metrics(&self) -> &LogMetrics {
        &self.metrics
    }

    /// The append path for cqrs-es's `PersistedEventStore`.
    pub fn repository(&self) -> LogRepository {
        LogRepository::new(self.pool.clone(), self.clock.clone(), self.config.site.clone())
    }

    /// Called after every committed append.
    pub(crate) fn appended(&self) {
        self.signal.appended();
    }

    /// The last head position this process has seen (cheap; see [`EventLog::status`] for the truth).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A watch of the head position this process has seen, for readers that wait for new events.
    pub fn watch_head_position(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Up to `limit` events after position `after`, in order.
    pub async fn read_batch(&self, after: u64, limit: u32) -> Result<Vec<LoggedEvent>, LogError> {
        read_batch(&self.pool, after, limit).await
    }

    /// Every event after `after`, in order, then each new one as it is sequenced. Errors are reported and
    /// the stream carries on (a database outage delays it, it does not end it); drop it to stop.
    pub fn follow(&self, after: u64) -> impl Stream<Item = Result<LoggedEvent, LogError>> + Send + 'static {
        let state = Follower {
            pool: self.pool.clone(),
            head: self.head.subscribe(),
            after,
            buffer: VecDeque::new(),
            poll: self.config.follow_poll,
            backoff: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            Some((item, state))
        })
    }

    /// The log position of an event, once sequenced.
    pub async fn position_of(&self, event_id: Uuid) -> Result<Option<u64>, LogError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT global_position FROM event_log WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(position.and_then(|p| u64::try_from(p).ok()))
    }

    /// Waits (at most `limit`) until the event is sequenced; its position, or `None` on time-out.
    pub async fn wait_for_position(&self, event_id: Uuid, limit: Duration) -> Result<Option<u64>, LogError> {
        let mut head = self.head.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(position) = self.position_of(event_id).await? {
                return Ok(Some(position));
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = head.changed() => {}
                () = tokio::time::sleep(self.config.follow_poll) => {}
            }
        }
    }

    /// Head position, head hash and head lag, read from the database.
    pub async fn status(&self) -> Result<LogStatus, LogError> {
        let (head_position, head_hash, cursor_tx, cursor_type, cursor_id, cursor_seq): (
            i64,
            Vec<u8>,
            String,
            String,
            String,
            i64,
        ) = sqlx::query_as(
            "SELECT head_position, head_hash, cursor_tx::text, cursor_type, cursor_id, cursor_seq FROM log_sequencer",
        )
        .fetch_one(&self.pool)
        .await?;
        // The backlog is a range of the sequencing index; Postgres cannot estimate the row comparison and
        // would scan the whole table, so this transaction is told not to.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
        sqlx::query("SET LOCAL enable_bitmapscan = off").execute(&mut *tx).await?;
        let unsequenced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM events e \
              WHERE (e.tx_id, e.aggregate_type, e.aggregate_id, e.sequence) > ($1::xid8, $2, $3, $4) \
              ORDER BY e.tx_id, e.aggregate_type, e.aggregate_id, e.sequence LIMIT $5) AS pending",
        )
        .bind(cursor_tx)
        .bind(cursor_type)
        .bind(cursor_id)
        .bind(cursor_seq)
        .bind(UNSEQUENCED_CAP)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.metrics.unsequenced_events.set(unsequenced);
        Ok(LogStatus {
            head_position: u64::try_from(head_position).unwrap_or(0),
            head_hash: head_hash.as_slice().try_into().unwrap_or(chain::GENESIS),
            unsequenced: u64::try_from(unsequenced).unwrap_or(0),
        })
    }

    /// Keeps the head watch current when another process sequences: NOTIFY first, polling as the fallback.
    async fn watch_head(&self, shutdown: CancellationToken) {
        let mut listener = None;
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(SEQUENCED_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(_) => None,
                    },
                    Err(_) => None,
                };
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                ok = notified => if !ok { listener = None; },
                () = tokio::time::sleep(self.config.follow_poll) => {}
            }
            if let Ok(position) = head_position(&self.pool).await {
                self.metrics.head_position.set(i64::try_from(position).unwrap_or(i64::MAX));
                self.head.send_if_modified(|head| {
                    let moved = position > *head;
                    *head = (*head).max(position);
                    moved
                });
            }
        }
    }
}

async fn head_position(pool: &PgPool) -> Result<u64, LogError> {
    let head: i64 = sqlx::query_scalar("SELECT head_position FROM log_sequencer").fetch_one(pool).await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// Every event of one aggregate, in its sequence order, as stored (sequenced or not yet).
pub async fn read_aggregate(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, LogError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 ORDER BY e.sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?)
}

/// Up to `limit` events after position `after`, in order.
pub async fn read_batch(pool: &PgPool, after: u64, limit: u32) -> Result<Vec<LoggedEvent>, LogError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows: Vec<LoggedRow> = sqlx::query_as(&format!(
        "SELECT l.global_position, l.hash, {EVENT_COLUMNS} \
           FROM event_log l JOIN events e ON e.event_id = l.event_id \
          WHERE l.global_position > $1 ORDER BY l.global_position LIMIT $2"
    ))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| LoggedEvent {
            position: u64::try_from(row.global_position).unwrap_or(0),
            hash: row.hash.as_slice().try_into().unwrap_or(chain::GENESIS),
            event: row.event,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct LoggedRow {
    global_position: i64,
    hash: Vec<u8>,
    #[sqlx(flatten)]
    event: StoredEvent,
}

struct Follower {
    pool: PgPool,
    head: watch::Receiver<u64>,
    after: u64,
    buffer: VecDeque<LoggedEvent>,
    poll: Duration,
    backoff: bool,
}

const FOLLOW_BATCH: u32 = 500;

impl Follower {
    async fn next(&mut self) -> Result<LoggedEvent, LogError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                if event.position != self.after + 1 {
                    let gap = LogError::Gap { after: self.after, found: event.position };
                    self.buffer.clear();
                    return Err(gap);
                }
                self.after = event.position;
                return Ok(event);
            }
            if self.backoff {
                self.backoff = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match read_batch(&self.pool, self.after, FOLLOW_BATCH).await {
                Ok(batch) if !batch.is_empty() => self.buffer.extend(batch),
                Ok(_) => {
                    tokio::select! {
                        changed = self.head.changed() => if changed.is_err() {
                            // The log this follower came from is gone: fall back to polling.
                            tokio::time::sleep(self.poll).await;
                        },
                        () = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(e) => {
                    self.backoff = true;
                    return Err(e);
                }
            }
        }
    }
}
