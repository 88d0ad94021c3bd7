//! Queries and subscriptions through GraphQL against a real Postgres, for each kind of viewer of a small
//! installation: no query returns a row outside the caller's scope (tenants, managed groups, own calls),
//! and live subscriptions deliver only what the same viewer could query.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use recall_commands::admin::{AdminCommand, UserRequest};
use recall_commands::testing::{wait_until_sequenced, Person, World};
use recall_commands::CommandService;
use recall_domain::call::{Call, CallCommand, CallDirection, CallStart, Participant};
use recall_domain::CommandMeta;
use recall_graphql::{router, ApiState};
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

struct Api {
    world: World,
    state: ApiState,
    app: axum::Router,
}

async fn api(pool: PgPool) -> Api {
    let (world, state) = common::on_world(pool).await;
    let app = router(state.clone());
    Api { world, state, app }
}

impl Api {
    async fn caught_up(&self) {
        wait_until_sequenced(&self.world.log, Duration::from_secs(20)).await;
        let head = self.world.log.status().await.expect("status").head_position;
        assert!(self.state.projector.wait_for(head, Duration::from_secs(30)).await, "projections caught up");
    }

    async fn query(&self, who: &Person, query: &str) -> Value {
        self.query_with(&who.token, query).await
    }

    async fn query_with(&self, token: &str, query: &str) -> Value {
        let request = Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(json!({ "query": query }).to_string()))
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("response");
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// The ids of a connection's nodes at `path` (e.g. `users`).
    async fn ids(&self, who: &Person, path: &str, query: &str) -> BTreeSet<String> {
        let body = self.query(who, query).await;
        assert!(body["errors"].is_null(), "{} as {}: {body}", path, who.username);
        body["data"][path]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|edge| edge["node"]["id"].as_str().expect("id").to_owned())
            .collect()
    }

    async fn error_code(&self, who: &Person, query: &str) -> String {
        let body = self.query(who, query).await;
        body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn ids<'a>(people: impl IntoIterator<Item = &'a Person>) -> BTreeSet<String> {
    people.into_iter().map(|p| p.user_id.to_string()).collect()
}

async fn record_call(world: &World, tenant_id: Uuid, user_id: Option<Uuid>, who: &str) -> Uuid {
    record_call_at(world, tenant_id, user_id, who, chrono::Utc::now()).await
}

async fn record_call_at(
    world: &World,
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    who: &str,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Uuid {
    let call_id = Uuid::now_v7();
    let start = CallStart {
        tenant_id,
        sip_call_id: format!("{call_id}@sbc"),
        direction: CallDirection::Inbound,
        participants: vec![Participant { name: Some(who.to_owned()), aor: format!("sip:{who}@carrier.example") }],
        extension: Some("9000".into()),
        user_id,
        site: "test".into(),
        recorder_node: "rec".into(),
        started_at,
    };
    CommandService::<Call>::new(world.log.clone(), ())
        .execute(
            &call_id.to_string(),
            CallCommand::RecordCallStart { call_id, start },
            CommandMeta::system("recorder:rec").in_tenant(tenant_id),
        )
        .await
        .expect("call");
    call_id
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn no_query_returns_a_row_outside_the_callers_scope(pool: PgPool) {
    let api = api(pool).await;
    let w = &api.world;
    let c_a1 = record_call(w, w.tenant_a, Some(w.agent_a1.user_id), "alice").await;
    let c_a2 = record_call(w, w.tenant_a, Some(w.agent_a2.user_id), "bob").await;
    let c_b = record_call(w, w.tenant_b, Some(w.agent_b.user_id), "carol").await;
    let c_none = record_call(w, w.tenant_a, None, "dave").await;
    api.caught_up().await;

    let users = "{ users(first: 100) { edges { node { id } } } }";
    assert_eq!(api.ids(&w.root, "users", users).await.len(), 7);
    assert_eq!(api.ids(&w.admin_a, "users", users).await, ids([&w.admin_a, &w.supervisor_a, &w.agent_a1, &w.agent_a2]));
    // The supervisor manages A1: its members (the administrator and agent A1) and themself.
    assert_eq!(api.ids(&w.supervisor_a, "users", users).await, ids([&w.admin_a, &w.supervisor_a, &w.agent_a1]));
    assert_eq!(api.ids(&w.agent_a1, "users", users).await, ids([&w.agent_a1]));
    assert_eq!(api.ids(&w.admin_b, "users", users).await, ids([&w.admin_b, &w.agent_b]));
    let other = format!("{{ user(id: \"{}\") {{ id }} }}", w.agent_b.user_id);
    assert!(api.query(&w.admin_a, &other).await["data"]["user"].is_null(), "another tenant's user is not found");

    let calls = "{ calls(first: 100) { edges { node { id } } } }";
    let set = |calls: &[Uuid]| calls.iter().map(Uuid::to_string).collect::<BTreeSet<_>>();
    assert_eq!(api.ids(&w.root, "calls", calls).await, set(&[c_a1, c_a2, c_b, c_none]));
    assert_eq!(api.ids(&w.admin_a, "calls", calls).await, set(&[c_a1, c_a2, c_none]));
    assert_eq!(api.ids(&w.supervisor_a, "calls", calls).await, set(&[c_a1]));
    assert_eq!(api.ids(&w.agent_a1, "calls", calls).await, set(&[c_a1]));
    assert_eq!(api.ids(&w.agent_a2, "calls", calls).await, set(&[c_a2]));
    assert_eq!(api.ids(&w.admin_b, "calls", calls).await, set(&[c_b]));
    let unassigned = "{ calls(filter: { unassigned: true }) { edges { node { id } } } }";
    assert_eq!(api.ids(&w.admin_a, "calls", unassigned).await, set(&[c_none]));
    assert_eq!(api.error_code(&w.supervisor_a, unassigned).await, "FORBIDDEN");
    let by_group = format!("{{ calls(filter: {{ groupId: \"{}\" }}) {{ edges {{ node {{ id }} }} }} }}", w.group_a2);
    assert_eq!(api.ids(&w.admin_a, "calls", &by_group).await, set(&[c_a2]));
    assert_eq!(api.ids(&w.supervisor_a, "calls", &by_group).await, set(&[]), "a group filter does not widen the scope");
    let text = "{ calls(filter: { text: \"carol\" }) { edges { node { id } } } }";
    assert_eq!(api.ids(&w.root, "calls", text).await, set(&[c_b]));

    let tenants = "{ tenants { edges { node { id } } } }";
    assert_eq!(api.ids(&w.root, "tenants", tenants).await.len(), 2);
    assert_eq!(api.ids(&w.admin_b, "tenants", tenants).await, BTreeSet::from([w.tenant_b.to_string()]));
    let groups = "{ groups { edges { node { id } } } }";
    assert_eq!(api.ids(&w.root, "groups", groups).await.len(), 3);
    assert_eq!(
        api.ids(&w.admin_a, "groups", groups).await,
        BTreeSet::from([w.group_a1.to_string(), w.group_a2.to_string()])
    );
    assert_eq!(api.ids(&w.supervisor_a, "groups", groups).await, BTreeSet::from([w.group_a1.to_string()]));
    assert_eq!(api.ids(&w.agent_a2, "groups", groups).await, BTreeSet::from([w.group_a2.to_string()]));

    // The audit trail: everything service-wide, the own tenant's for its administrator, nothing below.
    let audit = "{ auditTrail(first: 100) { edges { node { tenantId actor action outcome } } } }";
    let everything = api.query(&w.root, audit).await;
    let all = everything["data"]["auditTrail"]["edges"].as_array().expect("edges").len();
    let mine = api.query(&w.admin_a, audit).await;
    let rows = mine["data"]["auditTrail"]["edges"].as_array().expect("edges");
    assert!(!rows.is_empty() && rows.len() < all, "{} of {all}", rows.len());
    assert!(rows.iter().all(|r| r["node"]["tenantId"] == w.tenant_a.to_string()), "{mine}");
    assert_eq!(api.error_code(&w.supervisor_a, audit).await, "FORBIDDEN");
    assert_eq!(api.error_code(&w.agent_a1, audit).await, "FORBIDDEN");
    // Storage targets are for those who manage storage.
    assert_eq!(api.error_code(&w.agent_a1, "{ storageTargets { id } }").await, "FORBIDDEN");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn pages_follow_each_other_without_overlap_or_loss(pool: PgPool) {
    let api = api(pool).await;
    let w = &api.world;
    for _ in 0..7 {
        record_call(w, w.tenant_a, Some(w.agent_a1.user_id), "x").await;
    }
    api.caught_up().await;
    let mut seen = BTreeSet::new();
    let mut after = String::new();
    loop {
        let q = format!(
            "{{ calls(first: 3{after}) {{ edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        );
        let body = api.query(&w.admin_a, &q).await;
        let connection = &body["data"]["calls"];
        for edge in connection["edges"].as_array().expect("edges") {
            assert!(seen.insert(edge["node"]["id"].as_str().expect("id").to_owned()), "a call came twice");
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = format!(", after: \"{}\"", connection["pageInfo"]["endCursor"].as_str().expect("cursor"));
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(api.error_code(&w.admin_a, "{ calls(first: 1000) { edges { cursor } } }").await, "INVALID_INPUT");
    assert_eq!(
        api.error_code(&w.admin_a, "{ calls(after: \"nonsense\") { edges { cursor } } }").await,
        "INVALID_INPUT"
    );
}

/// Calls of a group (or of a supervisor's managed groups) are read user by user and merged: the pages must
/// still come newest first, without overlap or loss, and with nothing of other groups or tenants.
#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_groups_calls_come_newest_first_across_pages(pool: PgPool) {
    let api = api(pool).await;
    let w = &api.world;
    let now = chrono::Utc::now();
    let mut group_a1 = Vec::new();
    for minute in 0..12 {
        let at = now - chrono::Duration::minutes(minute);
        let (tenant, user, in_a1) = match minute % 4 {
            0 => (w.tenant_a, w.agent_a1.user_id, true),
            1 => (w.tenant_a, w.supervisor_a.user_id, true),
            2 => (w.tenant_a, w.agent_a2.user_id, false),
            _ => (w.tenant_b, w.agent_b.user_id, false),
        };
        let call = record_call_at(w, tenant, Some(user), "x", at).await;
        if in_a1 {
            group_a1.push(call.to_string());
        }
    }
    // Two calls at the very same instant: the call id breaks the tie, as the cursor expects.
    let tie = now - chrono::Duration::minutes(20);
    let mut tied = vec![
        record_call_at(w, w.tenant_a, Some(w.agent_a1.user_id), "x", tie).await.to_string(),
        record_call_at(w, w.tenant_a, Some(w.supervisor_a.user_id), "x", tie).await.to_string(),
    ];
    tied.sort();
    group_a1.extend(tied.into_iter().rev());
    api.caught_up().await;

    let pages = |who: Person, filter: String| {
        let api = &api;
        async move {
            let mut ids = Vec::new();
            let mut after = String::new();
            loop {
                let q = format!(
                    "{{ calls(first: 2{after}{filter}) {{ edges {{ node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
                );
                let body = api.query(&who, &q).await;
                let connection = &body["data"]["calls"];
                ids.extend(
                    connection["edges"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{body}"))
                        .iter()
                        .map(|e| e["node"]["id"].as_str().expect("id").to_owned()),
                );
                if connection["pageInfo"]["hasNextPage"] != true {
                    return ids;
                }
                after = format!(", after: \"{}\"", connection["pageInfo"]["endCursor"].as_str().expect("cursor"));
            }
        }
    };
    let in_group = format!(", filter: {{ groupId: \"{}\" }}", w.group_a1);
    assert_eq!(pages(w.supervisor_a.clone(), in_group.clone()).await, group_a1, "the supervisor, by group");
    assert_eq!(pages(w.admin_a.clone(), in_group.clone()).await, group_a1, "the administrator, by group");
    assert_eq!(pages(w.supervisor_a.clone(), String::new()).await, group_a1, "the supervisor's own scope");
    // A time window cuts the same list.
    let window = format!(
        ", filter: {{ groupId: \"{}\", from: \"{}\", to: \"{}\" }}",
        w.group_a1,
        (now - chrono::Duration::seconds(510)).to_rfc3339(),
        (now - chrono::Duration::seconds(30)).to_rfc3339()
    );
    // Minutes 1, 4, 5 and 8 are group A1's within [now - 8.5 min, now - 30 s).
    assert_eq!(
        pages(w.admin_a.clone(), window).await,
        vec![group_a1[1].clone(), group_a1[2].clone(), group_a1[3].clone(), group_a1[4].clone()]
    );
    // Tenant B's administrator sees nothing of group A1.
    assert!(pages(w.admin_b.clone(), in_group).await.is_empty());
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_calls_end_pauses_digits_and_stored_file_are_read_back(pool: PgPool) {
    use recall_domain::call::{CallEndReason, StoredRecording};
    let api = api(pool).await;
    let w = &api.world;
    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let call_id = record_call_at(w, w.tenant_a, Some(w.agent_a1.user_id), "dave", started).await;
    let at = |s: i64| started + chrono::Duration::seconds(s);
    let calls = CommandService::<Call>::new(w.log.clone(), ());
    for command in [
        CallCommand::PauseRecording { at: at(5) },
        CallCommand::ResumeRecording { at: at(7) },
        CallCommand::RecordDtmf { digit: '9', at: at(8), duration_ms: 90 },
        CallCommand::EndCall { reason: CallEndReason::RtpTimeout, at: at(30) },
        CallCommand::RecordStoredRecording {
            recording: StoredRecording {
                storage_target_id: None,
                location: "a/b.wav".into(),
                format: recall_domain::recording_policy::AudioFormat::WavStereo,
                size_bytes: 960_000,
                duration_ms: 30_000,
                sha256: "1a".repeat(32),
                encryption: None,
            },
        },
    ] {
        let meta = CommandMeta::system("recorder:rec").in_tenant(w.tenant_a);
        calls.execute(&call_id.to_string(), command, meta).await.expect("recorded");
    }
    api.caught_up().await;
    let q = format!(
        "{{ call(id: \"{call_id}\") {{ endReason durationMs pausedMs pausedSince dtmf failures
             recording {{ location format sizeBytes durationMs sha256 }} }} }}"
    );
    let body = api.query(&w.supervisor_a, &q).await;
    let call = &body["data"]["call"];
    assert_eq!(call["endReason"], "RTP_TIMEOUT", "{body}");
    assert_eq!(call["durationMs"], 30_000);
    assert_eq!(call["pausedMs"], 2_000);
    assert_eq!(call["pausedSince"], Value::Null);
    assert_eq!(call["dtmf"], "9");
    assert_eq!(call["failures"], serde_json::json!([]));
    assert_eq!(call["recording"]["format"], "WAV_STEREO");
    assert_eq!(call["recording"]["sha256"], "1a".repeat(32));
    // The agent of another group does not see it at all.
    assert_eq!(api.query(&w.agent_a2, &q).await["data"]["call"], Value::Null);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn without_a_valid_session_nothing_is_read(pool: PgPool) {
    let api = api(pool).await;
    let w = &api.world;
    let session_id = w.agent_a1.caller.session_id.expect("session");
    w.admin.execute(&w.admin_a.caller, AdminCommand::TerminateSession { session_id }).await.expect("terminated");
    let body = api.query(&w.agent_a1, "{ me { id } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "query": "{ users { edges { node { id } } } }" }).to_string()))
        .expect("request");
    let response = api.app.clone().oneshot(request).await.expect("response");
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| !m.contains("sql")), "{body}");
}

/// Sends one graphql-transport-ws message.
async fn send(ws: &mut (impl SinkExt<tokio_tungstenite::tungstenite::Message> + Unpin), message: Value) {
    let _ = ws.send(tokio_tungstenite::tungstenite::Message::Text(message.to_string().into())).await;
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn live_audit_events_arrive_over_websocket_within_the_subscribers_scope(pool: PgPool) {
    let api = Arc::new(api(pool).await);
    // Live means from the log head on: the set-up's events must be sequenced before the subscription starts.
    api.caught_up().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = api.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{address}/graphql/ws"
    ))
    .expect("request");
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
    send(&mut ws, json!({"type": "connection_init", "payload": {"token": api.world.admin_a.token}})).await;
    let ack = ws.next().await.expect("a message").expect("ok");
    assert!(ack.to_string().contains("connection_ack"), "{ack}");
    send(&mut ws, json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { auditEvents { action tenantId actor } }"}})).await;
    // Act in both tenants, again and again until something arrives (the subscription starts following
    // the log at some moment after `subscribe`; what happened before it is not live).
    let acting = {
        let api = api.clone();
        tokio::spawn(async move {
            let w = &api.world;
            for round in 0.. {
                let b = UserRequest::SetFullName { full_name: Some(format!("In B {round}")) };
                let _ = w
                    .admin
                    .execute(&w.admin_b.caller, AdminCommand::User { user_id: w.agent_b.user_id, request: b })
                    .await;
                let a = UserRequest::SetFullName { full_name: Some(format!("In A {round}")) };
                let _ = w
                    .admin
                    .execute(&w.admin_a.caller, AdminCommand::User { user_id: w.agent_a1.user_id, request: a })
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let w = &api.world;
    let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("an event in time")
        .expect("message")
        .expect("ok");
    acting.abort();
    let message: Value = serde_json::from_str(&next.to_string()).expect("JSON");
    assert_eq!(message["type"], "next", "{message}");
    let event = &message["payload"]["data"]["auditEvents"];
    assert_eq!(event["action"], "FullNameChanged");
    assert_eq!(event["tenantId"], w.tenant_a.to_string(), "tenant B's event was not delivered first: {message}");

    // A connection without a valid token is refused.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{address}/graphql/ws"
    ))
    .expect("request");
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut stranger, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
    send(&mut stranger, json!({"type": "connection_init", "payload": {"token": "forged.AAAA"}})).await;
    let refused = tokio::time::timeout(Duration::from_secs(10), stranger.next()).await.expect("an answer");
    assert!(
        !refused.is_some_and(|m| m.is_ok_and(|m| m.to_string().contains("connection_ack"))),
        "a forged token is refused"
    );
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_program_acts_with_an_api_token_until_it_is_revoked(pool: PgPool) {
    let api = api(pool).await;
    let w = &api.world;
    let issued = api
        .query(&w.admin_a, "mutation { issueApiToken(name: \"CRM sync\", expiresInDays: 30) { issuedToken visible } }")
        .await;
    let token = issued["data"]["issueApiToken"]["issuedToken"].as_str().expect("a token").to_owned();
    let me = api.query_with(&token, "{ me { id apiTokens { id name revokedAt } } }").await;
    assert_eq!(me["data"]["me"]["id"], w.admin_a.user_id.to_string(), "{me}");
    let token_id = me["data"]["me"]["apiTokens"][0]["id"].as_str().expect("listed").to_owned();
    assert_eq!(me["data"]["me"]["apiTokens"][0]["name"], "CRM sync");
    let create = format!(
        "mutation {{ createGroup(tenantId: \"{}\", name: \"Robots\") {{ position group {{ name }} }} }}",
        w.tenant_a
    );
    let created = api.query_with(&token, &create).await;
    assert_eq!(created["data"]["createGroup"]["group"]["name"], "Robots", "{created}");
    let audit = api
        .query(
            &w.admin_a,
            "{ auditTrail(filter: { action: \"GroupCreated\" }, first: 1) { edges { node { actor } } } }",
        )
        .await;
    assert_eq!(audit["data"]["auditTrail"]["edges"][0]["node"]["actor"], format!("token:{token_id}"), "{audit}");
    // Another tenant's administrator cannot revoke it; its owner can.
    let revoke = format!("mutation {{ revokeApiToken(tokenId: \"{token_id}\") {{ position }} }}");
    assert_eq!(api.error_code(&w.admin_b, &revoke).await, "FORBIDDEN");
    let revoked = api.query(&w.admin_a, &revoke).await;
    assert!(revoked["errors"].is_null(), "{revoked}");
    let refused = api.query_with(&token, "{ me { id } }").await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
}
