//! Backup and restore jobs as administrators define and start them. The work itself is done by the job
//! runner (`recall-jobs`) in whichever recall process claims the run; what is decided here is who may define
//! a job on which storage target, and that a run asked for is queued (`job_runs`) and recorded.

use recall_domain::access::{Permission, Resource};
use recall_domain::job::{Job, JobCommand, JobKind, RunProgress, Schedule};
use uuid::Uuid;

use super::{Admin, AdminError, Ctx, Done};

/// The channel a queued run is announced on (`LISTEN recall_jobs`).
pub const JOBS_CHANNEL: &str = "recall_jobs";

/// What an administrator asks of a job. Backups and restores both need the right to manage the tenant's
/// storage: they read and write its storage targets.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    Define {
        tenant_id: Uuid,
        name: String,
        kind: JobKind,
        schedule: Option<Schedule>,
    },
    /// A backup stays a backup and a restore a restore: the request names the target and path only.
    Edit {
        name: String,
        target_id: Uuid,
        path: String,
        schedule: Option<Schedule>,
    },
    Delete,
    /// Starts a run now (`run_id` chosen by the caller, so a retried request queues one run).
    RunNow {
        run_id: Uuid,
    },
}

impl Admin {
    pub(super) async fn job(&self, ctx: &Ctx<'_>, job_id: Uuid, request: JobRequest) -> Result<Done, AdminError> {
        let job = self.load(&self.jobs, job_id).await?;
        let tenant_id = match &request {
            JobRequest::Define { tenant_id, .. } => {
                self.active_tenant(*tenant_id).await?;
                *tenant_id
            }
            _ => job.tenant_id().filter(|_| job.exists()).ok_or(AdminError::NotFound("job"))?,
        };
        ctx.authorize(Permission::ManageStorage, &Resource::TenantConfig { tenant: tenant_id })?;
        let meta = ctx.meta(Some(tenant_id));
        let command = match request {
            JobRequest::Define { tenant_id, name, kind, schedule } => {
                self.job_target(tenant_id, &kind).await?;
                JobCommand::DefineJob { tenant_id, name, kind, schedule }
            }
            JobRequest::Edit { name, target_id, path, schedule } => {
                let kind = match job.kind() {
                    Some(JobKind::Restore { .. }) => JobKind::Restore { source_target_id: target_id, path },
                    _ => JobKind::Backup { target_id, path },
                };
                self.job_target(tenant_id, &kind).await?;
                JobCommand::EditJob { name, kind, schedule }
            }
            JobRequest::Delete => JobCommand::DeleteJob,
            JobRequest::RunNow { run_id } => return self.run_now(job_id, &job, tenant_id, run_id, meta).await,
        };
        Ok(Done::of(self.run(&self.jobs, job_id, command, meta).await?))
    }

    /// Queues a run and records the request. Queued first: a run recorded but never queued would hold the
    /// job. The same request again (a retry) does nothing more; a run id of another job is refused.
    async fn run_now(
        &self,
        job_id: Uuid,
        job: &Job,
        tenant_id: Uuid,
        run_id: Uuid,
        meta: recall_domain::CommandMeta,
    ) -> Result<Done, AdminError> {
        let pool = self.log.pool();
        sqlx::query(
            "INSERT INTO job_runs (run_id, job_id, tenant_id, trigger) VALUES ($1, $2, $3, 'manual')
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(run_id)
        .bind(job_id)
        .bind(tenant_id)
        .execute(pool)
        .await?;
        let (owner, state): (Uuid, String) =
            sqlx::query_as("SELECT job_id, state FROM job_runs WHERE run_id = $1").bind(run_id).fetch_one(pool).await?;
        if owner != job_id {
            return Err(AdminError::Invalid("this run id belongs to another job; use a new one".to_owned()));
        }
        if state == "finished" || state == "failed" {
            // Asked again after it ran: it is done.
            return Ok(Done::default());
        }
        // A run the job still counts as under way but that no queue row holds any more (it cannot finish):
        // recorded as failed, so the job can run again.
        if let Some(stale) = job.current_run().filter(|current| *current != run_id) {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM job_runs WHERE run_id = $1 AND state IN ('due', 'running'))",
            )
            .bind(stale)
            .fetch_one(pool)
            .await?;
            if !live {
                let fail = JobCommand::FailRun {
                    run_id: stale,
                    progress: RunProgress::default(),
                    error: "the run was no longer queued anywhere; it was ended so the job can run again".to_owned(),
                };
                self.run(&self.jobs, job_id, fail, meta.clone()).await?;
            }
        }
        let result = self.run(&self.jobs, job_id, JobCommand::RequestRun { run_id }, meta).await;
        match &result {
            Ok(_) => {
                // Wakes the job runners at once (they look every few seconds anyway).
                if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(JOBS_CHANNEL).execute(pool).await {
                    tracing::debug!(error = %e, "cannot wake the job runners; they will find the run on their own");
                }
            }
            Err(_) => {
                sqlx::query("DELETE FROM job_runs WHERE run_id = $1 AND job_id = $2 AND state = 'due'")
                    .bind(run_id)
                    .bind(job_id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(Done::of(result?))
    }

    /// The job's storage target must be the tenant's, and usable: not deleted, and an object store (local
    /// directory or S3; FTP and SFTP targets are written by the recorder's uploads only).
    async fn job_target(&self, tenant_id: Uuid, kind: &JobKind) -> Result<(), AdminError> {
        let target = self.load(&self.storage, kind.target_id()).await?;
        if target.tenant_id() != Some(tenant_id) || !target.exists() {
            return Err(AdminError::NotFound("storage target"));
        }
        match target.kind() {
            Some(recall_domain::storage_target::StorageKind::Ftp { .. } | recall_domain::storage_target::StorageKind::Sftp { .. }) => {
                Err(AdminError::Invalid(
                    "backups and restores use a local-directory or S3 storage target; FTP and SFTP are not supported for them yet"
                        .to_owned(),
                ))
            }
            _ => Ok(()),
        }
    }
}
