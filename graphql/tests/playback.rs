//! Playback and download over HTTP against a real Postgres, a real local storage directory and real
//! encrypted files: Range reads at arbitrary offsets, who may listen (grant, revocation, password reset,
//! tenant, scope), tampered files, and the audit trail.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use recall_commands::admin::{AdminCommand, EncryptionKeyRequest, UserRequest};
use recall_commands::testing::{id, secret, Person, World};
use recall_commands::CommandService;
use recall_domain::call::{Call, CallCommand, CallDirection, CallEndReason, CallStart};
use recall_domain::CommandMeta;
use recall_graphql::recordings::RecordingsDir;
use recall_graphql::ApiState;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

struct Setup {
    world: World,
    state: ApiState,
    dir: tempfile::TempDir,
    key_id: Uuid,
}

async fn setup(pool: PgPool) -> Setup {
    let (world, mut state) = common::on_world(pool).await;
    let dir = tempfile::tempdir().expect("a recordings directory");
    state.options.recordings_dir = RecordingsDir(Some(dir.path().to_owned()));
    let key_id = id();
    let generate = EncryptionKeyRequest::Generate { tenant_id: world.tenant_a, name: "Main key".into() };
    world.as_(&world.admin_a, AdminCommand::EncryptionKey { key_id, request: generate }).await.expect("key");
    Setup { world, state, dir, key_id }
}

/// "Audio" that shows where every byte came from: byte i is a function of i.
fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

/// Stores `plain` (encrypted under the tenant's key when `key_id` is given) as agent A1's call, as the
/// recorder would: the file in the recordings directory, then start, end and stored recording in the log.
async fn record(setup: &Setup, plain: &[u8], key_id: Option<Uuid>) -> Uuid {
    let world = &setup.world;
    let call_id = id();
    let location = format!("{}/{call_id}.wav", world.tenant_a);
    let patch = &plain[..44.min(plain.len())];
    let key = key_id.map(|key_id| (key_id, patch));
    let recording = common::store_file(world.log.pool(), setup.dir.path(), &location, call_id, plain, key).await;
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: format!("{call_id}@sbc.example"),
        direction: CallDirection::Inbound,
        participants: vec![],
        extension: Some("2001".into()),
        user_id: Some(world.agent_a1.user_id),
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at: chrono::Utc::now(),
    };
    let meta = || CommandMeta::system("recorder:rec-1").in_tenant(world.tenant_a);
    let id = call_id.to_string();
    calls.execute(&id, CallCommand::RecordCallStart { call_id, start }, meta()).await.expect("start");
    let end = CallCommand::EndCall { reason: CallEndReason::Bye, at: chrono::Utc::now() };
    calls.execute(&id, end, meta()).await.expect("end");
    calls.execute(&id, CallCommand::RecordStoredRecording { recording }, meta()).await.expect("stored");
    caught_up(setup).await;
    call_id
}

async fn caught_up(setup: &Setup) {
    let limit = Duration::from_secs(30);
    recall_commands::testing::wait_until_sequenced(&setup.world.log, limit).await;
    let head = setup.world.log.status().await.expect("status").head_position;
    assert!(setup.state.projector.wait_for(head, limit).await);
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Result<Vec<u8>, String>,
}

async fn get(setup: &Setup, who: &Person, path: &str, range: Option<&str>) -> Answer {
    let app = recall_graphql::router(setup.state.clone());
    let mut request = Request::get(path).header(header::AUTHORIZATION, format!("Bearer {}", who.token));
    if let Some(range) = range {
        request = request.header(header::RANGE, range);
    }
    let response = app.oneshot(request.body(Body::empty()).expect("request")).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).map_err(|e| e.to_string());
    Answer { status: parts.status, headers: parts.headers, body }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_encrypted_recording_plays_back_whole_and_from_any_range(pool: PgPool) {
    let setup = setup(pool).await;
    let plain = audio(200_000);
    let call = record(&setup, &plain, Some(setup.key_id)).await;
    let path = format!("/recordings/{call}/audio");
    let whole = get(&setup, &setup.world.admin_a, &path, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.headers[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(whole.headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(whole.headers[header::CONTENT_LENGTH], "200000");
    // The sealer's patch is the first 44 bytes themselves, so the file reads back as it was written.
    assert_eq!(whole.body.expect("body"), plain);
    let mut state = 7u64;
    for _ in 0..25 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let start = (state >> 33) % 200_000;
        let end = (start + (state >> 20) % 150_000).min(199_999);
        let part = get(&setup, &setup.world.admin_a, &path, Some(&format!("bytes={start}-{end}"))).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers[header::CONTENT_RANGE], format!("bytes {start}-{end}/200000"));
        assert_eq!(part.body.expect("body"), plain[start as usize..=end as usize], "bytes={start}-{end}");
    }
    let tail = get(&setup, &setup.world.admin_a, &path, Some("bytes=-1000")).await;
    assert_eq!(tail.body.expect("body"), plain[199_000..]);
    let beyond = get(&setup, &setup.world.admin_a, &path, Some("bytes=200000-")).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers[header::CONTENT_RANGE], "bytes */200000");

    let download = get(&setup, &setup.world.admin_a, &format!("/recordings/{call}/download"), None).await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download.headers[header::CONTENT_DISPOSITION].to_str().expect("text").starts_with("attachment;"));
    assert_eq!(download.body.expect("body"), plain);

    // Many range requests of one session are one playback in the audit trail; the download is another.
    caught_up(&setup).await;
    let accessed: Vec<String> = common_events(&setup)
        .await
        .into_iter()
        .filter(|(t, _)| t == "RecordingAccessed")
        .map(|(_, payload)| payload["RecordingAccessed"]["access"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(accessed, ["playback", "download"]);
}

async fn common_events(setup: &Setup) -> Vec<(String, serde_json::Value)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = setup.world.log.read_batch(after, 1000).await.expect("read");
        if batch.is_empty() {
            return all;
        }
        after = batch.last().map(|e| e.position).unwrap_or(after);
        all.extend(batch.into_iter().map(|e| (e.event.event_type.clone(), e.event.payload_json().expect("json"))));
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn only_holders_within_reach_can_listen(pool: PgPool) {
    let setup = setup(pool).await;
    let w = &setup.world;
    let call = record(&setup, &audio(10_000), Some(setup.key_id)).await;
    let path = format!("/recordings/{call}/audio");
    // The supervisor sees the call (their group) but holds no key.
    assert_eq!(get(&setup, &w.supervisor_a, &path, None).await.status, StatusCode::FORBIDDEN);
    // Granted, they listen; revoked, they do not.
    let grant = EncryptionKeyRequest::Grant { user_id: w.supervisor_a.user_id };
    w.as_(&w.admin_a, AdminCommand::EncryptionKey { key_id: setup.key_id, request: grant }).await.expect("granted");
    assert_eq!(get(&setup, &w.supervisor_a, &path, None).await.status, StatusCode::OK);
    let revoke = EncryptionKeyRequest::Revoke { user_id: w.supervisor_a.user_id };
    w.as_(&w.admin_a, AdminCommand::EncryptionKey { key_id: setup.key_id, request: revoke }).await.expect("revoked");
    assert_eq!(get(&setup, &w.supervisor_a, &path, None).await.status, StatusCode::FORBIDDEN);
    // Granted to the agent (whose call it is), then their password is reset by an administrator.
    let grant = EncryptionKeyRequest::Grant { user_id: w.agent_a1.user_id };
    w.as_(&w.admin_a, AdminCommand::EncryptionKey { key_id: setup.key_id, request: grant }).await.expect("granted");
    assert_eq!(get(&setup, &w.agent_a1, &path, None).await.status, StatusCode::OK);
    let reset = UserRequest::SetPassword { password: secret("a fresh password for a1"), must_change: false };
    w.as_(&w.admin_a, AdminCommand::User { user_id: w.agent_a1.user_id, request: reset }).await.expect("reset");
    assert_ne!(get(&setup, &w.agent_a1, &path, None).await.status, StatusCode::OK);
    // Another agent of the tenant does not reach the call; another tenant's administrator does not either.
    assert_eq!(get(&setup, &w.agent_a2, &path, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&setup, &w.admin_b, &path, None).await.status, StatusCode::NOT_FOUND);
    // A root administrator reaches every call but holds no key.
    assert_eq!(get(&setup, &w.root, &path, None).await.status, StatusCode::FORBIDDEN);
    // Without a session nothing plays.
    let anonymous = recall_graphql::router(setup.state.clone())
        .oneshot(Request::get(&path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_plain_recording_plays_and_a_tampered_one_gives_no_audio(pool: PgPool) {
    let setup = setup(pool).await;
    let w = &setup.world;
    let plain = audio(70_000);
    let unencrypted = record(&setup, &plain, None).await;
    let part = get(&setup, &w.admin_a, &format!("/recordings/{unencrypted}/audio"), Some("bytes=100-199")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body.expect("body"), plain[100..200]);

    // Three full chunks and a final one.
    let plain = audio(200_000);
    let call = record(&setup, &plain, Some(setup.key_id)).await;
    let file = setup.dir.path().join(format!("{}/{call}.wav", w.tenant_a));
    let mut stored = std::fs::read(&file).expect("stored");
    // A changed byte in the final chunk: refused before any audio is sent.
    let at = stored.len() - 10;
    stored[at] ^= 1;
    std::fs::write(&file, &stored).expect("write");
    let answer = get(&setup, &w.admin_a, &format!("/recordings/{call}/audio"), None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!answer.body.expect("body").windows(64).any(|w| plain.windows(64).take(1000).any(|p| p == w)));
    stored[at] ^= 1;
    // A changed byte in the second chunk: the first chunk plays (it authenticates on its own), the response
    // stops at the second.
    let second_chunk = recall_crypto::file::FileHeader::parse(&stored).expect("header").len() + 65_536 + 16;
    stored[second_chunk + 100] ^= 1;
    std::fs::write(&file, &stored).expect("write");
    let answer = get(&setup, &w.admin_a, &format!("/recordings/{call}/audio"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_err(), "the body ends in an error, not in made-up audio");
    let first = get(&setup, &w.admin_a, &format!("/recordings/{call}/audio"), Some("bytes=0-65535")).await;
    assert_eq!(first.body.expect("first chunk"), plain[..65_536]);
    // Missing from storage.
    std::fs::remove_file(&file).expect("remove");
    assert_eq!(get(&setup, &w.admin_a, &format!("/recordings/{call}/audio"), None).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_bulk_download_keeps_files_encrypted_and_they_open_with_the_exported_key(pool: PgPool) {
    let setup = setup(pool).await;
    let w = &setup.world;
    let first = audio(150_000);
    let second = audio(5_000);
    let encrypted =
        [record(&setup, &first, Some(setup.key_id)).await, record(&setup, &second, Some(setup.key_id)).await];
    let plain = record(&setup, &audio(3_000), None).await;
    let unknown = id();
    let body = serde_json::json!({ "calls": [encrypted[0], unknown, encrypted[1], plain, encrypted[0]] }).to_string();
    let request = Request::post("/recordings/bulk")
        .header(header::AUTHORIZATION, format!("Bearer {}", w.admin_a.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let response = recall_graphql::router(setup.state.clone()).oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/zip");
    let zip_bytes = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).expect("a ZIP archive");
    let mut read = |name: &str| {
        let mut file = archive.by_name(name).unwrap_or_else(|_| panic!("{name} is in the archive"));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).expect("read");
        bytes
    };
    let manifest: serde_json::Value = serde_json::from_slice(&read("manifest.json")).expect("manifest");
    let recordings = manifest["recordings"].as_array().expect("recordings");
    assert_eq!(recordings.len(), 3, "{manifest}");
    assert_eq!(manifest["skipped"].as_array().expect("skipped").len(), 1, "{manifest}");
    assert_eq!(manifest["skipped"][0]["call_id"], unknown.to_string());

    // The tenant key as an administrator would export it, imported where the archive is restored.
    let passphrase = "passphrase for the archive";
    let export = EncryptionKeyRequest::Export { passphrase: Some(secret(passphrase)) };
    let pem =
        w.as_(&w.admin_a, AdminCommand::EncryptionKey { key_id: setup.key_id, request: export }).await.expect("export");
    let pem = secrecy::ExposeSecret::expose_secret(&pem.issued.expect("pem")).to_owned();
    let imported =
        recall_crypto::KeyImport::from_pem(&pem, Some(passphrase)).expect("import").private.expect("private");
    for (call, plain) in [(encrypted[0], &first), (encrypted[1], &second)] {
        let entry = recordings.iter().find(|r| r["call_id"] == call.to_string()).expect("listed");
        assert_eq!(entry["encryption"]["key_id"], setup.key_id.to_string());
        assert_eq!(entry["encryption"]["fingerprint"].as_str().map(str::len), Some(64));
        let name = entry["file"].as_str().expect("file name");
        assert_eq!(name, format!("recordings/{call}/{call}.wav"), "a backup archive's layout");
        let described: serde_json::Value = serde_json::from_slice(&read(&format!("calls/{call}.json"))).expect("json");
        assert_eq!(described["file"], name);
        assert_eq!(described["events"].as_array().map(Vec::len), Some(3), "start, end, stored: {described}");
        let stored = read(name);
        assert_eq!(hex::encode(Sha256::digest(&stored)), entry["recording"]["sha256"], "the file as it was stored");
        assert!(recall_crypto::file::FileHeader::is_encrypted(&stored), "still encrypted in the archive");
        let decrypted = recall_crypto::file::decrypt_in_memory(&stored, &imported, None).expect("opens with the key");
        assert_eq!(*decrypted, **plain);
    }
    let entry = recordings.iter().find(|r| r["call_id"] == plain.to_string()).expect("listed");
    assert!(entry["encryption"].is_null());
    assert_eq!(read(entry["file"].as_str().expect("file")), audio(3_000));

    // Outside the viewer's scope nothing is added; without the download permission nothing is served.
    let request = |who: &Person| {
        Request::post("/recordings/bulk")
            .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
            .body(Body::from(serde_json::json!({ "calls": [encrypted[0]] }).to_string()))
            .expect("request")
    };
    let other = recall_graphql::router(setup.state.clone()).oneshot(request(&w.admin_b)).await.expect("response");
    let bytes = other.into_body().collect().await.expect("body").to_bytes().to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a ZIP archive");
    let names: Vec<String> = archive.file_names().map(|n| n.expect("a name").into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with("recordings/") && !n.starts_with("calls/")), "{names:?}");
    let manifest: serde_json::Value =
        serde_json::from_reader(archive.by_name("manifest.json").expect("manifest")).expect("json");
    assert_eq!(manifest["recordings"].as_array().map(Vec::len), Some(0));
    let agent = recall_graphql::router(setup.state.clone()).oneshot(request(&w.agent_a1)).await.expect("response");
    assert_eq!(agent.status(), StatusCode::FORBIDDEN, "agents may play back but not download");
}
