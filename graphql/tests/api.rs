//! The HTTP edge against a real Postgres: version and health over POST /graphql, metrics, hostile queries.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use recall_commands::{CommandService, EventLog};
use recall_domain::site::{Site, SiteCommand};
use recall_domain::CommandMeta;
use recall_graphql::router;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

async fn app(pool: PgPool) -> (axum::Router, std::sync::Arc<EventLog>, CancellationToken) {
    let (state, shutdown) = common::state(pool, "api-test", "9.9.9").await;
    let log = state.log.clone();
    (router(state), log, shutdown)
}

async fn graphql(app: &axum::Router, body: String) -> (StatusCode, Value) {
    let request =
        Request::post("/graphql").header("content-type", "application/json").body(Body::from(body)).expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn health_reports_the_log_head(pool: PgPool) {
    let (app, log, shutdown) = app(pool).await;
    let (status, body) =
        graphql(&app, json!({"query": "{ version health { ok site node logHead } }"}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["version"], "9.9.9");
    assert_eq!(body["data"]["health"], json!({"ok": true, "site": "api-test", "node": "node-a", "logHead": 0}));

    let sites = CommandService::<Site>::new(log.clone(), ());
    let start = SiteCommand::RecordNodeStart { node: "node-a".into(), version: "9.9.9".into() };
    let receipt = sites.execute("api-test", start, CommandMeta::system("test")).await.expect("append");
    log.wait_for_position(receipt.events[0].event_id, Duration::from_secs(10)).await.expect("wait");

    let (_, body) =
        graphql(&app, json!({"query": "{ health { logHead logHeadHash unsequencedEvents } }"}).to_string()).await;
    assert_eq!(body["data"]["health"]["logHead"], 1);
    assert_eq!(body["data"]["health"]["unsequencedEvents"], 0);
    assert_eq!(body["data"]["health"]["logHeadHash"].as_str().map(str::len), Some(64));
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn metrics_are_served_in_prometheus_text(pool: PgPool) {
    let (app, _log, shutdown) = app(pool).await;
    let response = app.oneshot(Request::get("/metrics").body(Body::empty()).expect("request")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let text =
        String::from_utf8(response.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8");
    assert!(text.contains("recall_log_head_position 0"), "{text}");
    assert!(text.contains("recall_log_unsequenced_events 0"), "{text}");
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn malformed_and_hostile_queries_get_clear_errors(pool: PgPool) {
    let (app, _log, shutdown) = app(pool).await;
    let (status, _) = graphql(&app, "{not json".to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, body) = graphql(&app, json!({"query": "{ nope }"}).to_string()).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nope"), "{body}");

    // Deep nesting through the introspection types is refused by the depth limit, not executed.
    let deep = format!(
        "{{ __schema {{ types {{ {} name {} }} }} }}",
        "fields { type { ofType { ".repeat(8),
        "} } } ".repeat(8)
    );
    let (_, body) = graphql(&app, json!({"query": deep}).to_string()).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.to_lowercase().contains("nested too deep"), "{body}");

    // A query wide enough to be expensive is refused by the complexity limit.
    let wide: String = (0..3000).map(|i| format!("a{i}: version ")).collect();
    let (_, body) = graphql(&app, json!({"query": format!("{{ {wide} }}")}).to_string()).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.to_lowercase().contains("complex"), "{body}");

    // A body over the size limit is refused before it is parsed.
    let huge = json!({"query": format!("{{ version }} #{}", "x".repeat(2 << 20))}).to_string();
    let (status, _) = graphql(&app, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Without a session, data is refused with a code the client can act on, and nothing internal is said.
    let (_, body) = graphql(&app, json!({"query": "{ users { edges { node { id } } } }"}).to_string()).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    shutdown.cancel();
}
