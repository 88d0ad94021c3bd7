//! The job aggregate (keyed by job id): long work a tenant's administrator defines once and runs by hand
//! or on a schedule: a backup (the tenant's recordings, still encrypted, with the events that describe
//! them, copied to a storage target) or a restore (such an archive read back in). Each run is recorded
//! here as it goes: requested, started (or taken over by another worker after its lease ran out),
//! progressed, finished or failed. The work itself and the queue of due runs live outside the domain; this
//! aggregate only says which runs may start and what they did.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::names::{display_name, NameError};

/// The longest archive path accepted, in bytes (an S3 object key is at most 1024 bytes and the archive's
/// own names come after it).
pub const MAX_ARCHIVE_PATH_BYTES: usize = 512;
/// The shortest and the longest interval between scheduled runs.
pub const MIN_INTERVAL_HOURS: u32 = 1;
pub const MAX_INTERVAL_HOURS: u32 = 24 * 7 * 8;
/// How many notes a finished run keeps (the first ones; the count says how many there were).
pub const MAX_RUN_NOTES: usize = 50;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    tenant_id: Option<Uuid>,
    name: String,
    kind: Option<JobKind>,
    schedule: Option<Schedule>,
    deleted: bool,
    /// The run that is requested or running, if one is.
    current: Option<CurrentRun>,
    /// When the last run finished (successfully).
    last_finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CurrentRun {
    run_id: Uuid,
    started: bool,
}

/// What a job does. Archive paths are relative to the storage target's root (`backups/nightly`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobKind {
    /// Copies the tenant's stored recordings, exactly as stored (an encrypted file stays encrypted), with
    /// each call's events and the public part of the keys they need, to `path` on the storage target.
    Backup { target_id: Uuid, path: String },
    /// Reads an archive a backup wrote (at `path` on the storage target, which may be a copy on another
    /// installation) into this tenant: calls it does not have are added with their recordings, and a
    /// recording this installation lost is put back.
    Restore { source_target_id: Uuid, path: String },
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Backup { .. } => "backup",
            Self::Restore { .. } => "restore",
        }
    }

    /// The storage target the job reads or writes.
    pub fn target_id(&self) -> Uuid {
        match self {
            Self::Backup { target_id, .. } => *target_id,
            Self::Restore { source_target_id, .. } => *source_target_id,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Self::Backup { path, .. } | Self::Restore { path, .. } => path,
        }
    }
}

/// When a job runs by itself: at `first_at`, then every `every_hours` hours (24: nightly at that time; 168:
/// weekly; 336: every other week). A server that was down when a run fell due runs it once when it comes
/// back, not once per missed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub first_at: DateTime<Utc>,
    pub every_hours: u32,
}

impl Schedule {
    /// The latest slot due at `now` (0 is `first_at`), if one is.
    pub fn slot_due(&self, now: DateTime<Utc>) -> Option<u64> {
        if now < self.first_at || self.every_hours == 0 {
            return None;
        }
        let every = Duration::hours(i64::from(self.every_hours));
        u64::try_from((now - self.first_at).num_seconds() / every.num_seconds()).ok()
    }

    /// When slot `slot` falls due.
    pub fn slot_at(&self, slot: u64) -> DateTime<Utc> {
        let hours = i64::try_from(slot.saturating_mul(u64::from(self.every_hours))).unwrap_or(i64::MAX / 3600);
        self.first_at + Duration::hours(hours)
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunTrigger {
    /// Someone asked for it (`JobRunRequested` says who).
    Manual,
    /// Its schedule's slot fell due.
    Schedule { slot: u64 },
}

/// How far a run has come.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Calls looked at so far, and how many there are in all (as far as known when the run began).
    pub done: u64,
    pub total: u64,
    /// Calls whose recording was copied (backup) or restored or put back (restore).
    pub copied: u64,
    /// Calls already in place (a run repeated or resumed does them no second time).
    pub skipped: u64,
    /// Calls that could not be done (see the notes).
    pub failed: u64,
    /// Bytes of recordings copied.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    DefineJob {
        tenant_id: Uuid,
        name: String,
        kind: JobKind,
        schedule: Option<Schedule>,
    },
    /// Replaces the name, what the job does and its schedule; the kind (backup or restore) stays.
    EditJob {
        name: String,
        kind: JobKind,
        schedule: Option<Schedule>,
    },
    DeleteJob,
    /// Someone asks for a run now; refused while one is requested or running.
    RequestRun {
        run_id: Uuid,
    },
    /// A worker starts a run (a requested one, or a scheduled slot that fell due), or takes over one whose
    /// worker stopped renewing its lease.
    StartRun {
        run_id: Uuid,
        trigger: RunTrigger,
        worker: String,
    },
    ReportProgress {
        run_id: Uuid,
        progress: RunProgress,
    },
    /// `notes`: the first notes (the event keeps `MAX_RUN_NOTES`); `notes_total`: how many there were.
    FinishRun {
        run_id: Uuid,
        progress: RunProgress,
        notes: Vec<String>,
        notes_total: u64,
        at: DateTime<Utc>,
    },
    FailRun {
        run_id: Uuid,
        progress: RunProgress,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    JobDefined {
        tenant_id: Uuid,
        name: String,
        kind: JobKind,
        schedule: Option<Schedule>,
    },
    JobEdited {
        name: String,
        kind: JobKind,
        schedule: Option<Schedule>,
    },
    JobDeleted,
    JobRunRequested {
        run_id: Uuid,
    },
    JobRunStarted {
        run_id: Uuid,
        trigger: RunTrigger,
        worker: String,
    },
    /// Another worker took the run over (the one before stopped: crashed, or cut off from the database).
    JobRunResumed {
        run_id: Uuid,
        worker: String,
    },
    JobRunProgressed {
        run_id: Uuid,
        progress: RunProgress,
    },
    JobRunFinished {
        run_id: Uuid,
        progress: RunProgress,
        notes: Vec<String>,
        notes_total: u64,
        at: DateTime<Utc>,
    },
    JobRunFailed {
        run_id: Uuid,
        progress: RunProgress,
        error: String,
    },
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::JobDefined { .. } => "JobDefined",
            Self::JobEdited { .. } => "JobEdited",
            Self::JobDeleted => "JobDeleted",
            Self::JobRunRequested { .. } => "JobRunRequested",
            Self::JobRunStarted { .. } => "JobRunStarted",
            Self::JobRunResumed { .. } => "JobRunResumed",
            Self::JobRunProgressed { .. } => "JobRunProgressed",
            Self::JobRunFinished { .. } => "JobRunFinished",
            Self::JobRunFailed { .. } => "JobRunFailed",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("this job exists already")]
    AlreadyDefined,
    #[error("no such job")]
    NotFound,
    #[error("{0}")]
    InvalidName(NameError),
    #[error(
        "an archive path is 1 to {MAX_ARCHIVE_PATH_BYTES} bytes of names separated by '/', without '.' or '..' \
         parts, control characters or '\\'"
    )]
    InvalidPath,
    #[error("a schedule runs every {MIN_INTERVAL_HOURS} to {MAX_INTERVAL_HOURS} hours")]
    InvalidSchedule,
    #[error("a restore runs when it is asked to; it has no schedule")]
    RestoreScheduled,
    #[error("a backup job stays a backup and a restore job a restore; define a new job")]
    KindChanged,
    #[error("a run of this job is already under way")]
    RunUnderWay,
    #[error("a run of this job is waiting or under way; edit the job when it has ended")]
    EditWhileRunning,
    #[error("this run is not the job's current run")]
    NotCurrentRun,
    #[error("the run has not started")]
    NotStarted,
}

/// The archive path as stored: trimmed of surrounding white space and slashes.
pub fn archive_path(raw: &str) -> Result<String, JobError> {
    let path = raw.trim().trim_matches('/');
    let bad_part = |p: &str| p.is_empty() || p == "." || p == "..";
    if path.is_empty()
        || path.len() > MAX_ARCHIVE_PATH_BYTES
        || path.chars().any(|c| c.is_control() || c == '\\')
        || path.split('/').any(bad_part)
    {
        return Err(JobError::InvalidPath);
    }
    Ok(path.to_owned())
}

fn valid_kind(kind: JobKind, schedule: Option<Schedule>) -> Result<JobKind, JobError> {
    if let Some(schedule) = schedule {
        if matches!(kind, JobKind::Restore { .. }) {
            return Err(JobError::RestoreScheduled);
        }
        if !(MIN_INTERVAL_HOURS..=MAX_INTERVAL_HOURS).contains(&schedule.every_hours) {
            return Err(JobError::InvalidSchedule);
        }
    }
    Ok(match kind {
        JobKind::Backup { target_id, path } => JobKind::Backup { target_id, path: archive_path(&path)? },
        JobKind::Restore { source_target_id, path } => {
            JobKind::Restore { source_target_id, path: archive_path(&path)? }
        }
    })
}

/// Errors and worker names come from libraries and remote servers: one line, cut to 1,000 characters.
fn one_line(text: &str) -> String {
    crate::names::one_line(text, 1000)
}

impl Job {
    pub fn exists(&self) -> bool {
        self.tenant_id.is_some() && !self.deleted
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Option<&JobKind> {
        self.kind.as_ref()
    }

    pub fn schedule(&self) -> Option<Schedule> {
        self.schedule
    }

    /// The run requested or under way, if one is.
    pub fn current_run(&self) -> Option<Uuid> {
        self.current.as_ref().map(|r| r.run_id)
    }

    pub fn last_finished_at(&self) -> Option<DateTime<Utc>> {
        self.last_finished_at
    }

    fn name_key(&self) -> Option<IndexKey> {
        self.tenant_id.filter(|_| !self.deleted).map(|t| IndexKey::name(Namespace::JobName(t), &self.name))
    }

    fn running(&self, run_id: Uuid) -> Result<(), JobError> {
        match &self.current {
            Some(run) if run.run_id == run_id && run.started => Ok(()),
            Some(run) if run.run_id == run_id => Err(JobError::NotStarted),
            _ => Err(JobError::NotCurrentRun),
        }
    }
}

impl Aggregate for Job {
    const TYPE: &'static str = "Job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = ();

    async fn decide(&self, command: JobCommand, _: &()) -> Result<Vec<JobEvent>, JobError> {
        if !matches!(command, JobCommand::DefineJob { .. }) && !self.exists() {
            // A deleted job's run still ends: its worker reports how far it came.
            let ends_run = matches!(command, JobCommand::FinishRun { .. } | JobCommand::FailRun { .. });
            if !(ends_run && self.tenant_id.is_some()) {
                return Err(JobError::NotFound);
            }
        }
        match command {
            JobCommand::DefineJob { tenant_id, name, kind, schedule } => {
                if self.tenant_id.is_some() {
                    return Err(JobError::AlreadyDefined);
                }
                let name = display_name(&name).map_err(JobError::InvalidName)?;
                let kind = valid_kind(kind, schedule)?;
                Ok(vec![JobEvent::JobDefined { tenant_id, name, kind, schedule }])
            }
            JobCommand::EditJob { name, kind, schedule } => {
                if self.current.is_some() {
                    // A run goes on with what it started with: its cursor means nothing on another archive.
                    return Err(JobError::EditWhileRunning);
                }
                let name = display_name(&name).map_err(JobError::InvalidName)?;
                let kind = valid_kind(kind, schedule)?;
                if self.kind.as_ref().map(JobKind::name) != Some(kind.name()) {
                    return Err(JobError::KindChanged);
                }
                if name == self.name && Some(&kind) == self.kind.as_ref() && schedule == self.schedule {
                    return Ok(vec![]);
                }
                Ok(vec![JobEvent::JobEdited { name, kind, schedule }])
            }
            JobCommand::DeleteJob => Ok(vec![JobEvent::JobDeleted]),
            JobCommand::RequestRun { run_id } => match &self.current {
                Some(run) if run.run_id == run_id => Ok(vec![]),
                Some(_) => Err(JobError::RunUnderWay),
                None => Ok(vec![JobEvent::JobRunRequested { run_id }]),
            },
            JobCommand::StartRun { run_id, trigger, worker } => {
                let worker = one_line(&worker);
                match &self.current {
                    Some(run) if run.run_id == run_id && run.started => {
                        Ok(vec![JobEvent::JobRunResumed { run_id, worker }])
                    }
                    Some(run) if run.run_id == run_id => Ok(vec![JobEvent::JobRunStarted { run_id, trigger, worker }]),
                    Some(_) => Err(JobError::RunUnderWay),
                    // A scheduled slot starts without a request.
                    None => Ok(vec![JobEvent::JobRunStarted { run_id, trigger, worker }]),
                }
            }
            JobCommand::ReportProgress { run_id, progress } => {
                self.running(run_id)?;
                Ok(vec![JobEvent::JobRunProgressed { run_id, progress }])
            }
            JobCommand::FinishRun { run_id, progress, notes, notes_total, at } => {
                self.running(run_id)?;
                let notes_total = notes_total.max(notes.len() as u64);
                let notes = notes.iter().take(MAX_RUN_NOTES).map(|n| one_line(n)).collect();
                Ok(vec![JobEvent::JobRunFinished { run_id, progress, notes, notes_total, at }])
            }
            JobCommand::FailRun { run_id, progress, error } => {
                // A run that never started can fail too (its job's storage target is gone, say).
                match &self.current {
                    Some(run) if run.run_id == run_id => {}
                    _ => return Err(JobError::NotCurrentRun),
                }
                Ok(vec![JobEvent::JobRunFailed { run_id, progress, error: one_line(&error) }])
            }
        }
    }

    fn apply(&mut self, event: JobEvent) {
        match event {
            JobEvent::JobDefined { tenant_id, name, kind, schedule } => {
                self.tenant_id = Some(tenant_id);
                self.name = name;
                self.kind = Some(kind);
                self.schedule = schedule;
            }
            JobEvent::JobEdited { name, kind, schedule } => {
                self.name = name;
                self.kind = Some(kind);
                self.schedule = schedule;
            }
            JobEvent::JobDeleted => self.deleted = true,
            JobEvent::JobRunRequested { run_id } => self.current = Some(CurrentRun { run_id, started: false }),
            JobEvent::JobRunStarted { run_id, .. } | JobEvent::JobRunResumed { run_id, .. } => {
                self.current = Some(CurrentRun { run_id, started: true });
            }
            JobEvent::JobRunProgressed { .. } => {}
            JobEvent::JobRunFinished { at, .. } => {
                self.current = None;
                self.last_finished_at = Some(at);
            }
            JobEvent::JobRunFailed { .. } => self.current = None,
        }
    }

    fn index_changes(&self, event: &JobEvent) -> Vec<IndexChange> {
        let before = self.name_key();
        let after = match event {
            JobEvent::JobDefined { tenant_id, name, .. } => Some(IndexKey::name(Namespace::JobName(*tenant_id), name)),
            JobEvent::JobEdited { name, .. } => self.tenant_id.map(|t| IndexKey::name(Namespace::JobName(t), name)),
            JobEvent::JobDeleted => None,
            _ => return Vec::new(),
        };
        moves(before.iter(), after.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, resolve};

    fn decide(job: &Job, command: JobCommand) -> Result<Vec<JobEvent>, JobError> {
        resolve(job.decide(command, &()))
    }

    fn tenant() -> Uuid {
        Uuid::from_u128(7)
    }

    fn backup(path: &str) -> JobKind {
        JobKind::Backup { target_id: Uuid::from_u128(9), path: path.to_owned() }
    }

    fn nightly() -> Schedule {
        Schedule { first_at: "2026-01-01T02:00:00Z".parse().unwrap(), every_hours: 24 }
    }

    fn defined() -> Job {
        given::<Job>(vec![JobEvent::JobDefined {
            tenant_id: tenant(),
            name: "Nightly".into(),
            kind: backup("backups/nightly"),
            schedule: Some(nightly()),
        }])
    }

    #[test]
    fn archive_paths_are_relative_names_without_dot_parts() {
        assert_eq!(archive_path(" /backups/nightly/ "), Ok("backups/nightly".to_owned()));
        for bad in ["", "/", "a//b", "../etc", "a/./b", "a\\b", "a\nb", &"x".repeat(513)] {
            assert_eq!(archive_path(bad), Err(JobError::InvalidPath), "{bad:?}");
        }
    }

    #[test]
    fn a_job_is_defined_with_a_clean_path_and_its_name_claimed() {
        let command = JobCommand::DefineJob {
            tenant_id: tenant(),
            name: " Nightly ".into(),
            kind: backup("/backups/nightly/"),
            schedule: Some(nightly()),
        };
        let events = decide(&Job::default(), command).expect("defined");
        let JobEvent::JobDefined { name, kind, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!((name.as_str(), kind.path()), ("Nightly", "backups/nightly"));
        assert_eq!(
            Job::default().index_changes(&events[0]),
            vec![IndexChange::Claim(IndexKey::name(Namespace::JobName(tenant()), "nightly"))]
        );
    }

    #[test]
    fn schedules_are_checked_and_restores_have_none() {
        let restore = JobKind::Restore { source_target_id: Uuid::from_u128(1), path: "b".into() };
        let define = |kind, schedule| JobCommand::DefineJob { tenant_id: tenant(), name: "x".into(), kind, schedule };
        assert_eq!(decide(&Job::default(), define(restore, Some(nightly()))), Err(JobError::RestoreScheduled));
        let hourly_zero = Schedule { every_hours: 0, ..nightly() };
        assert_eq!(decide(&Job::default(), define(backup("b"), Some(hourly_zero))), Err(JobError::InvalidSchedule));
        let edit = JobCommand::EditJob {
            name: "Nightly".into(),
            kind: JobKind::Restore { source_target_id: Uuid::from_u128(1), path: "b".into() },
            schedule: None,
        };
        assert_eq!(decide(&defined(), edit), Err(JobError::KindChanged));
    }

    #[test]
    fn the_due_slot_is_the_latest_one_whatever_was_missed() {
        let s = nightly();
        assert_eq!(s.slot_due("2026-01-01T01:59:59Z".parse().unwrap()), None);
        assert_eq!(s.slot_due("2026-01-01T02:00:00Z".parse().unwrap()), Some(0));
        assert_eq!(s.slot_due("2026-01-04T01:00:00Z".parse().unwrap()), Some(2));
        assert_eq!(s.slot_at(2), "2026-01-03T02:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn one_run_at_a_time_and_a_lost_worker_is_taken_over() {
        let job = defined();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let requested = decide(&job, JobCommand::RequestRun { run_id: a }).expect("requested");
        let job = given::<Job>([defined_events(), requested].concat());
        assert_eq!(decide(&job, JobCommand::RequestRun { run_id: b }), Err(JobError::RunUnderWay));
        assert_eq!(decide(&job, JobCommand::RequestRun { run_id: a }), Ok(vec![]), "asked twice: one request");
        let progress = RunProgress::default();
        assert_eq!(decide(&job, JobCommand::ReportProgress { run_id: a, progress }), Err(JobError::NotStarted));
        let start = JobCommand::StartRun { run_id: a, trigger: RunTrigger::Manual, worker: "n1".into() };
        let started = decide(&job, start).expect("started");
        assert!(matches!(started[0], JobEvent::JobRunStarted { .. }));
        let mut job = job;
        job.apply(started[0].clone());
        let take_over = JobCommand::StartRun { run_id: a, trigger: RunTrigger::Manual, worker: "n2".into() };
        let again = decide(&job, take_over).expect("taken over");
        assert_eq!(again, vec![JobEvent::JobRunResumed { run_id: a, worker: "n2".into() }]);
        let notes = vec!["a\nb".into()];
        let finish = JobCommand::FinishRun { run_id: a, progress, notes, notes_total: 70, at: nightly().first_at };
        let finished = decide(&job, finish).expect("finished");
        let JobEvent::JobRunFinished { notes, notes_total, .. } = &finished[0] else { panic!() };
        assert_eq!((notes, *notes_total), (&vec!["a b".to_owned()], 70));
        let edit = JobCommand::EditJob { name: "Nightly".into(), kind: backup("elsewhere"), schedule: None };
        assert_eq!(decide(&job, edit), Err(JobError::EditWhileRunning), "not while a run is under way");
        job.apply(finished[0].clone());
        assert_eq!(job.current_run(), None);
        assert_eq!(job.last_finished_at(), Some(nightly().first_at));
        let failed = JobCommand::FailRun { run_id: a, progress, error: "late".into() };
        assert_eq!(decide(&job, failed), Err(JobError::NotCurrentRun), "a finished run does not fail afterwards");
    }

    fn defined_events() -> Vec<JobEvent> {
        vec![JobEvent::JobDefined {
            tenant_id: tenant(),
            name: "Nightly".into(),
            kind: backup("backups/nightly"),
            schedule: Some(nightly()),
        }]
    }

    #[test]
    fn a_deleted_job_runs_no_more_but_its_run_may_end() {
        let mut job = defined();
        let run_id = Uuid::from_u128(3);
        job.apply(JobEvent::JobRunStarted { run_id, trigger: RunTrigger::Schedule { slot: 0 }, worker: "n1".into() });
        job.apply(JobEvent::JobDeleted);
        assert_eq!(decide(&job, JobCommand::RequestRun { run_id: Uuid::from_u128(4) }), Err(JobError::NotFound));
        let fail = JobCommand::FailRun { run_id, progress: RunProgress::default(), error: "job deleted".into() };
        assert!(decide(&job, fail).is_ok());
    }
}
