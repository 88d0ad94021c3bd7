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
