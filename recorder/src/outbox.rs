//! What the recorder has to tell the event log about its calls, kept on disk until the log has it: the
//! recorder goes on recording while the database is down, and a restart delivers what was left. A fact
//! is journaled (and synced) before it counts as reported; delivery is in order per call and at least
//! once, which the `Call` aggregate absorbs (a start, end, pause, stored file or digit told twice is one).
//!
//! Layout: `<call id>.jsonl` (one command per line, numbered) and `<call id>.done` (the last number the
//! log has); both go once everything is delivered and the call is closed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use recall_domain::call::CallCommand;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::durable;
use crate::upload::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox at {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a journal line of {path} cannot be read: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.to_owned(), source }
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The log cannot be reached now: try again later.
    Unavailable(String),
    /// The log refused the command for good (e.g. a start told twice): it will not change on a retry.
    Refused(String),
}

/// Where the recorder's facts go: in recall, the `Call` aggregate through the command service, with the
/// recorder node as the actor.
pub trait CallLog: Send + Sync {
    fn deliver<'a>(
        &'a self,
        call_id: Uuid,
        tenant_id: Uuid,
        command: &'a CallCommand,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    seq: u64,
    tenant_id: Uuid,
    command: CallCommand,
    /// The recorder is done with this call: once delivered, its journal can go.
    #[serde(default)]
    closes: bool,
}

/// The journal of undelivered call commands.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    /// Next sequence number per call with an open journal.
    next: Arc<Mutex<BTreeMap<Uuid, u64>>>,
    /// Calls with lines not delivered yet (all journals at open): a delivery pass reads only these, not
    /// every open journal (a thousand calls in progress would mean a thousand files read per pass).
    dirty: Arc<Mutex<BTreeSet<Uuid>>>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OutboxError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let outbox = Self { dir, next: Arc::default(), dirty: Arc::default(), wake: Arc::new(Notify::new()) };
        for call_id in outbox.calls()? {
            outbox.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(call_id);
            outbox.repair(call_id)?;
            let lines = outbox.lines(call_id)?;
            let next = lines.last().map_or(1, |l| l.seq + 1);
            outbox.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(call_id, next);
        }
        Ok(outbox)
    }

    /// Cuts a line a crash left unfinished off the end of a journal (it was never acknowledged), so that
    /// the next line starts on a line of its own.
    fn repair(&self, call_id: Uuid) -> Result<(), OutboxError> {
        let path = self.journal(call_id);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - complete, "cutting an unfinished journal line");
            let file = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
            file.set_len(complete as u64).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        Ok(())
    }

    fn journal(&self, call_id: Uuid) -> PathBuf {
        self.dir.join(format!("{call_id}.jsonl"))
    }

    fn done_file(&self, call_id: Uuid) -> PathBuf {
        self.dir.join(format!("{call_id}.done"))
    }

    /// Journals `command` for `call_id` and returns once it is on disk. `closes` marks the recorder's last
    /// command for the call.
    pub fn record(
        &self,
        call_id: Uuid,
        tenant_id: Uuid,
        command: CallCommand,
        closes: bool,
    ) -> Result<(), OutboxError> {
        let path = self.journal(call_id);
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = *next.get(&call_id).unwrap_or(&1);
        let line = Line { seq, tenant_id, command, closes };
        let mut text = serde_json::to_vec(&line)
            .map_err(|e| OutboxError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        file.write_all(&text).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        if seq == 1 {
            durable::sync_dir(&self.dir).map_err(io(&self.dir))?;
        }
        next.insert(call_id, seq + 1);
        self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(call_id);
        drop(next);
        self.wake.notify_one();
        Ok(())
    }

    /// Calls with a journal.
    fn calls(&self) -> Result<Vec<Uuid>, OutboxError> {
        let mut calls = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                if let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| Uuid::parse_str(s).ok()) {
                    calls.push(id);
                }
            }
        }
        calls.sort();
        Ok(calls)
    }

    fn lines(&self, call_id: Uuid) -> Result<Vec<Line>, OutboxError> {
        let path = self.journal(call_id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OutboxError::Io { path, source: e }),
        };
        let mut lines = Vec::new();
        for text in BufReader::new(file).lines() {
            let text = text.map_err(io(&path))?;
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&text) {
                Ok(line) => lines.push(line),
                // A line cut short by a crash (before `repair` runs) was never acknowledged.
                Err(_) if !text.ends_with('}') => break,
                Err(e) => return Err(OutboxError::Corrupt { path, reason: e.to_string() }),
            }
        }
        Ok(lines)
    }

    fn delivered(&self, call_id: Uuid) -> Result<u64, OutboxError> {
        let path = self.done_file(call_id);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(OutboxError::Io { path, source: e }),
        }
    }

    fn mark_delivered(&self, call_id: Uuid, seq: u64) -> Result<(), OutboxError> {
        let path = self.done_file(call_id);
        let temp = self.dir.join(format!("{call_id}.done.tmp"));
        let mut file = File::create(&temp).map_err(io(&temp))?;
        file.write_all(seq.to_string().as_bytes()).map_err(io(&temp))?;
        file.sync_data().map_err(io(&temp))?;
        fs::rename(&temp, &path).map_err(io(&temp))
    }

    /// Removes a closed call's journal if nothing was added after `delivered` (checked under the lock
    /// that `record` takes, so no command journaled meanwhile can go with it).
    fn close(&self, call_id: Uuid, delivered: u64) -> Result<(), OutboxError> {
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.get(&call_id).is_some_and(|n| *n > delivered + 1) {
            return Ok(());
        }
        for path in [self.journal(call_id), self.done_file(call_id)] {
            durable::remove_if_present(&path).map_err(io(&path))?;
        }
        next.remove(&call_id);
        durable::sync_dir(&self.dir).map_err(io(&self.dir))
    }

    /// Calls whose journal holds a start but no end: a recorder that stopped without finishing them
    /// (a crash) ends them at its next start.
    pub fn unended(&self) -> Result<Vec<(Uuid, Uuid)>, OutboxError> {
        let mut unended = Vec::new();
        for call_id in self.calls()? {
            let lines = self.lines(call_id)?;
            let started = lines.iter().any(|l| matches!(l.command, CallCommand::RecordCallStart { .. }));
            let ended = lines.iter().any(|l| l.closes || matches!(l.command, CallCommand::EndCall { .. }));
            if started && !ended {
                if let Some(line) = lines.first() {
                    unended.push((call_id, line.tenant_id));
                }
            }
        }
        Ok(unended)
    }

    /// Commands journaled and not delivered yet, over all calls.
    pub fn pending(&self) -> Result<usize, OutboxError> {
        let mut pending = 0;
        for call_id in self.calls()? {
            let delivered = self.delivered(call_id)?;
            pending += self.lines(call_id)?.iter().filter(|l| l.seq > delivered).count();
        }
        Ok(pending)
    }

    /// Delivers the journal to `log` until `shutdown`, retrying while the log is unavailable.
    pub async fn deliver(self, log: Arc<dyn CallLog>, backoff: Backoff, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = match self.deliver_once(log.as_ref()).await {
                Ok(()) => {
                    failures = 0;
                    None
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff.after(failures);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "call events wait in the outbox");
                    Some(wait)
                }
            };
            let idle = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    // New commands wake it; a slow poll catches anything else (e.g. another writer).
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), self.wake.notified()).await;
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = idle => {}
            }
        }
    }

    /// One pass over every journal: delivers what is pending, in order, stopping at the first call the log
    /// cannot take now.
    async fn deliver_once(&self, log: &dyn CallLog) -> Result<(), String> {
        let dirty: Vec<Uuid> =
            self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        for call_id in dirty {
            let already = self.delivered(call_id).map_err(|e| e.to_string())?;
            let mut delivered = already;
            let lines = self.lines(call_id).map_err(|e| e.to_string())?;
            for line in lines.iter().filter(|l| l.seq > already) {
                match log.deliver(call_id, line.tenant_id, &line.command).await {
                    Ok(()) => {}
                    Err(DeliveryError::Refused(reason)) => {
                        tracing::warn!(%call_id, seq = line.seq, reason, "the log refused a call event; not retried");
                    }
                    Err(DeliveryError::Unavailable(cause)) => return Err(cause),
                }
                self.mark_delivered(call_id, line.seq).map_err(|e| e.to_string())?;
                delivered = line.seq;
            }
            if lines.iter().any(|l| l.closes) {
                self.close(call_id, delivered).map_err(|e| e.to_string())?;
            }
            // Clean unless a line was journaled meanwhile (checked under the lock `record` appends under).
            let next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if next.get(&call_id).is_none_or(|n| *n <= delivered + 1) {
                self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&call_id);
            }
        }
        Ok(())
    }
}
