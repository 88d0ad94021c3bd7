//! recall's long work (DESIGN.md §8): the job runner and the jobs it runs, backup and restore.
//!
//! A job (the `Job` aggregate) is defined by an administrator; a run of it is queued in `job_runs` (by
//! `Admin` for "run now", by [`JobRunner::schedule_due`] when a schedule's slot falls due). Every recall
//! process may run a [`JobRunner`]: it claims the oldest due run with `FOR UPDATE SKIP LOCKED`, holds it
//! under a lease it renews as it works, saves its cursor (where it is, its counts and notes) with every
//! renewal, and records the run in the log as it goes (started or taken over, progress, finished or failed).
//! A run whose worker died is claimed again once its lease has run out and goes on from the saved cursor;
//! every step of a backup or a restore is idempotent, so doing a step twice does no harm. A run that fails
//! for a reason that may pass (a store or the database down) is put back with a growing delay and given up
//! after [`RunnerOptions::max_attempts`].

pub mod archive;
mod backup;
mod copy;
mod reader;
mod restore;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use recall_commands::admin::{Admin, AdminError};
use recall_commands::{CommandError, CommandService};
use recall_domain::call::Call;
use recall_domain::job::{Job, JobCommand, JobError, JobKind, RunProgress, RunTrigger, Schedule, MAX_RUN_NOTES};
use recall_domain::user::User;
use recall_domain::CommandMeta;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use copy::CopyError;

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// This worker's name in the log and in `job_runs` (node name and process).
    pub worker: String,
    /// How long a claimed run stays this worker's without a renewal.
    pub lease: Duration,
    /// How often an idle runner looks for due runs and due schedules.
    pub poll: Duration,
    /// The installation's recordings directory (recordings stored without a storage target).
    pub recordings_dir: Option<PathBuf>,
    /// Where a restore keeps a ZIP archive it reads (fetched from its storage target) while it runs.
    pub scratch_dir: PathBuf,
    /// Attempts at a run before a failure that may pass counts as final.
    pub max_attempts: i32,
}

impl RunnerOptions {
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            recordings_dir: None,
            scratch_dir: std::env::temp_dir().join("recall-jobs"),
            max_attempts: 5,
        }
    }
}

/// How one run went.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Finished {
        run_id: Uuid,
        progress: RunProgress,
        notes: Vec<String>,
    },
    Failed {
        run_id: Uuid,
        error: String,
    },
    /// Put back to be tried again later (a store or the database failed).
    Retrying {
        run_id: Uuid,
        error: String,
        attempts: i32,
    },
    /// Another worker holds the run now (this one's lease ran out); this worker stopped.
    Lost {
        run_id: Uuid,
    },
    /// Not run: the job has another run under way.
    Skipped {
        run_id: Uuid,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the job queue cannot be read: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why a run stopped before its end.
#[derive(Debug)]
pub(crate) enum RunError {
    /// This worker no longer holds the run.
    LeaseLost,
    /// A store or the database failed: try again later.
    Transient(String),
    /// The run cannot succeed as it is (its storage target is gone, the archive is not one).
    Fatal(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LeaseLost => f.write_str("another worker holds the run"),
            Self::Transient(e) | Self::Fatal(e) => f.write_str(e),
        }
    }
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(format!("the database failed: {e}"))
    }
}

impl From<object_store::Error> for RunError {
    fn from(e: object_store::Error) -> Self {
        Self::Transient(format!("a store failed: {e}"))
    }
}

impl From<AdminError> for RunError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Unavailable(_) | AdminError::Conflict(_) | AdminError::Internal(_) => {
                Self::Transient(e.to_string())
            }
            other => Self::Fatal(other.to_string()),
        }
    }
}

impl<E: std::error::Error + 'static> From<CommandError<E>> for RunError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Refused(_) | CommandError::Taken(_) => Self::Fatal(e.to_string()),
            _ => Self::Transient(e.to_string()),
        }
    }
}

/// A claimed row of `job_runs`.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    run_id: Uuid,
    job_id: Uuid,
    tenant_id: Uuid,
    slot: Option<i64>,
    cursor: serde_json::Value,
    attempts: i32,
}

/// What a run saves with each lease renewal, so a takeover goes on where it stopped.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Cursor {
    /// The last call (backup) or archive entry (restore) done, in the order the run walks them.
    after: Option<String>,
    progress: RunProgress,
    notes: Vec<String>,
    notes_total: u64,
}

/// Runs jobs. One per process; several processes share the queue.
pub struct JobRunner {
    admin: Arc<Admin>,
    pool: PgPool,
    site: String,
    jobs: CommandService<Job>,
    calls: CommandService<Call>,
    users: CommandService<User>,
    options: RunnerOptions,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner").field("worker", &self.options.worker).finish_non_exhaustive()
    }
}

impl JobRunner {
    pub fn new(admin: Arc<Admin>, options: RunnerOptions) -> Self {
        let log = admin.log().clone();
        Self {
            pool: log.pool().clone(),
            site: log.config().site.clone(),
            jobs: CommandService::new(log.clone(), ()),
            calls: CommandService::new(log.clone(), ()),
            users: CommandService::new(log, ()),
            admin,
            options,
        }
    }

    fn meta(&self, tenant_id: Uuid) -> CommandMeta {
        CommandMeta::system(format!("jobs:{}", self.options.worker)).in_tenant(tenant_id)
    }

    /// Runs due runs until `shutdown`: looks for due schedules and runs every `poll`, and runs whatever is
    /// due one run at a time. A run under way when shutdown comes stops at its next step and is taken over
    /// when its lease runs out (by this process after a restart, or another).
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            // What a run that stopped with the process left in the scratch directory (a fetched ZIP).
            if let Ok(entries) = std::fs::read_dir(&self.options.scratch_dir) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with("restore-") {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            // A run asked for is announced; without the announcement (the listener lost), polling finds it.
            let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await.ok();
            if let Some(l) = listener.as_mut() {
                if let Err(e) = l.listen(recall_commands::admin::JOBS_CHANNEL).await {
                    tracing::debug!(error = %e, "job runner polls only");
                    listener = None;
                }
            }
            loop {
                if let Err(e) = self.schedule_due().await {
                    tracing::warn!(error = %e, "cannot look for scheduled jobs");
                }
                loop {
                    let next = tokio::select! {
                        next = self.run_next() => next,
                        () = shutdown.cancelled() => return,
                    };
                    match next {
                        Ok(Some(outcome)) => tracing::info!(?outcome, "job run"),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot claim a job run");
                            break;
                        }
                    }
                }
                let announced = async {
                    match listener.as_mut() {
                        Some(l) => {
                            if l.recv().await.is_err() {
                                // Reconnects on the next recv; meanwhile the poll below stands in.
                                tokio::time::sleep(self.options.poll).await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(self.options.poll) => {}
                    () = announced => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// Queues the latest due slot of every scheduled job that has no run waiting or under way (a slot
    /// that fell due before the job was defined or last edited does not count). Several processes may do
    /// this at once: a slot is queued once. Returns how many runs were queued.
    pub async fn schedule_due(&self) -> Result<usize, RunnerError> {
        let jobs: Vec<(Uuid, Uuid, serde_json::Value, chrono::DateTime<Utc>)> = sqlx::query_as(
            "SELECT job_id, tenant_id, schedule, updated_at FROM rm_jobs.jobs
              WHERE deleted_at IS NULL AND schedule IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = Utc::now();
        let mut queued = 0;
        for (job_id, tenant_id, schedule, defined_at) in jobs {
            let Ok(schedule) = serde_json::from_value::<Schedule>(schedule) else { continue };
            let Some(slot) = schedule.slot_due(now) else { continue };
            if schedule.slot_at(slot) < defined_at {
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO job_runs (run_id, job_id, tenant_id, trigger, slot, due_at)
                 SELECT $1, $2, $3, 'schedule', $4, $5
                  WHERE NOT EXISTS (SELECT 1 FROM job_runs WHERE job_id = $2 AND state IN ('due', 'running'))
                 ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(job_id)
            .bind(tenant_id)
            .bind(i64::try_from(slot).unwrap_or(i64::MAX))
            .bind(schedule.slot_at(slot))
            .execute(&self.pool)
            .await?;
            queued += inserted.rows_affected() as usize;
        }
        Ok(queued)
    }

    /// Claims the oldest due run (or one whose worker's lease ran out) and runs it to its end, or to the
    /// point where it has to stop. `None`: nothing is due.
    pub async fn run_next(&self) -> Result<Option<RunOutcome>, RunnerError> {
        let lease = self.options.lease.as_secs_f64();
        let claimed: Option<Claimed> = sqlx::query_as(
            "WITH next AS (
                SELECT run_id FROM job_runs
                 WHERE (state = 'due' AND due_at <= now()) OR (state = 'running' AND lease_until < now())
                 ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             UPDATE job_runs r SET state = 'running', worker = $1, lease_until = now() + make_interval(secs => $2),
                    attempts = r.attempts + 1, updated_at = now()
               FROM next WHERE r.run_id = next.run_id
             RETURNING r.run_id, r.job_id, r.tenant_id, r.slot, r.cursor, r.attempts",
        )
        .bind(&self.options.worker)
        .bind(lease)
        .fetch_optional(&self.pool)
        .await?;
        match claimed {
            Some(run) => Ok(Some(self.execute(run).await)),
            None => Ok(None),
        }
    }

    async fn execute(&self, run: Claimed) -> RunOutcome {
        let cursor: Cursor = serde_json::from_value(run.cursor.clone()).unwrap_or_default();
        let mut ctx = RunCtx::new(self, &run, cursor);
        if run.attempts > self.options.max_attempts {
            // Its earlier attempts ended without a word (the process stopped or crashed during them): a run
            // that takes its worker down is not started again and again.
            let error = format!("gave up after {} attempts that ended without finishing", run.attempts - 1);
            return self.stopped(&mut ctx, &run, RunError::Fatal(error)).await;
        }
        let job = match self.jobs.load(&run.job_id.to_string()).await {
            Ok(job) => job,
            Err(e) => return self.stopped(&mut ctx, &run, RunError::from(e)).await,
        };
        let kind = match job.kind() {
            Some(kind) if job.exists() => kind.clone(),
            _ => return self.stopped(&mut ctx, &run, RunError::Fatal("the job was deleted".to_owned())).await,
        };
        let trigger = match run.slot {
            Some(slot) => RunTrigger::Schedule { slot: u64::try_from(slot).unwrap_or(0) },
            None => RunTrigger::Manual,
        };
        let start = JobCommand::StartRun { run_id: run.run_id, trigger, worker: self.options.worker.clone() };
        match self.jobs.execute(&run.job_id.to_string(), start, self.meta(run.tenant_id)).await {
            Ok(_) => {}
            Err(CommandError::Refused(JobError::RunUnderWay)) => {
                // A scheduled slot while a run someone asked for is under way: that run does the work.
                let _ = self.set_state(&run, "failed").await;
                return RunOutcome::Skipped { run_id: run.run_id };
            }
            Err(e) => return self.stopped(&mut ctx, &run, RunError::from(e)).await,
        }
        // The lease is renewed in the background too, so one long copy (an hour of WAV from a slow store)
        // does not let another worker take the run over while this one is well.
        let heartbeat = AbortOnDrop(self.heartbeat(run.run_id, ctx.lease_lost.clone()));
        let result = match &kind {
            JobKind::Backup { target_id, path } => backup::run(self, &mut ctx, *target_id, path).await,
            JobKind::Restore { source_target_id, path } => restore::run(self, &mut ctx, *source_target_id, path).await,
        };
        drop(heartbeat);
        match result {
            Ok(()) => self.finished(&mut ctx, &run).await,
            Err(e) => self.stopped(&mut ctx, &run, e).await,
        }
    }

    /// Renews the run's lease every third of its length until aborted; notes in `lost` when the run is no
    /// longer this worker's.
    fn heartbeat(&self, run_id: Uuid, lost: Arc<AtomicBool>) -> JoinHandle<()> {
        let (pool, worker, lease) = (self.pool.clone(), self.options.worker.clone(), self.options.lease);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed = sqlx::query(
                    "UPDATE job_runs SET lease_until = now() + make_interval(secs => $3)
                      WHERE run_id = $1 AND worker = $2 AND state = 'running'",
                )
                .bind(run_id)
                .bind(&worker)
                .bind(lease.as_secs_f64())
                .execute(&pool)
                .await;
                match renewed {
                    Ok(done) if done.rows_affected() == 0 => {
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                    // The database is away: the run's own next step finds out; the lease may run out meanwhile.
                    Err(e) => tracing::warn!(%run_id, error = %e, "cannot renew a job run's lease"),
                }
            }
        })
    }

    /// Appends a command to the job, deciding again when another change to the job was saved first.
    async fn record(&self, run: &Claimed, command: JobCommand) -> Result<(), CommandError<JobError>> {
        let mut attempt = 0;
        loop {
            match self.jobs.execute(&run.job_id.to_string(), command.clone(), self.meta(run.tenant_id)).await {
                Err(CommandError::Conflict { .. }) if attempt < 3 => attempt += 1,
                result => return result.map(drop),
            }
        }
    }

    /// Whether this worker still holds the run (only the holder may record its end).
    async fn holds(&self, run: &Claimed) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM job_runs WHERE run_id = $1 AND worker = $2 AND state = 'running')",
        )
        .bind(run.run_id)
        .bind(&self.options.worker)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    async fn finished(&self, ctx: &mut RunCtx<'_>, run: &Claimed) -> RunOutcome {
        if !self.holds(run).await {
            return RunOutcome::Lost { run_id: run.run_id };
        }
        let finish = JobCommand::FinishRun {
            run_id: run.run_id,
            progress: ctx.progress,
            notes: ctx.notes.clone(),
            notes_total: ctx.notes_total,
            at: Utc::now(),
        };
        if let Err(e) = self.record(run, finish).await {
            // Not recorded: the run is put back and, done again, finds everything in place.
            return self.stopped(ctx, run, RunError::from(e)).await;
        }
        if let Err(e) = self.set_state(run, "finished").await {
            tracing::warn!(run_id = %run.run_id, error = %e, "a finished job run could not be marked in the queue");
        }
        RunOutcome::Finished { run_id: run.run_id, progress: ctx.progress, notes: ctx.notes.clone() }
    }

    async fn stopped(&self, ctx: &mut RunCtx<'_>, run: &Claimed, error: RunError) -> RunOutcome {
        let error = match error {
            RunError::LeaseLost => return RunOutcome::Lost { run_id: run.run_id },
            RunError::Transient(e) if run.attempts < self.options.max_attempts => {
                let delay = 30.0 * 2f64.powi(run.attempts.saturating_sub(1).min(6));
                let cursor = serde_json::to_value(ctx.cursor()).unwrap_or_default();
                let put_back = sqlx::query(
                    "UPDATE job_runs SET state = 'due', worker = NULL, lease_until = NULL, cursor = $3,
                            due_at = now() + make_interval(secs => $4), updated_at = now()
                      WHERE run_id = $1 AND worker = $2 AND state = 'running'",
                )
                .bind(run.run_id)
                .bind(&self.options.worker)
                .bind(cursor)
                .bind(delay)
                .execute(&self.pool)
                .await;
                if let Err(db) = put_back {
                    // The lease runs out and another claim takes it from the last saved cursor.
                    tracing::warn!(run_id = %run.run_id, error = %db, "a job run could not be put back");
                }
                tracing::warn!(run_id = %run.run_id, error = %e, attempts = run.attempts, "job run will be tried again");
                return RunOutcome::Retrying { run_id: run.run_id, error: e, attempts: run.attempts };
            }
            RunError::Transient(e) => format!("gave up after {} attempts: {e}", run.attempts),
            RunError::Fatal(e) => e,
        };
        if !self.holds(run).await {
            return RunOutcome::Lost { run_id: run.run_id };
        }
        let fail = JobCommand::FailRun { run_id: run.run_id, progress: ctx.progress, error: error.clone() };
        match self.record(run, fail).await {
            // Not the job's current run (it never started, or ended): nothing holds the job.
            Ok(()) | Err(CommandError::Refused(_)) => {}
            Err(e) => {
                // The queue row stays the worker's until the lease runs out, and the next claim records the
                // end: a run must not end in the queue while the job still counts it as under way.
                tracing::warn!(run_id = %run.run_id, error = %e, "a failed job run could not be recorded");
                return RunOutcome::Retrying { run_id: run.run_id, error, attempts: run.attempts };
            }
        }
        if let Err(e) = self.set_state(run, "failed").await {
            tracing::warn!(run_id = %run.run_id, error = %e, "a failed job run could not be marked in the queue");
        }
        RunOutcome::Failed { run_id: run.run_id, error }
    }

    async fn set_state(&self, run: &Claimed, state: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE job_runs SET state = $3, lease_until = NULL, updated_at = now() WHERE run_id = $1 AND worker = $2",
        )
        .bind(run.run_id)
        .bind(&self.options.worker)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Stops a task when dropped (also when the future holding it is, e.g. at shutdown).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A run under way: where it is, what it has done, and its lease.
pub(crate) struct RunCtx<'a> {
    runner: &'a JobRunner,
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub tenant_id: Uuid,
    pub progress: RunProgress,
    pub notes: Vec<String>,
    notes_total: u64,
    /// Where the run is: the last item done.
    pub after: Option<String>,
    saved_at: Instant,
    reported_at: Instant,
    /// Set by the heartbeat when another worker holds the run.
    lease_lost: Arc<AtomicBool>,
}

impl<'a> RunCtx<'a> {
    fn new(runner: &'a JobRunner, run: &Claimed, cursor: Cursor) -> Self {
        Self {
            runner,
            run_id: run.run_id,
            job_id: run.job_id,
            tenant_id: run.tenant_id,
            progress: cursor.progress,
            notes: cursor.notes,
            notes_total: cursor.notes_total,
            after: cursor.after,
            saved_at: Instant::now(),
            reported_at: Instant::now(),
            lease_lost: Arc::new(AtomicBool::new(false)),
        }
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            after: self.after.clone(),
            progress: self.progress,
            notes: self.notes.clone(),
            notes_total: self.notes_total,
        }
    }

    /// Something an administrator should know about one call (why it was not done); the first ones are
    /// kept with the run.
    pub fn note(&mut self, text: String) {
        tracing::info!(run_id = %self.run_id, note = %text, "job run");
        self.notes_total += 1;
        if self.notes.len() < MAX_RUN_NOTES {
            self.notes.push(text);
        }
    }

    /// One call could not be done: noted, counted as failed; the run goes on.
    pub fn failed(&mut self, note: String) -> Result<(), RunError> {
        self.note(note);
        self.progress.failed += 1;
        Ok(())
    }

    /// One item is done: moves the cursor past it, renews the lease and saves the cursor every second,
    /// records progress in the log every ten.
    pub async fn done(&mut self, after: String) -> Result<(), RunError> {
        if self.lease_lost.load(Ordering::Relaxed) {
            return Err(RunError::LeaseLost);
        }
        self.progress.done += 1;
        self.after = Some(after);
        if self.saved_at.elapsed() >= Duration::from_secs(1) {
            self.save().await?;
        }
        if self.reported_at.elapsed() >= Duration::from_secs(10) {
            self.reported_at = Instant::now();
            let report = JobCommand::ReportProgress { run_id: self.run_id, progress: self.progress };
            self.runner.jobs.execute(&self.job_id.to_string(), report, self.runner.meta(self.tenant_id)).await?;
        }
        Ok(())
    }

    /// Renews the lease and saves the cursor; fails with `LeaseLost` when the run is no longer this worker's.
    pub async fn save(&mut self) -> Result<(), RunError> {
        let cursor = serde_json::to_value(self.cursor()).unwrap_or_default();
        let renewed = sqlx::query(
            "UPDATE job_runs SET cursor = $3, lease_until = now() + make_interval(secs => $4), updated_at = now()
              WHERE run_id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(self.run_id)
        .bind(&self.runner.options.worker)
        .bind(cursor)
        .bind(self.runner.options.lease.as_secs_f64())
        .execute(&self.runner.pool)
        .await?;
        if renewed.rows_affected() == 0 {
            return Err(RunError::LeaseLost);
        }
        self.saved_at = Instant::now();
        Ok(())
    }
}
