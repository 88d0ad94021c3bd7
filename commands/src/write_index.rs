//! Lookups in the write side's index (see `recall_domain::index`): who holds a key, how many hold keys of
//! a namespace, which keys of a namespace start with a prefix. Only the append path changes the index.

use recall_domain::index::{IndexKey, Namespace};
use sqlx::PgPool;

/// An aggregate that holds a key of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

#[derive(Debug, Clone)]
pub struct WriteIndex {
    pool: PgPool,
}

impl WriteIndex {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The aggregate holding `key`, if any.
    pub async fn holder(&self, key: &IndexKey) -> Result<Option<Holder>, sqlx::Error> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT aggregate_type, aggregate_id FROM write_index WHERE namespace = $1 AND key = $2")
                .bind(key.namespace.to_string())
                .bind(&key.key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(aggregate_type, aggregate_id)| Holder { aggregate_type, aggregate_id }))
    }

    /// How many keys of `namespace` are held (e.g. how many users hold a role).
    pub async fn count(&self, namespace: &Namespace) -> Result<u64, sqlx::Error> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM write_index WHERE namespace = $1")
            .bind(namespace.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Keys of `namespace` that start with `prefix`, with their holders, in key order (at most `limit`).
    pub async fn with_prefix(
        &self,
        namespace: &Namespace,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Holder)>, sqlx::Error> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT key, aggregate_type, aggregate_id FROM write_index \
              WHERE namespace = $1 AND key >= $2 AND starts_with(key, $2) ORDER BY key LIMIT $3",
        )
        .bind(namespace.to_string())
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, aggregate_type, aggregate_id)| (key, Holder { aggregate_type, aggregate_id }))
            .collect())
    }
}
