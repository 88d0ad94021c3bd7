//! The calls read model (`rm_calls.calls`): one row per recorded call, with its tenant, direction, parties,
//! extension, the user it is assigned to (none: "not assigned to users"), and a text-search vector over
//! the parties and numbers. Call starts arrive by the thousand: consecutive starts go in one statement.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use recall_domain::call::CallEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::directory::text;
use crate::{payload, Projection, ProjectionError};

#[derive(Debug)]
pub struct Calls;

/// Columns of call starts waiting to be inserted together.
#[derive(Default)]
struct Starts {
    call_id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    sip_call_id: Vec<String>,
    direction: Vec<String>,
    participants: Vec<String>,
    extension: Vec<Option<String>>,
    user_id: Vec<Option<Uuid>>,
    site: Vec<String>,
    recorder: Vec<String>,
    started_at: Vec<DateTime<Utc>>,
    search: Vec<String>,
}

impl Starts {
    async fn flush(&mut self, conn: &mut PgConnection, s: &str) -> Result<(), ProjectionError> {
        if self.call_id.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.calls (call_id, tenant_id, sip_call_id, direction, participants, extension, user_id,
                 site, recorder_node, started_at, search)
             SELECT c.call_id, c.tenant_id, c.sip_call_id, c.direction, c.participants::jsonb, c.extension, c.user_id,
                 c.site, c.recorder, c.started_at, to_tsvector('simple', c.search)
               FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                           $8::text[], $9::text[], $10::timestamptz[], $11::text[])
                 AS c(call_id, tenant_id, sip_call_id, direction, participants, extension, user_id, site, recorder,
                      started_at, search)
             ON CONFLICT (call_id) DO NOTHING"
        ))
        .bind(std::mem::take(&mut self.call_id))
        .bind(std::mem::take(&mut self.tenant_id))
        .bind(std::mem::take(&mut self.sip_call_id))
        .bind(std::mem::take(&mut self.direction))
        .bind(std::mem::take(&mut self.participants))
        .bind(std::mem::take(&mut self.extension))
        .bind(std::mem::take(&mut self.user_id))
        .bind(std::mem::take(&mut self.site))
        .bind(std::mem::take(&mut self.recorder))
        .bind(std::mem::take(&mut self.started_at))
        .bind(std::mem::take(&mut self.search))
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Projection for Calls {
    fn name(&self) -> &'static str {
        "calls"
    }

    fn version(&self) -> i32 {
        1
    }

    fn create(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE {s}.calls (
                    call_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, sip_call_id text NOT NULL, direction text NOT NULL,
                    participants jsonb NOT NULL, extension text, user_id uuid, site text NOT NULL,
                    recorder_node text NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz,
                    duration_ms bigint, custom jsonb NOT NULL DEFAULT '{{}}', assigned_at timestamptz,
                    search tsvector NOT NULL)"
            ),
        ]
    }

    fn indexes(&self, s: &str) -> Vec<String> {
        vec![
            format!("CREATE INDEX ON {s}.calls (tenant_id, started_at DESC, call_id DESC)"),
            format!("CREATE INDEX ON {s}.calls (user_id, started_at DESC, call_id DESC)"),
            format!("CREATE INDEX ON {s}.calls (tenant_id, extension, started_at DESC)"),
            format!("CREATE INDEX ON {s}.calls (tenant_id, started_at DESC, call_id DESC) WHERE user_id IS NULL"),
            format!("CREATE INDEX ON {s}.calls USING gin (search)"),
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        s: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut starts = Starts::default();
            for event in events.iter().filter(|e| e.event.aggregate_type == "Call") {
                match payload::<CallEvent>(event)? {
                    CallEvent::CallStarted { call_id, start } => {
                        let mut search: Vec<&str> = vec![&start.sip_call_id];
                        search.extend(start.extension.as_deref());
                        for p in &start.participants {
                            search.extend(p.name.as_deref());
                            search.push(&p.aor);
                        }
                        starts.search.push(search.join(" "));
                        starts.call_id.push(call_id);
                        starts.tenant_id.push(start.tenant_id);
                        starts.direction.push(text(&start.direction));
                        starts.participants.push(serde_json::to_string(&start.participants).unwrap_or_default());
                        starts.extension.push(start.extension);
                        starts.user_id.push(start.user_id);
                        starts.site.push(start.site);
                        starts.recorder.push(start.recorder_node);
                        starts.started_at.push(start.started_at);
                        starts.sip_call_id.push(start.sip_call_id);
                    }
                    CallEvent::CallAssigned { user_id, extension, .. } => {
                        starts.flush(conn, s).await?;
                        sqlx::query(&format!(
                            "UPDATE {s}.calls SET user_id = $2, extension = $3, assigned_at = $4 WHERE call_id = $1"
                        ))
                        .bind(
                            Uuid::parse_str(&event.event.aggregate_id)
                                .map_err(|e| ProjectionError::unreadable(event, e))?,
                        )
                        .bind(user_id)
                        .bind(extension)
                        .bind(event.event.recorded_at)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            starts.flush(conn, s).await
        })
    }
}
