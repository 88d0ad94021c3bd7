//! The site's sequencer: gives every appended event its dense position in `event_log` and chains its hash.
//! One per site (a session advisory lock elects it; other processes stand by). It only numbers rows whose
//! writing transaction is older than `pg_snapshot_xmin(pg_current_snapshot())`: every such transaction has
//! finished, so no row can later appear before the ones numbered. No global write lock, no timeouts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::chain;
use super::event::{StoredEvent, EVENT_COLUMNS};
use super::signal::{AppendSignal, APPENDED_CHANNEL, SEQUENCED_CHANNEL};
use super::LogConfig;
use crate::metrics::LogMetrics;

/// Advisory lock key of the site's sequencer ("recallSQ").
const SEQUENCER_LOCK: i64 = 0x7265_6361_6c6c_5351;

pub(crate) struct Sequencer {
    pub(crate) pool: PgPool,
    pub(crate) config: LogConfig,
    pub(crate) signal: Arc<AppendSignal>,
    pub(crate) head: watch::Sender<u64>,
    pub(crate) metrics: LogMetrics,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) numbered: usize,
    pub(crate) head: u64,
    /// The batch was full: more rows are ready now.
    pub(crate) more_ready: bool,
    /// Rows exist that an unfinished older transaction still holds back.
    pub(crate) held_back: bool,
}

#[derive(sqlx::FromRow)]
struct Cursor {
    horizon: String,
    cursor_tx: String,
    cursor_type: String,
    cursor_id: String,
    cursor_seq: i64,
    head_position: i64,
    head_hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    tx_id: String,
    #[sqlx(flatten)]
    event: StoredEvent,
}

impl Sequencer {
    /// Runs until `shutdown`: stands by while another process sequences, leads when it can.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.lead(&shutdown).await {
                self.metrics.sequencer_errors.inc();
                tracing::warn!(error = %e, "sequencer lost its connection; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        self.set_leader(false);
    }

    fn set_leader(&self, leader: bool) {
        self.signal.leader_here.store(leader, Ordering::Relaxed);
        self.metrics.sequencer_leader.set(i64::from(leader));
    }

    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        self.set_leader(false);
        // A connection of its own: the session lock lives and dies with it.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let leader: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(SEQUENCER_LOCK).fetch_one(&mut conn).await?;
            if leader {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.standby_retry) => {}
            }
        }
        // A round is derived data: it numbers rows already durably committed by their writers, in an order
        // fixed by those rows alone, and moves the cursor in the same transaction. Lost in a server crash, it
        // is redone identically (same rows, positions and hashes), and any later synchronous commit (a
        // writer's, a projection's checkpoint) flushes it with the WAL before it. So rounds need not wait for
        // their own flush, which would otherwise double the fsyncs of a busy site.
        sqlx::query("SET synchronous_commit = off").execute(&mut conn).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(APPENDED_CHANNEL).await?;
        self.set_leader(true);
        tracing::info!("this process is the site's sequencer");

        loop {
            let started = Instant::now();
            let round = round(&mut conn, self.config.batch_size).await?;
            self.metrics.sequencer_rounds.inc();
            self.metrics.sequencer_round_seconds.observe(started.elapsed().as_secs_f64());
            if round.numbered > 0 {
                self.metrics.sequencer_events.inc_by(round.numbered as u64);
                self.metrics.head_position.set(i64::try_from(round.head).unwrap_or(i64::MAX));
                self.head.send_if_modified(|head| {
                    let moved = round.head > *head;
                    *head = (*head).max(round.head);
                    moved
                });
            }
            if round.more_ready {
                continue;
            }
            let wait = if round.held_back { self.config.held_back_retry } else { self.config.idle_poll };
            // Rounds are spaced: under a steady stream of small commands one round per interval numbers them
            // all, instead of one round (and one WAL flush) per command.
            let since = started.elapsed();
            if since < self.config.min_round_interval {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.config.min_round_interval - since) => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.signal.local.notified() => {}
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.set_leader(false);
        let _: bool =
            sqlx::query_scalar("SELECT pg_advisory_unlock($1)").bind(SEQUENCER_LOCK).fetch_one(&mut conn).await?;
        conn.close().await
    }
}

/// One round: number the next ready rows, chain them, move the cursor, tell the readers. One transaction.
pub(crate) async fn round(conn: &mut PgConnection, batch_size: usize) -> Result<Round, sqlx::Error> {
    let mut tx = conn.begin().await?;
    // The horizon comes from this statement's snapshot, taken before FOR UPDATE gives the transaction an
    // id of its own: every transaction below it has finished.
    let cursor: Cursor = sqlx::query_as(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon, cursor_tx::text AS cursor_tx, \
                cursor_type, cursor_id, cursor_seq, head_position, head_hash \
           FROM log_sequencer FOR UPDATE",
    )
    .fetch_one(&mut *tx)
    .await?;
    let horizon = &cursor.horizon;
    let limit = i64::try_from(batch_size).unwrap_or(i64::MAX);
    let candidates: Vec<Candidate> = sqlx::query_as(&format!(
        "SELECT e.tx_id::text AS tx_id, {EVENT_COLUMNS} FROM events e \
          WHERE e.tx_id < $1::xid8 \
            AND (e.tx_id, e.aggregate_type, e.aggregate_id, e.sequence) > ($2::xid8, $3, $4, $5) \
          ORDER BY e.tx_id, e.aggregate_type, e.aggregate_id, e.sequence \
          LIMIT $6"
    ))
    .bind(horizon)
    .bind(&cursor.cursor_tx)
    .bind(&cursor.cursor_type)
    .bind(&cursor.cursor_id)
    .bind(cursor.cursor_seq)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;

    let mut head = u64::try_from(cursor.head_position).unwrap_or(0);
    let mut hash: [u8; 32] = cursor.head_hash.as_slice().try_into().unwrap_or(chain::GENESIS);
    let Some(last) = candidates.last() else {
        let held_back =
            held_back(&mut tx, &cursor.cursor_tx, &cursor.cursor_type, &cursor.cursor_id, cursor.cursor_seq).await?;
        tx.commit().await?;
        return Ok(Round { numbered: 0, head, more_ready: false, held_back });
    };
    let (last_tx, last_type, last_id, last_seq) =
        (last.tx_id.clone(), last.event.aggregate_type.clone(), last.event.aggregate_id.clone(), last.event.sequence);

    let mut positions = Vec::with_capacity(candidates.len());
    let mut ids: Vec<Uuid> = Vec::with_capacity(candidates.len());
    let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(candidates.len());
    for candidate in &candidates {
        head += 1;
        hash = chain::link(&hash, head, &candidate.event);
        positions.push(i64::try_from(head).unwrap_or(i64::MAX));
        ids.push(candidate.event.event_id);
        hashes.push(hash.to_vec());
    }
    sqlx::query(
        "WITH logged AS ( \
             INSERT INTO event_log (global_position, event_id, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bytea[]) RETURNING 1), \
         moved AS ( \
             UPDATE log_sequencer SET cursor_tx = $4::xid8, cursor_type = $5, cursor_id = $6, cursor_seq = $7, \
                    head_position = $8, head_hash = $9 RETURNING 1) \
         SELECT pg_notify($10, $11), (SELECT count(*) FROM logged), (SELECT count(*) FROM moved)",
    )
    .bind(&positions)
    .bind(&ids)
    .bind(&hashes)
    .bind(&last_tx)
    .bind(&last_type)
    .bind(&last_id)
    .bind(last_seq)
    .bind(i64::try_from(head).unwrap_or(i64::MAX))
    .bind(hash.as_slice())
    .bind(SEQUENCED_CHANNEL)
    .bind(head.to_string())
    .execute(&mut *tx)
    .await?;
    let more_ready = candidates.len() == batch_size;
    let held_back = !more_ready && held_back(&mut tx, &last_tx, &last_type, &last_id, last_seq).await?;
    tx.commit().await?;
    Ok(Round { numbered: candidates.len(), head, more_ready, held_back })
}

/// Whether rows beyond the cursor exist (written by transactions the horizon still holds back).
async fn held_back(
    tx: &mut PgConnection,
    cursor_tx: &str,
    cursor_type: &str,
    cursor_id: &str,
    cursor_seq: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        // Compare the cursor with the highest key of the sequencing index (a backward scan of one entry):
        // an EXISTS over the row comparison is planned as a sequential scan, since Postgres does not
        // estimate row comparisons and assumes a third of the table matches.
        "SELECT coalesce((SELECT (e.tx_id, e.aggregate_type, e.aggregate_id, e.sequence) > ($1::xid8, $2, $3, $4) \
           FROM events e ORDER BY e.tx_id DESC, e.aggregate_type DESC, e.aggregate_id DESC, e.sequence DESC \
           LIMIT 1), false)",
    )
    .bind(cursor_tx)
    .bind(cursor_type)
    .bind(cursor_id)
    .bind(cursor_seq)
    .fetch_one(tx)
    .await
}
