//! Live subscriptions over WebSocket (`/graphql/ws`, graphql-ws and subscriptions-transport-ws): audit
//! entries and call lifecycle events as the log sequences them, scoped exactly like the queries. The
//! session is checked again every half minute: a terminated session or revoked device ends its
//! subscriptions.

use std::time::{Duration, Instant};

use async_graphql::{Context, Json, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use recall_commands::LoggedEvent;
use recall_domain::access::{Permission, Resource, Scope};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::{viewer, Viewer};
use crate::error::ApiError;
use crate::query::audit::AuditEntry;
use crate::query::directory::DIRECTORY;
use crate::ApiState;

/// How often a live subscription checks that its session still stands.
const RECHECK: Duration = Duration::from_secs(30);

/// The token a WebSocket connection was authenticated with, to check its session again later.
#[derive(Debug, Clone)]
pub struct ConnectionToken(pub Option<String>);

/// A call lifecycle event.
#[derive(Debug, Clone, SimpleObject)]
pub struct CallLifecycleEvent {
    /// The event's position in the site's log.
    pub position: i64,
    pub call_id: Uuid,
    pub tenant_id: Option<Uuid>,
    /// `CallStarted`, `CallAssigned`, … (more as the recorder reports them).
    pub event: String,
    pub time: DateTime<Utc>,
    /// The user the call belongs to after this event, if any.
    pub user_id: Option<Uuid>,
    pub payload: Json<Value>,
}

/// Whether the viewer may see this audit entry (the rules of `scope::audit`).
fn audit_visible(v: &Viewer, entry: &AuditEntry) -> bool {
    if !v.may(Permission::ViewAuditTrail) {
        return false;
    }
    match v.scope() {
        Scope::ServiceWide => true,
        Scope::Tenant => entry.tenant_id.is_some() && entry.tenant_id == v.authority.tenant_id,
        Scope::ManagedGroups | Scope::OwnCalls => entry.actor == format!("user:{}", v.authority.user_id),
    }
}

/// The call's user after the event (from the event, or from the read model for other call events).
async fn call_user(state: &ApiState, event: &LoggedEvent, payload: &Value) -> Option<Uuid> {
    let from_payload = payload
        .get("CallStarted")
        .and_then(|started| started["start"]["user_id"].as_str())
        .or_else(|| payload.get("CallAssigned").and_then(|assigned| assigned["user_id"].as_str()))
        .or_else(|| payload.get("ParticipantsIdentified").and_then(|named| named["user_id"].as_str()))
        .and_then(|id| Uuid::parse_str(id).ok());
    if from_payload.is_some() || payload.get("CallStarted").is_some() {
        return from_payload;
    }
    sqlx::query_scalar("SELECT user_id FROM rm_calls.calls WHERE call_id = $1::uuid")
        .bind(&event.event.aggregate_id)
        .fetch_optional(state.admin.log().pool())
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Whether the viewer may see a call (the rules of `scope::calls`), given its tenant and user.
async fn call_visible(state: &ApiState, v: &Viewer, tenant: Option<Uuid>, user: Option<Uuid>) -> bool {
    let Some(tenant) = tenant else { return v.scope() == Scope::ServiceWide };
    let owner = match user {
        Some(user) => {
            let groups: Vec<Uuid> =
                sqlx::query_scalar(&format!("SELECT groups FROM {DIRECTORY}.users WHERE user_id = $1"))
                    .bind(user)
                    .fetch_optional(state.admin.log().pool())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
            Some((user, groups.into_iter().collect()))
        }
        None => None,
    };
    v.authority.authorize(Permission::ViewCalls, &Resource::Call { tenant, owner }).is_ok()
}

/// The log from now on, for as long as the viewer's session stands.
fn live_log(ctx: &Context<'_>) -> Result<(ApiState, Viewer, impl Stream<Item = LoggedEvent>), ApiError> {
    let v = viewer(ctx)?.clone();
    let state = ctx.data_unchecked::<ApiState>().clone();
    let token = ctx.data_opt::<ConnectionToken>().and_then(|t| t.0.clone());
    let log = state.log.clone();
    let admin = state.admin.clone();
    let events = log.follow(log.head()).filter_map(|event| async move { event.ok() });
    let mut checked = Instant::now();
    let still_valid = events
        .then(move |event| {
            let admin = admin.clone();
            let token = token.clone();
            let due = checked.elapsed() >= RECHECK;
            if due {
                checked = Instant::now();
            }
            async move {
                let valid = match (due, token) {
                    (true, Some(token)) => admin.authenticate(&token, None).await.is_ok(),
                    _ => true,
                };
                (valid, event)
            }
        })
        .take_while(|(valid, _)| futures::future::ready(*valid))
        .map(|(_, event)| event);
    Ok((state, v, still_valid))
}

#[derive(Debug, Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Audit entries as they happen, scoped like `auditTrail`.
    async fn audit_events(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = AuditEntry>> {
        let (_, v, events) = live_log(ctx)?;
        v.require(Permission::ViewAuditTrail)?;
        Ok(events.filter_map(move |event| {
            let entry = recall_projections::audit::audited(&event).then(|| AuditEntry::of(&event));
            let visible = entry.filter(|entry| audit_visible(&v, entry));
            async move { visible }
        }))
    }

    /// Call lifecycle events as they happen, scoped like `calls`.
    async fn call_events(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = CallLifecycleEvent>> {
        let (state, v, events) = live_log(ctx)?;
        v.require(Permission::ViewCalls)?;
        Ok(events.filter_map(move |event| {
            let state = state.clone();
            let v = v.clone();
            async move {
                if event.event.aggregate_type != "Call" {
                    return None;
                }
                let payload: Value = serde_json::from_str(&event.event.payload).ok()?;
                let tenant = event.event.tenant_id.or_else(|| {
                    payload
                        .pointer("/CallStarted/start/tenant_id")
                        .and_then(Value::as_str)
                        .and_then(|t| Uuid::parse_str(t).ok())
                });
                let user = call_user(&state, &event, &payload).await;
                if !call_visible(&state, &v, tenant, user).await {
                    return None;
                }
                Some(CallLifecycleEvent {
                    position: i64::try_from(event.position).unwrap_or(i64::MAX),
                    call_id: Uuid::parse_str(&event.event.aggregate_id).ok()?,
                    tenant_id: tenant,
                    event: event.event.event_type.clone(),
                    time: event.event.recorded_at,
                    user_id: user,
                    payload: Json(payload),
                })
            }
        }))
    }
}
