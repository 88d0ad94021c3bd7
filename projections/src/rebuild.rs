//! Rebuilding a projection from position 0 into a fresh schema (`rm_<name>_next`) while the live one keeps
//! serving, then swapping it in: in one transaction that holds the live checkpoint (so the live runner
//! pauses between batches), the new tables catch up with the last events, the live schema is dropped and
//! the new one renamed into its place. Readers see the old tables until the commit, the new ones after.

use std::time::Instant;

use recall_commands::EventLog;
use sqlx::{Connection, PgPool};

use crate::runner::apply;
use crate::schema::{self, live_schema, lock_key, next_schema};
use crate::{Projection, ProjectionError};

/// Events applied per transaction while rebuilding.
const REBUILD_BATCH: u32 = 5_000;

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    pub projection: &'static str,
    /// Events applied so far.
    pub position: u64,
    /// The log head when the rebuild looked last.
    pub head: u64,
    /// Events applied per second so far.
    pub rate: f64,
    /// True once the new tables are swapped in.
    pub done: bool,
}

/// Rebuilds `projection` from the whole log and swaps it in; returns the position it reflects.
pub async fn rebuild(
    pool: &PgPool,
    log: &EventLog,
    projection: &dyn Projection,
    progress: impl Fn(RebuildProgress),
) -> Result<u64, ProjectionError> {
    let name = projection.name();
    let (live, next) = (live_schema(name), next_schema(name));
    let mut conn = pool.acquire().await?.detach();
    // One rebuild of a projection at a time (a second one waits for the first).
    sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_key(name) ^ 1).execute(&mut conn).await?;
    schema::create(&mut conn, projection, &next, false).await?;
    let started = Instant::now();
    let report = |position: u64, done: bool| {
        let head = log.head().max(position);
        let rate = position as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress(RebuildProgress { projection: name, position, head, rate, done });
    };
    let mut position = 0;
    let mut batch = log.read_batch(position, REBUILD_BATCH).await?;
    // The next batch is read (on another connection) while this one is applied.
    while let Some(last) = batch.last().map(|e| e.position) {
        let (applied, following) =
            tokio::join!(apply(&mut conn, projection, &next, position, &batch), log.read_batch(last, REBUILD_BATCH));
        position = applied?;
        batch = following?;
        report(position, false);
    }
    // Indexes built in one go over the loaded tables, and statistics (and the visibility map, for
    // index-only scans) in place before the first query meets the new tables.
    for statement in projection.indexes(&next) {
        sqlx::query(&statement).execute(&mut conn).await?;
    }
    let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
        .bind(&next)
        .fetch_all(&mut conn)
        .await?;
    for table in tables {
        sqlx::query(&format!("VACUUM (ANALYZE) {next}.{table}")).execute(&mut conn).await?;
        if bloated(&mut conn, &next, &table).await? {
            // Rows updated over and over while the log was applied (a user changed a hundred times)
            // leave most pages holding dead versions: rewrite the table compactly before it serves.
            sqlx::query(&format!("VACUUM (FULL, ANALYZE) {next}.{table}")).execute(&mut conn).await?;
        }
    }

    let mut tx = Connection::begin(&mut conn).await?;
    let live_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&live)
        .fetch_one(&mut *tx)
        .await?;
    if live_exists {
        sqlx::query(&format!("LOCK TABLE {live}.checkpoint IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
    }
    // What was appended while the rebuild ran, applied under the lock.
    loop {
        let batch = log.read_batch(position, REBUILD_BATCH).await?;
        let Some(last) = batch.last() else { break };
        projection.apply(&mut tx, &next, &batch).await?;
        schema::advance(&mut tx, &next, position, last.position).await?;
        position = last.position;
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {live} CASCADE")).execute(&mut *tx).await?;
    sqlx::query(&format!("ALTER SCHEMA {next} RENAME TO {live}")).execute(&mut *tx).await?;
    tx.commit().await?;
    report(position, true);
    let _ = conn.close().await;
    Ok(position)
}

/// Whether `schema.table` takes more than twice the pages its rows need (after `VACUUM ANALYZE`, which
/// leaves the page count and the average row width in the catalogue).
async fn bloated(conn: &mut sqlx::PgConnection, schema: &str, table: &str) -> Result<bool, sqlx::Error> {
    let (pages, rows, width): (i32, f32, Option<i64>) = sqlx::query_as(
        "SELECT c.relpages, c.reltuples,
                (SELECT sum(s.avg_width)::bigint FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(conn)
    .await?;
    // A row costs its data, a 24-byte header and a 4-byte line pointer; a page holds 8 KiB.
    let needed = f64::from(rows.max(0.0)) * (width.unwrap_or(0) as f64 + 28.0) / 8192.0;
    Ok(f64::from(pages) > 2.0 * needed + 8.0)
}
