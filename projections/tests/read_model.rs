//! Projections against a real Postgres: the runner projects the administration of a small installation,
//! a rebuild from position 0 gives the same rows as the live projection, an event a projection cannot
//! apply stops it there (visibly, without skipping), and two runners never both lead a projection.

use std::sync::Arc;
use std::time::Duration;

use recall_commands::admin::{AdminCommand, UserRequest};
use recall_commands::testing::{wait_until_sequenced, World};
use recall_projections::{rebuild, ProjectionMetrics, Projector};
use sqlx::PgPool;

fn projector(world: &World) -> Arc<Projector> {
    Projector::new(world.log.clone(), recall_projections::all(), ProjectionMetrics::unregistered().expect("metrics"))
}

async fn caught_up(world: &World, projector: &Projector) {
    wait_until_sequenced(&world.log, Duration::from_secs(20)).await;
    let head = world.log.status().await.expect("status").head_position;
    assert!(
        projector.wait_for(head, Duration::from_secs(30)).await,
        "projections reach {head}: {:?}",
        projector.status()
    );
}

/// A digest of every table of a schema (rows in a fixed order), table by table.
async fn digest(pool: &PgPool, schema: &str) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name <> 'checkpoint' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut digests = Vec::new();
    for table in tables {
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {schema}.{table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("digest");
        digests.push((table, digest.unwrap_or_default()));
    }
    digests
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn the_directory_and_the_audit_trail_follow_the_log(pool: PgPool) {
    let world = World::build(pool.clone()).await;
    let projector = projector(&world);
    let tasks = projector.spawn(world.shutdown.clone());
    let extension = UserRequest::AddExtension { extension: "4242".into() };
    world
        .as_(&world.admin_a, AdminCommand::User { user_id: world.agent_a1.user_id, request: extension })
        .await
        .expect("ok");
    let refused = AdminCommand::User { user_id: world.agent_b.user_id, request: UserRequest::Deactivate };
    assert!(world.as_(&world.admin_a, refused).await.is_err());
    caught_up(&world, &projector).await;

    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_directory.users").fetch_one(&pool).await.expect("count");
    assert_eq!(users, 7);
    let extensions: Vec<String> =
        sqlx::query_scalar("SELECT unnest(extensions) FROM rm_directory.users WHERE user_id = $1")
            .bind(world.agent_a1.user_id)
            .fetch_all(&pool)
            .await
            .expect("extensions");
    assert_eq!(extensions, ["4242"]);
    let roles: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_directory.roles").fetch_one(&pool).await.expect("count");
    assert_eq!(roles, 4);
    let signed_in: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_directory.sessions").fetch_one(&pool).await.expect("count");
    assert_eq!(signed_in, 7);
    let (action, target, outcome, actor): (String, String, String, String) = sqlx::query_as(
        "SELECT action, target_type || '/' || target_id, outcome, actor FROM rm_audit.audit WHERE outcome = 'refused'",
    )
    .fetch_one(&pool)
    .await
    .expect("one refusal in the audit trail");
    assert_eq!(action, "User.Deactivate");
    assert_eq!(target, format!("User/{}", world.agent_b.user_id));
    assert_eq!((outcome.as_str(), actor), ("refused", format!("user:{}", world.admin_a.user_id)));
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_audit.audit").fetch_one(&pool).await.expect("count");
    let head = world.log.status().await.expect("status").head_position;
    assert_eq!(u64::try_from(audit).expect("count"), head, "no call data yet: every event is audited");
    world.shutdown.cancel();
    futures::future::join_all(tasks).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_rebuild_from_the_whole_log_gives_the_same_rows_as_the_live_projection(pool: PgPool) {
    let world = World::build(pool.clone()).await;
    let projector = projector(&world);
    let tasks = projector.spawn(world.shutdown.clone());
    caught_up(&world, &projector).await;
    for projection in recall_projections::all() {
        let schema = recall_projections::live_schema(projection.name());
        let before = digest(&pool, &schema).await;
        assert!(!before.is_empty());
        let progress = std::sync::Mutex::new(Vec::new());
        let position = rebuild(&pool, &world.log, projection.as_ref(), |p| progress.lock().expect("lock").push(p))
            .await
            .expect("rebuilt");
        assert_eq!(digest(&pool, &schema).await, before, "{} differs after its rebuild", projection.name());
        let progress = progress.into_inner().expect("progress");
        assert!(progress.last().is_some_and(|p| p.done && p.position == position), "{progress:?}");
    }
    // The live runner carries on on the swapped-in tables.
    let rename = UserRequest::SetFullName { full_name: Some("Agent One".into()) };
    world
        .as_(&world.admin_a, AdminCommand::User { user_id: world.agent_a1.user_id, request: rename })
        .await
        .expect("ok");
    caught_up(&world, &projector).await;
    let name: Option<String> = sqlx::query_scalar("SELECT full_name FROM rm_directory.users WHERE user_id = $1")
        .bind(world.agent_a1.user_id)
        .fetch_one(&pool)
        .await
        .expect("user");
    assert_eq!(name.as_deref(), Some("Agent One"));
    world.shutdown.cancel();
    futures::future::join_all(tasks).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_event_a_projection_cannot_apply_stops_it_there_without_skipping(pool: PgPool) {
    let world = World::build(pool.clone()).await;
    let projector = projector(&world);
    let tasks = projector.spawn(world.shutdown.clone());
    caught_up(&world, &projector).await;
    // A foreign writer appends a User event recall cannot read.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', $1, 1, 'UserCreated', '1', '{\"UserCreated\": {\"nonsense\": true}}', '{}')",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(&pool)
    .await
    .expect("foreign append");
    wait_until_sequenced(&world.log, Duration::from_secs(20)).await;
    let bad = world.log.status().await.expect("status").head_position;
    let later = UserRequest::SetFullName { full_name: Some("After".into()) };
    world
        .as_(&world.admin_a, AdminCommand::User { user_id: world.agent_a1.user_id, request: later })
        .await
        .expect("ok");
    wait_until_sequenced(&world.log, Duration::from_secs(20)).await;
    let head = world.log.status().await.expect("status").head_position;
    assert!(!projector.wait_for(head, Duration::from_secs(3)).await, "the directory cannot get past the bad event");
    let status = projector.status();
    let directory = status.iter().find(|s| s.name == "directory").expect("directory");
    assert_eq!(directory.position, bad - 1, "stopped right before it");
    let (at, error) = directory.failure.clone().expect("a visible failure");
    assert_eq!(at, bad);
    assert!(error.contains("UserCreated"), "{error}");
    let audit = status.iter().find(|s| s.name == "audit").expect("audit");
    assert!(audit.failure.is_none() && audit.position >= bad, "other projections carry on: {audit:?}");
    let name: Option<String> = sqlx::query_scalar("SELECT full_name FROM rm_directory.users WHERE user_id = $1")
        .bind(world.agent_a1.user_id)
        .fetch_one(&pool)
        .await
        .expect("user");
    assert_eq!(name, None, "nothing after the bad event was applied");
    world.shutdown.cancel();
    futures::future::join_all(tasks).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn two_runners_share_the_work_without_projecting_twice(pool: PgPool) {
    let world = World::build(pool.clone()).await;
    let first = projector(&world);
    let second = projector(&world);
    let mut tasks = first.spawn(world.shutdown.clone());
    tasks.extend(second.spawn(world.shutdown.clone()));
    caught_up(&world, &first).await;
    assert!(second.wait_for(world.log.status().await.expect("status").head_position, Duration::from_secs(10)).await);
    for (a, b) in first.status().iter().zip(second.status()) {
        assert!(a.leading != b.leading, "exactly one leads {}: {a:?} {b:?}", a.name);
    }
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_audit.audit").fetch_one(&pool).await.expect("count");
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM rm_audit.audit")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(audit, distinct);
    world.shutdown.cancel();
    futures::future::join_all(tasks).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_calls_lifecycle_reaches_its_row_and_a_rebuild_gives_the_same_row(pool: PgPool) {
    use recall_commands::CommandService;
    use recall_domain::call::{
        Call, CallCommand, CallDirection, CallEndReason, CallStart, Participant, RecordingEncryption, StoredRecording,
    };
    use recall_domain::recording_policy::AudioFormat;
    use recall_domain::CommandMeta;

    let world = World::build(pool.clone()).await;
    let projector = projector(&world);
    let tasks = projector.spawn(world.shutdown.clone());
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let call_id = uuid::Uuid::now_v7();
    let id = call_id.to_string();
    let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let meta = || CommandMeta::system("recorder:rec-1").in_tenant(world.tenant_a);
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: "f81d4fae@sbc.example".into(),
        direction: CallDirection::Inbound,
        participants: vec![Participant { name: None, aor: "sip:placeholder@sbc.example".into() }],
        extension: Some("7777".into()),
        user_id: None,
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at: t0,
    };
    let named = vec![
        Participant { name: Some("Agent One".into()), aor: "sip:2001@pbx.example".into() },
        Participant { name: Some("Carol Caller".into()), aor: "tel:+4930123456".into() },
    ];
    let sha = "0f".repeat(32);
    for command in [
        CallCommand::RecordCallStart { call_id, start },
        CallCommand::IdentifyParticipants {
            participants: named,
            extension: Some("2001".into()),
            user_id: Some(world.agent_a1.user_id),
        },
        CallCommand::PauseRecording { at: at(10) },
        CallCommand::ResumeRecording { at: at(14) },
        CallCommand::RecordDtmf { digit: '4', at: at(20), duration_ms: 100 },
        CallCommand::RecordDtmf { digit: '2', at: at(21), duration_ms: 100 },
        CallCommand::EndCall { reason: CallEndReason::Bye, at: at(65) },
        CallCommand::RecordStoredRecording {
            recording: StoredRecording {
                storage_target_id: None,
                location: format!("{}/{call_id}.mp3.enc", world.tenant_a),
                format: AudioFormat::Mp3Stereo32,
                size_bytes: 260_000,
                duration_ms: 65_000,
                sha256: sha.clone(),
                // Recovered after a crash: stored without its final chunk.
                encryption: Some(RecordingEncryption {
                    key_id: uuid::Uuid::from_u128(0x4e7),
                    format_version: 1,
                    unterminated_chunks: Some(3),
                    file_key_id: None,
                }),
            },
        },
        CallCommand::RecordFailure { lost: "0.2 s of the right channel".into(), reason: "RTP gap".into() },
    ] {
        calls.execute(&id, command, meta()).await.expect("recorded");
    }
    caught_up(&world, &projector).await;

    type Row = (
        Option<uuid::Uuid>,
        Option<String>,
        i64,
        String,
        Option<String>,
        Option<i64>,
        String,
        String,
        bool,
        Option<uuid::Uuid>,
        Option<i64>,
    );
    let row = || async {
        sqlx::query_as::<_, Row>(
            "SELECT user_id, extension, paused_ms, dtmf, end_reason, duration_ms, recording ->> 'sha256',
                    failures -> 0 ->> 'reason', search @@ plainto_tsquery('simple', 'Carol'), encryption_key_id,
                    encrypted_chunks
               FROM rm_calls.calls WHERE call_id = $1",
        )
        .bind(call_id)
        .fetch_one(&pool)
        .await
        .expect("row")
    };
    let live = row().await;
    assert_eq!(
        live,
        (
            Some(world.agent_a1.user_id),
            Some("2001".into()),
            4_000,
            "42".into(),
            Some("bye".into()),
            Some(65_000),
            sha,
            "RTP gap".into(),
            true,
            Some(uuid::Uuid::from_u128(0x4e7)),
            Some(3)
        )
    );
    let calls_projection = recall_projections::all().into_iter().find(|p| p.name() == "calls").expect("calls");
    let before = digest(&pool, "rm_calls").await;
    rebuild(&pool, &world.log, calls_projection.as_ref(), |_| {}).await.expect("rebuilt");
    assert_eq!(digest(&pool, "rm_calls").await, before);
    assert_eq!(row().await, live);
    world.shutdown.cancel();
    futures::future::join_all(tasks).await;
}
