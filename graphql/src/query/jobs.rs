//! Backup and restore jobs and their runs, for those who manage a tenant's storage: what each job does, its
//! schedule, and each run's state, progress, notes and error (from the `rm_jobs` read model).

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use recall_domain::access::Permission;
use recall_domain::job::{RunProgress, Schedule};
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

use crate::auth::{viewer, viewer_even_if_password_must_change};
use crate::error::ApiError;
use crate::scope;
use crate::ApiState;

const JOB_COLUMNS: &str =
    "j.job_id, j.tenant_id, j.name, j.kind, j.target_id, j.path, j.schedule, j.deleted_at, j.created_at";
const RUN_COLUMNS: &str = "r.run_id, r.job_id, r.state, r.trigger, r.requested_by, r.requested_at, r.started_at, \
     r.ended_at, r.worker, r.takeovers, r.progress, r.notes, r.notes_total, r.error";

fn pool<'a>(ctx: &'a Context<'_>) -> &'a PgPool {
    ctx.data_unchecked::<ApiState>().log.pool()
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    job_id: Uuid,
    tenant_id: Uuid,
    name: String,
    kind: String,
    target_id: Uuid,
    path: String,
    schedule: Option<serde_json::Value>,
    deleted_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// When a job runs by itself: from `firstAt`, every `everyHours` hours.
#[derive(Debug, SimpleObject)]
pub struct JobSchedule {
    pub first_at: DateTime<Utc>,
    pub every_hours: u32,
}

/// A backup (the tenant's recordings, still encrypted, with their events, copied to a storage target) or a
/// restore (such an archive read back in).
#[Object]
impl Job {
    async fn id(&self) -> Uuid {
        self.job_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// `backup` or `restore`.
    async fn kind(&self) -> &str {
        &self.kind
    }
    /// The storage target the archive is on (a backup writes it, a restore reads it).
    async fn storage_target_id(&self) -> Uuid {
        self.target_id
    }
    /// The archive's path on that target.
    async fn path(&self) -> &str {
        &self.path
    }
    async fn schedule(&self) -> Option<JobSchedule> {
        let schedule: Schedule = serde_json::from_value(self.schedule.clone()?).ok()?;
        Some(JobSchedule { first_at: schedule.first_at, every_hours: schedule.every_hours })
    }
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// The job's latest runs, newest first.
    async fn runs(&self, ctx: &Context<'_>, #[graphql(default = 20)] first: i32) -> async_graphql::Result<Vec<JobRun>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM rm_jobs.runs r WHERE r.job_id = $1
              ORDER BY coalesce(r.requested_at, r.started_at, r.updated_at) DESC, r.run_id DESC LIMIT $2"
        ))
        .bind(self.job_id)
        .bind(i64::from(first.clamp(1, 100)))
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(rows)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRun {
    run_id: Uuid,
    job_id: Uuid,
    state: String,
    trigger: Option<String>,
    requested_by: Option<String>,
    requested_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    worker: Option<String>,
    takeovers: i32,
    progress: serde_json::Value,
    notes: serde_json::Value,
    notes_total: i64,
    error: Option<String>,
}

/// How far a run has come (calls looked at, and what became of them).
#[derive(Debug, SimpleObject)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
    /// Recordings copied (backup) or restored and put back (restore).
    pub copied: u64,
    /// Already in place: nothing to do.
    pub skipped: u64,
    /// Not done; the notes say why.
    pub failed: u64,
    pub bytes: u64,
}

/// One run of a job.
#[Object]
impl JobRun {
    async fn id(&self) -> Uuid {
        self.run_id
    }
    async fn job_id(&self) -> Uuid {
        self.job_id
    }
    /// `requested`, `running`, `finished` or `failed`.
    async fn state(&self) -> &str {
        &self.state
    }
    /// `manual` or `schedule`.
    async fn trigger(&self) -> Option<&str> {
        self.trigger.as_deref()
    }
    /// Who asked for it (`user:<id>`, `token:<id>`), for a manual run.
    async fn requested_by(&self) -> Option<&str> {
        self.requested_by.as_deref()
    }
    async fn requested_at(&self) -> Option<DateTime<Utc>> {
        self.requested_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }
    /// The worker running it (the last one, when another took it over).
    async fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }
    /// How often another worker took the run over (its worker stopped).
    async fn takeovers(&self) -> i32 {
        self.takeovers
    }
    async fn progress(&self) -> JobProgress {
        let p: RunProgress = serde_json::from_value(self.progress.clone()).unwrap_or_default();
        JobProgress {
            done: p.done,
            total: p.total,
            copied: p.copied,
            skipped: p.skipped,
            failed: p.failed,
            bytes: p.bytes,
        }
    }
    /// What an administrator should know (calls not done, and why): the first 50.
    async fn notes(&self) -> Vec<String> {
        serde_json::from_value(self.notes.clone()).unwrap_or_default()
    }
    /// How many notes there were in all.
    async fn notes_total(&self) -> i64 {
        self.notes_total
    }
    /// Why the run failed, when it did.
    async fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[derive(Debug, Default)]
pub struct JobsQuery;

impl JobsQuery {
    pub(crate) async fn job_by_id(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Job>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM rm_jobs.jobs j WHERE j.job_id = "));
        qb.push_bind(id);
        scope::tenant_config(&mut qb, v, "j.tenant_id", Permission::ManageStorage, false)?;
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }
}

#[Object]
impl JobsQuery {
    /// Backup and restore jobs of the tenants whose storage the viewer manages (deleted ones on request).
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        include_deleted: Option<bool>,
    ) -> async_graphql::Result<Vec<Job>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM rm_jobs.jobs j WHERE true"));
        scope::tenant_config(&mut qb, v, "j.tenant_id", Permission::ManageStorage, false)?;
        if let Some(tenant) = tenant_id {
            qb.push(" AND j.tenant_id = ").push_bind(tenant);
        }
        if !include_deleted.unwrap_or(false) {
            qb.push(" AND j.deleted_at IS NULL");
        }
        qb.push(" ORDER BY j.created_at, j.job_id LIMIT 500");
        Ok(qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?)
    }

    async fn job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Job>> {
        viewer(ctx)?;
        self.job_by_id(ctx, id).await
    }
}
