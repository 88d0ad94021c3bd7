//! The key custody tables (migration 0003): tenants' public keys, users' key pairs sealed under their
//! passwords, and grants (a tenant's private key wrapped to one holder). Rows hold only public keys or
//! sealed values; deleting a grant or a user's key pair destroys what it sealed (crypto-shredding) while
//! the events that name them stay in the log.

use recall_crypto::{Grant, PublicKey, SealedUserKey};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("the key store is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored key could not be read: {0}")]
    Corrupt(String),
}

/// A user's key pair as stored.
#[derive(Debug, Clone)]
pub struct StoredUserKey {
    pub key_id: Uuid,
    pub sealed: SealedUserKey,
}

#[derive(Debug, Clone)]
pub struct KeyStore {
    pool: PgPool,
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn put_tenant_key(&self, key_id: Uuid, tenant_id: Uuid, key: &PublicKey) -> Result<(), KeyStoreError> {
        sqlx::query(
            "INSERT INTO tenant_keys (key_id, tenant_id, public_key, fingerprint) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(tenant_id)
        .bind(key.to_der())
        .bind(key.fingerprint())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A tenant key's owner and public key.
    pub async fn tenant_key(&self, key_id: Uuid) -> Result<Option<(Uuid, PublicKey)>, KeyStoreError> {
        let row: Option<(Uuid, Vec<u8>)> =
            sqlx::query_as("SELECT tenant_id, public_key FROM tenant_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(tenant, der)| {
            Ok((tenant, PublicKey::from_der(&der).map_err(|e| KeyStoreError::Corrupt(e.to_string()))?))
        })
        .transpose()
    }

    pub async fn delete_tenant_key(&self, key_id: Uuid) -> Result<(), KeyStoreError> {
        sqlx::query("DELETE FROM tenant_keys WHERE key_id = $1").bind(key_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn user_key(&self, user_id: Uuid) -> Result<Option<StoredUserKey>, KeyStoreError> {
        let row: Option<(Uuid, Json<SealedUserKey>)> =
            sqlx::query_as("SELECT key_id, sealed FROM user_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(key_id, Json(sealed))| StoredUserKey { key_id, sealed }))
    }

    /// Stores a user's key pair, or replaces its seal (a password change keeps the key id).
    pub async fn put_user_key(
        &self,
        user_id: Uuid,
        key: &StoredUserKey,
        fingerprint: &str,
    ) -> Result<(), KeyStoreError> {
        sqlx::query(
            "INSERT INTO user_keys (user_id, key_id, fingerprint, sealed) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET key_id = $2, fingerprint = $3, sealed = $4, updated_at = now()",
        )
        .bind(user_id)
        .bind(key.key_id)
        .bind(fingerprint)
        .bind(Json(&key.sealed))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Destroys a user's key pair and every grant to it; returns the keys they held.
    pub async fn delete_user_key(&self, user_id: Uuid) -> Result<Vec<Uuid>, KeyStoreError> {
        let mut tx = self.pool.begin().await?;
        let held: Vec<Uuid> = sqlx::query_scalar("DELETE FROM key_grants WHERE user_id = $1 RETURNING key_id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_keys WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(held)
    }

    pub async fn grant(&self, key_id: Uuid, user_id: Uuid) -> Result<Option<Grant>, KeyStoreError> {
        let row: Option<Json<Grant>> =
            sqlx::query_scalar("SELECT sealed FROM key_grants WHERE key_id = $1 AND user_id = $2")
                .bind(key_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|Json(grant)| grant))
    }

    pub async fn put_grant(&self, key_id: Uuid, user_id: Uuid, grant: &Grant) -> Result<(), KeyStoreError> {
        sqlx::query(
            "INSERT INTO key_grants (key_id, user_id, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (key_id, user_id) DO UPDATE SET sealed = $3, granted_at = now()",
        )
        .bind(key_id)
        .bind(user_id)
        .bind(Json(grant))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_grant(&self, key_id: Uuid, user_id: Uuid) -> Result<(), KeyStoreError> {
        sqlx::query("DELETE FROM key_grants WHERE key_id = $1 AND user_id = $2")
            .bind(key_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Destroys every grant of a key: nobody can open its private part any more.
    pub async fn delete_grants_of_key(&self, key_id: Uuid) -> Result<(), KeyStoreError> {
        sqlx::query("DELETE FROM key_grants WHERE key_id = $1").bind(key_id).execute(&self.pool).await?;
        Ok(())
    }
}
