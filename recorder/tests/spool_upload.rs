//! The spool and the uploader against a real local-filesystem storage target and a real event log: a
//! finished recording reaches the target byte for byte and is reported as `RecordingStored`; while the
//! target or the database is down nothing is lost, and after a restart everything left is delivered.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fast, wait_for, TENANT};
use futures::future::BoxFuture;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use recall_commands::testing::running_log;
use recall_commands::CommandService;
use recall_domain::call::{Call, CallCommand, CallDirection, CallEndReason, CallStart};
use recall_domain::recording_policy::AudioFormat;
use recall_domain::CommandMeta;
use recall_recorder::spool::{RecordingMeta, Spool, SpoolError, SpooledRecording};
use recall_recorder::upload::{UploadPort, Uploader};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The storage target is a directory that may not be there (an unmounted share); reports go to the real
/// log unless the database is "down".
struct Port {
    target: std::path::PathBuf,
    calls: CommandService<Call>,
    database_down: AtomicBool,
    reported: AtomicUsize,
}

impl UploadPort for Port {
    fn store_for<'a>(&'a self, _: &'a SpooledRecording) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>> {
        Box::pin(async move {
            let store = LocalFileSystem::new_with_prefix(&self.target).map_err(|e| e.to_string())?;
            Ok(Arc::new(store.with_fsync(true)) as Arc<dyn ObjectStore>)
        })
    }

    fn stored<'a>(&'a self, recording: &'a SpooledRecording) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.database_down.load(Ordering::SeqCst) {
                return Err("the database is down".into());
            }
            let command = CallCommand::RecordStoredRecording { recording: recording.stored() };
            let meta = CommandMeta::system("recorder:test").in_tenant(TENANT);
            self.calls.execute(&recording.call_id.to_string(), command, meta).await.map_err(|e| e.to_string())?;
            self.reported.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

async fn ended_call(calls: &CommandService<Call>) -> Uuid {
    let call_id = Uuid::now_v7();
    let started_at = chrono::Utc::now() - chrono::Duration::seconds(30);
    let start = CallStart {
        tenant_id: TENANT,
        sip_call_id: format!("{call_id}@sbc"),
        direction: CallDirection::Inbound,
        participants: vec![],
        extension: None,
        user_id: None,
        site: "test".into(),
        recorder_node: "rec".into(),
        started_at,
    };
    let meta = || CommandMeta::system("recorder:test").in_tenant(TENANT);
    let id = call_id.to_string();
    calls.execute(&id, CallCommand::RecordCallStart { call_id, start }, meta()).await.expect("started");
    let end = CallCommand::EndCall { reason: CallEndReason::Bye, at: started_at + chrono::Duration::seconds(30) };
    calls.execute(&id, end, meta()).await.expect("ended");
    call_id
}

fn meta(call_id: Uuid) -> RecordingMeta {
    RecordingMeta {
        tenant_id: TENANT,
        storage_target_id: None,
        object_path: format!("{TENANT}/2026/12/03/{call_id}.mp3"),
        format: AudioFormat::Mp3Stereo32,
        duration_ms: 30_000,
        sample_rate: None,
        encryption: None,
    }
}

/// Spools `bytes` as the recording of `call_id`, written in pieces.
fn spool_recording(spool: &Spool, call_id: Uuid, bytes: &[u8]) -> SpooledRecording {
    let mut writer = spool.create(call_id, "mp3", Duration::from_millis(0)).expect("spool file");
    for piece in bytes.chunks(1000) {
        writer.write(piece).expect("written");
    }
    writer.finish(meta(call_id)).expect("finished")
}

fn audio(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_recording_leaves_the_spool_only_once_the_target_has_it_and_the_log_says_so(pool: PgPool) {
    let (log, log_shutdown) = running_log(pool).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = Spool::open(dir.path().join("spool"), 1 << 30).expect("spool");
    let target = dir.path().join("target");
    let port = Arc::new(Port {
        target: target.clone(),
        calls: CommandService::new(log.clone(), ()),
        database_down: AtomicBool::new(true),
        reported: AtomicUsize::new(0),
    });
    let call_id = ended_call(&port.calls).await;
    let bytes = audio(1, 150_000);
    let spooled = spool_recording(&spool, call_id, &bytes);
    assert_eq!(spooled.sha256, hex::encode(Sha256::digest(&bytes)));

    let (uploader, queue) = Uploader::new(spool.clone(), port.clone(), fast());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uploader.run(shutdown.clone()));
    queue.push(spooled.clone());
    // The target is not there: the upload fails and is retried, the spool keeps the recording.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let waiting = spool.recover().expect("recover").ready;
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].attempts >= 2, "retried: {waiting:?}");
    assert!(spool.file_of(&spooled).is_file());

    // The target comes back, the database is still down: uploaded, not reported, still in the spool.
    std::fs::create_dir_all(&target).expect("target");
    let object = target.join(&spooled.meta.object_path);
    wait_for(Duration::from_secs(10), || object.is_file()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(&object).expect("object"), bytes);
    assert!(spool.file_of(&spooled).is_file(), "not removed before it is reported");
    assert!(spool.recover().expect("recover").ready[0].uploaded);

    // The database comes back: reported once, and only then removed from the spool.
    port.database_down.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), || !spool.file_of(&spooled).exists()).await;
    assert_eq!(port.reported.load(Ordering::SeqCst), 1);
    assert!(spool.recover().expect("recover").ready.is_empty());
    recall_commands::testing::wait_until_sequenced(&log, Duration::from_secs(10)).await;
    let events = log.read_batch(0, 100).await.expect("log");
    let stored: Vec<_> = events.iter().filter(|e| e.event.event_type == "RecordingStored").collect();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].event.payload.contains(&spooled.sha256));
    shutdown.cancel();
    task.await.expect("uploader");
    log_shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn after_a_restart_unfinished_and_ready_recordings_are_found_and_delivered(pool: PgPool) {
    let (log, log_shutdown) = running_log(pool).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("target");
    std::fs::create_dir_all(&target).expect("target");
    let port = Arc::new(Port {
        target: target.clone(),
        calls: CommandService::new(log.clone(), ()),
        database_down: AtomicBool::new(false),
        reported: AtomicUsize::new(0),
    });
    let (ready_call, unfinished_call) = (ended_call(&port.calls).await, ended_call(&port.calls).await);
    let ready_bytes = audio(2, 80_000);
    let unfinished_bytes = audio(3, 50_000);
    {
        // The recorder that dies: one recording finished, one half written, nothing uploaded.
        let spool = Spool::open(dir.path().join("spool"), 1 << 30).expect("spool");
        spool_recording(&spool, ready_call, &ready_bytes);
        let mut writer = spool.create(unfinished_call, "mp3", Duration::from_secs(1)).expect("spool file");
        writer.write(&unfinished_bytes).expect("written");
    }

    let spool = Spool::open(dir.path().join("spool"), 1 << 30).expect("spool reopened");
    let recovered = spool.recover().expect("recover");
    assert_eq!(recovered.ready.iter().map(|r| r.call_id).collect::<Vec<_>>(), vec![ready_call]);
    assert_eq!(recovered.unfinished.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![unfinished_call]);
    let (call_id, path) = &recovered.unfinished[0];
    let adopted = spool.adopt(*call_id, path, meta(*call_id)).expect("adopted");
    assert_eq!(adopted.sha256, hex::encode(Sha256::digest(&unfinished_bytes)));
    assert_eq!(adopted.size_bytes, unfinished_bytes.len() as u64);

    let (uploader, _queue) = Uploader::new(spool.clone(), port.clone(), fast());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uploader.run(shutdown.clone()));
    wait_for(Duration::from_secs(10), || port.reported.load(Ordering::SeqCst) == 2).await;
    for (call_id, bytes) in [(ready_call, &ready_bytes), (unfinished_call, &unfinished_bytes)] {
        let object = target.join(meta(call_id).object_path);
        assert_eq!(&std::fs::read(object).expect("object"), bytes);
    }
    wait_for(Duration::from_secs(5), || spool.used_bytes().expect("used") == 0).await;
    shutdown.cancel();
    task.await.expect("uploader");
    log_shutdown.cancel();
}

#[test]
fn a_full_spool_takes_no_new_recording_and_a_call_is_spooled_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = Spool::open(dir.path(), 100_000).expect("spool");
    let call_id = Uuid::now_v7();
    let mut writer = spool.create(call_id, "wav", Duration::from_secs(1)).expect("spool file");
    let again = spool.create(call_id, "wav", Duration::from_secs(1));
    assert!(matches!(again, Err(SpoolError::Exists(id)) if id == call_id), "{again:?}");
    writer.write(&audio(4, 100_000)).expect("written");
    assert!(spool.is_full().expect("usage"));
    let refused = spool.create(Uuid::now_v7(), "wav", Duration::from_secs(1));
    assert!(matches!(refused, Err(SpoolError::Full { used: 100_000, limit: 100_000 })), "{refused:?}");
}
