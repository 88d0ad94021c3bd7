//! The `recall` binary: command-line interface and wiring only. It connects the database (external, or the
//! embedded private cluster), runs migrations, and starts the parts of recall that this process runs.

mod embedded_pg;
mod generate;
mod loadgen;
mod recording;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use recall_commands::admin::{Admin, AdminConfig};
use recall_commands::delivery::NoDelivery;
use recall_commands::secrets::{SecretStore, SecretsKey};
use recall_commands::{CommandService, EventLog, LogConfig, LogMetrics};
use recall_domain::site::{Site, SiteCommand};
use recall_domain::CommandMeta;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use embedded_pg::EmbeddedPostgres;

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Parser)]
#[command(name = "recall", version, about = "recall: event-sourced call recording")]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct Database {
    /// PostgreSQL server to use. Without it, recall runs a private cluster under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where recall keeps its data (the embedded database, the secrets key, and later spooled recordings).
    #[arg(long, default_value = "./recall-data")]
    data_dir: PathBuf,
    /// The site's key for sealing stored credentials (64 hex digits; created on first use). Every recall
    /// process of a site needs the same key. Default: `<data-dir>/secrets.key`.
    #[arg(long, env = "RECALL_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
}

impl Database {
    fn secrets_key_file(&self) -> PathBuf {
        self.secrets_key_file.clone().unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run recall: the recorder (SIP/SIPREC), the API, the event log's sequencer and the projections.
    Serve {
        #[command(flatten)]
        database: Database,
        /// Address the HTTP API (GraphQL, metrics) listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// This site's name; every event appended here names it as its origin.
        #[arg(long, default_value = "local")]
        site: String,
        /// This process's name within the site (default: the host name).
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        recorder: recording::RecorderArgs,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: Database,
    },
    /// Rebuild projections (the read model) from the whole log into fresh tables and swap them in; the old
    /// ones keep serving meanwhile. Safe beside a running `recall serve`.
    Replay {
        #[command(flatten)]
        database: Database,
        /// Only this projection (directory, calls, jobs or audit); all of them without it.
        #[arg(long)]
        projection: Option<String>,
    },
    /// Add a synthetic population (tenants, groups, administrators, supervisors, agents), administrative
    /// changes and calls through the real command path: for benchmarks and demonstrations. It adds beside
    /// what is there (names carry a run tag) and never changes existing data. Safe beside `recall serve`.
    Generate {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        spec: GenerateArgs,
    },
    /// Place concurrent SIPREC calls with real RTP on a recorder and report what became of them (a load
    /// generator for benchmarks; `recall serve` is the recorder).
    Loadgen {
        #[command(flatten)]
        options: loadgen::Options,
    },
    /// Administration from the command line.
    Admin {
        #[command(subcommand)]
        command: AdminCli,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct ApiArgs {
    /// Refuse GraphQL introspection (the explorer then cannot show the schema).
    #[arg(long)]
    no_introspection: bool,
    /// Mark the session cookie Secure: recall is reached over HTTPS (directly or through a proxy).
    #[arg(long)]
    secure_cookies: bool,
    /// Do not run backup and restore jobs in this process (another recall process of the site runs them).
    #[arg(long)]
    no_jobs: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    #[arg(long, default_value_t = 25)]
    groups_per_tenant: usize,
    #[arg(long, default_value_t = 10)]
    agents_per_group: usize,
    /// Calls in all, spread over the agents and the past --days.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Administrative events in all (creating the population counts towards it).
    #[arg(long, default_value_t = 100_000)]
    audit_events: u64,
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Share of calls whose extension belongs to nobody (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    unassigned_share: f64,
    /// Commands in flight at once.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Seeds who calls when and what changes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Read a password from standard input for the generated administrators and supervisors (they cannot
    /// sign in without one).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum AdminCli {
    /// Create the first root administrator of a new installation, so that somebody can sign in.
    /// Refused once an active root administrator exists.
    CreateRoot {
        #[command(flatten)]
        database: Database,
        /// The root administrator's sign-in name.
        #[arg(long)]
        username: String,
        /// Read the password from standard input (one line). Passwords are never taken as arguments.
        #[arg(long)]
        password_stdin: bool,
        /// The site's name (default: the site the database belongs to, or `local` for a new one).
        #[arg(long)]
        site: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    // Both rustls back ends are in the build (sqlx takes ring; object_store, suppaftp and russh take
    // aws-lc-rs), so rustls cannot pick a process default by itself and would panic wherever a library
    // leans on one: name it here.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("recall: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("recall: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // suppaftp traces every FTP command it sends, PASS and its password included: never below debug.
    let filter = match "suppaftp=debug".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve { database, http, site, node, api, recorder } => {
            serve(database, http, site, node, api, recorder).await
        }
        Command::Migrate { database } => {
            let (pool, embedded) = connect(&database).await?;
            let result = migrate(&pool).await;
            pool.close().await;
            stop_embedded(embedded).await;
            result
        }
        Command::Replay { database, projection } => {
            let (pool, embedded) = connect_for_command(&database).await?;
            let result = replay(pool.clone(), projection).await;
            pool.close().await;
            stop_embedded(embedded).await;
            result
        }
        Command::Generate { database, spec } => {
            let password = if spec.password_stdin { Some(read_password_line("the generated users")?) } else { None };
            // Synthetic data is not worth an fsync per command: a crash loses some of it, nothing else.
            let (pool, embedded) =
                connect_with(&database, true, |o| o.options([("synchronous_commit", "off")])).await?;
            let result = generate::run(pool.clone(), &database, spec, password).await;
            pool.close().await;
            stop_embedded(embedded).await;
            result
        }
        Command::Loadgen { options } => loadgen::run(options).await,
        Command::Admin { command: AdminCli::CreateRoot { database, username, password_stdin, site } } => {
            if !password_stdin {
                anyhow::bail!("give the password on standard input with --password-stdin (never as an argument)");
            }
            let password = read_password_line(&username)?;
            let (pool, embedded) = connect_for_command(&database).await?;
            let result = create_root(pool.clone(), &database, site, &username, password).await;
            pool.close().await;
            stop_embedded(embedded).await;
            let user_id = result?;
            println!("created root administrator {username} ({user_id})");
            Ok(())
        }
    }
}

/// `recall replay`: rebuilds the chosen projections, one after another, printing progress.
async fn replay(pool: PgPool, only: Option<String>) -> Result<()> {
    migrate(&pool).await?;
    let projections: Vec<_> =
        recall_projections::all().into_iter().filter(|p| only.as_deref().is_none_or(|name| p.name() == name)).collect();
    if projections.is_empty() {
        let names: Vec<&str> = recall_projections::all().iter().map(|p| p.name()).collect();
        anyhow::bail!("no projection is called {:?}; there are {}", only.unwrap_or_default(), names.join(", "));
    }
    let site =
        EventLog::database_site(&pool).await.context("cannot read the site")?.unwrap_or_else(|| "local".to_owned());
    let log = EventLog::open(
        pool.clone(),
        LogConfig::new(site, format!("replay-{}", host_name())),
        LogMetrics::unregistered()?,
    )
    .await
    .context("cannot open the event log")?;
    let shutdown = CancellationToken::new();
    let tasks = log.spawn(false, shutdown.clone());
    let mut result = Ok(());
    for projection in projections {
        let last = std::sync::Mutex::new(std::time::Instant::now() - Duration::from_secs(10));
        let started = std::time::Instant::now();
        let rebuilt = recall_projections::rebuild(&pool, &log, projection.as_ref(), |p| {
            let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if p.done || last.elapsed() >= Duration::from_secs(1) {
                *last = std::time::Instant::now();
                let percent = if p.head == 0 { 100.0 } else { p.position as f64 * 100.0 / p.head as f64 };
                eprintln!(
                    "{}: {} of {} events ({percent:.1} %), {:.0} events/s{}",
                    p.projection,
                    p.position,
                    p.head,
                    p.rate,
                    if p.done { ", swapped in" } else { "" }
                );
            }
        })
        .await;
        match rebuilt {
            Ok(position) => {
                println!(
                    "rebuilt {} up to position {position} in {:.1} s",
                    projection.name(),
                    started.elapsed().as_secs_f64()
                )
            }
            Err(e) => {
                result = Err(anyhow::Error::from(e).context(format!("cannot rebuild {}", projection.name())));
                break;
            }
        }
    }
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    result
}

/// One line of standard input, without its line ending; typed without echo when it is a terminal.
fn read_password_line(username: &str) -> Result<secrecy::SecretString> {
    use std::io::IsTerminal;
    let line = if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password(format!("Password for {username}: ")).context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        line
    };
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(secrecy::SecretString::from(password))
}

/// The administration service on an open log.
fn admin_service(log: &Arc<EventLog>, database: &Database) -> Result<Admin> {
    let key_file = database.secrets_key_file();
    let key = SecretsKey::load_or_create(&key_file)
        .with_context(|| format!("cannot use the secrets key file {}", key_file.display()))?;
    let secrets = SecretStore::new(log.pool().clone(), Some(key));
    let probe = Arc::new(recall_commands::storage_probe::ConnectionProbe::default());
    Ok(Admin::new(log.clone(), secrets, Arc::new(NoDelivery), probe, AdminConfig::default()))
}

async fn create_root(
    pool: PgPool,
    database: &Database,
    site: Option<String>,
    username: &str,
    password: secrecy::SecretString,
) -> Result<uuid::Uuid> {
    migrate(&pool).await?;
    let site = match site {
        Some(site) => site,
        None => {
            EventLog::database_site(&pool).await.context("cannot read the site")?.unwrap_or_else(|| "local".to_owned())
        }
    };
    let log = EventLog::open(pool, LogConfig::new(site, format!("cli-{}", host_name())), LogMetrics::unregistered()?)
        .await
        .context("cannot open the event log")?;
    let shutdown = CancellationToken::new();
    let tasks = log.spawn(true, shutdown.clone());
    let admin = admin_service(&log, database)?;
    let result = admin.create_root(username, password).await.map_err(anyhow::Error::from);
    if result.is_ok() {
        // Sequenced here, or by the running `recall serve` that holds the site's sequencer.
        let _ = tokio::time::timeout(Duration::from_secs(10), wait_sequenced(&log)).await;
    }
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    result
}

/// Connects to the configured server, or starts the embedded one.
async fn connect(database: &Database) -> Result<(PgPool, Option<EmbeddedPostgres>)> {
    connect_with(database, false, |o| o).await
}

/// Like [`connect`], but uses the embedded server a running `recall serve` started, if there is one.
async fn connect_for_command(database: &Database) -> Result<(PgPool, Option<EmbeddedPostgres>)> {
    connect_with(database, true, |o| o).await
}

/// Connects (or starts or attaches to the embedded server); `tune` adjusts the connection options.
async fn connect_with(
    database: &Database,
    attach: bool,
    tune: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
) -> Result<(PgPool, Option<EmbeddedPostgres>)> {
    let (options, embedded) = match &database.database_url {
        Some(url) => {
            let options: PgConnectOptions = url.parse().context("--database-url is not a valid PostgreSQL URL")?;
            (options, None)
        }
        None => {
            let started = if attach {
                EmbeddedPostgres::start_or_attach(&database.data_dir).await
            } else {
                EmbeddedPostgres::start(&database.data_dir).await
            };
            let embedded = started
                .with_context(|| format!("cannot run the embedded database under {}", database.data_dir.display()))?;
            (embedded.connect_options(), Some(embedded))
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(tune(options))
        .await;
    match pool {
        Ok(pool) => Ok((pool, embedded)),
        Err(e) => {
            stop_embedded(embedded).await;
            Err(e).context("cannot connect to the database")
        }
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    recall_migrations::MIGRATOR.run(pool).await.context("cannot apply the database migrations")?;
    tracing::info!("database migrations applied");
    Ok(())
}

async fn stop_embedded(embedded: Option<EmbeddedPostgres>) {
    if let Some(embedded) = embedded {
        if let Err(e) = embedded.stop().await {
            tracing::warn!(error = %e, "the embedded database did not stop cleanly");
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

async fn serve(
    database: Database,
    http: SocketAddr,
    site: String,
    node: Option<String>,
    api: ApiArgs,
    recorder: recording::RecorderArgs,
) -> Result<()> {
    let node = node.unwrap_or_else(host_name);
    let (pool, embedded) = connect(&database).await?;
    let parts = Parts { api, recorder };
    let result = serve_on(pool.clone(), http, site, node, &database, embedded.is_some(), parts).await;
    pool.close().await;
    stop_embedded(embedded).await;
    result
}

/// The options of `recall serve`'s parts.
struct Parts {
    api: ApiArgs,
    recorder: recording::RecorderArgs,
}

async fn serve_on(
    pool: PgPool,
    http: SocketAddr,
    site: String,
    node: String,
    database: &Database,
    embedded: bool,
    parts: Parts,
) -> Result<()> {
    let Parts { api, recorder } = parts;
    let data_dir = database.data_dir.as_path();
    migrate(&pool).await?;
    let registry = prometheus::Registry::new();
    let metrics = LogMetrics::register(&registry).context("cannot register metrics")?;
    let log = EventLog::open(pool, LogConfig::new(site.clone(), node.clone()), metrics)
        .await
        .context("cannot open the event log")?;
    let shutdown = CancellationToken::new();
    let tasks = log.spawn(true, shutdown.clone());

    // Bound before the start is recorded: a start that cannot listen is no start.
    let listener = tokio::net::TcpListener::bind(http).await.with_context(|| format!("cannot listen on {http}"))?;
    let sites = CommandService::<Site>::with_snapshots(log.clone(), (), 100);
    let meta = || CommandMeta::system(format!("node:{node}"));
    let started = sites
        .execute(&site, SiteCommand::RecordNodeStart { node: node.clone(), version: VERSION.to_owned() }, meta())
        .await
        .context("cannot record this node's start in the log")?;
    // Ready means the log works end to end: this node's start has its position.
    for event in &started.events {
        match log.wait_for_position(event.event_id, Duration::from_secs(10)).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "this node's start is not sequenced after 10 s: a long-running transaction may be holding the \
                 sequencer back (see recall_log_unsequenced_events)"
            ),
            Err(e) => return Err(e).context("cannot read the event log"),
        }
    }

    let admin = Arc::new(admin_service(&log, database)?);
    admin.seed_roles().await.context("cannot define the pre-defined roles")?;
    if embedded || recorder.default_tenant() {
        // A first run on the embedded default records a call from this machine with no set-up.
        admin.ensure_default_tenant().await.context("cannot create the default tenant")?;
    }
    if !admin.has_active_root().await.context("cannot look up the root administrators")? {
        tracing::warn!(
            "no root administrator exists yet: create one with `recall admin create-root --username NAME --password-stdin`"
        );
    }

    let address = listener.local_addr().context("cannot read the listening address")?;
    tracing::info!(
        %address, site, node, embedded, data_dir = %data_dir.display(),
        "recall is listening on http://{address}/graphql"
    );
    let projection_metrics =
        recall_projections::ProjectionMetrics::register(&registry).context("cannot register metrics")?;
    let projector = recall_projections::Projector::new(log.clone(), recall_projections::all(), projection_metrics);
    let mut tasks = tasks;
    tasks.extend(projector.spawn(shutdown.clone()));
    if recorder.enabled() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let wiring = recording::Wiring {
            args: &recorder,
            admin: admin.clone(),
            data_dir,
            site: &site,
            node: &node,
            registry: &registry,
        };
        let (sip_address, recorder_tasks) = recording::start(wiring, shutdown.clone()).await?;
        tracing::info!(%sip_address, "the recorder takes SIP and SIPREC calls on {sip_address} (UDP and TCP)");
        tasks.extend(recorder_tasks);
    }
    if !api.no_jobs {
        let mut options = recall_jobs::RunnerOptions::new(format!("{node}:{}", std::process::id()));
        options.recordings_dir = Some(data_dir.join("recordings"));
        options.scratch_dir = data_dir.join("tmp");
        let runner = Arc::new(recall_jobs::JobRunner::new(admin.clone(), options));
        tasks.push(runner.spawn(shutdown.clone()));
    }
    let options = recall_graphql::ApiOptions {
        introspection: !api.no_introspection,
        secure_cookies: api.secure_cookies,
        recordings_dir: recall_graphql::recordings::RecordingsDir(Some(data_dir.join("recordings"))),
        ..recall_graphql::ApiOptions::default()
    };
    let app = recall_graphql::router(recall_graphql::ApiState {
        log: log.clone(),
        admin,
        projector,
        registry,
        version: VERSION,
        options,
    });
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop_signal())
        .await;

    tracing::info!("shutting down");
    let stopped = sites.execute(&site, SiteCommand::RecordNodeStop { node: node.clone() }, meta()).await;
    if let Err(e) = stopped {
        tracing::warn!(error = %e, "could not record this node's stop in the log");
    } else {
        // Give the sequencer a moment to number the stop before it is told to end.
        let _ = tokio::time::timeout(Duration::from_secs(5), wait_sequenced(&log)).await;
    }
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    served.context("the HTTP server failed")
}

async fn wait_sequenced(log: &Arc<EventLog>) {
    while let Ok(status) = log.status().await {
        if status.unsequenced == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
