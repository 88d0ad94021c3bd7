//! Playback over HTTP, end to end in one process: the real router on 127.0.0.1, a real Postgres (the
//! database `recall_bench_playback`, made afresh), files in a local recordings directory, a signed-in
//! administrator holding the tenant key. For a one-hour recording (MP3 stereo 32 kbit/s, 14.4 MB; WAV
//! 16-bit stereo 8 kHz, 115 MB), encrypted and plain: the time to the first byte of the body (the first
//! request of a session, which opens the tenant key from its grant, and later ones), the throughput of the
//! whole file, and the latency of 64 KiB range requests at random offsets (a player seeking).
//!
//! Run: `cargo bench -p recall-graphql --bench playback [-- --requests 50]` (DATABASE_URL names the server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use recall_commands::admin::{AdminCommand, EncryptionKeyRequest};
use recall_commands::key_store::KeyStore;
use recall_commands::testing::{id, World};
use recall_commands::CommandService;
use recall_crypto::file::FileSealer;
use recall_domain::call::{Call, CallCommand, CallDirection, CallEndReason, CallStart, StoredRecording};
use recall_domain::CommandMeta;
use recall_graphql::recordings::RecordingsDir;
use recall_graphql::ApiState;
use recall_projections::{ProjectionMetrics, Projector};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

const DATABASE: &str = "recall_bench_playback";

fn requests() -> usize {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--requests" {
            return args.next().and_then(|v| v.parse().ok()).unwrap_or(50);
        }
    }
    50
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let requests = requests();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let mut admin = PgConnection::connect_with(&server).await.expect("connect to DATABASE_URL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await.expect("create");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(server.clone().database(DATABASE).disable_statement_logging())
        .await
        .expect("pool");
    recall_migrations::MIGRATOR.run(&pool).await.expect("migrations");
    let world = World::build(pool.clone()).await;
    let registry = prometheus::Registry::new();
    let projector = Projector::new(
        world.log.clone(),
        recall_projections::all(),
        ProjectionMetrics::register(&registry).expect("metrics"),
    );
    projector.spawn(world.shutdown.clone());
    let dir = tempfile::tempdir().expect("recordings directory");
    let key_id = id();
    let generate = EncryptionKeyRequest::Generate { tenant_id: world.tenant_a, name: "Bench".into() };
    world.as_(&world.admin_a, AdminCommand::EncryptionKey { key_id, request: generate }).await.expect("key");
    let (_, public) = KeyStore::new(pool.clone()).tenant_key(key_id).await.expect("db").expect("key");

    let mut files = Vec::new();
    for (name, format, bytes_per_second) in
        [("MP3 32 kbit/s", "mp3_stereo32", 4_000usize), ("WAV 8 kHz stereo", "wav_stereo", 32_000)]
    {
        let plain: Vec<u8> = (0..bytes_per_second * 3600).map(|i| (i * 31 % 251) as u8).collect();
        for encrypted in [false, true] {
            let call_id = id();
            let stored = if encrypted {
                let (mut sealer, mut stored) = FileSealer::new(&public, key_id, call_id).expect("sealer");
                for second in plain.chunks(bytes_per_second) {
                    sealer.push(second, &mut stored).expect("push");
                }
                sealer.finish(&plain[..44], &mut stored).expect("finish");
                stored
            } else {
                plain.clone()
            };
            let location = format!("{}/{call_id}", world.tenant_a);
            std::fs::create_dir_all(dir.path().join(world.tenant_a.to_string())).expect("dir");
            std::fs::write(dir.path().join(&location), &stored).expect("file");
            let mut recording = serde_json::json!({
                "storage_target_id": null, "location": location, "format": format, "size_bytes": stored.len(),
                "duration_ms": 3_600_000, "sha256": "00".repeat(32),
            });
            if encrypted {
                recording["encryption"] = serde_json::json!({ "key_id": key_id, "format_version": 1 });
            }
            record(&world, call_id, serde_json::from_value(recording).expect("recording")).await;
            files.push((name, encrypted, call_id, plain.len()));
        }
    }
    recall_commands::testing::wait_until_sequenced(&world.log, Duration::from_secs(60)).await;
    let head = world.log.status().await.expect("status").head_position;
    assert!(projector.wait_for(head, Duration::from_secs(60)).await);

    let options =
        recall_graphql::ApiOptions { recordings_dir: RecordingsDir(Some(dir.path().to_owned())), ..Default::default() };
    let state =
        ApiState { log: world.log.clone(), admin: world.admin.clone(), projector, registry, version: "bench", options };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let address = listener.local_addr().expect("address");
    let app = recall_graphql::router(state);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.expect("serve")
    });
    let http = reqwest::Client::new();
    let token = Arc::new(world.admin_a.token.clone());

    println!("## Playback of a one-hour recording over HTTP ({requests} requests each; one process, loopback)\n");
    println!("| file | first byte, session's first request | first byte p50 | first byte p99 | whole file | 64 KiB seek p50 | seek p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, encrypted, call_id, len) in files {
        let path = format!("http://{address}/recordings/{call_id}/audio");
        // A fresh session: its first request opens the tenant key from the grant.
        let fresh = recall_commands::testing::sign_in(&world.admin, world.admin_a.user_id, "admin-a").await;
        let first = first_byte(&http, &path, &fresh.token, None).await;
        let mut firsts = Vec::new();
        for _ in 0..requests {
            firsts.push(first_byte(&http, &path, &token, None).await);
        }
        let mut whole = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let body =
                http.get(&path).bearer_auth(token.as_str()).send().await.expect("get").bytes().await.expect("body");
            assert_eq!(body.len(), len);
            whole.push(started.elapsed());
        }
        let whole = percentile(whole, 0.5);
        let mut seeks = Vec::new();
        let mut state = 99u64;
        for _ in 0..requests * 4 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let start = (state >> 16) % (len as u64 - 65_536);
            let range = format!("bytes={start}-{}", start + 65_535);
            let started = Instant::now();
            let body = http
                .get(&path)
                .bearer_auth(token.as_str())
                .header("Range", range)
                .send()
                .await
                .expect("get")
                .bytes()
                .await
                .expect("body");
            assert_eq!(body.len(), 65_536);
            seeks.push(started.elapsed());
        }
        println!(
            "| {name}, {} | {} | {} | {} | {:.0} MB/s ({}) | {} | {} |",
            if encrypted { "encrypted" } else { "plain" },
            ms(first),
            ms(percentile(firsts.clone(), 0.5)),
            ms(percentile(firsts, 0.99)),
            len as f64 / 1e6 / whole.as_secs_f64(),
            ms(whole),
            ms(percentile(seeks.clone(), 0.5)),
            ms(percentile(seeks, 0.99)),
        );
    }
    world.shutdown.cancel();
}

async fn first_byte(http: &reqwest::Client, path: &str, token: &str, range: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut request = http.get(path).bearer_auth(token);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.expect("get");
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    let _ = body.next().await.expect("a first chunk").expect("bytes");
    let elapsed = started.elapsed();
    drop(body);
    elapsed
}

async fn record(world: &World, call_id: Uuid, recording: StoredRecording) {
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: format!("{call_id}@bench"),
        direction: CallDirection::Inbound,
        participants: vec![],
        extension: None,
        user_id: Some(world.agent_a1.user_id),
        site: "test".into(),
        recorder_node: "bench".into(),
        started_at: chrono::Utc::now(),
    };
    let meta = || CommandMeta::system("recorder:bench").in_tenant(world.tenant_a);
    let id = call_id.to_string();
    calls.execute(&id, CallCommand::RecordCallStart { call_id, start }, meta()).await.expect("start");
    let end = CallCommand::EndCall { reason: CallEndReason::Bye, at: chrono::Utc::now() };
    calls.execute(&id, end, meta()).await.expect("end");
    calls.execute(&id, CallCommand::RecordStoredRecording { recording }, meta()).await.expect("stored");
}
