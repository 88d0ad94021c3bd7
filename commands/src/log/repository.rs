//! The append path behind cqrs-es's `PersistedEventStore`. Reads (aggregate events, snapshots, streams) go
//! to postgres-es's `PostgresEventRepository` unchanged. Writes are ours: each event gets its own envelope
//! (UUIDv7 event id, HLC time, origin site) and all of a command's events go in one statement, with a unique
//! violation read by constraint name: only the primary key means a concurrent writer won the sequence.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use recall_domain::index::{IndexChange, IndexKey};
use recall_domain::{CommandMeta, Envelope};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::HybridClock;

/// The key under which the command service passes a command's [`CommandMeta`] through cqrs-es's metadata.
pub(crate) const META_KEY: &str = "recall.meta";
/// The key under which the command service passes the command's changes to the write side's index.
pub(crate) const INDEX_KEY: &str = "recall.index";

/// A key of the write side's index that another aggregate holds: the whole command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {} {:?} is already taken", .0.namespace.describe(), .0.key)]
pub struct Taken(pub IndexKey);

/// What one append wrote, for the command that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    pub event_id: Uuid,
    pub sequence: u64,
    pub event_type: String,
}

tokio::task_local! {
    /// Filled by [`LogRepository::persist`] for the command service that scoped it.
    pub(crate) static RECEIPT: RefCell<Vec<AppendedEvent>>;
}

pub struct LogRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
    clock: Arc<HybridClock>,
    site: String,
}

impl std::fmt::Debug for LogRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRepository").field("site", &self.site).finish()
    }
}

const INSERT_EVENTS: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                    event_id, hlc, tenant_id, actor, impersonator, session_id, device_id, source_addr,
                    correlation_id, causation_id, origin_site, recorded_at)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload::json, e.metadata::json,
       e.event_id, e.hlc, $8, $9, $10, $11, $12, $13::inet, $14, $15, $16, $17
  FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $18::uuid[], $19::text[])
       AS e(sequence, event_type, event_version, payload, metadata, event_id, hlc)";

const INSERT_SNAPSHOT: &str = "
INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
VALUES ($1, $2, $3, $4, $5::json)";

const UPDATE_SNAPSHOT: &str = "
UPDATE snapshots SET last_sequence = $3, payload = $5::json, current_snapshot = $4
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $6";

impl LogRepository {
    pub fn new(pool: PgPool, clock: Arc<HybridClock>, site: impl Into<String>) -> Self {
        Self { reads: PostgresEventRepository::new(pool.clone()), pool, clock, site: site.into() }
    }

    async fn append(
        &self,
        aggregate_type: &str,
        events: &[SerializedEvent],
        snapshot: Option<(String, Value, usize)>,
    ) -> Result<Vec<AppendedEvent>, PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let meta = command_meta(&first.metadata)?;
        let index = index_changes(&first.metadata)?;
        // Postgres keeps microseconds: so does the envelope, or the metadata column would disagree.
        let now = Utc::now();
        let recorded_at = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        let n = events.len();
        let (mut sequences, mut types, mut versions) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut payloads, mut metadatas, mut ids, mut hlcs) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut appended = Vec::with_capacity(n);
        for event in events {
            let envelope = Envelope {
                event_id: Uuid::now_v7(),
                meta: meta.clone(),
                origin_site: self.site.clone(),
                origin_pos: None,
                hlc: self.clock.now(),
                recorded_at,
            };
            let sequence = i64::try_from(event.sequence).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            sequences.push(sequence);
            types.push(event.event_type.clone());
            versions.push(event.event_version.clone());
            payloads.push(serde_json::to_string(&event.payload).map_err(unknown)?);
            metadatas.push(serde_json::to_string(&envelope_metadata(&envelope)).map_err(unknown)?);
            ids.push(envelope.event_id);
            hlcs.push(envelope.hlc.to_string());
            appended.push(AppendedEvent {
                event_id: envelope.event_id,
                sequence: event.sequence as u64,
                event_type: event.event_type.clone(),
            });
        }

        let insert = sqlx::query(INSERT_EVENTS)
            .bind(aggregate_type)
            .bind(&first.aggregate_id)
            .bind(&sequences)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadatas)
            .bind(meta.tenant_id)
            .bind(meta.actor.to_string())
            .bind(meta.impersonator.as_ref().map(ToString::to_string))
            .bind(meta.session_id)
            .bind(meta.device_id)
            .bind(meta.source_addr.map(|a| a.to_string()))
            .bind(meta.correlation_id)
            .bind(meta.causation_id)
            .bind(&self.site)
            .bind(recorded_at)
            .bind(&ids)
            .bind(&hlcs);
        if snapshot.is_none() && index.is_empty() {
            // One statement is its own transaction: no BEGIN/COMMIT round trips for the common case.
            insert.execute(&self.pool).await.map_err(database)?;
            return Ok(appended);
        }
        let mut tx = self.pool.begin().await.map_err(database)?;
        insert.execute(&mut *tx).await.map_err(database)?;
        change_index(&mut tx, aggregate_type, &first.aggregate_id, &index).await?;
        let Some((aggregate_id, payload, current_snapshot)) = snapshot else {
            tx.commit().await.map_err(database)?;
            return Ok(appended);
        };
        let last_sequence = sequences.last().copied().unwrap_or_default();
        let payload = serde_json::to_string(&payload).map_err(unknown)?;
        let current = i64::try_from(current_snapshot).map_err(unknown)?;
        let query = sqlx::query(if current_snapshot == 1 { INSERT_SNAPSHOT } else { UPDATE_SNAPSHOT })
            .bind(aggregate_type)
            .bind(&aggregate_id)
            .bind(last_sequence)
            .bind(current)
            .bind(payload);
        let query = if current_snapshot == 1 { query } else { query.bind(current - 1) };
        let done = query.execute(&mut *tx).await.map_err(database)?;
        // Checked before commit (postgres-es checks after): a lost snapshot race writes nothing.
        if done.rows_affected() != 1 {
            return Err(PersistenceError::OptimisticLockError);
        }
        tx.commit().await.map_err(database)?;
        Ok(appended)
    }
}

/// The envelope as postgres-es's metadata: a flat map of strings (cqrs-es reads it as
/// `HashMap<String, String>`), absent values left out.
pub fn envelope_metadata(envelope: &Envelope) -> BTreeMap<&'static str, String> {
    let m = &envelope.meta;
    let optional = [
        ("tenant_id", m.tenant_id.map(|v| v.to_string())),
        ("impersonator", m.impersonator.as_ref().map(ToString::to_string)),
        ("session_id", m.session_id.map(|v| v.to_string())),
        ("device_id", m.device_id.map(|v| v.to_string())),
        ("source_addr", m.source_addr.map(|v| v.to_string())),
        ("correlation_id", m.correlation_id.map(|v| v.to_string())),
        ("causation_id", m.causation_id.map(|v| v.to_string())),
        ("origin_pos", envelope.origin_pos.map(|v| v.to_string())),
    ];
    let mut map = BTreeMap::from([
        ("event_id", envelope.event_id.to_string()),
        ("actor", m.actor.to_string()),
        ("origin_site", envelope.origin_site.clone()),
        ("hlc", envelope.hlc.to_string()),
        ("recorded_at", envelope.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    ]);
    map.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    map
}

/// Claims and releases keys of the write side's index for one aggregate, inside the append's transaction.
/// A claim on a key another aggregate holds fails the whole append with [`Taken`]; holding it already is
/// fine. Two transactions claiming one key: the second waits for the first and then sees its claim.
async fn change_index(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    aggregate_type: &str,
    aggregate_id: &str,
    changes: &[IndexChange],
) -> Result<(), PersistenceError> {
    for change in changes {
        match change {
            IndexChange::Claim(key) => {
                let held: Option<i32> = sqlx::query_scalar(
                    "INSERT INTO write_index (namespace, key, aggregate_type, aggregate_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (namespace, key) DO UPDATE SET claimed_at = write_index.claimed_at \
                      WHERE write_index.aggregate_type = EXCLUDED.aggregate_type \
                        AND write_index.aggregate_id = EXCLUDED.aggregate_id \
                     RETURNING 1",
                )
                .bind(key.namespace.to_string())
                .bind(&key.key)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(database)?;
                if held.is_none() {
                    return Err(PersistenceError::UnknownError(Box::new(Taken(key.clone()))));
                }
            }
            IndexChange::Release(key) => {
                sqlx::query(
                    "DELETE FROM write_index \
                      WHERE namespace = $1 AND key = $2 AND aggregate_type = $3 AND aggregate_id = $4",
                )
                .bind(key.namespace.to_string())
                .bind(&key.key)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .execute(&mut **tx)
                .await
                .map_err(database)?;
            }
        }
    }
    Ok(())
}

fn index_changes(metadata: &Value) -> Result<Vec<IndexChange>, PersistenceError> {
    match metadata.get(INDEX_KEY).and_then(Value::as_str) {
        Some(text) => serde_json::from_str(text).map_err(unknown),
        None => Ok(Vec::new()),
    }
}

fn command_meta(metadata: &Value) -> Result<CommandMeta, PersistenceError> {
    let text = metadata
        .get(META_KEY)
        .and_then(Value::as_str)
        .ok_or_else(|| PersistenceError::UnknownError("an event reached the log without its envelope".into()))?;
    serde_json::from_str(text).map_err(unknown)
}

fn unknown(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

/// Translates database errors into what they mean for an append.
fn database(e: sqlx::Error) -> PersistenceError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => match db.constraint() {
            Some("events_pkey") | Some("snapshots_pkey") => PersistenceError::OptimisticLockError,
            _ => PersistenceError::UnknownError(Box::new(e)),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => PersistenceError::ConnectionError(Box::new(e)),
        _ => PersistenceError::UnknownError(Box::new(e)),
    }
}

impl PersistedEventRepository for LogRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_last_events::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let appended = self.append(A::TYPE, events, snapshot_update).await?;
        // Outside a command service's scope (nobody asked for a receipt) this is a no-op.
        let _ = RECEIPT.try_with(|receipt| receipt.borrow_mut().extend(appended));
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
