//! The runner: one task per projection and one leader per projection per site (a session advisory lock on a
//! connection of its own, which also does the projection's writes). It reads the log in batches after the
//! checkpoint and applies each batch with the checkpoint move in one transaction; it is woken by the log's
//! head watch (this process's sequencer, or NOTIFY from another), polling as the fallback. An event that
//! cannot be applied stops the projection there, visible in `status()` and the metrics, and is retried
//! now and then (the cause may be fixed); it is never skipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use recall_commands::{EventLog, LoggedEvent};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::schema::{self, live_schema, lock_key, read_position};
use crate::{Projection, ProjectionError};

/// Events applied per transaction.
const BATCH: u32 = 2_000;
const POLL: Duration = Duration::from_millis(500);
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How long a projection stopped at an event waits before it tries that event again.
const FAILED_RETRY: Duration = Duration::from_secs(30);
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ProjectionMetrics {
    pub position: IntGaugeVec,
    pub failing: IntGaugeVec,
    pub errors: IntCounterVec,
    pub events: IntCounterVec,
}

impl ProjectionMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.position.clone()))?;
        registry.register(Box::new(metrics.failing.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.events.clone()))?;
        Ok(metrics)
    }

    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            position: IntGaugeVec::new(
                Opts::new("recall_projection_position", "Log position each projection has applied"),
                &["projection"],
            )?,
            failing: IntGaugeVec::new(
                Opts::new("recall_projection_failing", "1 while a projection is stopped at an event it cannot apply"),
                &["projection"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("recall_projection_errors_total", "Times a projection failed to apply an event"),
                &["projection"],
            )?,
            events: IntCounterVec::new(
                Opts::new("recall_projection_events_total", "Events each projection has applied"),
                &["projection"],
            )?,
        })
    }
}

/// How one projection is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The log position its tables reflect (as this process last saw it).
    pub position: u64,
    /// Whether this process leads (runs) the projection; another process may lead it instead.
    pub leading: bool,
    /// The position and error of the event it is stopped at, if any.
    pub failure: Option<(u64, String)>,
}

#[derive(Debug)]
struct State {
    projection: Arc<dyn Projection>,
    position: watch::Sender<u64>,
    leading: watch::Sender<bool>,
    failure: Mutex<Option<(u64, String)>>,
}

/// Runs the projections of this process.
#[derive(Debug)]
pub struct Projector {
    pool: PgPool,
    log: Arc<EventLog>,
    states: Vec<Arc<State>>,
    metrics: ProjectionMetrics,
}

impl Projector {
    pub fn new(log: Arc<EventLog>, projections: Vec<Arc<dyn Projection>>, metrics: ProjectionMetrics) -> Arc<Self> {
        let states = projections
            .into_iter()
            .map(|projection| {
                Arc::new(State {
                    projection,
                    position: watch::channel(0).0,
                    leading: watch::channel(false).0,
                    failure: Mutex::new(None),
                })
            })
            .collect();
        Arc::new(Self { pool: log.pool().clone(), log, states, metrics })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts one task per projection; each leads its projection when no other process does.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.states
            .iter()
            .map(|state| {
                let projector = self.clone();
                let state = state.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { projector.run(state, shutdown).await })
            })
            .collect()
    }

    pub fn status(&self) -> Vec<ProjectionStatus> {
        self.states
            .iter()
            .map(|state| ProjectionStatus {
                name: state.projection.name(),
                position: *state.position.borrow(),
                leading: *state.leading.borrow(),
                failure: state.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            })
            .collect()
    }

    /// Waits (at most `limit`) until every projection reflects the log up to `position`; whether they do.
    /// Positions are read from the database as well, so projections led by another process count too.
    pub async fn wait_for(&self, position: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        for state in &self.states {
            let mut seen = state.position.subscribe();
            loop {
                if *seen.borrow_and_update() >= position {
                    break;
                }
                if let Ok(mut conn) = self.pool.acquire().await {
                    let schema = live_schema(state.projection.name());
                    if let Ok(Some((stored, _))) = read_position(&mut conn, &schema).await {
                        if stored >= position {
                            state.position.send_if_modified(|p| std::mem::replace(p, (*p).max(stored)) < stored);
                            break;
                        }
                    }
                }
                let wait =
                    tokio::time::sleep(POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now())));
                tokio::select! {
                    _ = seen.changed() => {}
                    () = wait => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
            }
        }
        true
    }

    async fn run(&self, state: Arc<State>, shutdown: CancellationToken) {
        let name = state.projection.name();
        while !shutdown.is_cancelled() {
            match self.lead(&state, &shutdown).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "projection runner interrupted; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(TRANSIENT_RETRY) => {}
                    }
                }
            }
            state.leading.send_replace(false);
        }
    }

    /// Takes the lead of the projection (or stands by) and runs it until shutdown or a broken connection.
    async fn lead(&self, state: &State, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
        let projection = state.projection.as_ref();
        let name = projection.name();
        // A connection of its own: the session lock lives and dies with it.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lock_key(name)).fetch_one(&mut conn).await?;
            if locked {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(STANDBY_RETRY) => {}
            }
        }
        state.leading.send_replace(true);
        let schema = live_schema(name);
        match read_position(&mut conn, &schema).await? {
            Some((_, version)) if version == projection.version() => {}
            Some((_, version)) => {
                tracing::info!(
                    projection = name,
                    stored = version,
                    current = projection.version(),
                    "the read model's shape changed; rebuilding it from the log"
                );
                crate::rebuild::rebuild(&self.pool, &self.log, projection, |_| {}).await?;
            }
            None => schema::create(&mut conn, projection, &schema, true).await?,
        }
        let mut head = self.log.watch_head_position();
        loop {
            if shutdown.is_cancelled() {
                let _ = conn.close().await;
                return Ok(());
            }
            let Some((from, _)) = read_position(&mut conn, &schema).await? else {
                return Err(ProjectionError::Database(sqlx::Error::Protocol(format!("schema {schema} vanished"))));
            };
            self.publish(state, from);
            let batch = self.log.read_batch(from, BATCH).await?;
            if batch.is_empty() {
                head.borrow_and_update();
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    _ = head.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            if let Ok(to) = apply(&mut conn, projection, &schema, from, &batch).await {
                self.applied(state, from, to);
                continue;
            }
            // The batch as a whole failed: apply it event by event, up to the one that fails.
            let mut at = from;
            for event in &batch {
                match apply(&mut conn, projection, &schema, at, std::slice::from_ref(event)).await {
                    Ok(to) if to == event.position => {
                        self.applied(state, at, to);
                        at = to;
                    }
                    // The checkpoint moved under us (a rebuild was swapped in): start over from it.
                    Ok(_) => break,
                    Err(e) => {
                        self.failed(state, event, &e);
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = tokio::time::sleep(FAILED_RETRY) => {}
                        }
                        break;
                    }
                }
            }
        }
    }

    fn publish(&self, state: &State, position: u64) {
        state.position.send_if_modified(|p| std::mem::replace(p, position) != position);
        self.metrics
            .position
            .with_label_values(&[state.projection.name()])
            .set(i64::try_from(position).unwrap_or(i64::MAX));
    }

    fn applied(&self, state: &State, from: u64, to: u64) {
        let name = state.projection.name();
        self.metrics.events.with_label_values(&[name]).inc_by(to.saturating_sub(from));
        let mut failure = state.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failure.take().is_some() {
            tracing::info!(projection = name, position = to, "projection moves on again");
            self.metrics.failing.with_label_values(&[name]).set(0);
        }
        drop(failure);
        self.publish(state, to);
    }

    fn failed(&self, state: &State, event: &LoggedEvent, error: &ProjectionError) {
        let name = state.projection.name();
        tracing::error!(
            projection = name, position = event.position, event_type = %event.event.event_type, error = %error,
            "projection stopped: it cannot apply this event and will not skip it"
        );
        self.metrics.errors.with_label_values(&[name]).inc();
        self.metrics.failing.with_label_values(&[name]).set(1);
        *state.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((event.position, error.to_string()));
    }
}

/// Applies a batch and moves the checkpoint from `from` to the batch's last position in one transaction;
/// returns the position reached (`from` when the checkpoint was moved by someone else meanwhile).
pub(crate) async fn apply(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    from: u64,
    batch: &[LoggedEvent],
) -> Result<u64, ProjectionError> {
    let Some(last) = batch.last() else { return Ok(from) };
    let mut tx = Connection::begin(&mut *conn).await?;
    projection.apply(&mut tx, schema, batch).await?;
    if !schema::advance(&mut tx, schema, from, last.position).await? {
        tx.rollback().await?;
        return Ok(from);
    }
    tx.commit().await?;
    Ok(last.position)
}
