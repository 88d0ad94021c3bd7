//! Backup and restore jobs: define, edit, delete, run now. A run is queued and done by a job runner of
//! some recall process; its state and progress are read from `job.runs`.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use recall_commands::admin::{AdminCommand, JobRequest};
use recall_domain::job::{JobKind, Schedule};
use uuid::Uuid;

use super::{new_id, run, Changed, MutationResult};

async fn job(ctx: &Context<'_>, job_id: Uuid, request: JobRequest) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::Job, job_id, AdminCommand::Job { job_id, request }).await
}

/// When a backup runs by itself: at `firstAt`, then every `everyHours` hours (24: nightly; 168: weekly;
/// 336: every other week).
#[derive(InputObject, Debug, Clone, Copy)]
pub struct JobScheduleInput {
    pub first_at: DateTime<Utc>,
    pub every_hours: u32,
}

impl From<JobScheduleInput> for Schedule {
    fn from(input: JobScheduleInput) -> Self {
        Self { first_at: input.first_at, every_hours: input.every_hours }
    }
}

#[derive(InputObject, Debug)]
pub struct DefineBackupJobInput {
    /// The new job's id (made here when left out).
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    pub name: String,
    /// The tenant's storage target (local directory or S3) the archive is written to.
    pub storage_target_id: Uuid,
    /// The archive's path on it, e.g. `backups/nightly`.
    pub path: String,
    /// Leave out for a job that runs only when asked.
    pub schedule: Option<JobScheduleInput>,
}

#[derive(InputObject, Debug)]
pub struct DefineRestoreJobInput {
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    pub name: String,
    /// The tenant's storage target the archive is on (add one pointing at a copy of another installation's
    /// archive to restore it here).
    pub storage_target_id: Uuid,
    pub path: String,
}

#[derive(InputObject, Debug)]
pub struct EditJobInput {
    pub id: Uuid,
    pub name: String,
    pub storage_target_id: Uuid,
    pub path: String,
    /// Backups only; leave out to run only when asked.
    pub schedule: Option<JobScheduleInput>,
}

#[derive(Debug, Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// Defines a backup of the tenant's recordings (files as stored: encrypted ones stay encrypted, with
    /// each call's events and the public part of its key) to one of its storage targets.
    async fn define_backup_job(
        &self,
        ctx: &Context<'_>,
        input: DefineBackupJobInput,
    ) -> async_graphql::Result<MutationResult> {
        let kind = JobKind::Backup { target_id: input.storage_target_id, path: input.path };
        let request = JobRequest::Define {
            tenant_id: input.tenant_id,
            name: input.name,
            kind,
            schedule: input.schedule.map(Schedule::from),
        };
        job(ctx, new_id(input.id), request).await
    }

    /// Defines a restore of an archive a backup wrote (on this installation or another) into the tenant.
    /// Import the tenant's encryption key first: encrypted recordings whose key the tenant does not have
    /// are left out (the run's notes name the key) until a later run finds it.
    async fn define_restore_job(
        &self,
        ctx: &Context<'_>,
        input: DefineRestoreJobInput,
    ) -> async_graphql::Result<MutationResult> {
        let kind = JobKind::Restore { source_target_id: input.storage_target_id, path: input.path };
        let request = JobRequest::Define { tenant_id: input.tenant_id, name: input.name, kind, schedule: None };
        job(ctx, new_id(input.id), request).await
    }

    /// Changes a job's name, archive and schedule (a backup stays a backup, a restore a restore).
    async fn edit_job(&self, ctx: &Context<'_>, input: EditJobInput) -> async_graphql::Result<MutationResult> {
        let request = JobRequest::Edit {
            name: input.name,
            target_id: input.storage_target_id,
            path: input.path,
            schedule: input.schedule.map(Schedule::from),
        };
        job(ctx, input.id, request).await
    }

    async fn delete_job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<MutationResult> {
        job(ctx, id, JobRequest::Delete).await
    }

    /// Queues a run of the job now (refused while one is waiting or under way); `runId` makes a retried
    /// request queue one run. Follow it in `job.runs`.
    async fn run_job(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        run_id: Option<Uuid>,
    ) -> async_graphql::Result<MutationResult> {
        job(ctx, id, JobRequest::RunNow { run_id: new_id(run_id) }).await
    }
}
