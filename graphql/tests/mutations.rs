//! Every administrative mutation over HTTP against a real Postgres: sign-in and its cookie, then each
//! mutation once, read back through a query, and the error codes a client acts on (UNAUTHENTICATED,
//! FORBIDDEN, CONFLICT, INVALID_INPUT with the field to blame).

mod common;

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use recall_commands::admin::Caller;
use recall_commands::testing::{Person, World, PASSWORD};
use recall_commands::CommandService;
use recall_domain::access::PredefinedRole;
use recall_domain::call::{Call, CallCommand, CallDirection, CallStart};
use recall_domain::CommandMeta;
use recall_graphql::router;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// What every mutation answers with.
const RESULT: &str = "changed id position visible issuedToken";

struct Api {
    app: Router,
    world: World,
}

impl Api {
    /// The test world behind the HTTP router, with the projections running on its log.
    async fn start(pool: PgPool) -> Self {
        let (world, state) = common::on_world(pool).await;
        Self { app: router(state), world }
    }

    /// POSTs a GraphQL request with the given headers; the answer's headers and body.
    async fn post(&self, headers: &[(&str, String)], query: &str, variables: Value) -> (HeaderMap, Value) {
        let mut request = Request::post("/graphql").header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let body = json!({"query": query, "variables": variables}).to_string();
        let response =
            self.app.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (headers, serde_json::from_slice(&bytes).expect("a JSON answer"))
    }

    /// The whole answer to `query`, sent with `who`'s bearer token (or none).
    async fn answer(&self, who: Option<&Person>, query: &str, variables: Value) -> Value {
        let headers: Vec<(&str, String)> =
            who.map(|p| vec![("authorization", format!("Bearer {}", p.token))]).unwrap_or_default();
        self.post(&headers, query, variables).await.1
    }

    /// The data of a query that must succeed.
    async fn query(&self, who: &Person, query: &str) -> Value {
        self.query_with(who, query, Value::Null).await
    }

    async fn query_with(&self, who: &Person, query: &str, variables: Value) -> Value {
        let answer = self.answer(Some(who), query, variables).await;
        assert!(answer.get("errors").is_none(), "{query}: {answer}");
        answer["data"].clone()
    }

    /// Runs `call` (a mutation field with its arguments, literal) as `who`; it must change something and
    /// be visible in the read model when it returns.
    async fn mutate(&self, who: &Person, call: &str) -> Value {
        self.mutate_with(who, "", call, Value::Null).await
    }

    /// Like `mutate`, with variables declared by `declarations` (e.g. `$input: CreateUserInput!`).
    async fn mutate_with(&self, who: &Person, declarations: &str, call: &str, variables: Value) -> Value {
        let declarations = if declarations.is_empty() { String::new() } else { format!("({declarations})") };
        let document = format!("mutation{declarations} {{ result: {call} {{ {RESULT} }} }}");
        let data = self.query_with(who, &document, variables).await;
        let result = data["result"].clone();
        assert_eq!(result["visible"], true, "{call}: {result}");
        assert!(result["position"].is_u64(), "{call}: {result}");
        result
    }

    /// The first error of a mutation that must fail.
    async fn refused(&self, who: Option<&Person>, call: &str) -> Value {
        self.refused_with(who, "", call, Value::Null).await
    }

    async fn refused_with(&self, who: Option<&Person>, declarations: &str, call: &str, variables: Value) -> Value {
        let declarations = if declarations.is_empty() { String::new() } else { format!("({declarations})") };
        let document = format!("mutation{declarations} {{ result: {call} {{ {RESULT} }} }}");
        let answer = self.answer(who, &document, variables).await;
        assert!(answer["data"].is_null() || answer["data"]["result"].is_null(), "{call}: {answer}");
        answer["errors"][0].clone()
    }

    async fn sign_in(&self, username: &str, password: &str) -> (HeaderMap, Value) {
        let query = "mutation($u: String!, $p: String!) {
            signIn(username: $u, password: $p, device: {label: \"test browser\"}) {
                token sessionId userId deviceId mustChangePassword
            } }";
        let (headers, answer) = self.post(&[], query, json!({"u": username, "p": password})).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        (headers, answer["data"]["signIn"].clone())
    }

    /// A person signed in over GraphQL.
    async fn person(&self, username: &str, password: &str) -> (Person, Value) {
        let (_, signed_in) = self.sign_in(username, password).await;
        let user_id = Uuid::parse_str(signed_in["userId"].as_str().expect("user id")).expect("uuid");
        let token = signed_in["token"].as_str().expect("token").to_owned();
        (Person { user_id, username: username.to_owned(), caller: Caller::user(user_id), token }, signed_in)
    }
}

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_default()
}

fn field(error: &Value) -> &str {
    error["extensions"]["field"].as_str().unwrap_or_default()
}

fn id_of(result: &Value) -> String {
    result["id"].as_str().expect("an id").to_owned()
}

fn unique(stem: &str) -> String {
    recall_commands::testing::unique(stem)
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn signing_in_sets_a_strict_http_only_cookie_that_alone_authenticates(pool: PgPool) {
    let api = Api::start(pool).await;
    let (headers, signed_in) = api.sign_in("admin-a", PASSWORD).await;
    let cookies: Vec<&str> = headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().expect("ascii")).collect();
    let session = cookies.iter().find(|c| c.starts_with("recall_session=")).expect("a session cookie");
    for cookie in &cookies {
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    }
    let token = signed_in["token"].as_str().expect("token");
    assert!(session.starts_with(&format!("recall_session={token};")), "{session}");

    // The cookie alone (no Authorization header) authenticates a query and a mutation.
    let cookie = vec![(COOKIE.as_str(), format!("recall_session={token}"))];
    let (_, me) = api.post(&cookie, "{ me { username } }", Value::Null).await;
    assert_eq!(me["data"]["me"]["username"], "admin-a", "{me}");
    let group = api.world.group_a2;
    let rename = format!(r#"mutation {{ renameGroup(groupId: "{group}", name: "A2 by cookie") {{ visible }} }}"#);
    let (_, renamed) = api.post(&cookie, &rename, Value::Null).await;
    assert_eq!(renamed["data"]["renameGroup"]["visible"], true, "{renamed}");

    // Without a token, or with one nobody issued, nothing changes.
    let call = format!(r#"renameGroup(groupId: "{group}", name: "anonymous")"#);
    assert_eq!(code(&api.refused(None, &call).await), "UNAUTHENTICATED");
    let mut stranger = api.world.agent_a1.clone();
    stranger.token = "not-a-token".to_owned();
    assert_eq!(code(&api.refused(Some(&stranger), &call).await), "UNAUTHENTICATED");
    // A wrong password says only that.
    let (_, wrong) = api
        .post(&[], "mutation { signIn(username: \"admin-a\", password: \"wrong password!\") { token } }", Value::Null)
        .await;
    assert_eq!(code(&wrong["errors"][0]), "UNAUTHENTICATED", "{wrong}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn tenant_mutations_change_what_the_tenant_query_shows(pool: PgPool) {
    let api = Api::start(pool).await;
    let root = &api.world.root;
    let name = unique("Tenant C");
    let input = json!({
        "name": name,
        "timezone": "Europe/Paris",
        "defaultRecordingRule": {"record": "ON_DEMAND", "direction": "INBOUND", "unassignedCalls": "DO_NOT_RECORD"},
        "storageOption": "PROVIDER_HOSTED",
        "fileEncryption": true,
        "audioFormat": "WAV_MONO",
    });
    // A new tenant has no encryption key yet, so it cannot start with encryption on.
    let refused = api
        .refused_with(Some(root), "$input: CreateTenantInput!", "createTenant(input: $input)", json!({"input": input}))
        .await;
    assert!(refused["message"].as_str().unwrap_or_default().contains("encryption key"), "{refused}");
    let mut input = input;
    input["fileEncryption"] = json!(false);
    let created = api
        .mutate_with(root, "$input: CreateTenantInput!", "createTenant(input: $input)", json!({"input": input}))
        .await;
    assert_eq!(created["changed"], "TENANT");
    let tenant = id_of(&created);
    let read = |fields: &str| format!(r#"{{ tenant(id: "{tenant}") {{ {fields} }} }}"#);
    let shown =
        api.query(root, &read("name timezone defaultRecordMode storageOption fileEncryption audioFormat")).await;
    assert_eq!(
        shown["tenant"],
        json!({"name": name, "timezone": "Europe/Paris", "defaultRecordMode": "ON_DEMAND",
               "storageOption": "PROVIDER_HOSTED", "fileEncryption": false, "audioFormat": "WAV_MONO"})
    );
    // With a key of its own activated, encryption goes on.
    let key =
        api.mutate(root, &format!(r#"generateEncryptionKey(input: {{tenantId: "{tenant}", name: "Main"}})"#)).await;
    api.mutate(root, &format!(r#"activateEncryptionKey(keyId: "{}")"#, id_of(&key))).await;
    api.mutate(root, &format!(r#"setFileEncryption(tenantId: "{tenant}", enabled: true)"#)).await;
    let shown = api.query(root, &read("fileEncryption encryptionKeyId")).await;
    assert_eq!(shown["tenant"], json!({"fileEncryption": true, "encryptionKeyId": id_of(&key)}));

    let renamed = unique("Tenant D");
    api.mutate(root, &format!(r#"renameTenant(tenantId: "{tenant}", name: "{renamed}")"#)).await;
    api.mutate(root, &format!(r#"setTenantTimezone(tenantId: "{tenant}", timezone: "Asia/Tokyo")"#)).await;
    api.mutate(
        root,
        &format!(
            r#"setDefaultRecordingRule(tenantId: "{tenant}",
                 rule: {{record: ALWAYS, direction: BOTH, unassignedCalls: RECORD}})"#
        ),
    )
    .await;
    api.mutate(root, &format!(r#"setStorageOption(tenantId: "{tenant}", option: BRING_YOUR_OWN)"#)).await;
    api.mutate(root, &format!(r#"setFileEncryption(tenantId: "{tenant}", enabled: false)"#)).await;
    api.mutate(root, &format!(r#"setAudioFormat(tenantId: "{tenant}", format: WAV_STEREO)"#)).await;
    api.mutate(root, &format!(r#"setRetentionPolicy(tenantId: "{tenant}", recordingsDays: 90, auditDays: 400)"#)).await;
    api.mutate(root, &format!(r#"setImpersonationVerification(tenantId: "{tenant}", required: true)"#)).await;
    api.mutate(root, &format!(r#"deactivateTenant(tenantId: "{tenant}")"#)).await;
    let fields = "name timezone defaultRecordMode defaultRecordDirection unassignedCalls storageOption fileEncryption
                  audioFormat retentionPolicy { recordingsDays auditDays } impersonationVerification active";
    let shown = api.query(root, &read(fields)).await;
    assert_eq!(
        shown["tenant"],
        json!({"name": renamed, "timezone": "Asia/Tokyo", "defaultRecordMode": "ALWAYS",
               "defaultRecordDirection": "BOTH", "unassignedCalls": "RECORD", "storageOption": "BRING_YOUR_OWN",
               "fileEncryption": false, "audioFormat": "WAV_STEREO",
               "retentionPolicy": {"recordingsDays": 90, "auditDays": 400},
               "impersonationVerification": true, "active": false})
    );
    api.mutate(root, &format!(r#"reactivateTenant(tenantId: "{tenant}")"#)).await;
    assert_eq!(api.query(root, &read("active")).await["tenant"]["active"], true);

    // A tenant administrator does not configure the tenant itself; a name is taken once.
    let own = api.world.tenant_a;
    let forbidden =
        api.refused(Some(&api.world.admin_a), &format!(r#"renameTenant(tenantId: "{own}", name: "Mine")"#)).await;
    assert_eq!(code(&forbidden), "FORBIDDEN");
    let again = json!({"input": {"name": renamed}});
    let taken = api.refused_with(Some(root), "$input: CreateTenantInput!", "createTenant(input: $input)", again).await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_tenants_recording_clients_are_its_own_and_shown_normalised(pool: PgPool) {
    let api = Api::start(pool).await;
    let root = &api.world.root;
    let (a, b) = (api.world.tenant_a, api.world.tenant_b);
    let set = |tenant: Uuid, networks: &str, domains: &str| {
        format!(r#"setRecordingClients(tenantId: "{tenant}", networks: [{networks}], sipDomains: [{domains}])"#)
    };
    api.mutate(root, &set(a, r#""10.1.2.3/16", " 192.0.2.7 ", "2001:db8::/32""#, r#""Acme.Example.""#)).await;
    let read = format!(r#"{{ tenant(id: "{a}") {{ recordingNetworks sipDomains }} }}"#);
    assert_eq!(
        api.query(root, &read).await["tenant"],
        json!({"recordingNetworks": ["10.1.0.0/16", "192.0.2.7/32", "2001:db8::/32"], "sipDomains": ["acme.example"]})
    );
    // Another tenant cannot trust the same network or own the same domain; a wider network is fine
    // (the narrowest match decides a call's tenant).
    let taken = api.refused(Some(root), &set(b, r#""10.1.0.0/16""#, "")).await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
    let taken = api.refused(Some(root), &set(b, "", r#""ACME.example""#)).await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
    api.mutate(root, &set(b, r#""10.0.0.0/8""#, r#""beta.example""#)).await;
    let bad = api.refused(Some(root), &set(b, r#""10.0.0.0/33""#, "")).await;
    assert_eq!((code(&bad), field(&bad)), ("INVALID_INPUT", "networks"), "{bad}");
    let bad = api.refused(Some(root), &set(b, "", r#""not a domain""#)).await;
    assert_eq!(code(&bad), "INVALID_INPUT", "{bad}");
    // Giving a network up frees it for another tenant.
    api.mutate(root, &set(a, "", r#""acme.example""#)).await;
    api.mutate(root, &set(b, r#""10.1.0.0/16", "10.0.0.0/8""#, "")).await;
    // Only who configures the system sets them: not a tenant's own administrator.
    let forbidden = api.refused(Some(&api.world.admin_a), &set(a, r#""198.51.100.0/24""#, "")).await;
    assert_eq!(code(&forbidden), "FORBIDDEN", "{forbidden}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn role_mutations_define_rename_regrant_and_delete_roles(pool: PgPool) {
    let api = Api::start(pool).await;
    let root = &api.world.root;
    let defined = api
        .mutate(
            root,
            r#"defineRole(name: "Quality reviewer", scope: TENANT, permissions: [VIEW_CALLS, PLAYBACK_CALLS])"#,
        )
        .await;
    assert_eq!(defined["changed"], "ROLE");
    let role = id_of(&defined);
    let read = format!(r#"{{ role(id: "{role}") {{ name scope permissions predefined deleted }} }}"#);
    assert_eq!(
        api.query(root, &read).await["role"],
        json!({"name": "Quality reviewer", "scope": "TENANT", "permissions": ["VIEW_CALLS", "PLAYBACK_CALLS"],
               "predefined": null, "deleted": false})
    );
    api.mutate(root, &format!(r#"renameRole(roleId: "{role}", name: "Reviewer")"#)).await;
    api.mutate(
        root,
        &format!(
            r#"changeRoleGrants(roleId: "{role}", scope: MANAGED_GROUPS, permissions: [VIEW_CALLS, ASSIGN_CALLS])"#
        ),
    )
    .await;
    assert_eq!(
        api.query(root, &read).await["role"],
        json!({"name": "Reviewer", "scope": "MANAGED_GROUPS", "permissions": ["VIEW_CALLS", "ASSIGN_CALLS"],
               "predefined": null, "deleted": false})
    );
    api.mutate(root, &format!(r#"deleteRole(roleId: "{role}")"#)).await;
    assert_eq!(api.query(root, &read).await["role"]["deleted"], true);

    // Roles are the provider's; a role some users hold stays.
    let by_admin =
        api.refused(Some(&api.world.admin_a), r#"defineRole(name: "Mine", scope: OWN_CALLS, permissions: [])"#).await;
    assert_eq!(code(&by_admin), "FORBIDDEN");
    let agent = PredefinedRole::Agent.role_id();
    let held = api.refused(Some(root), &format!(r#"deleteRole(roleId: "{agent}")"#)).await;
    assert_eq!(code(&held), "INVALID_INPUT", "{held}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn group_mutations_create_rename_retime_and_delete_groups(pool: PgPool) {
    let api = Api::start(pool).await;
    let admin = &api.world.admin_a;
    let tenant = api.world.tenant_a;
    let created = api
        .mutate(admin, &format!(r#"createGroup(tenantId: "{tenant}", name: "Sales", timezone: "Europe/Berlin")"#))
        .await;
    assert_eq!(created["changed"], "GROUP");
    let group = id_of(&created);
    let read = format!(r#"{{ group(id: "{group}") {{ name timezone tenantId }} }}"#);
    assert_eq!(
        api.query(admin, &read).await["group"],
        json!({"name": "Sales", "timezone": "Europe/Berlin", "tenantId": tenant.to_string()})
    );
    api.mutate(admin, &format!(r#"renameGroup(groupId: "{group}", name: "Inside sales")"#)).await;
    api.mutate(admin, &format!(r#"setGroupTimezone(groupId: "{group}", timezone: null)"#)).await;
    assert_eq!(
        api.query(admin, &read).await["group"],
        json!({"name": "Inside sales", "timezone": null, "tenantId": tenant.to_string()})
    );
    let taken = api.refused(Some(admin), &format!(r#"createGroup(tenantId: "{tenant}", name: "inside SALES")"#)).await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
    let a1 = api.world.group_a1;
    let with_members = api.refused(Some(admin), &format!(r#"deleteGroup(groupId: "{a1}")"#)).await;
    assert_eq!(code(&with_members), "INVALID_INPUT", "{with_members}");
    let other_tenant =
        api.refused(Some(&api.world.admin_b), &format!(r#"renameGroup(groupId: "{group}", name: "B's")"#)).await;
    assert_eq!(code(&other_tenant), "FORBIDDEN");
    api.mutate(admin, &format!(r#"deleteGroup(groupId: "{group}")"#)).await;
    assert_eq!(api.query(admin, &read).await["group"], Value::Null);
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn user_mutations_each_show_in_the_user_query(pool: PgPool) {
    let api = Api::start(pool).await;
    let w = &api.world;
    let admin = &w.admin_a;
    let input = json!({
        "tenantId": w.tenant_a,
        "username": "carol",
        "fullName": "Carol",
        "email": "carol@old.example",
        "timezone": "Europe/London",
        "roleId": PredefinedRole::Agent.role_id(),
        "groups": [w.group_a1],
        "recordMode": "ON_DEMAND",
        "recordDirection": "OUTBOUND",
        "extensions": ["4000"],
        "loginEnabled": true,
        "password": PASSWORD,
        "mustChangePassword": false,
        "screenRecordingLogin": {"login": "carol", "domain": "OLD"},
        "licences": {"audio": true},
    });
    let created = api
        .mutate_with(admin, "$input: CreateUserInput!", "createUser(input: $input)", json!({"input": input.clone()}))
        .await;
    assert_eq!(created["changed"], "USER");
    let carol = id_of(&created);
    let fields = "username fullName email timezone active role { id } groups { id } managedGroups { id } recordMode
                  recordDirection extensions loginEnabled hasPassword mustChangePassword screenRecordingLogin
                  screenRecordingDomain licences { audio screen evaluate }";
    let read = format!(r#"{{ user(id: "{carol}") {{ {fields} }} }}"#);
    assert_eq!(
        api.query(admin, &read).await["user"],
        json!({"username": "carol", "fullName": "Carol", "email": "carol@old.example", "timezone": "Europe/London",
               "active": true, "role": {"id": PredefinedRole::Agent.role_id()}, "groups": [{"id": w.group_a1}],
               "managedGroups": [], "recordMode": "ON_DEMAND", "recordDirection": "OUTBOUND", "extensions": ["4000"],
               "loginEnabled": true, "hasPassword": true, "mustChangePassword": false,
               "screenRecordingLogin": "carol", "screenRecordingDomain": "OLD",
               "licences": {"audio": true, "screen": false, "evaluate": false}})
    );
    // The username is taken now, whoever asks for it.
    let taken = api
        .refused_with(Some(admin), "$input: CreateUserInput!", "createUser(input: $input)", json!({"input": input}))
        .await;
    assert_eq!(code(&taken), "CONFLICT");

    let on = |call: &str| call.replace("USER", &carol);
    let (a1, a2) = (w.group_a1, w.group_a2);
    let supervisor = PredefinedRole::Supervisor.role_id();
    for call in [
        r#"renameUser(userId: "USER", username: "carol-2")"#.to_owned(),
        r#"setUserFullName(userId: "USER", fullName: "Carol Smith")"#.to_owned(),
        r#"setUserEmail(userId: "USER", email: "carol@example.com")"#.to_owned(),
        r#"setUserTimezone(userId: "USER", timezone: "Europe/Berlin")"#.to_owned(),
        r#"deactivateUser(userId: "USER")"#.to_owned(),
        r#"activateUser(userId: "USER")"#.to_owned(),
        format!(r#"assignRole(userId: "USER", roleId: "{supervisor}")"#),
        format!(r#"setUserGroups(userId: "USER", groups: ["{a2}", "{a1}"])"#),
        format!(r#"setManagedGroups(userId: "USER", groups: ["{a1}"])"#),
        r#"setRecordingSettings(userId: "USER", recordMode: ALWAYS, recordDirection: INBOUND)"#.to_owned(),
        r#"addExtension(userId: "USER", extension: "4001")"#.to_owned(),
        r#"setExtensions(userId: "USER", extensions: ["4002", "4003"])"#.to_owned(),
        r#"setWebAccess(userId: "USER", loginEnabled: false)"#.to_owned(),
        r#"setPassword(userId: "USER", password: "a new password, long enough", mustChange: true)"#.to_owned(),
        r#"setScreenRecordingLogin(userId: "USER", login: {login: "csmith", domain: "CORP"})"#.to_owned(),
        r#"setLicences(userId: "USER", licences: {screen: true, evaluate: true})"#.to_owned(),
    ] {
        let result = api.mutate(admin, &on(&call)).await;
        assert_eq!(result["id"], carol.as_str(), "{call}");
    }
    assert_eq!(
        api.query(admin, &read).await["user"],
        json!({"username": "carol-2", "fullName": "Carol Smith", "email": "carol@example.com",
               "timezone": "Europe/Berlin", "active": true, "role": {"id": supervisor},
               "groups": [{"id": a2}, {"id": a1}], "managedGroups": [{"id": a1}], "recordMode": "ALWAYS",
               "recordDirection": "INBOUND", "extensions": ["4002", "4003"], "loginEnabled": false,
               "hasPassword": true, "mustChangePassword": true, "screenRecordingLogin": "csmith",
               "screenRecordingDomain": "CORP", "licences": {"audio": false, "screen": true, "evaluate": true}})
    );
    api.mutate(admin, &on(r#"setMustChangePassword(userId: "USER", required: false)"#)).await;
    api.mutate(admin, &on(r#"setWebAccess(userId: "USER", loginEnabled: true)"#)).await;
    let (_, signed_in) = api.person("carol-2", "a new password, long enough").await;
    assert_eq!(signed_in["mustChangePassword"], false);

    // The reset link's token comes back once, in the result, and sets a new password.
    let issued = api.mutate(admin, &on(r#"issuePasswordResetLink(userId: "USER")"#)).await;
    let token = issued["issuedToken"].as_str().expect("the link's token");
    let reset = api
        .post(
            &[],
            "mutation($t: String!) { completePasswordReset(token: $t, newPassword: \"reset and long enough\") }",
            json!({"t": token}),
        )
        .await
        .1;
    assert_eq!(reset["data"]["completePasswordReset"], true, "{reset}");
    api.person("carol-2", "reset and long enough").await;

    // A service provider's own user has no tenant.
    let provider =
        json!({"input": {"username": unique("operator"), "roleId": PredefinedRole::RootAdministrator.role_id()}});
    let created = api.mutate_with(&w.root, "$input: CreateUserInput!", "createUser(input: $input)", provider).await;
    let operator = id_of(&created);
    let shown = api.query(&w.root, &format!(r#"{{ user(id: "{operator}") {{ tenantId active }} }}"#)).await;
    assert_eq!(shown["user"], json!({"tenantId": null, "active": true}));

    // An agent configures nobody; an e-mail address must be one; nobody takes a name that is taken.
    let by_agent = api.refused(Some(&w.agent_a1), &on(r#"setUserEmail(userId: "USER", email: "x@example.com")"#)).await;
    assert_eq!(code(&by_agent), "FORBIDDEN");
    let not_email = api.refused(Some(admin), &on(r#"setUserEmail(userId: "USER", email: "not an address")"#)).await;
    assert_eq!(code(&not_email), "INVALID_INPUT", "{not_email}");
    let rename_taken = api.refused(Some(admin), &on(r#"renameUser(userId: "USER", username: "AGENT-A1")"#)).await;
    assert_eq!(code(&rename_taken), "CONFLICT", "{rename_taken}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_administrator_terminates_sessions_and_revokes_devices(pool: PgPool) {
    let api = Api::start(pool).await;
    let w = &api.world;
    let (agent, signed_in) = api.person("agent-a1", PASSWORD).await;
    let session = signed_in["sessionId"].as_str().expect("session").to_owned();
    let device = signed_in["deviceId"].as_str().expect("device").to_owned();

    // Another agent cannot end it; the agent's administrator can.
    let by_agent = api.refused(Some(&w.agent_a2), &format!(r#"terminateSession(sessionId: "{session}")"#)).await;
    assert_eq!(code(&by_agent), "FORBIDDEN");
    let ended = api.mutate(&w.admin_a, &format!(r#"terminateSession(sessionId: "{session}")"#)).await;
    assert_eq!(ended["changed"], "SESSION");
    let user = w.agent_a1.user_id;
    let sessions =
        api.query(&w.admin_a, &format!(r#"{{ user(id: "{user}") {{ sessions {{ id endReason endedAt }} }} }}"#)).await;
    let shown = sessions["user"]["sessions"].as_array().expect("sessions");
    let ended = shown.iter().find(|s| s["id"] == session.as_str()).expect("the ended session");
    assert_eq!(ended["endReason"], "terminated", "{ended}");
    assert!(ended["endedAt"].is_string());
    let after = api.answer(Some(&agent), "{ me { id } }", Value::Null).await;
    assert_eq!(code(&after["errors"][0]), "UNAUTHENTICATED", "{after}");

    // A new session on the same device ends with the device.
    let query = "mutation($p: String!, $d: UUID!) {
                   signIn(username: \"agent-a1\", password: $p, device: {id: $d}) { token deviceId } }";
    let again = api.post(&[], query, json!({"p": PASSWORD, "d": device})).await.1;
    assert_eq!(again["data"]["signIn"]["deviceId"], device.as_str(), "{again}");
    let mut on_device = agent.clone();
    on_device.token = again["data"]["signIn"]["token"].as_str().expect("token").to_owned();
    assert!(api.answer(Some(&on_device), "{ me { id } }", Value::Null).await.get("errors").is_none());
    let revoked = api.mutate(&w.admin_a, &format!(r#"revokeDevice(deviceId: "{device}")"#)).await;
    assert_eq!(revoked["changed"], "DEVICE");
    let devices = api.query(&w.admin_a, &format!(r#"{{ user(id: "{user}") {{ devices {{ id revokedAt }} }} }}"#)).await;
    let shown = devices["user"]["devices"].as_array().expect("devices");
    assert!(shown.iter().any(|d| d["id"] == device.as_str() && d["revokedAt"].is_string()), "{devices}");
    let after = api.answer(Some(&on_device), "{ me { id } }", Value::Null).await;
    assert_eq!(code(&after["errors"][0]), "UNAUTHENTICATED", "{after}");
    api.world.shutdown.cancel();
}

async fn record_call(world: &World, extension: &str) -> Uuid {
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let call_id = Uuid::now_v7();
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: format!("{call_id}@sbc.example"),
        direction: CallDirection::Inbound,
        participants: vec![],
        extension: Some(extension.to_owned()),
        user_id: None,
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at: chrono::Utc::now(),
    };
    let meta = CommandMeta::system("recorder:rec-1").in_tenant(world.tenant_a);
    calls.execute(&call_id.to_string(), CallCommand::RecordCallStart { call_id, start }, meta).await.expect("call");
    call_id
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn assigning_a_call_to_similar_calls_shows_in_the_calls_query(pool: PgPool) {
    let api = Api::start(pool).await;
    let w = &api.world;
    let similar = [record_call(w, "5005").await, record_call(w, "5005").await, record_call(w, "5005").await];
    let other = record_call(w, "6006").await;
    let agent = w.agent_a1.user_id;

    // A supervisor does not reach calls assigned to nobody.
    let by_supervisor = format!(r#"assignCall(callId: "{other}", userId: "{agent}")"#);
    assert_eq!(code(&api.refused(Some(&w.supervisor_a), &by_supervisor).await), "FORBIDDEN");

    let first = similar[0];
    let assigned = api
        .mutate(&w.admin_a, &format!(r#"assignCall(callId: "{first}", userId: "{agent}", applyToSimilar: true)"#))
        .await;
    assert_eq!(assigned["changed"], "CALL");
    assert_eq!(assigned["id"], first.to_string());
    let calls = api
        .query(&w.admin_a, r#"{ calls(filter: {extension: "5005"}) { edges { node { id userId extension } } } }"#)
        .await;
    let edges = calls["calls"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 3, "{calls}");
    assert!(edges.iter().all(|e| e["node"]["userId"] == agent.to_string()), "{calls}");
    let left = api.query(&w.admin_a, &format!(r#"{{ call(id: "{other}") {{ userId }} }}"#)).await;
    assert_eq!(left["call"]["userId"], Value::Null);
    let profile = api.query(&w.admin_a, &format!(r#"{{ user(id: "{agent}") {{ extensions }} }}"#)).await;
    assert_eq!(profile["user"]["extensions"], json!(["5005"]), "the extension joined the profile");

    // One call alone, with the extension given.
    let assign_other = format!(r#"assignCall(callId: "{other}", userId: "{agent}", extension: "6006")"#);
    let result = api
        .query(&w.admin_a, &format!("mutation {{ result: {assign_other} {{ call {{ id userId extension }} }} }}"))
        .await;
    assert_eq!(
        result["result"]["call"],
        json!({"id": other.to_string(), "userId": agent.to_string(), "extension": "6006"}),
        "the mutation answers with the changed call"
    );
    let assigned = api.query(&w.admin_a, &format!(r#"{{ call(id: "{other}") {{ userId }} }}"#)).await;
    assert_eq!(assigned["call"]["userId"], agent.to_string());
    // A call cannot go to another tenant's user.
    let b = w.agent_b.user_id;
    let foreign = api.refused(Some(&w.root), &format!(r#"assignCall(callId: "{first}", userId: "{b}")"#)).await;
    assert_eq!(code(&foreign), "INVALID_INPUT", "{foreign}");
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn storage_target_mutations_keep_secrets_sealed_and_show_each_step(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let w = &api.world;
    let admin = &w.admin_a;
    let directory = std::env::temp_dir().join(unique("recall-storage"));
    std::fs::create_dir_all(&directory).expect("a directory");
    let path = directory.to_str().expect("utf-8 path").to_owned();
    let add = "$input: AddStorageTargetInput!";
    let input = json!({"input": {"tenantId": w.tenant_a, "name": "Archive",
                                 "settings": {"localFilesystem": {"path": path}}}});
    let added = api.mutate_with(admin, add, "addStorageTarget(input: $input)", input).await;
    assert_eq!(added["changed"], "STORAGE_TARGET");
    let target = id_of(&added);
    let tenant = w.tenant_a;
    let read = format!(
        r#"{{ storageTargets(tenantId: "{tenant}", includeDeleted: true) {{ id name kind settings state lastTest {{ ok detail }} }} }}"#
    );
    let shown = |data: Value| data["storageTargets"].as_array().and_then(|t| t.first().cloned()).unwrap_or_default();

    api.mutate(admin, &format!(r#"testStorageTarget(targetId: "{target}")"#)).await;
    let tested = shown(api.query(admin, &read).await);
    assert_eq!(tested["kind"], "local_filesystem");
    assert_eq!(tested["lastTest"]["ok"], true, "{tested}");

    // To S3 with a secret key: the key is sealed and shown only as "set"; an edit without it keeps it.
    let secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let s3 = |key: Option<&str>| {
        json!({"s3": {"endpoint": "http://127.0.0.1:9", "region": "us-east-1", "bucket": "recordings",
                      "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": key, "pathStyle": true}})
    };
    let edit = "$id: UUID!, $input: StorageTargetInput!";
    let call = "editStorageTarget(targetId: $id, input: $input)";
    let to_s3 = json!({"id": target, "input": {"name": "Archive", "settings": s3(Some(secret_key))}});
    api.mutate_with(admin, edit, call, to_s3).await;
    let kept = json!({"id": target, "input": {"name": "Archive 2", "settings": s3(None)}});
    api.mutate_with(admin, edit, call, kept).await;
    let edited = shown(api.query(admin, &read).await);
    assert_eq!(edited["name"], "Archive 2");
    assert_eq!(edited["kind"], "s3");
    assert_eq!(edited["settings"]["secret_access_key"], "set", "{edited}");
    assert!(!edited.to_string().contains(secret_key));
    let sealed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM secrets WHERE kind = 'storage_credential' AND value IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(sealed, 1, "the kept key is the only one");

    api.mutate(admin, &format!(r#"deleteStorageTarget(targetId: "{target}")"#)).await;
    assert_eq!(shown(api.query(admin, &read).await)["state"], "deleted");
    api.mutate(admin, &format!(r#"restoreStorageTarget(targetId: "{target}")"#)).await;
    assert_eq!(shown(api.query(admin, &read).await)["state"], "active");
    api.mutate(admin, &format!(r#"deleteStorageTarget(targetId: "{target}")"#)).await;
    api.mutate(admin, &format!(r#"purgeStorageTarget(targetId: "{target}")"#)).await;
    assert_eq!(api.query(admin, &read).await["storageTargets"], json!([]));

    // Settings name one kind, a new target brings its secret, a port is a port: each names its field.
    let refused = |settings: Value| {
        let input = json!({"input": {"tenantId": tenant, "name": unique("Target"), "settings": settings}});
        api.refused_with(Some(admin), add, "addStorageTarget(input: $input)", input)
    };
    let none = refused(json!({})).await;
    assert_eq!((code(&none), field(&none)), ("INVALID_INPUT", "input.settings"), "{none}");
    let two = refused(json!({"localFilesystem": {"path": "/srv"}, "ftp": {"host": "h", "username": "u"}})).await;
    assert_eq!((code(&two), field(&two)), ("INVALID_INPUT", "input.settings"), "{two}");
    let no_key = refused(s3(None)).await;
    assert_eq!((code(&no_key), field(&no_key)), ("INVALID_INPUT", "input.settings.s3.secretAccessKey"), "{no_key}");
    let port = refused(json!({"ftp": {"host": "h", "port": 0, "username": "u", "password": "p"}})).await;
    assert_eq!((code(&port), field(&port)), ("INVALID_INPUT", "input.settings.ftp.port"), "{port}");
    let relative = refused(json!({"localFilesystem": {"path": "relative/path"}})).await;
    assert_eq!(code(&relative), "INVALID_INPUT", "{relative}");
    // Storage is the tenant administrator's.
    let input =
        json!({"input": {"tenantId": tenant, "name": "Agent's", "settings": {"localFilesystem": {"path": path}}}});
    let by_agent = api.refused_with(Some(&w.agent_a1), add, "addStorageTarget(input: $input)", input).await;
    assert_eq!(code(&by_agent), "FORBIDDEN");
    let _ = std::fs::remove_dir_all(&directory);
    api.world.shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn custom_field_and_visibility_mutations_show_in_their_queries(pool: PgPool) {
    let api = Api::start(pool).await;
    let w = &api.world;
    let admin = &w.admin_a;
    let tenant = w.tenant_a;
    let add = "$input: AddCustomFieldInput!";
    let input = json!({"input": {"tenantId": tenant, "name": "Outcome", "fieldType": "OPTION",
                                 "options": ["Sale", "No sale"], "editable": true, "advancedSearch": true,
                                 "freeTextSearch": false}});
    let added = api.mutate_with(admin, add, "addCustomField(input: $input)", input).await;
    assert_eq!(added["changed"], "CUSTOM_FIELD");
    let field_id = id_of(&added);
    let read =
        format!(r#"{{ customFields(tenantId: "{tenant}", includeDeleted: true) {{ id name definition state }} }}"#);
    let shown = |data: Value| data["customFields"].as_array().and_then(|f| f.first().cloned()).unwrap_or_default();
    let field_shown = shown(api.query(admin, &read).await);
    assert_eq!(field_shown["name"], "Outcome");
    assert_eq!(field_shown["definition"]["field_type"], json!({"type": "option", "options": ["Sale", "No sale"]}));

    let edit = "$id: UUID!, $input: CustomFieldInput!";
    let input = json!({"id": field_id, "input": {"name": "Outcome notes", "fieldType": "TEXT", "length": 100,
                                                 "editable": false, "advancedSearch": false, "freeTextSearch": true}});
    api.mutate_with(admin, edit, "editCustomField(fieldId: $id, input: $input)", input).await;
    let edited = shown(api.query(admin, &read).await);
    assert_eq!(edited["name"], "Outcome notes");
    assert_eq!(edited["definition"]["field_type"], json!({"type": "text"}));
    assert_eq!(edited["definition"]["length"], 100);
    assert_eq!(edited["definition"]["editable"], false);

    // Hide a built-in field and the custom field in the list of recordings.
    let custom = format!("custom:{field_id}");
    let hide = format!(
        r#"setFieldVisibility(tenantId: "{tenant}", layout: RECORDINGS,
             fields: [{{field: "caller", visible: false}}, {{field: "{custom}", visible: false}}])"#
    );
    let hidden = api.mutate(admin, &hide).await;
    assert_eq!(hidden["changed"], "FIELD_VISIBILITY");
    assert_eq!(hidden["id"], tenant.to_string());
    let layouts = api
        .query(
            admin,
            &format!(r#"{{ fieldVisibility(tenantId: "{tenant}") {{ layout fields {{ field visible }} }} }}"#),
        )
        .await;
    let recordings = layouts["fieldVisibility"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["layout"] == "RECORDINGS"))
        .expect("the recordings layout")["fields"]
        .clone();
    let visible = |name: &str| {
        recordings.as_array().and_then(|f| f.iter().find(|f| f["field"] == name)).map(|f| f["visible"].clone())
    };
    assert_eq!(visible("caller"), Some(json!(false)), "{recordings}");
    assert_eq!(visible(&custom), Some(json!(false)), "{recordings}");
    assert_eq!(visible("callee"), Some(json!(true)), "{recordings}");

    api.mutate(admin, &format!(r#"deleteCustomField(fieldId: "{field_id}")"#)).await;
    assert_eq!(shown(api.query(admin, &read).await)["state"], "deleted");
    api.mutate(admin, &format!(r#"restoreCustomField(fieldId: "{field_id}")"#)).await;
    assert_eq!(shown(api.query(admin, &read).await)["state"], "active");
    api.mutate(admin, &format!(r#"deleteCustomField(fieldId: "{field_id}")"#)).await;
    api.mutate(admin, &format!(r#"purgeCustomField(fieldId: "{field_id}")"#)).await;
    assert_eq!(api.query(admin, &read).await["customFields"], json!([]));

    // Options belong to OPTION fields; a field is listed once; a layout knows its fields.
    let input = json!({"input": {"tenantId": tenant, "name": "Reason", "fieldType": "OPTION", "editable": true,
                                 "advancedSearch": false, "freeTextSearch": false}});
    let no_options = api.refused_with(Some(admin), add, "addCustomField(input: $input)", input).await;
    assert_eq!((code(&no_options), field(&no_options)), ("INVALID_INPUT", "input.options"), "{no_options}");
    let twice = format!(
        r#"setFieldVisibility(tenantId: "{tenant}", layout: USERS,
             fields: [{{field: "email", visible: false}}, {{field: "email", visible: true}}])"#
    );
    let twice = api.refused(Some(admin), &twice).await;
    assert_eq!((code(&twice), field(&twice)), ("INVALID_INPUT", "fields[1].field"), "{twice}");
    let unknown = format!(
        r#"setFieldVisibility(tenantId: "{tenant}", layout: USERS, fields: [{{field: "shoe size", visible: false}}])"#
    );
    assert_eq!(code(&api.refused(Some(admin), &unknown).await), "INVALID_INPUT");
    // Customization is the administrator's.
    let by_supervisor = format!(r#"setFieldVisibility(tenantId: "{tenant}", layout: USERS, fields: [])"#);
    assert_eq!(code(&api.refused(Some(&w.supervisor_a), &by_supervisor).await), "FORBIDDEN");
    api.world.shutdown.cancel();
}

fn form(name: &str, weights: [i32; 2]) -> Value {
    let answers = json!([{"text": "Yes", "scoreBp": 10_000}, {"text": "No", "scoreBp": 0}]);
    json!({"name": name, "sections": [{"title": "Greeting", "questions": [
        {"text": "Greeted the caller?", "weightBp": weights[0], "answers": answers},
        {"text": "Said their name?", "weightBp": weights[1], "answers": answers},
    ]}]})
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn evaluation_form_mutations_version_clone_and_undelete_forms(pool: PgPool) {
    let api = Api::start(pool).await;
    let w = &api.world;
    let admin = &w.admin_a;
    let create = "$input: CreateEvaluationFormInput!";
    let mut input = form("Quality", [4_000, 6_000]);
    input["tenantId"] = json!(w.tenant_a);
    let created = api.mutate_with(admin, create, "createEvaluationForm(input: $input)", json!({"input": input})).await;
    assert_eq!(created["changed"], "EVALUATION_FORM");
    let form_id = id_of(&created);
    let read = |id: &str| format!(r#"{{ evaluationForm(id: "{id}") {{ name version clonedFrom state definition }} }}"#);
    let shown = api.query(admin, &read(&form_id)).await["evaluationForm"].clone();
    assert_eq!((shown["name"].clone(), shown["version"].clone()), (json!("Quality"), json!(1)));
    assert_eq!(shown["definition"]["sections"][0]["questions"][0]["weight_bp"], 4_000, "{shown}");

    let revise = "$id: UUID!, $input: EvaluationFormInput!";
    let revised = json!({"id": form_id, "input": form("Quality", [5_000, 5_000])});
    api.mutate_with(admin, revise, "reviseEvaluationForm(formId: $id, input: $input)", revised).await;
    let shown = api.query(admin, &read(&form_id)).await["evaluationForm"].clone();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["definition"]["sections"][0]["questions"][1]["weight_bp"], 5_000, "{shown}");

    let cloned =
        api.mutate(admin, &format!(r#"cloneEvaluationForm(sourceId: "{form_id}", name: "Quality (copy)")"#)).await;
    let copy = id_of(&cloned);
    let shown = api.query(admin, &read(&copy)).await["evaluationForm"].clone();
    assert_eq!((shown["name"].clone(), shown["clonedFrom"].clone()), (json!("Quality (copy)"), json!(form_id)));
    let taken = api
        .refused(Some(admin), &format!(r#"cloneEvaluationForm(sourceId: "{form_id}", name: "quality (COPY)")"#))
        .await;
    assert_eq!(code(&taken), "CONFLICT");
    let stolen =
        api.refused(Some(&w.admin_b), &format!(r#"cloneEvaluationForm(sourceId: "{form_id}", name: "Stolen")"#)).await;
    assert_eq!(code(&stolen), "FORBIDDEN");

    api.mutate(admin, &format!(r#"deleteEvaluationForm(formId: "{copy}")"#)).await;
    assert_eq!(api.query(admin, &read(&copy)).await["evaluationForm"]["state"], "deleted");
    api.mutate(admin, &format!(r#"restoreEvaluationForm(formId: "{copy}")"#)).await;
    assert_eq!(api.query(admin, &read(&copy)).await["evaluationForm"]["state"], "active");
    api.mutate(admin, &format!(r#"deleteEvaluationForm(formId: "{copy}")"#)).await;
    api.mutate(admin, &format!(r#"purgeEvaluationForm(formId: "{copy}")"#)).await;
    assert_eq!(api.query(admin, &read(&copy)).await["evaluationForm"], Value::Null);

    // A negative weight names its place; weights must total 100 %.
    let mut negative = form("Broken", [-1, 10_001]);
    negative["tenantId"] = json!(w.tenant_a);
    let refused =
        api.refused_with(Some(admin), create, "createEvaluationForm(input: $input)", json!({"input": negative})).await;
    assert_eq!(
        (code(&refused), field(&refused)),
        ("INVALID_INPUT", "input.sections[0].questions[0].weightBp"),
        "{refused}"
    );
    let mut short = form("Short", [4_000, 5_999]);
    short["tenantId"] = json!(w.tenant_a);
    let refused =
        api.refused_with(Some(admin), create, "createEvaluationForm(input: $input)", json!({"input": short})).await;
    assert_eq!(code(&refused), "INVALID_INPUT", "{refused}");
    assert!(refused["message"].as_str().unwrap_or_default().contains("100 %"), "{refused}");
    api.world.shutdown.cancel();
}
