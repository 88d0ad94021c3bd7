//! The jobs read model (`rm_jobs`): backup and restore jobs (`jobs`: name, what they do, schedule) and their
//! runs (`runs`: who asked, when it started and ended, how far it came, the notes and the error). The queue
//! workers claim runs from (`job_runs`) is the write side's; this is what administrators read.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use recall_domain::job::{JobEvent, RunTrigger};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{payload, Projection, ProjectionError};

#[derive(Debug)]
pub struct Jobs;

impl Projection for Jobs {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn version(&self) -> i32 {
        1
    }

    fn create(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE {s}.jobs (
                    job_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, kind text NOT NULL,
                    target_id uuid NOT NULL, path text NOT NULL, schedule jsonb, deleted_at timestamptz,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!(
                "CREATE TABLE {s}.runs (
                    run_id uuid PRIMARY KEY, job_id uuid NOT NULL, tenant_id uuid NOT NULL, state text NOT NULL,
                    trigger text, slot bigint, requested_by text, requested_at timestamptz,
                    started_at timestamptz, ended_at timestamptz, worker text, takeovers integer NOT NULL DEFAULT 0,
                    progress jsonb NOT NULL DEFAULT '{{}}', notes jsonb NOT NULL DEFAULT '[]',
                    notes_total bigint NOT NULL DEFAULT 0, error text, updated_at timestamptz NOT NULL)"
            ),
        ]
    }

    fn indexes(&self, s: &str) -> Vec<String> {
        vec![
            format!("CREATE INDEX ON {s}.jobs (tenant_id, name)"),
            format!("CREATE INDEX ON {s}.runs (job_id, updated_at DESC)"),
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        s: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events.iter().filter(|e| e.event.aggregate_type == "Job") {
                let job_id =
                    Uuid::parse_str(&event.event.aggregate_id).map_err(|e| ProjectionError::unreadable(event, e))?;
                apply_one(conn, s, job_id, event, payload(event)?).await?;
            }
            Ok(())
        })
    }
}

async fn apply_one(
    conn: &mut PgConnection,
    s: &str,
    job_id: Uuid,
    logged: &LoggedEvent,
    event: JobEvent,
) -> Result<(), ProjectionError> {
    let at: DateTime<Utc> = logged.event.recorded_at;
    match event {
        JobEvent::JobDefined { tenant_id, name, kind, schedule } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.jobs (job_id, tenant_id, name, kind, target_id, path, schedule, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (job_id) DO NOTHING"
            ))
            .bind(job_id)
            .bind(tenant_id)
            .bind(name)
            .bind(kind.name())
            .bind(kind.target_id())
            .bind(kind.path())
            .bind(schedule.map(|s| json(&s)))
            .bind(at)
            .execute(conn)
            .await?;
        }
        JobEvent::JobEdited { name, kind, schedule } => {
            sqlx::query(&format!(
                "UPDATE {s}.jobs SET name = $2, target_id = $3, path = $4, schedule = $5, updated_at = $6
                  WHERE job_id = $1"
            ))
            .bind(job_id)
            .bind(name)
            .bind(kind.target_id())
            .bind(kind.path())
            .bind(schedule.map(|s| json(&s)))
            .bind(at)
            .execute(conn)
            .await?;
        }
        JobEvent::JobDeleted => {
            sqlx::query(&format!("UPDATE {s}.jobs SET deleted_at = $2, updated_at = $2 WHERE job_id = $1"))
                .bind(job_id)
                .bind(at)
                .execute(conn)
                .await?;
        }
        JobEvent::JobRunRequested { run_id } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.runs (run_id, job_id, tenant_id, state, trigger, requested_by, requested_at, updated_at)
                 SELECT $1, $2, j.tenant_id, 'requested', 'manual', $3, $4, $4 FROM {s}.jobs j WHERE j.job_id = $2
                 ON CONFLICT (run_id) DO NOTHING"
            ))
            .bind(run_id)
            .bind(job_id)
            .bind(&logged.event.actor)
            .bind(at)
            .execute(conn)
            .await?;
        }
        JobEvent::JobRunStarted { run_id, trigger, worker } => {
            let (trigger, slot) = match trigger {
                RunTrigger::Manual => ("manual", None),
                RunTrigger::Schedule { slot } => ("schedule", i64::try_from(slot).ok()),
            };
            sqlx::query(&format!(
                "INSERT INTO {s}.runs (run_id, job_id, tenant_id, state, trigger, slot, started_at, worker, updated_at)
                 SELECT $1, $2, j.tenant_id, 'running', $3, $4, $5, $6, $5 FROM {s}.jobs j WHERE j.job_id = $2
                 ON CONFLICT (run_id) DO UPDATE SET state = 'running', started_at = $5, worker = $6, updated_at = $5"
            ))
            .bind(run_id)
            .bind(job_id)
            .bind(trigger)
            .bind(slot)
            .bind(at)
            .bind(worker)
            .execute(conn)
            .await?;
        }
        JobEvent::JobRunResumed { run_id, worker } => {
            sqlx::query(&format!(
                "UPDATE {s}.runs SET worker = $2, takeovers = takeovers + 1, updated_at = $3 WHERE run_id = $1"
            ))
            .bind(run_id)
            .bind(worker)
            .bind(at)
            .execute(conn)
            .await?;
        }
        JobEvent::JobRunProgressed { run_id, progress } => {
            sqlx::query(&format!("UPDATE {s}.runs SET progress = $2, updated_at = $3 WHERE run_id = $1"))
                .bind(run_id)
                .bind(json(&progress))
                .bind(at)
                .execute(conn)
                .await?;
        }
        JobEvent::JobRunFinished { run_id, progress, notes, notes_total, at: ended } => {
            sqlx::query(&format!(
                "UPDATE {s}.runs SET state = 'finished', progress = $2, notes = $3, notes_total = $4, ended_at = $5,
                        updated_at = $5 WHERE run_id = $1"
            ))
            .bind(run_id)
            .bind(json(&progress))
            .bind(json(&notes))
            .bind(i64::try_from(notes_total).unwrap_or(i64::MAX))
            .bind(ended)
            .execute(conn)
            .await?;
        }
        JobEvent::JobRunFailed { run_id, progress, error } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.runs (run_id, job_id, tenant_id, state, progress, error, ended_at, updated_at)
                 SELECT $1, $2, j.tenant_id, 'failed', $3, $4, $5, $5 FROM {s}.jobs j WHERE j.job_id = $2
                 ON CONFLICT (run_id) DO UPDATE SET state = 'failed', progress = $3, error = $4, ended_at = $5,
                        updated_at = $5"
            ))
            .bind(run_id)
            .bind(job_id)
            .bind(json(&progress))
            .bind(error)
            .bind(at)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// The domain's plain types as the jsonb sqlx binds (serialising them cannot fail).
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
