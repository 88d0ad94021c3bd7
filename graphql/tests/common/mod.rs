//! What the API tests share: the API's state on a test database (log with its sequencer, the
//! administration service, the projections running).
#![allow(dead_code)]

use std::sync::Arc;

use recall_commands::testing::{admin_on, Inbox};
use recall_commands::{EventLog, LogConfig, LogMetrics};
use recall_graphql::ApiState;
use recall_projections::{ProjectionMetrics, Projector};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The API's state on `pool`, as site `site`, answering `version`; cancel the token to stop its work.
pub async fn state(pool: PgPool, site: &str, version: &'static str) -> (ApiState, CancellationToken) {
    let registry = prometheus::Registry::new();
    let metrics = LogMetrics::register(&registry).expect("metrics");
    let log = EventLog::open(pool, LogConfig::new(site, "node-a"), metrics).await.expect("log");
    let shutdown = CancellationToken::new();
    log.spawn(true, shutdown.clone());
    let admin = admin_on(log.clone(), Arc::new(Inbox::default())).await;
    let projector = Projector::new(
        log.clone(),
        recall_projections::all(),
        ProjectionMetrics::register(&registry).expect("metrics"),
    );
    projector.spawn(shutdown.clone());
    let state = ApiState { log, admin, projector, registry, version, options: Default::default() };
    (state, shutdown)
}

/// The small installation of `recall_commands::testing` behind the API's state, with the projections
/// running on its log and caught up with it (so the first read sees the installation).
pub async fn on_world(pool: PgPool) -> (recall_commands::testing::World, ApiState) {
    let world = recall_commands::testing::World::build(pool).await;
    let registry = prometheus::Registry::new();
    let projector = Projector::new(
        world.log.clone(),
        recall_projections::all(),
        ProjectionMetrics::register(&registry).expect("metrics"),
    );
    projector.spawn(world.shutdown.clone());
    let limit = std::time::Duration::from_secs(30);
    recall_commands::testing::wait_until_sequenced(&world.log, limit).await;
    let head = world.log.status().await.expect("log status").head_position;
    assert!(projector.wait_for(head, limit).await, "the projections catch up with the installation");
    let state = ApiState {
        log: world.log.clone(),
        admin: world.admin.clone(),
        projector,
        registry,
        version: "test",
        options: Default::default(),
    };
    (world, state)
}

/// Writes `plain` as a recording file of `call_id` under `dir` at `location`, as the recorder would store it:
/// sealed under the tenant key `key_id` (its public part from the key store, with `patch` as the final
/// chunk's patch) or as it is. Returns the stored-recording facts the log gets.
pub async fn store_file(
    pool: &PgPool,
    dir: &std::path::Path,
    location: &str,
    call_id: uuid::Uuid,
    plain: &[u8],
    key: Option<(uuid::Uuid, &[u8])>,
) -> recall_domain::call::StoredRecording {
    use sha2::Digest;
    let (stored, encryption) = match key {
        Some((key_id, patch)) => {
            let (_, public) = recall_commands::key_store::KeyStore::new(pool.clone())
                .tenant_key(key_id)
                .await
                .expect("the key store answers")
                .expect("the key is there");
            let (mut sealer, mut stored) =
                recall_crypto::file::FileSealer::new(&public, key_id, call_id).expect("a sealer");
            sealer.push(plain, &mut stored).expect("push");
            sealer.finish(patch, &mut stored).expect("finish");
            (stored, serde_json::json!({ "key_id": key_id, "format_version": 1 }))
        }
        None => (plain.to_vec(), serde_json::Value::Null),
    };
    let path = dir.join(location);
    std::fs::create_dir_all(path.parent().expect("a parent directory")).expect("directory");
    std::fs::write(&path, &stored).expect("file");
    let mut recording = serde_json::json!({
        "storage_target_id": null, "location": location, "format": "wav_stereo", "size_bytes": stored.len(),
        "duration_ms": 1000, "sha256": hex::encode(sha2::Sha256::digest(&stored)),
    });
    if !encryption.is_null() {
        recording["encryption"] = encryption;
    }
    serde_json::from_value(recording).expect("a stored recording")
}
