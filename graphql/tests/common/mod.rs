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
