//! The outbox against the real event log: call events wait on disk while the database is down and arrive
//! in order when it is back; a restart that delivers some of them again leaves each fact once in the log;
//! a journal line cut short by a crash is not taken for a command.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fast, wait_for, TENANT};
use futures::future::BoxFuture;
use recall_commands::testing::running_log;
use recall_commands::{CommandError, CommandService, EventLog};
use recall_domain::call::{Call, CallCommand, CallDirection, CallEndReason, CallStart, StoredRecording};
use recall_domain::recording_policy::AudioFormat;
use recall_domain::CommandMeta;
use recall_recorder::outbox::{CallLog, DeliveryError, Outbox};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The binary's port, as it will be: the `Call` aggregate through the command service.
struct Log {
    calls: CommandService<Call>,
    down: AtomicBool,
}

impl CallLog for Log {
    fn deliver<'a>(
        &'a self,
        call_id: Uuid,
        tenant_id: Uuid,
        command: &'a CallCommand,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(DeliveryError::Unavailable("the database is down".into()));
            }
            let meta = CommandMeta::system("recorder:test").in_tenant(tenant_id);
            match self.calls.execute(&call_id.to_string(), command.clone(), meta).await {
                Ok(_) => Ok(()),
                Err(e @ (CommandError::Refused(_) | CommandError::Taken(_))) => {
                    Err(DeliveryError::Refused(e.to_string()))
                }
                Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
            }
        })
    }
}

fn commands(call_id: Uuid) -> Vec<(CallCommand, bool)> {
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(2);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let start = CallStart {
        tenant_id: TENANT,
        sip_call_id: format!("{call_id}@sbc"),
        direction: CallDirection::Outbound,
        participants: vec![],
        extension: Some("2001".into()),
        user_id: None,
        site: "test".into(),
        recorder_node: "rec".into(),
        started_at: t0,
    };
    vec![
        (CallCommand::RecordCallStart { call_id, start }, false),
        (CallCommand::PauseRecording { at: at(3) }, false),
        (CallCommand::ResumeRecording { at: at(5) }, false),
        (CallCommand::RecordDtmf { digit: '7', at: at(6), duration_ms: 100 }, false),
        (CallCommand::EndCall { reason: CallEndReason::Bye, at: at(9) }, false),
        (
            CallCommand::RecordStoredRecording {
                recording: StoredRecording {
                    storage_target_id: None,
                    location: format!("{TENANT}/{call_id}.mp3"),
                    format: AudioFormat::Mp3Stereo32,
                    size_bytes: 36_000,
                    duration_ms: 9_000,
                    sha256: "5e".repeat(32),
                    encryption: None,
                },
            },
            true,
        ),
    ]
}

async fn event_types(log: &EventLog, call_id: Uuid) -> Vec<String> {
    recall_commands::testing::wait_until_sequenced(log, Duration::from_secs(10)).await;
    let events = log.read_batch(0, 1000).await.expect("log");
    events.into_iter().filter(|e| e.event.aggregate_id == call_id.to_string()).map(|e| e.event.event_type).collect()
}

const EXPECTED: [&str; 6] =
    ["CallStarted", "RecordingPaused", "RecordingResumed", "DtmfReceived", "CallEnded", "RecordingStored"];

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn call_events_wait_on_disk_while_the_database_is_down_and_arrive_in_order(pool: PgPool) {
    let (log, log_shutdown) = running_log(pool).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = Arc::new(Log { calls: CommandService::new(log.clone(), ()), down: AtomicBool::new(true) });
    let outbox = Outbox::open(dir.path()).expect("outbox");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(outbox.clone().deliver(port.clone(), fast(), shutdown.clone()));
    let call_id = Uuid::now_v7();
    for (command, closes) in commands(call_id) {
        outbox.record(call_id, TENANT, command, closes).expect("journaled");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outbox.pending().expect("pending"), 6);
    assert!(event_types(&log, call_id).await.is_empty());

    port.down.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), || outbox.pending().expect("pending") == 0).await;
    assert_eq!(event_types(&log, call_id).await, EXPECTED);
    // Delivered and closed: nothing of the call is left in the outbox.
    wait_for(Duration::from_secs(5), || std::fs::read_dir(dir.path()).expect("dir").next().is_none()).await;
    shutdown.cancel();
    task.await.expect("deliverer");
    log_shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_restart_that_delivers_again_leaves_each_fact_once_and_a_torn_line_is_no_command(pool: PgPool) {
    let (log, log_shutdown) = running_log(pool).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = Arc::new(Log { calls: CommandService::new(log.clone(), ()), down: AtomicBool::new(false) });
    let call_id = Uuid::now_v7();
    let all = commands(call_id);
    {
        let outbox = Outbox::open(dir.path()).expect("outbox");
        // Everything but the closing command, so the journal stays after delivery.
        for (command, _) in &all[..5] {
            outbox.record(call_id, TENANT, command.clone(), false).expect("journaled");
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(outbox.clone().deliver(port.clone(), fast(), shutdown.clone()));
        wait_for(Duration::from_secs(10), || outbox.pending().expect("pending") == 0).await;
        shutdown.cancel();
        task.await.expect("deliverer");
    }
    // The recorder died after delivering but before noting it, and in the middle of journaling a line.
    std::fs::remove_file(dir.path().join(format!("{call_id}.done"))).expect("progress lost");
    let mut journal =
        std::fs::OpenOptions::new().append(true).open(dir.path().join(format!("{call_id}.jsonl"))).expect("journal");
    journal.write_all(b"{\"seq\":6,\"tenant_id\":\"0000").expect("torn line");
    drop(journal);

    let outbox = Outbox::open(dir.path()).expect("outbox reopened");
    assert_eq!(outbox.pending().expect("pending"), 5, "the torn line is not a command");
    let (command, closes) = all[5].clone();
    outbox.record(call_id, TENANT, command, closes).expect("journaled after the restart");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(outbox.clone().deliver(port.clone(), fast(), shutdown.clone()));
    wait_for(Duration::from_secs(10), || outbox.pending().expect("pending") == 0).await;
    assert_eq!(event_types(&log, call_id).await, EXPECTED, "each fact once, in order");
    shutdown.cancel();
    task.await.expect("deliverer");
    log_shutdown.cancel();
}
