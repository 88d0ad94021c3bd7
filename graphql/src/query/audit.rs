//! The audit trail: every administrative action, refusal, sign-in and node start, with who (and on whose
//! behalf), from where, on what and with which outcome; filtered by time, actor, tenant, action and target,
//! and with the related records of an entry (the same target's or actor's other events).

use async_graphql::connection::Connection;
use async_graphql::{ComplexObject, Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

use crate::auth::{viewer, Viewer};
use crate::error::ApiError;
use crate::page::{connection, Page};
use crate::scope;
use crate::ApiState;

pub(crate) const AUDIT: &str = "rm_audit";

fn pool<'a>(ctx: &'a Context<'_>) -> &'a PgPool {
    ctx.data_unchecked::<ApiState>().admin.log().pool()
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
#[graphql(complex)]
pub struct AuditEntry {
    /// The event's position in the site's log.
    position: i64,
    event_id: Uuid,
    #[graphql(name = "time")]
    recorded_at: DateTime<Utc>,
    pub(crate) tenant_id: Option<Uuid>,
    /// `user:<id>`, `token:<id>`, `system:<component>` or `db:<role>`.
    pub(crate) actor: String,
    /// The administrator who acted as `actor`, during an impersonation.
    impersonator: Option<String>,
    session_id: Option<Uuid>,
    source_address: Option<String>,
    origin_site: String,
    /// What was done (the event, or the command that was refused).
    action: String,
    target_type: String,
    target_id: String,
    /// `ok`, `refused` or `failed`.
    outcome: String,
    correlation_id: Option<Uuid>,
    #[graphql(skip)]
    payload: Value,
}

impl AuditEntry {
    /// The entry an event makes, as the audit projection writes it.
    pub(crate) fn of(logged: &recall_commands::LoggedEvent) -> Self {
        let e = &logged.event;
        let payload: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
        let (action, target_type, target_id, outcome) = recall_projections::audit::describe(logged, &payload);
        Self {
            position: i64::try_from(logged.position).unwrap_or(i64::MAX),
            event_id: e.event_id,
            recorded_at: e.recorded_at,
            tenant_id: e.tenant_id,
            actor: e.actor.clone(),
            impersonator: e.impersonator.clone(),
            session_id: e.session_id,
            source_address: e.source_addr.clone(),
            origin_site: e.origin_site.clone(),
            action,
            target_type,
            target_id,
            outcome: outcome.to_owned(),
            correlation_id: e.correlation_id,
            payload,
        }
    }
}

#[ComplexObject]
impl AuditEntry {
    /// The full event.
    async fn payload(&self) -> Json<Value> {
        Json(self.payload.clone())
    }

    /// Other entries of the same target or by the same actor, newest first.
    async fn related(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEntry>> {
        let v = viewer(ctx)?;
        let page = Page::new(first, after)?;
        let mut qb = select();
        scope::audit(&mut qb, v, "r")?;
        qb.push(" AND r.position <> ").push_bind(self.position);
        qb.push(" AND ((r.target_type = ").push_bind(self.target_type.clone());
        qb.push(" AND r.target_id = ").push_bind(self.target_id.clone());
        qb.push(") OR r.actor = ").push_bind(self.actor.clone()).push(")");
        Ok(finish(ctx, qb, page).await?)
    }
}

/// Which audit entries to list.
#[derive(Debug, Default, InputObject)]
pub struct AuditFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// `user:<id>`, `system:…`, …
    pub actor: Option<String>,
    /// Entries by this user, directly or while impersonating someone.
    pub actor_user_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// `ok`, `refused` or `failed`.
    pub outcome: Option<String>,
}

fn select() -> QueryBuilder<'static, sqlx::Postgres> {
    QueryBuilder::new(format!(
        "SELECT r.position, r.event_id, r.recorded_at, r.tenant_id, r.actor, r.impersonator, r.session_id,
                host(r.source_addr) AS source_address, r.origin_site, r.action, r.target_type, r.target_id, r.outcome,
                r.correlation_id, r.payload
           FROM {AUDIT}.audit r WHERE true"
    ))
}

async fn finish(
    ctx: &Context<'_>,
    mut qb: QueryBuilder<'_, sqlx::Postgres>,
    page: Page,
) -> Result<Connection<String, AuditEntry>, ApiError> {
    if let Some(position) = page.key(0).and_then(Value::as_i64) {
        qb.push(" AND r.position < ").push_bind(position);
    }
    qb.push(" ORDER BY r.position DESC LIMIT ").push_bind(page.limit());
    let rows: Vec<AuditEntry> = qb.build_query_as().fetch_all(pool(ctx)).await?;
    Ok(connection(&page, rows, |r| vec![Value::from(r.position)]))
}

fn filtered(v: &Viewer, filter: AuditFilter) -> Result<QueryBuilder<'static, sqlx::Postgres>, ApiError> {
    let mut qb = select();
    scope::audit(&mut qb, v, "r")?;
    if let Some(from) = filter.from {
        qb.push(" AND r.recorded_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND r.recorded_at < ").push_bind(to);
    }
    if let Some(actor) = filter.actor {
        qb.push(" AND r.actor = ").push_bind(actor);
    }
    if let Some(user) = filter.actor_user_id {
        let actor = format!("user:{user}");
        qb.push(" AND (r.actor = ").push_bind(actor.clone()).push(" OR r.impersonator = ").push_bind(actor).push(")");
    }
    if let Some(tenant) = filter.tenant_id {
        qb.push(" AND r.tenant_id = ").push_bind(tenant);
    }
    if let Some(action) = filter.action {
        qb.push(" AND r.action = ").push_bind(action);
    }
    if let Some(target_type) = filter.target_type {
        qb.push(" AND r.target_type = ").push_bind(target_type);
    }
    if let Some(target_id) = filter.target_id {
        qb.push(" AND r.target_id = ").push_bind(target_id);
    }
    if let Some(outcome) = filter.outcome {
        qb.push(" AND r.outcome = ").push_bind(outcome);
    }
    Ok(qb)
}

#[derive(Debug, Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit trail, newest first.
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEntry>> {
        let v = viewer(ctx)?;
        let page = Page::new(first, after)?;
        Ok(finish(ctx, filtered(v, filter.unwrap_or_default())?, page).await?)
    }

    async fn audit_entry(&self, ctx: &Context<'_>, position: i64) -> async_graphql::Result<Option<AuditEntry>> {
        let v = viewer(ctx)?;
        let mut qb = select();
        scope::audit(&mut qb, v, "r")?;
        qb.push(" AND r.position = ").push_bind(position);
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }
}
