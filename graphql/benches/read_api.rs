//! Read-side benchmark: the GraphQL API over HTTP on a read model of a million calls.
//!
//! 1. Dataset: `recall_commands::synthetic` fills the database `recall_bench_read` through the real command
//!    path (4 tenants × 25 groups × 10 agents, a supervisor per group, an administrator per tenant;
//!    100,000 administrative events; 1,000,000 calls over 90 days). A dataset of the asked size is reused
//!    from an earlier run; `--regenerate` makes a new one.
//! 2. Projection catch-up: the live projector brings the read model up to the log head.
//! 3. Replay: `recall_projections::rebuild` of every projection from position 0 (what `recall replay`
//!    runs), in events per second.
//! 4. Latency under load: the API (axum on 127.0.0.1, the real router) and `--clients` concurrent
//!    HTTP clients signed in as supervisors and administrators, each scenario for `--seconds`: the
//!    calls search (one page of 50, one group, a 7-day window, as that group's supervisor), the audit
//!    trail search (one page of 50 by target and by action, last 30 days, as the tenant administrator),
//!    and a user lookup (users by part of a name, as the tenant administrator); and as a baseline, the
//!    same clients asking only `{ version }`.
//!
//! Run: `cargo bench -p recall-graphql --bench read_api` (DATABASE_URL names the server; generating the
//! dataset takes several minutes the first time). Prints Markdown tables for BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recall_commands::admin::{Admin, AdminConfig};
use recall_commands::delivery::NoDelivery;
use recall_commands::secrets::{SecretStore, SecretsKey};
use recall_commands::storage_probe::ConnectionProbe;
use recall_commands::synthetic::{self, SyntheticSpec};
use recall_commands::{EventLog, LogConfig, LogMetrics};
use recall_graphql::{ApiOptions, ApiState};
use recall_projections::{ProjectionMetrics, Projector};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DATABASE: &str = "recall_bench_read";
const PASSWORD: &str = "read benchmark password 2026";

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    #[arg(long, default_value_t = 100_000)]
    audit_events: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Make a new dataset even if one of the asked size exists.
    #[arg(long)]
    regenerate: bool,
    /// Skip the replay measurement.
    #[arg(long)]
    no_replay: bool,
    /// Only the load scenarios whose name contains this (baseline, calls, audit, users).
    #[arg(long)]
    only: Option<String>,
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    // cargo bench passes --bench; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The people the clients act as, read back from the read model.
#[derive(Debug, Clone)]
struct Viewer {
    tenant_id: Uuid,
    /// The group a supervisor manages.
    group_id: Option<Uuid>,
    token: String,
}

#[derive(Debug, Default)]
struct Population {
    supervisors: Vec<Viewer>,
    administrators: Vec<Viewer>,
    /// Agents by tenant: (tenant, user id).
    agents: Vec<(Uuid, Uuid)>,
    last_names: Vec<String>,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let server: PgConnectOptions = args.database_url.parse().expect("DATABASE_URL");
    let key_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("recall_bench_read.secrets.key");

    let mut pool = open(&server).await;
    let reuse = !args.regenerate && dataset_matches(&pool, &args).await && key_file.exists();
    if !reuse {
        pool.close().await;
        let _ = std::fs::remove_file(&key_file);
        pool = fresh(&server).await;
    }
    recall_migrations::MIGRATOR.run(&pool).await.expect("migrations");
    let key = SecretsKey::load_or_create(&key_file).expect("secrets key");
    let registry = prometheus::Registry::new();
    let log =
        EventLog::open(pool.clone(), LogConfig::new("bench", "bench"), LogMetrics::register(&registry).expect("m"))
            .await
            .expect("log");
    let shutdown = CancellationToken::new();
    log.spawn(true, shutdown.clone());
    let admin = Arc::new(Admin::new(
        log.clone(),
        SecretStore::new(pool.clone(), Some(key)),
        Arc::new(NoDelivery),
        Arc::new(ConnectionProbe::default()),
        AdminConfig::default(),
    ));
    admin.seed_roles().await.expect("roles");

    if !reuse {
        generate(&server, &key_file, &args).await;
    }
    recall_commands::testing::wait_until_sequenced(&log, Duration::from_secs(3600)).await;
    let head = log.status().await.expect("log status").head_position;
    println!("Dataset: {head} events in the log ({} calls, {} audit events asked).\n", args.calls, args.audit_events);

    let projector = Projector::new(
        log.clone(),
        recall_projections::all(),
        ProjectionMetrics::register(&registry).expect("metrics"),
    );
    let started = Instant::now();
    let mut behind = 0;
    for projection in recall_projections::all() {
        let schema = recall_projections::live_schema(projection.name());
        let at: Option<i64> = sqlx::query_scalar(&format!("SELECT position FROM {schema}.checkpoint"))
            .fetch_optional(&pool)
            .await
            .unwrap_or(None);
        behind = behind.max(head.saturating_sub(at.unwrap_or(0) as u64));
    }
    projector.spawn(shutdown.clone());
    assert!(projector.wait_for(head, Duration::from_secs(3600)).await, "the projections catch up");
    if behind > 0 {
        println!(
            "Live projection catch-up: {behind} events behind, caught up in {:.1} s.\n",
            started.elapsed().as_secs_f64()
        );
    }

    if !args.no_replay {
        replay(&pool, &log).await;
    }

    let state = ApiState {
        log: log.clone(),
        admin: admin.clone(),
        projector,
        registry,
        version: "bench",
        options: ApiOptions::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let address = listener.local_addr().expect("address");
    let app = recall_graphql::router(state);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.expect("serve")
    });
    let url = format!("http://{address}/graphql");
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build().expect("http client");
    let population = population(&pool, &http, &url).await;
    println!(
        "Viewers: {} supervisors, {} administrators; {} agents.\n",
        population.supervisors.len(),
        population.administrators.len(),
        population.agents.len()
    );

    println!(
        "## Latency under load ({} concurrent clients over HTTP, {} s per scenario, one page each)\n",
        args.clients, args.seconds
    );
    println!("| query | requests | requests/s | rows/page | p50 | p95 | p99 | max | target |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let population = Arc::new(population);
    for scenario in [
        Scenario::Baseline,
        Scenario::CallsByGroup,
        Scenario::AuditByTarget,
        Scenario::AuditByAction,
        Scenario::UserLookup,
    ] {
        if args.only.as_deref().is_none_or(|only| scenario.label().contains(only)) {
            load(&http, &url, &population, scenario, args.clients, Duration::from_secs(args.seconds)).await;
        }
    }
    shutdown.cancel();
}

async fn open(server: &PgConnectOptions) -> PgPool {
    let mut admin = PgConnection::connect_with(server).await.expect("connect to DATABASE_URL");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(DATABASE)
        .fetch_one(&mut admin)
        .await
        .expect("pg_database");
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await.expect("create");
    }
    admin.close().await.expect("close");
    pool_on(server, false).await
}

async fn pool_on(server: &PgConnectOptions, async_commit: bool) -> PgPool {
    let options = server.clone().database(DATABASE);
    let options = if async_commit { options.options([("synchronous_commit", "off")]) } else { options };
    PgPoolOptions::new().max_connections(48).connect_with(options).await.expect("pool")
}

async fn fresh(server: &PgConnectOptions) -> PgPool {
    let mut admin = PgConnection::connect_with(server).await.expect("connect to DATABASE_URL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await.expect("create");
    admin.close().await.expect("close");
    pool_on(server, false).await
}

/// A dataset is reused when an earlier run recorded generating one of this size.
async fn dataset_matches(pool: &PgPool, args: &Args) -> bool {
    let row = sqlx::query("SELECT calls, audit_events FROM bench_dataset").fetch_optional(pool).await;
    match row {
        Ok(Some(row)) => {
            row.get::<i64, _>("calls") == args.calls as i64
                && row.get::<i64, _>("audit_events") == args.audit_events as i64
        }
        _ => false,
    }
}

async fn generate(server: &PgConnectOptions, key_file: &std::path::Path, args: &Args) {
    // The generator writes through its own pool with asynchronous commit: synthetic data is not worth an
    // fsync per command. The log, sequencer and projections are the same as everywhere else.
    let pool = pool_on(server, true).await;
    let log =
        EventLog::open(pool.clone(), LogConfig::new("bench", "generator"), LogMetrics::unregistered().expect("m"))
            .await
            .expect("log");
    let writer = Arc::new(Admin::new(
        log,
        SecretStore::new(pool.clone(), Some(SecretsKey::load_or_create(key_file).expect("secrets key"))),
        Arc::new(NoDelivery),
        Arc::new(ConnectionProbe::default()),
        AdminConfig::default(),
    ));
    let spec = SyntheticSpec {
        calls: args.calls,
        audit_events: args.audit_events,
        password: Some(SecretString::from(PASSWORD.to_owned())),
        ..SyntheticSpec::default()
    };
    let started = Instant::now();
    let last = Mutex::new(Instant::now());
    let report = synthetic::generate(&writer, &spec, |phase, done, total| {
        let mut last = last.lock().expect("progress");
        if done == total || last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            eprintln!("generating {phase}: {done} of {total} ({:.0} s)", started.elapsed().as_secs_f64());
        }
    })
    .await
    .expect("the dataset is generated");
    println!(
        "Generated the dataset in {:.0} s: {} administrative events, {} calls (tag syn{}).\n",
        started.elapsed().as_secs_f64(),
        report.admin_events,
        report.calls,
        report.tag
    );
    sqlx::query("CREATE TABLE bench_dataset (calls bigint NOT NULL, audit_events bigint NOT NULL, tag text NOT NULL)")
        .execute(&pool)
        .await
        .expect("dataset table");
    sqlx::query("INSERT INTO bench_dataset VALUES ($1, $2, $3)")
        .bind(args.calls as i64)
        .bind(args.audit_events as i64)
        .bind(&report.tag)
        .execute(&pool)
        .await
        .expect("dataset row");
    pool.close().await;
}

async fn replay(pool: &PgPool, log: &EventLog) {
    println!("## Replay (`recall replay`: every projection rebuilt from position 0 and swapped in)\n");
    println!("| projection | events | seconds | events/s | target |");
    println!("|---|---:|---:|---:|---|");
    for projection in recall_projections::all() {
        let started = Instant::now();
        let position = recall_projections::rebuild(pool, log, projection.as_ref(), |_| {}).await.expect("rebuild");
        let seconds = started.elapsed().as_secs_f64();
        let rate = position as f64 / seconds;
        let verdict = if rate >= 50_000.0 { "≥ 50,000 ✔" } else { "≥ 50,000 ✘" };
        println!("| {} | {position} | {seconds:.1} | {rate:.0} | {verdict} |", projection.name());
    }
    println!();
}

/// Reads the generated people back from the read model and signs the viewers in over HTTP.
async fn population(pool: &PgPool, http: &reqwest::Client, url: &str) -> Population {
    let tag: String = sqlx::query_scalar("SELECT tag FROM bench_dataset").fetch_one(pool).await.expect("dataset tag");
    let prefix = format!("syn{tag}-");
    let rows = sqlx::query(
        "SELECT user_id, tenant_id, username, full_name, managed_groups FROM rm_directory.users
          WHERE username LIKE $1 || '%' ORDER BY username",
    )
    .bind(&prefix)
    .fetch_all(pool)
    .await
    .expect("users");
    let mut population = Population::default();
    let mut viewers = Vec::new();
    for row in rows {
        let username: String = row.get("username");
        let Some(tenant_id) = row.get::<Option<Uuid>, _>("tenant_id") else { continue };
        let rest = &username[prefix.len()..];
        if rest.starts_with("agent-") {
            population.agents.push((tenant_id, row.get("user_id")));
            if let Some(last) =
                row.get::<Option<String>, _>("full_name").and_then(|n| n.split(' ').nth(1).map(str::to_owned))
            {
                population.last_names.push(last);
            }
        } else if rest.starts_with("sup-") || rest.starts_with("admin-") {
            let managed: Vec<Uuid> = row.get("managed_groups");
            viewers.push((username, tenant_id, managed.first().copied()));
        }
    }
    population.last_names.sort();
    population.last_names.dedup();
    for (username, tenant_id, group_id) in viewers {
        let response = graphql(
            http,
            url,
            None,
            "mutation($u: String!, $p: String!) { signIn(username: $u, password: $p) { token } }",
            json!({ "u": username, "p": PASSWORD }),
        )
        .await
        .expect("sign-in request");
        let token = response["data"]["signIn"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{username} signs in: {response}"))
            .to_owned();
        let viewer = Viewer { tenant_id, group_id, token };
        if viewer.group_id.is_some() {
            population.supervisors.push(viewer);
        } else {
            population.administrators.push(viewer);
        }
    }
    assert!(!population.supervisors.is_empty() && !population.administrators.is_empty(), "viewers signed in");
    population
}

async fn graphql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, reqwest::Error> {
    let mut request = http.post(url).json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await?.json().await
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// The cost of HTTP, GraphQL and recognising the token, with no read-model query.
    Baseline,
    CallsByGroup,
    AuditByTarget,
    AuditByAction,
    UserLookup,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline: `{ version }`, signed in (administrator)",
            Self::CallsByGroup => "calls: one group, 7-day window (supervisor)",
            Self::AuditByTarget => "audit trail: by target, last 30 days (administrator)",
            Self::AuditByAction => "audit trail: by action, last 30 days (administrator)",
            Self::UserLookup => "users: by part of a name (administrator)",
        }
    }

    /// One request: who asks, what, and where the page's rows are in the answer.
    fn request(self, population: &Population, rng: &mut StdRng) -> (String, &'static str, Value, &'static str) {
        let admin_of = |tenant: Uuid| {
            population.administrators.iter().find(|a| a.tenant_id == tenant).expect("every tenant has an administrator")
        };
        match self {
            Self::Baseline => {
                let admin = &population.administrators[rng.random_range(0..population.administrators.len())];
                (admin.token.clone(), "{ version }", json!({}), "version")
            }
            Self::CallsByGroup => {
                let supervisor = &population.supervisors[rng.random_range(0..population.supervisors.len())];
                let to = Utc::now() - chrono::Duration::hours(rng.random_range(0..24 * 83));
                let from = to - chrono::Duration::days(7);
                (
                    supervisor.token.clone(),
                    "query($f: CallFilter!) { calls(filter: $f, first: 50) {
                        edges { node { id startedAt direction extension userId participants } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": { "groupId": supervisor.group_id, "from": from, "to": to } }),
                    "calls",
                )
            }
            Self::AuditByTarget => {
                let (tenant, agent) = population.agents[rng.random_range(0..population.agents.len())];
                let from = Utc::now() - chrono::Duration::days(30);
                (
                    admin_of(tenant).token.clone(),
                    "query($f: AuditFilter!) { auditTrail(filter: $f, first: 50) {
                        edges { node { position time actor action targetType targetId outcome payload } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": { "targetType": "User", "targetId": agent.to_string(), "from": from } }),
                    "auditTrail",
                )
            }
            Self::AuditByAction => {
                let admin = &population.administrators[rng.random_range(0..population.administrators.len())];
                let from = Utc::now() - chrono::Duration::days(30);
                let action = if rng.random_bool(0.5) { "EmailChanged" } else { "FullNameChanged" };
                (
                    admin.token.clone(),
                    "query($f: AuditFilter!) { auditTrail(filter: $f, first: 50) {
                        edges { node { position time actor action targetType targetId outcome payload } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": { "action": action, "from": from } }),
                    "auditTrail",
                )
            }
            Self::UserLookup => {
                let admin = &population.administrators[rng.random_range(0..population.administrators.len())];
                let name = &population.last_names[rng.random_range(0..population.last_names.len())];
                (
                    admin.token.clone(),
                    "query($s: String!) { users(filter: { search: $s }, first: 20) {
                        edges { node { id username fullName email extensions groups { id name } } } } }",
                    json!({ "s": name }),
                    "users",
                )
            }
        }
    }
}

async fn load(
    http: &reqwest::Client,
    url: &str,
    population: &Arc<Population>,
    scenario: Scenario,
    clients: usize,
    duration: Duration,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (http, url, population, stop, rows) =
            (http.clone(), url.to_owned(), population.clone(), stop.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (token, query, variables, field) = scenario.request(&population, &mut rng);
                let sent = Instant::now();
                let response = graphql(&http, &url, Some(&token), query, variables).await.expect("request");
                latencies.push(sent.elapsed());
                assert!(response.get("errors").is_none(), "{}: {response}", scenario.label());
                let page = response["data"][field]["edges"].as_array().map_or(0, Vec::len);
                rows.fetch_add(page as u64, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let n = latencies.len();
    let at = |q: f64| latencies[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let p99 = at(0.99);
    let verdict = if p99 < Duration::from_millis(50) { "p99 < 50 ms ✔" } else { "p99 < 50 ms ✘" };
    println!(
        "| {} | {n} | {:.0} | {:.1} | {} | {} | {} | {} | {verdict} |",
        scenario.label(),
        n as f64 / elapsed,
        rows.load(Ordering::Relaxed) as f64 / n as f64,
        ms(at(0.5)),
        ms(at(0.95)),
        ms(p99),
        ms(latencies[n - 1]),
    );
}
