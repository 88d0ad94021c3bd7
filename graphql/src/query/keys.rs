//! Tenants' file-encryption keys as the directory shows them: names, fingerprints, holders, which key is
//! active. Never key material: the public key is exported through a mutation, the private key never shown.

use async_graphql::{Context, Object};
use chrono::{DateTime, Utc};
use recall_domain::access::Permission;
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

use crate::auth::{viewer, viewer_even_if_password_must_change};
use crate::error::ApiError;
use crate::scope;
use crate::ApiState;

const DIRECTORY: &str = "rm_directory";
const KEY_COLUMNS: &str = "k.key_id, k.tenant_id, k.name, k.fingerprint, k.origin, k.with_private, k.holders, \
     k.last_exported_at, k.destroyed_at, k.created_at, (t.encryption_key_id = k.key_id) AS active";

fn pool<'a>(ctx: &'a Context<'_>) -> &'a PgPool {
    ctx.data_unchecked::<ApiState>().log.pool()
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EncryptionKey {
    key_id: Uuid,
    tenant_id: Uuid,
    name: String,
    fingerprint: String,
    origin: String,
    with_private: bool,
    holders: Vec<Uuid>,
    last_exported_at: Option<DateTime<Utc>>,
    destroyed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    active: Option<bool>,
}

/// A tenant's RSA-2048 key pair for recordings. Its private part exists only as grants to its holders.
#[Object]
impl EncryptionKey {
    async fn id(&self) -> Uuid {
        self.key_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// Hex SHA-256 of the public key (SubjectPublicKeyInfo DER).
    async fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// `generated` or `imported`.
    async fn origin(&self) -> &str {
        &self.origin
    }
    /// Whether this site has the private part (an imported public key records files it cannot play).
    async fn with_private(&self) -> bool {
        self.with_private
    }
    /// Whether new recordings of the tenant are encrypted with this key.
    async fn active(&self) -> bool {
        self.active.unwrap_or(false)
    }
    /// The users who hold the key (may play what it encrypted and grant it on).
    async fn holders(&self) -> &[Uuid] {
        &self.holders
    }
    async fn last_exported_at(&self) -> Option<DateTime<Utc>> {
        self.last_exported_at
    }
    /// When it was destroyed (crypto-shredded): what it encrypted can never be played again.
    async fn destroyed_at(&self) -> Option<DateTime<Utc>> {
        self.destroyed_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

#[derive(Debug, Default)]
pub struct KeysQuery;

impl KeysQuery {
    pub(crate) async fn encryption_key_by_id(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<EncryptionKey>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT {KEY_COLUMNS} FROM {DIRECTORY}.encryption_keys k
               JOIN {DIRECTORY}.tenants t ON t.tenant_id = k.tenant_id WHERE k.key_id = "
        ));
        qb.push_bind(id);
        scope::tenant_config(&mut qb, v, "k.tenant_id", Permission::ManageEncryptionKeys, false)?;
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }
}

#[Object]
impl KeysQuery {
    /// The encryption keys of the tenants whose keys the viewer manages (destroyed ones on request).
    async fn encryption_keys(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        include_destroyed: Option<bool>,
    ) -> async_graphql::Result<Vec<EncryptionKey>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT {KEY_COLUMNS} FROM {DIRECTORY}.encryption_keys k
               JOIN {DIRECTORY}.tenants t ON t.tenant_id = k.tenant_id WHERE true"
        ));
        scope::tenant_config(&mut qb, v, "k.tenant_id", Permission::ManageEncryptionKeys, false)?;
        if let Some(tenant) = tenant_id {
            qb.push(" AND k.tenant_id = ").push_bind(tenant);
        }
        if !include_destroyed.unwrap_or(false) {
            qb.push(" AND k.destroyed_at IS NULL");
        }
        qb.push(" ORDER BY k.created_at, k.key_id LIMIT 500");
        Ok(qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?)
    }
}
