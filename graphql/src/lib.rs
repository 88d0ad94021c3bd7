//! recall's HTTP edge: the GraphQL API at `/graphql` (async-graphql on axum) and Prometheus metrics at
//! `/metrics`. Reads come from projections, writes go to the administration service; it never writes to
//! the database itself and never sends internals (SQL, stack traces) to a client.

pub mod auth;
pub mod error;
pub mod explorer;
mod mutation;
pub mod page;
pub mod query;
pub mod recordings;
pub mod scope;
pub mod subscription;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Data, MergedObject, Object, Schema, SimpleObject};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use recall_commands::admin::Admin;
use recall_commands::EventLog;
use recall_projections::Projector;
use serde::Serialize;

pub use mutation::Mutation;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Whether the schema can be introspected (the explorer needs it).
    pub introspection: bool,
    /// Mark the session cookie `Secure` (when recall is served over HTTPS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// How long a mutation waits for the projections to show its effect.
    pub read_your_writes: Duration,
    /// Where recordings of tenants without a storage target are kept (played back from there).
    pub recordings_dir: recordings::RecordingsDir,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            introspection: true,
            secure_cookies: false,
            read_your_writes: Duration::from_secs(5),
            recordings_dir: recordings::RecordingsDir::default(),
        }
    }
}

/// What the API needs from the running process.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub log: Arc<EventLog>,
    pub admin: Arc<Admin>,
    pub projector: Arc<Projector>,
    pub registry: prometheus::Registry,
    pub version: &'static str,
    pub options: ApiOptions,
}

#[derive(MergedObject, Default, Debug)]
pub struct Query(
    HealthQuery,
    query::directory::DirectoryQuery,
    query::calls::CallsQuery,
    query::audit::AuditQuery,
    query::keys::KeysQuery,
    query::jobs::JobsQuery,
);

pub type RecallSchema = Schema<Query, Mutation, subscription::Subscription>;

/// Query depth, complexity and size limits: a hostile query is refused before it runs.
const MAX_DEPTH: usize = 16;
const MAX_COMPLEXITY: usize = 2_000;
const MAX_BODY_BYTES: usize = 1 << 20;

pub fn schema(state: ApiState) -> RecallSchema {
    let introspection = state.options.introspection;
    let builder = Schema::build(Query::default(), Mutation::default(), subscription::Subscription)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(16);
    if introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

#[derive(Clone)]
struct App {
    schema: RecallSchema,
    state: ApiState,
}

/// The HTTP routes: `POST /graphql`, the explorer (`GET /graphql`, `GET /graphql/assets/{file}`), `GET /metrics`,
/// and the recordings (`GET /recordings/{call}/audio`, `GET /recordings/{call}/download`).
pub fn router(state: ApiState) -> Router {
    let recordings = Router::new()
        .route("/recordings/{call}/audio", get(recordings::audio))
        .route("/recordings/{call}/download", get(recordings::download))
        .route("/recordings/bulk", axum::routing::post(recordings::bulk))
        .with_state(state.clone());
    let app = App { schema: schema(state.clone()), state };
    Router::new()
        .route("/graphql", post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
        .merge(recordings)
        .merge(explorer::routes())
}

async fn graphql(State(app): State<App>, request: Request) -> Response {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let token = auth::token_from(request.headers());
    let device = auth::device_from(request.headers());
    // The size limit holds whatever the body extractor does.
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let message = format!("the request body is over {MAX_BODY_BYTES} bytes");
            return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let gql = match GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(request, &()).await
    {
        Ok(gql) => gql.into_inner(),
        Err(rejection) => return rejection.into_response(),
    };
    let request_auth = auth::authenticate(&app.state.admin, token, source, device).await;
    let mut gql = gql;
    if let Ok(Some(viewer)) = &request_auth.viewer {
        let pool = app.state.admin.log().pool().clone();
        gql = gql.data(query::directory::GroupLoader::for_request(pool, viewer.clone()));
    }
    GraphQLResponse::from(app.schema.execute(gql.data(request_auth)).await).into_response()
}

/// Subscriptions over WebSocket. The connection is authenticated by the session cookie of the upgrade
/// request, or by `{"token": "…"}` (or `{"Authorization": "Bearer …"}`) in the `connection_init` payload.
async fn graphql_ws(
    State(app): State<App>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
    request: axum::http::request::Parts,
) -> Response {
    let source = request.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let cookie_token = auth::token_from(&request.headers);
    let schema = app.schema.clone();
    let admin = app.state.admin.clone();
    upgrade.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |stream| {
        GraphQLWebSocket::new(stream, schema, protocol)
            .on_connection_init(move |payload| async move {
                let from_payload =
                    payload.get("token").and_then(serde_json::Value::as_str).map(str::to_owned).or_else(|| {
                        payload
                            .get("Authorization")
                            .and_then(serde_json::Value::as_str)
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::to_owned)
                    });
                let token = from_payload.or(cookie_token);
                let request_auth = auth::authenticate(&admin, token.clone(), source, None).await;
                if let Err(e) = &request_auth.viewer {
                    return Err(async_graphql::Error::from(e.clone()));
                }
                let mut data = Data::default();
                data.insert(request_auth);
                data.insert(subscription::ConnectionToken(token));
                Ok(data)
            })
            .serve()
    })
}

async fn metrics(State(app): State<App>) -> Response {
    // Refresh the gauges that are read from the database rather than counted.
    if let Err(e) = app.state.log.status().await {
        tracing::warn!(error = %e, "could not read the log status for /metrics");
    }
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&app.state.registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A serde enum's stored name (`on_demand`, …).
pub(crate) fn text_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

#[derive(Debug, Default)]
pub struct HealthQuery;

/// A projection of the log and how far it is.
#[derive(Debug, SimpleObject)]
pub struct ProjectionHealth {
    pub name: String,
    /// The log position its tables reflect.
    pub position: u64,
    /// Whether this process runs it (another one may).
    pub leading: bool,
    /// The position of the event it is stopped at, if it cannot apply one.
    pub failed_at: Option<u64>,
    /// Why it cannot apply that event.
    pub error: Option<String>,
}

/// How this recall process and its event log are doing.
#[derive(Debug, SimpleObject)]
pub struct Health {
    /// True when the database answers and no projection is stopped.
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
    pub projections: Vec<ProjectionHealth>,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

#[Object]
impl HealthQuery {
    /// recall's version.
    async fn version(&self, ctx: &Context<'_>) -> &'static str {
        ctx.data_unchecked::<ApiState>().version
    }

    /// The state of this process, its event log and its projections.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let state = ctx.data_unchecked::<ApiState>();
        let config = state.log.config();
        let projections: Vec<ProjectionHealth> = state
            .projector
            .status()
            .into_iter()
            .map(|p| ProjectionHealth {
                name: p.name.to_owned(),
                position: p.position,
                leading: p.leading,
                failed_at: p.failure.as_ref().map(|(at, _)| *at),
                error: p.failure.map(|(_, e)| e),
            })
            .collect();
        let stopped =
            projections.iter().find(|p| p.failed_at.is_some()).map(|p| format!("projection {} is stopped", p.name));
        match state.log.status().await {
            Ok(status) => Health {
                ok: stopped.is_none(),
                site: config.site.clone(),
                node: config.node.clone(),
                log_head: status.head_position,
                log_head_hash: hex::encode(status.head_hash),
                unsequenced_events: status.unsequenced,
                projections,
                problem: stopped,
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
                    projections,
                    problem: Some("the database does not answer".to_owned()),
                }
            }
        }
    }
}
