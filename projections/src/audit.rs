//! The audit trail (`rm_audit.audit`): one row per event of the log, with its time, actor, impersonator,
//! tenant, session, source address, action, target, outcome and full payload. A refused command or failed
//! sign-in shows as the action it attempted, on its target, with the outcome `refused` or `failed`. What the
//! recorder appends about calls is call data, not an action by anyone, and stays out.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, ProjectionError};

#[derive(Debug)]
pub struct Audit;

/// Whether an event belongs in the audit trail: everything but the recorder's call data.
pub fn audited(event: &LoggedEvent) -> bool {
    !(event.event.aggregate_type == "Call" && event.event.actor.starts_with("system:"))
}

/// Action, target type, target id and outcome of an event as the audit trail shows them (also for live
/// subscriptions).
pub fn describe(event: &LoggedEvent, payload: &Value) -> (String, String, String, &'static str) {
    let e = &event.event;
    let own = || (e.event_type.clone(), e.aggregate_type.clone(), e.aggregate_id.clone(), "ok");
    match e.event_type.as_str() {
        "CommandRefused" => {
            let refused = &payload["CommandRefused"];
            let action = refused["command"].as_str().unwrap_or_default().to_owned();
            let target = refused["target"].as_str().unwrap_or_default();
            let (kind, id) = target.split_once('/').unwrap_or((target, ""));
            (action, kind.to_owned(), id.to_owned(), "refused")
        }
        "SignInFailed" => {
            let failed = &payload["SignInFailed"];
            let id = failed["user_id"].as_str().map(str::to_owned).unwrap_or_default();
            ("SignIn".to_owned(), "User".to_owned(), id, "failed")
        }
        _ => own(),
    }
}

impl Projection for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn version(&self) -> i32 {
        2
    }

    fn create(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE {s}.audit (
                    position bigint PRIMARY KEY, event_id uuid NOT NULL, recorded_at timestamptz NOT NULL,
                    tenant_id uuid, actor text NOT NULL, impersonator text, session_id uuid, source_addr inet,
                    origin_site text NOT NULL, action text NOT NULL, target_type text NOT NULL, target_id text NOT NULL,
                    outcome text NOT NULL, correlation_id uuid, payload jsonb NOT NULL)"
        )]
    }

    fn indexes(&self, s: &str) -> Vec<String> {
        vec![
            format!("CREATE INDEX ON {s}.audit (tenant_id, position DESC)"),
            format!("CREATE INDEX ON {s}.audit (actor, position DESC)"),
            format!("CREATE INDEX ON {s}.audit (target_type, target_id, position DESC)"),
            format!("CREATE INDEX ON {s}.audit (recorded_at)"),
            format!("CREATE INDEX ON {s}.audit (action, position DESC)"),
            // A tenant administrator's searches by action and by actor, within the tenant.
            format!("CREATE INDEX ON {s}.audit (tenant_id, action, position DESC)"),
            format!("CREATE INDEX ON {s}.audit (tenant_id, actor, position DESC)"),
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        s: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let n = events.len();
            let mut position = Vec::with_capacity(n);
            let mut event_id = Vec::with_capacity(n);
            let mut recorded_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
            let mut tenant_id: Vec<Option<Uuid>> = Vec::with_capacity(n);
            let mut actor = Vec::with_capacity(n);
            let mut impersonator = Vec::with_capacity(n);
            let mut session_id = Vec::with_capacity(n);
            let mut source_addr = Vec::with_capacity(n);
            let mut origin_site = Vec::with_capacity(n);
            let mut action = Vec::with_capacity(n);
            let mut target_type = Vec::with_capacity(n);
            let mut target_id = Vec::with_capacity(n);
            let mut outcome = Vec::with_capacity(n);
            let mut correlation_id = Vec::with_capacity(n);
            let mut payloads = Vec::with_capacity(n);
            for event in events.iter().filter(|e| audited(e)) {
                let e = &event.event;
                let body: Value =
                    serde_json::from_str(&e.payload).map_err(|err| ProjectionError::unreadable(event, err))?;
                let (a, tt, ti, o) = describe(event, &body);
                position.push(i64::try_from(event.position).unwrap_or(i64::MAX));
                event_id.push(e.event_id);
                recorded_at.push(e.recorded_at);
                tenant_id.push(e.tenant_id);
                actor.push(e.actor.clone());
                impersonator.push(e.impersonator.clone());
                session_id.push(e.session_id);
                source_addr.push(e.source_addr.clone());
                origin_site.push(e.origin_site.clone());
                action.push(a);
                target_type.push(tt);
                target_id.push(ti);
                outcome.push(o.to_owned());
                correlation_id.push(e.correlation_id);
                payloads.push(e.payload.clone());
            }
            if position.is_empty() {
                return Ok(());
            }
            sqlx::query(&format!(
                "INSERT INTO {s}.audit (position, event_id, recorded_at, tenant_id, actor, impersonator, session_id,
                     source_addr, origin_site, action, target_type, target_id, outcome, correlation_id, payload)
                 SELECT a.position, a.event_id, a.recorded_at, a.tenant_id, a.actor, a.impersonator, a.session_id,
                     a.source_addr::inet, a.origin_site, a.action, a.target_type, a.target_id, a.outcome,
                     a.correlation_id, a.payload::jsonb
                   FROM UNNEST($1::bigint[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[], $6::text[],
                               $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                               $14::uuid[], $15::text[])
                     AS a(position, event_id, recorded_at, tenant_id, actor, impersonator, session_id, source_addr,
                          origin_site, action, target_type, target_id, outcome, correlation_id, payload)
                 ON CONFLICT (position) DO NOTHING"
            ))
            .bind(position)
            .bind(event_id)
            .bind(recorded_at)
            .bind(tenant_id)
            .bind(actor)
            .bind(impersonator)
            .bind(session_id)
            .bind(source_addr)
            .bind(origin_site)
            .bind(action)
            .bind(target_type)
            .bind(target_id)
            .bind(outcome)
            .bind(correlation_id)
            .bind(payloads)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}
