//! Where a projection's tables live and how they come to be: schema `rm_<name>` with a `checkpoint` row
//! (position applied, version of the table shapes). Creation takes a transaction-level advisory lock so
//! that two recall processes starting at once do not both create it.

use sqlx::{Acquire, PgConnection};

use crate::{Projection, ProjectionError};

/// The schema a projection serves from.
pub fn live_schema(name: &str) -> String {
    format!("rm_{name}")
}

/// The schema a rebuild writes into before it is swapped in.
pub(crate) fn next_schema(name: &str) -> String {
    format!("rm_{name}_next")
}

/// Advisory-lock key of a projection (one runner per projection per site).
pub(crate) fn lock_key(name: &str) -> i64 {
    // FNV-1a: stable across builds, unlike the std hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    i64::from_ne_bytes(hash.to_ne_bytes()) ^ 0x7265_6361_6c6c // "recall"
}

/// The position the projection's tables in `schema` reflect, and the shape version they were made with.
pub async fn read_position(conn: &mut PgConnection, schema: &str) -> Result<Option<(u64, i32)>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let row: Option<(i64, i32)> = sqlx::query_as(&format!("SELECT position, version FROM {schema}.checkpoint"))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(p, v)| (u64::try_from(p).unwrap_or(0), v)))
}

/// Creates `schema` with the projection's empty tables and a checkpoint at position 0 (dropping whatever
/// `schema` held before); with its secondary indexes too if `indexed`.
pub(crate) async fn create(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    indexed: bool,
) -> Result<(), ProjectionError> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut *tx).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut *tx).await?;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.checkpoint (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             position  bigint  NOT NULL,
             version   integer NOT NULL,
             built_at  timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("INSERT INTO {schema}.checkpoint (position, version) VALUES (0, $1)"))
        .bind(projection.version())
        .execute(&mut *tx)
        .await?;
    let indexes = if indexed { projection.indexes(schema) } else { Vec::new() };
    for statement in projection.create(schema).into_iter().chain(indexes) {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Moves the checkpoint from `from` to `to`; false when it was not at `from` (someone else moved it).
pub(crate) async fn advance(conn: &mut PgConnection, schema: &str, from: u64, to: u64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!("UPDATE {schema}.checkpoint SET position = $2 WHERE position = $1"))
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
