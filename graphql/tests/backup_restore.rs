//! Backup and restore jobs end to end against real Postgres databases (two installations), real local
//! storage directories and real encrypted files: a backup copies files still encrypted with their events;
//! a restore on a second installation adds the calls once the tenant's key is imported there, and they play
//! back over HTTP; a restore on the same installation puts back a file that was lost; running a job twice
//! copies nothing twice; a run whose worker died is taken over where it stopped.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use recall_commands::admin::{AdminCommand, EncryptionKeyRequest, JobRequest, StorageSettings, StorageTargetRequest};
use recall_commands::testing::{id, secret, Person, World};
use recall_commands::{CommandService, LoggedEvent};
use recall_domain::call::{Call, CallCommand, CallDirection, CallEndReason, CallStart, Participant};
use recall_domain::job::{Job, JobCommand, JobKind, RunTrigger};
use recall_domain::CommandMeta;
use recall_graphql::recordings::RecordingsDir;
use recall_graphql::ApiState;
use recall_jobs::{JobRunner, RunOutcome, RunnerOptions};
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// One installation: its people, its API, its recordings directory and a job runner.
struct Site {
    world: World,
    state: ApiState,
    recordings: tempfile::TempDir,
    runner: JobRunner,
}

async fn site(pool: PgPool) -> Site {
    let (world, mut state) = common::on_world(pool).await;
    let recordings = tempfile::tempdir().expect("a recordings directory");
    state.options.recordings_dir = RecordingsDir(Some(recordings.path().to_owned()));
    let mut options = RunnerOptions::new("worker-1");
    options.recordings_dir = Some(recordings.path().to_owned());
    let runner = JobRunner::new(world.admin.clone(), options);
    Site { world, state, recordings, runner }
}

/// A second database on the same server, migrated, for a second installation.
async fn second_database(pool: &PgPool) -> (PgPool, String) {
    let name = format!("recall_restore_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(pool).await.expect("a second database");
    let options = pool.connect_options().as_ref().clone().database(&name);
    let second = PgPoolOptions::new().max_connections(10).connect_with(options).await.expect("connects");
    recall_migrations::MIGRATOR.run(&second).await.expect("migrated");
    (second, name)
}

async fn caught_up(site: &Site) {
    let limit = Duration::from_secs(30);
    recall_commands::testing::wait_until_sequenced(&site.world.log, limit).await;
    let head = site.world.log.status().await.expect("status").head_position;
    assert!(site.state.projector.wait_for(head, limit).await, "the projections catch up");
}

/// "Audio" that shows where every byte came from.
fn audio(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i % 251) as u8 ^ (i / 251) as u8).wrapping_add(seed)).collect()
}

/// Stores `plain` (encrypted when `key_id` is given) as agent A1's call in the recordings directory, and
/// its start, a pause, its end and the stored file in the log, as the recorder would.
async fn record(site: &Site, plain: &[u8], key_id: Option<Uuid>) -> Uuid {
    let world = &site.world;
    let call_id = id();
    let location = format!("{}/{call_id}.wav", world.tenant_a);
    let key = key_id.map(|key_id| (key_id, &plain[..44]));
    let recording = common::store_file(world.log.pool(), site.recordings.path(), &location, call_id, plain, key).await;
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let started_at = chrono::Utc::now() - chrono::Duration::seconds(30);
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: format!("{call_id}@sbc.example"),
        direction: CallDirection::Inbound,
        participants: vec![Participant { name: Some("Caller".into()), aor: "sip:+4930123@pstn".into() }],
        extension: Some("2001".into()),
        user_id: Some(world.agent_a1.user_id),
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at,
    };
    let meta = || CommandMeta::system("recorder:rec-1").in_tenant(world.tenant_a);
    let id = call_id.to_string();
    let at = |s: i64| started_at + chrono::Duration::seconds(s);
    for command in [
        CallCommand::RecordCallStart { call_id, start },
        CallCommand::PauseRecording { at: at(5) },
        CallCommand::ResumeRecording { at: at(8) },
        CallCommand::EndCall { reason: CallEndReason::Bye, at: at(20) },
        CallCommand::RecordStoredRecording { recording },
    ] {
        calls.execute(&id, command, meta()).await.expect("the call is recorded");
    }
    caught_up(site).await;
    call_id
}

async fn add_target(site: &Site, name: &str, dir: &Path) -> Uuid {
    let target_id = id();
    let settings = StorageSettings::LocalFilesystem { path: dir.to_string_lossy().into_owned() };
    let request = StorageTargetRequest::Add { tenant_id: site.world.tenant_a, name: name.into(), settings };
    site.world.as_(&site.world.admin_a, AdminCommand::StorageTarget { target_id, request }).await.expect("target");
    target_id
}

async fn define(site: &Site, name: &str, kind: JobKind) -> Uuid {
    let job_id = id();
    let request = JobRequest::Define { tenant_id: site.world.tenant_a, name: name.into(), kind, schedule: None };
    site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id, request }).await.expect("job defined");
    job_id
}

/// Asks for a run and lets the site's runner do it.
async fn run_now(site: &Site, job_id: Uuid) -> RunOutcome {
    let request = JobRequest::RunNow { run_id: id() };
    site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id, request }).await.expect("run queued");
    let outcome = site.runner.run_next().await.expect("the queue answers").expect("a run was due");
    caught_up(site).await;
    outcome
}

fn finished(outcome: RunOutcome) -> (recall_domain::job::RunProgress, Vec<String>) {
    match outcome {
        RunOutcome::Finished { progress, notes, .. } => (progress, notes),
        other => panic!("the run did not finish: {other:?}"),
    }
}

async fn play(site: &Site, who: &Person, call_id: Uuid) -> (StatusCode, Vec<u8>) {
    let app = recall_graphql::router(site.state.clone());
    let request = Request::get(format!("/recordings/{call_id}/audio"))
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("response");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes().to_vec())
}

async fn events_of(site: &Site, aggregate_type: &str) -> Vec<LoggedEvent> {
    caught_up(site).await;
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = site.world.log.read_batch(after, 1000).await.expect("read");
        let Some(last) = batch.last() else { break };
        after = last.position;
        all.extend(batch.into_iter().filter(|e| e.event.aggregate_type == aggregate_type));
    }
    all
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn copy_tree(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).expect("under the tree"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("directory");
        std::fs::copy(&file, &target).expect("copied");
    }
}

/// Exports the tenant key from `from` (as `from`'s administrator) and imports it into `to`'s tenant A.
async fn carry_key(from: &Site, key_id: Uuid, to: &Site) {
    let passphrase = "a passphrase for moving keys";
    let export = EncryptionKeyRequest::Export { passphrase: Some(secret(passphrase)) };
    let pem = from
        .world
        .as_(&from.world.admin_a, AdminCommand::EncryptionKey { key_id, request: export })
        .await
        .expect("exported")
        .issued
        .expect("a PEM");
    let import = EncryptionKeyRequest::Import {
        tenant_id: to.world.tenant_a,
        name: "Key from east".into(),
        pem: secret(pem.expose_secret()),
        passphrase: Some(secret(passphrase)),
    };
    to.world
        .as_(&to.world.admin_a, AdminCommand::EncryptionKey { key_id: id(), request: import })
        .await
        .expect("imported");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_backup_restored_on_a_second_installation_plays_back_once_the_key_is_imported(pool: PgPool) {
    let east = site(pool.clone()).await;
    let key_id = id();
    let generate = EncryptionKeyRequest::Generate { tenant_id: east.world.tenant_a, name: "Main key".into() };
    east.world.as_(&east.world.admin_a, AdminCommand::EncryptionKey { key_id, request: generate }).await.expect("key");
    let plain = [audio(200_000, 1), audio(70_000, 2), audio(5_000, 3)];
    let calls = [
        record(&east, &plain[0], Some(key_id)).await,
        record(&east, &plain[1], Some(key_id)).await,
        record(&east, &plain[2], None).await,
    ];
    let vault = tempfile::tempdir().expect("the backup directory");
    let backups = add_target(&east, "Backups", vault.path()).await;
    let backup = define(&east, "Nightly", JobKind::Backup { target_id: backups, path: "recall/nightly".into() }).await;

    let (progress, notes) = finished(run_now(&east, backup).await);
    assert_eq!((progress.total, progress.done, progress.copied, progress.failed), (3, 3, 3, 0), "{notes:?}");
    // The archive holds each file exactly as stored: encrypted files stay encrypted, no plain audio.
    let files = files_under(vault.path());
    for (call, plain) in calls.iter().zip(&plain) {
        let archived = files
            .iter()
            .find(|p| p.to_string_lossy().contains(&format!("recordings/{call}/")))
            .unwrap_or_else(|| panic!("call {call} is in the archive: {files:?}"));
        let bytes = std::fs::read(archived).expect("archived file");
        let stored = std::fs::read(east.recordings.path().join(format!("{}/{call}.wav", east.world.tenant_a)))
            .expect("stored file");
        assert_eq!(bytes, stored, "copied exactly as stored");
        if *call != calls[2] {
            assert!(bytes.starts_with(b"RCLENC"));
            let file_windows: std::collections::HashSet<&[u8]> = bytes.windows(32).collect();
            let leaked = plain.chunks_exact(32).filter(|piece| file_windows.contains(piece)).count();
            assert_eq!(leaked, 0, "no piece of the plain audio in an encrypted file");
        }
    }
    assert!(vault.path().join("recall/nightly/archive.json").is_file());
    let keys = std::fs::read_to_string(vault.path().join("recall/nightly/keys.json")).expect("keys.json");
    assert!(keys.contains("BEGIN PUBLIC KEY") && !keys.contains("PRIVATE"), "public parts only: {keys}");

    // Run again: everything is in place, nothing is copied twice.
    let (again, _) = finished(run_now(&east, backup).await);
    assert_eq!((again.copied, again.skipped, again.failed), (0, 3, 0));
    assert_eq!(files_under(vault.path()).len(), files.len() + 1, "one more run summary, nothing else");

    // A second installation, with its own tenant, reading the same archive.
    let (second_pool, second_name) = second_database(&pool).await;
    let west = site(second_pool.clone()).await;
    // The archive is carried to the second site and lands under another path there.
    let carried = tempfile::tempdir().expect("the second site's archive directory");
    copy_tree(&vault.path().join("recall/nightly"), &carried.path().join("imports/east"));
    let source = add_target(&west, "Archive", carried.path()).await;
    let restore =
        define(&west, "From east", JobKind::Restore { source_target_id: source, path: "imports/east".into() }).await;
    // Without the key only the plain recording can be restored; the notes say which key is missing.
    let (first, notes) = finished(run_now(&west, restore).await);
    assert_eq!((first.total, first.copied, first.failed), (3, 1, 2), "{notes:?}");
    assert!(notes.iter().all(|n| n.contains("import that key")), "{notes:?}");

    carry_key(&east, key_id, &west).await;
    let (second, notes) = finished(run_now(&west, restore).await);
    assert_eq!((second.copied, second.skipped, second.failed), (2, 1, 0), "{notes:?}");
    let (third, _) = finished(run_now(&west, restore).await);
    assert_eq!((third.copied, third.skipped, third.failed), (0, 3, 0), "a restore run twice adds nothing");

    for (call, plain) in calls.iter().zip(&plain) {
        let (status, body) = play(&west, &west.world.admin_a, *call).await;
        assert_eq!(status, StatusCode::OK, "call {call} plays back on the second installation");
        assert_eq!(&body, plain);
        // Another tenant there does not see it.
        let (status, _) = play(&west, &west.world.admin_b, *call).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // The restored calls are the second installation's tenant's, unassigned (its agent is not east's),
    // with the pause and the end they had, and say where they came from.
    let row: (Uuid, Option<Uuid>, Option<String>, i64, String, serde_json::Value) = sqlx::query_as(
        "SELECT tenant_id, user_id, extension, paused_ms, end_reason, restored FROM rm_calls.calls WHERE call_id = $1",
    )
    .bind(calls[0])
    .fetch_one(&second_pool)
    .await
    .expect("the restored call");
    assert_eq!(
        (row.0, row.1, row.2.as_deref(), row.3, row.4.as_str()),
        (west.world.tenant_a, None, Some("2001"), 3000, "bye")
    );
    assert_eq!(row.5["origin_tenant_id"], east.world.tenant_a.to_string());
    // Stored where the recorder of the second installation would put it: under its own tenant.
    let location: String = sqlx::query_scalar("SELECT recording->>'location' FROM rm_calls.calls WHERE call_id = $1")
        .bind(calls[0])
        .fetch_one(&second_pool)
        .await
        .expect("location");
    assert!(location.starts_with(&format!("{}/", west.world.tenant_a)), "{location}");
    assert!(location.ends_with(&format!("{}.wav.enc", calls[0])), "{location}");
    // The tenant's only storage target there is the one the archive came on: the recorder would write there.
    assert!(carried.path().join(&location).is_file());
    assert_eq!(row.5["archived_events"], 5);
    let restored = events_of(&west, "Call").await;
    assert_eq!(restored.iter().filter(|e| e.event.event_type == "CallRestored").count(), 3);
    let runs = events_of(&west, "Job").await;
    assert_eq!(runs.iter().filter(|e| e.event.event_type == "JobRunFinished").count(), 3);

    west.world.shutdown.cancel();
    drop(west);
    second_pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {second_name} WITH (FORCE)")).execute(&pool).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_lost_file_is_put_back_from_the_backup_and_a_dead_workers_run_is_taken_over(pool: PgPool) {
    let site = site(pool).await;
    let plain = [audio(90_000, 4), audio(10_000, 5)];
    let calls = [record(&site, &plain[0], None).await, record(&site, &plain[1], None).await];
    let vault = tempfile::tempdir().expect("the backup directory");
    let target = add_target(&site, "Backups", vault.path()).await;
    let backup = define(&site, "Weekly", JobKind::Backup { target_id: target, path: "weekly".into() }).await;

    // A run a worker started and then died in, after the first call: the next worker takes it over there.
    let run_id = id();
    let request = JobRequest::RunNow { run_id };
    site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id: backup, request }).await.expect("queued");
    let jobs = CommandService::<Job>::new(site.world.log.clone(), ());
    let start = JobCommand::StartRun { run_id, trigger: RunTrigger::Manual, worker: "dead-worker".into() };
    jobs.execute(&backup.to_string(), start, CommandMeta::system("jobs:dead-worker")).await.expect("started");
    let first = calls.iter().min().expect("calls");
    sqlx::query(
        "UPDATE job_runs SET state = 'running', worker = 'dead-worker', lease_until = now() - interval '1 second',
                attempts = 1, cursor = jsonb_build_object('after', $2::text,
                    'progress', jsonb_build_object('done', 1, 'total', 2, 'copied', 0, 'skipped', 0, 'failed', 0, 'bytes', 0),
                    'notes', '[]'::jsonb, 'notes_total', 0)
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(first.to_string())
    .execute(site.world.log.pool())
    .await
    .expect("the dead worker's state");
    let outcome = site.runner.run_next().await.expect("queue").expect("the expired run is claimed");
    let (progress, _) = finished(outcome);
    assert_eq!((progress.done, progress.copied), (2, 1), "the taken-over run went on after the first call");
    let job_events = events_of(&site, "Job").await;
    let resumed: Vec<_> = job_events.iter().filter(|e| e.event.event_type == "JobRunResumed").collect();
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0].event.payload.contains("worker-1"));
    // The call the dead worker had not copied is copied by a full run now; the other is in place.
    let (progress, _) = finished(run_now(&site, backup).await);
    assert_eq!((progress.copied, progress.skipped), (1, 1));

    // The recordings directory loses a file; a restore from the backup puts it back, and only it.
    let lost = site.recordings.path().join(format!("{}/{}.wav", site.world.tenant_a, calls[1]));
    std::fs::remove_file(&lost).expect("the file is lost");
    let (status, _) = play(&site, &site.world.admin_a, calls[1]).await;
    assert_ne!(status, StatusCode::OK);
    let restore = define(&site, "Put back", JobKind::Restore { source_target_id: target, path: "weekly".into() }).await;
    let (progress, notes) = finished(run_now(&site, restore).await);
    assert_eq!((progress.copied, progress.skipped, progress.failed), (1, 1, 0), "{notes:?}");
    assert_eq!(std::fs::read(&lost).expect("back"), plain[1]);
    let (status, body) = play(&site, &site.world.admin_a, calls[1]).await;
    assert_eq!((status, body), (StatusCode::OK, plain[1].clone()));
    let put_back = events_of(&site, "Call").await;
    assert_eq!(put_back.iter().filter(|e| e.event.event_type == "RecordingPutBack").count(), 1);

    // A file in the archive that is not what the log says is not put back.
    std::fs::remove_file(&lost).expect("lost again");
    let archived = files_under(vault.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&format!("recordings/{}/", calls[1])))
        .expect("archived");
    let mut bytes = std::fs::read(&archived).expect("archived file");
    bytes[100] ^= 1;
    std::fs::write(&archived, bytes).expect("tampered");
    let (progress, notes) = finished(run_now(&site, restore).await);
    assert_eq!((progress.copied, progress.failed), (0, 1), "{notes:?}");
    assert!(notes[0].contains("SHA-256"), "{notes:?}");
    assert!(!lost.exists(), "nothing half-written where the file belongs");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn jobs_are_defined_on_the_tenants_own_targets_by_those_who_manage_storage(pool: PgPool) {
    let site = site(pool).await;
    let dir = tempfile::tempdir().expect("dir");
    let target = add_target(&site, "Backups", dir.path()).await;
    let kind = || JobKind::Backup { target_id: target, path: "b".into() };
    async fn define_as(
        site: &Site,
        who: &Person,
        tenant_id: Uuid,
        kind: JobKind,
    ) -> Result<recall_commands::admin::Done, recall_commands::admin::AdminError> {
        let request = JobRequest::Define { tenant_id, name: "Nightly".into(), kind, schedule: None };
        site.world.as_(who, AdminCommand::Job { job_id: id(), request }).await
    }
    let refused = define_as(&site, &site.world.supervisor_a, site.world.tenant_a, kind()).await;
    assert!(matches!(refused, Err(recall_commands::admin::AdminError::Forbidden(_))), "{refused:?}");
    let refused = define_as(&site, &site.world.admin_b, site.world.tenant_b, kind()).await;
    assert!(
        matches!(refused, Err(recall_commands::admin::AdminError::NotFound(_))),
        "another tenant's target: {refused:?}"
    );
    let bad_path = JobKind::Backup { target_id: target, path: "../../etc".into() };
    let refused = define_as(&site, &site.world.admin_a, site.world.tenant_a, bad_path).await;
    assert!(matches!(refused, Err(recall_commands::admin::AdminError::Invalid(_))), "{refused:?}");
    define_as(&site, &site.world.admin_a, site.world.tenant_a, kind()).await.expect("defined");
    let taken = define_as(&site, &site.world.admin_a, site.world.tenant_a, kind()).await;
    assert!(matches!(taken, Err(recall_commands::admin::AdminError::Taken(_))), "names are unique: {taken:?}");

    // A restore from a path that holds no archive fails with a reason, and writes nothing.
    let restore =
        define(&site, "Nothing there", JobKind::Restore { source_target_id: target, path: "empty".into() }).await;
    match run_now(&site, restore).await {
        RunOutcome::Failed { error, .. } => assert!(error.contains("no recall backup archive"), "{error}"),
        other => panic!("{other:?}"),
    }
    // Asked again with the same run id after it ran: nothing more happens, and the job can run again.
    let backup = define(&site, "Nightly backup", kind()).await;
    let run_id = id();
    let run_again = || AdminCommand::Job { job_id: backup, request: JobRequest::RunNow { run_id } };
    site.world.as_(&site.world.admin_a, run_again()).await.expect("queued");
    finished(site.runner.run_next().await.expect("queue").expect("due"));
    let retried = site.world.as_(&site.world.admin_a, run_again()).await.expect("a retry is no error");
    assert!(retried.receipts.is_empty(), "a retried request after the run is nothing new");
    assert!(site.runner.run_next().await.expect("queue").is_none(), "nothing queued by the retry");
    finished(run_now(&site, backup).await);
    // Another job's run id is refused, and that job's queued run is left alone.
    let request = JobRequest::RunNow { run_id };
    let refused = site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id: restore, request }).await;
    assert!(matches!(refused, Err(recall_commands::admin::AdminError::Invalid(_))), "{refused:?}");

    // One run at a time: a second request while one waits is refused, and nothing extra is queued; nor is
    // the job edited meanwhile.
    let request = JobRequest::RunNow { run_id: id() };
    site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id: restore, request }).await.expect("queued");
    let edit = JobRequest::Edit { name: "Elsewhere".into(), target_id: target, path: "other".into(), schedule: None };
    let refused = site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id: restore, request: edit }).await;
    assert!(matches!(refused, Err(recall_commands::admin::AdminError::Invalid(_))), "{refused:?}");
    let refused = site
        .world
        .as_(&site.world.admin_a, AdminCommand::Job { job_id: restore, request: JobRequest::RunNow { run_id: id() } })
        .await;
    assert!(matches!(refused, Err(recall_commands::admin::AdminError::Invalid(_))), "{refused:?}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job_id = $1 AND state = 'due'")
        .bind(restore)
        .fetch_one(site.world.log.pool())
        .await
        .expect("count");
    assert_eq!(queued, 1);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_scheduled_backup_runs_once_per_slot_however_many_runners_look(pool: PgPool) {
    let site = site(pool).await;
    record(&site, &audio(3_000, 6), None).await;
    let dir = tempfile::tempdir().expect("dir");
    let target = add_target(&site, "Backups", dir.path()).await;
    // Far enough ahead that defining the job (and the projections catching up) ends before it, even on a
    // busy machine: a slot that fell due before its job was defined does not count.
    let first_at = chrono::Utc::now() + chrono::Duration::seconds(8);
    let schedule = recall_domain::job::Schedule { first_at, every_hours: 24 };
    let job_id = id();
    let kind = JobKind::Backup { target_id: target, path: "nightly".into() };
    let request =
        JobRequest::Define { tenant_id: site.world.tenant_a, name: "Nightly".into(), kind, schedule: Some(schedule) };
    site.world.as_(&site.world.admin_a, AdminCommand::Job { job_id, request }).await.expect("defined");
    caught_up(&site).await;
    assert!(chrono::Utc::now() < first_at, "the test's set-up took longer than the schedule leaves it");
    assert_eq!(site.runner.schedule_due().await.expect("schedules"), 0, "not due yet");
    assert!(site.runner.run_next().await.expect("queue").is_none());
    let until_due = (first_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_due + Duration::from_millis(300)).await;
    // Two processes look at once: the slot is queued once.
    let other = JobRunner::new(site.world.admin.clone(), RunnerOptions::new("worker-2"));
    let (a, b) = tokio::join!(site.runner.schedule_due(), other.schedule_due());
    assert_eq!(a.expect("schedules") + b.expect("schedules"), 1);
    let (progress, _) = finished(site.runner.run_next().await.expect("queue").expect("the slot runs"));
    assert_eq!(progress.copied, 1);
    assert!(other.run_next().await.expect("queue").is_none(), "nothing else was queued");
    assert_eq!(site.runner.schedule_due().await.expect("schedules"), 0, "the slot ran; the next is tomorrow");
    caught_up(&site).await;
    let started = events_of(&site, "Job").await;
    let started = started.iter().find(|e| e.event.event_type == "JobRunStarted").expect("started");
    assert!(started.event.payload.contains("\"slot\":0"), "{}", started.event.payload);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_run_whose_store_fails_is_tried_again_later_and_then_finishes(pool: PgPool) {
    let site = site(pool).await;
    record(&site, &audio(8_000, 7), None).await;
    let vault = tempfile::tempdir().expect("dir");
    let target = add_target(&site, "Backups", vault.path()).await;
    let job_id = define(&site, "Nightly", JobKind::Backup { target_id: target, path: "blocked/nightly".into() }).await;
    // A file where the archive's directory belongs: every write to the archive fails.
    std::fs::write(vault.path().join("blocked"), b"in the way").expect("a file in the way");
    match run_now(&site, job_id).await {
        RunOutcome::Retrying { attempts, error, .. } => assert_eq!(attempts, 1, "{error}"),
        other => panic!("a store failure is tried again later: {other:?}"),
    }
    let (state, delay): (String, f64) =
        sqlx::query_as("SELECT state, extract(epoch FROM due_at - now())::float8 FROM job_runs WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(site.world.log.pool())
            .await
            .expect("the run's row");
    assert_eq!(state, "due");
    assert!(delay > 20.0, "put back with a delay, not at once: {delay}");
    assert!(site.runner.run_next().await.expect("queue").is_none(), "not due yet");

    std::fs::remove_file(vault.path().join("blocked")).expect("the way is clear");
    sqlx::query("UPDATE job_runs SET due_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(site.world.log.pool())
        .await
        .expect("due now");
    let (progress, _) = finished(site.runner.run_next().await.expect("queue").expect("due again"));
    assert_eq!(progress.copied, 1);
    let runs = events_of(&site, "Job").await;
    let types: Vec<&str> = runs.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["JobDefined", "JobRunRequested", "JobRunStarted", "JobRunResumed", "JobRunFinished"]);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_bulk_download_zip_restores_on_a_second_installation_and_plays_back(pool: PgPool) {
    let east = site(pool.clone()).await;
    let key_id = id();
    let generate = EncryptionKeyRequest::Generate { tenant_id: east.world.tenant_a, name: "Main key".into() };
    east.world.as_(&east.world.admin_a, AdminCommand::EncryptionKey { key_id, request: generate }).await.expect("key");
    let plain = [audio(120_000, 8), audio(4_000, 9)];
    let calls = [record(&east, &plain[0], Some(key_id)).await, record(&east, &plain[1], None).await];
    let body = serde_json::json!({ "calls": calls }).to_string();
    let request = Request::post("/recordings/bulk")
        .header(header::AUTHORIZATION, format!("Bearer {}", east.world.admin_a.token))
        .body(Body::from(body))
        .expect("request");
    let response = recall_graphql::router(east.state.clone()).oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let zip = response.into_body().collect().await.expect("the ZIP").to_bytes();

    let (second_pool, second_name) = second_database(&pool).await;
    let west = site(second_pool.clone()).await;
    let inbox = tempfile::tempdir().expect("where the ZIP is put");
    std::fs::create_dir_all(inbox.path().join("imports")).expect("directory");
    std::fs::write(inbox.path().join("imports/east.zip"), &zip).expect("the ZIP on the target");
    let source = add_target(&west, "Imports", inbox.path()).await;
    carry_key(&east, key_id, &west).await;
    let restore =
        define(&west, "East ZIP", JobKind::Restore { source_target_id: source, path: "imports/east.zip".into() }).await;
    let (progress, notes) = finished(run_now(&west, restore).await);
    assert_eq!((progress.total, progress.copied, progress.failed), (2, 2, 0), "{notes:?}");
    for (call, plain) in calls.iter().zip(&plain) {
        let (status, body) = play(&west, &west.world.admin_a, *call).await;
        assert_eq!((status, &body), (StatusCode::OK, plain), "call {call} plays back from the ZIP's copy");
    }
    let (again, _) = finished(run_now(&west, restore).await);
    assert_eq!((again.copied, again.skipped), (0, 2));
    let scratch = files_under(&std::env::temp_dir().join("recall-jobs"));
    let left: Vec<_> = scratch.iter().filter(|p| p.to_string_lossy().contains("restore-")).collect();
    assert!(left.is_empty(), "the fetched ZIP is removed after the run: {left:?}");

    // A damaged ZIP fails the run with a reason; nothing is restored from it.
    std::fs::write(inbox.path().join("imports/broken.zip"), &zip[..zip.len() / 2]).expect("a cut ZIP");
    let broken =
        define(&west, "Broken", JobKind::Restore { source_target_id: source, path: "imports/broken.zip".into() }).await;
    match run_now(&west, broken).await {
        RunOutcome::Failed { error, .. } => assert!(error.contains("ZIP"), "{error}"),
        other => panic!("{other:?}"),
    }

    west.world.shutdown.cancel();
    drop(west);
    second_pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {second_name} WITH (FORCE)")).execute(&pool).await;
}
