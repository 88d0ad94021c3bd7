//! recall's HTTP edge: the GraphQL API at `/graphql` (async-graphql on axum) and Prometheus metrics at
//! `/metrics`. Reads come from the log and, later, projections; it never writes to the database itself
//! and never sends internals (SQL, stack traces) to a client.

use std::sync::Arc;

use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use async_graphql_axum::GraphQL;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post_service};
use axum::Router;
use recall_commands::EventLog;

pub mod explorer;

/// What the API needs from the running process.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub log: Arc<EventLog>,
    pub registry: prometheus::Registry,
    pub version: &'static str,
}

pub type RecallSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Query depth and complexity limits: a hostile query is refused before it runs.
const MAX_DEPTH: usize = 16;
const MAX_COMPLEXITY: usize = 2_000;

pub fn schema(state: ApiState) -> RecallSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The HTTP routes: `POST /graphql`, the explorer (`GET /graphql`, `GET /graphql/assets/{file}`), `GET /metrics`.
pub fn router(state: ApiState) -> Router {
    let registry = state.registry.clone();
    let log = state.log.clone();
    Router::new().route("/graphql", post_service(GraphQL::new(schema(state)))).merge(explorer::routes()).route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            let log = log.clone();
            async move { metrics(&registry, &log).await }
        }),
    )
}

async fn metrics(registry: &prometheus::Registry, log: &EventLog) -> impl IntoResponse {
    // Refresh the gauges that are read from the database rather than counted.
    if let Err(e) = log.status().await {
        tracing::warn!(error = %e, "could not read the log status for /metrics");
    }
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Debug)]
pub struct Query;

/// How this recall process and its event log are doing.
#[derive(Debug, SimpleObject)]
pub struct Health {
    /// True when the database answers.
    pub ok: bool,
    /// The site this process belongs to.
    pub site: String,
    /// This process's node name.
    pub node: String,
    /// Highest sequenced position of the site's log (0 when empty).
    pub log_head: u64,
    /// SHA-256 chain hash at the head, hex.
    pub log_head_hash: String,
    /// Events appended but not sequenced yet (the head lag).
    pub unsequenced_events: u64,
    /// Why the database did not answer, when it did not.
    pub problem: Option<String>,
}

#[Object]
impl Query {
    /// recall's version.
    async fn version(&self, ctx: &Context<'_>) -> &'static str {
        ctx.data_unchecked::<ApiState>().version
    }

    /// The state of this process and its event log.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let state = ctx.data_unchecked::<ApiState>();
        let config = state.log.config();
        match state.log.status().await {
            Ok(status) => Health {
                ok: true,
                site: config.site.clone(),
                node: config.node.clone(),
                log_head: status.head_position,
                log_head_hash: hex::encode(status.head_hash),
                unsequenced_events: status.unsequenced,
                problem: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "health check could not read the log");
                Health {
                    ok: false,
                    site: config.site.clone(),
                    node: config.node.clone(),
                    log_head: state.log.head(),
                    log_head_hash: String::new(),
                    unsequenced_events: 0,
                    problem: Some("the database does not answer".to_owned()),
                }
            }
        }
    }
}
