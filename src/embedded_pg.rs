//! The embedded default database: when `recall serve` gets no database URL it initialises and runs
//! a private PostgreSQL cluster under its data directory, as a direct child process.
//! It must never listen on TCP, never touch a cluster it did not create, and never run the server as root.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::Connection;
use tokio::process::{Child, Command};

/// Port in the socket's name (`.s.PGSQL.5432`); the server listens on no TCP port at all.
const PORT: u16 = 5432;
/// Database and superuser created in the cluster.
const DATABASE: &str = "recall";
const SUPERUSER: &str = "recall";
/// Unprivileged account the server runs as when recall runs as root.
const SERVER_USER: &str = "postgres";
/// Where distribution packages put versioned server binaries (`<root>/<version>/bin`).
const SEARCH_ROOTS: &[&str] = &["/usr/lib/postgresql"];
/// Where clusters go when the server user cannot reach the data directory.
const FALLBACK_CLUSTERS: &str = "/var/lib/recall/clusters";
/// `sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STALE_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 30;

/// Why the embedded database could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; \
         install them (Debian/Ubuntu: apt-get install postgresql) or pass --database-url"
    )]
    BinariesNotFound,
    #[error(
        "recall runs as root, which PostgreSQL refuses, and there is no unprivileged user `postgres` \
         to run the embedded server as; create one (installing PostgreSQL does: apt-get install postgresql) \
         or pass --database-url"
    )]
    NoServerUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: Errno,
    },
    #[error("{0}")]
    Layout(String),
    #[error("initdb failed for {} ({status}):\n{output}", .pgdata.display())]
    Initdb { pgdata: PathBuf, status: ExitStatus, output: String },
    #[error(
        "a PostgreSQL server (pid {pid}) is running on {} and belongs to another running recall (pid {parent}); \
         stop it or use another data directory",
        .pgdata.display()
    )]
    InUse { pid: i32, parent: i32, pgdata: PathBuf },
    #[error(
        "a PostgreSQL server (pid {pid}) left from an earlier run still uses {} and did not stop within {secs} s of SIGINT",
        .pgdata.display()
    )]
    StalePostmaster { pid: i32, pgdata: PathBuf, secs: u64 },
    #[error("PostgreSQL exited while starting ({status}); last lines of {}:\n{tail}", .log.display())]
    Exited { status: ExitStatus, log: PathBuf, tail: String },
    #[error(
        "PostgreSQL did not accept connections within {secs} s (last error: {last_error}); last lines of {}:\n{tail}",
        .log.display()
    )]
    NotReady { secs: u64, last_error: String, log: PathBuf, tail: String },
    #[error("could not create database `recall` in the embedded cluster: {0}")]
    CreateDatabase(#[source] sqlx::Error),
    #[error("PostgreSQL (pid {pid}) did not exit even after SIGQUIT and SIGKILL")]
    StopFailed { pid: i32 },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Sys { what, source }
}

/// A running private PostgreSQL cluster; stop it with [`EmbeddedPostgres::stop`].
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// `None` once stopped.
    child: Option<Child>,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
}

impl EmbeddedPostgres {
    /// Initialise (first run) and start a private cluster under `data_dir` (pgdata at `<data_dir>/postgres`),
    /// listening on a Unix socket only; returns once it accepts connections and the database `recall` exists.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let search_roots: Vec<&Path> = SEARCH_ROOTS.iter().map(Path::new).collect();
        let bins = locate_binaries(std::env::var_os("PATH").as_deref(), &search_roots)?;
        let who = server_user()?;
        let layout = prepare_layout(data_dir, who)?;
        tracing::info!(
            pgdata = %layout.pgdata.display(),
            socket_dir = %layout.socket_dir.display(),
            bin = %bins.postgres.display(),
            "starting embedded PostgreSQL"
        );

        if !layout.pgdata.join("PG_VERSION").exists() {
            initdb(&bins, &layout.pgdata, who).await?;
        }
        stop_stale_postmaster(&layout.pgdata).await?;

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&layout.log)
            .map_err(io(format!("cannot open {}", layout.log.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io(format!("cannot open {}", layout.log.display())))?;

        let mut cmd = Command::new(&bins.postgres);
        cmd.arg("-D")
            .arg(&layout.pgdata)
            .arg("-k")
            .arg(&layout.socket_dir)
            .arg("-p")
            .arg(PORT.to_string())
            .args(["-c", "listen_addresses="])
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir("/")
            // Own process group: a Ctrl-C at the terminal must not stop the database under recall's
            // graceful shutdown; recall stops it itself, last.
            .process_group(0);
        run_as(&mut cmd, who);
        let child = cmd.spawn().map_err(io(format!("cannot start {}", bins.postgres.display())))?;

        let mut server = EmbeddedPostgres {
            child: Some(child),
            pgdata: layout.pgdata,
            socket_dir: layout.socket_dir,
            log: layout.log,
        };
        match server.wait_ready(log_start).await {
            Ok(()) => {
                tracing::info!(socket_dir = %server.socket_dir.display(), "embedded PostgreSQL is ready");
                Ok(server)
            }
            Err(e) => {
                if let Some(child) = server.child.take() {
                    if let Err(stop_err) = shutdown(child, QUIT_TIMEOUT).await {
                        tracing::warn!(error = %stop_err, "could not stop embedded PostgreSQL after a failed start");
                    }
                }
                Err(e)
            }
        }
    }

    /// Like [`EmbeddedPostgres::start`], but when another recall process runs the cluster already, connects
    /// to that one instead (and leaves it running on [`EmbeddedPostgres::stop`]). For one-off commands
    /// such as `recall admin` beside a running `recall serve`.
    pub async fn start_or_attach(data_dir: &Path) -> Result<Self, EmbeddedError> {
        match Self::start(data_dir).await {
            Err(EmbeddedError::InUse { pid, .. }) => {
                let layout = prepare_layout(data_dir, server_user()?)?;
                tracing::info!(%pid, socket_dir = %layout.socket_dir.display(), "using the embedded PostgreSQL another recall process runs");
                Ok(Self { child: None, pgdata: layout.pgdata, socket_dir: layout.socket_dir, log: layout.log })
            }
            other => other,
        }
    }

    /// Connect options for the `recall` database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options_for(DATABASE)
    }

    /// Fast shutdown (SIGINT to the postmaster), wait for exit (bounded, then SIGQUIT).
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        match self.child.take() {
            Some(child) => shutdown(child, STOP_TIMEOUT).await,
            None => Ok(()),
        }
    }

    fn options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    /// Retry connecting until the server answers, then make sure the `recall` database exists.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), EmbeddedError> {
        let admin = self.options_for("postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut conn = loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().map_err(io("cannot poll the PostgreSQL process"))? {
                    return Err(EmbeddedError::Exited {
                        status,
                        log: self.log.clone(),
                        tail: log_tail(&self.log, log_start),
                    });
                }
            }
            let last_error =
                match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&admin)).await {
                    Ok(Ok(conn)) => break conn,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => String::from("connection attempt timed out"),
                };
            if Instant::now() >= deadline {
                return Err(EmbeddedError::NotReady {
                    secs: READY_TIMEOUT.as_secs(),
                    last_error,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, log_start),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(EmbeddedError::CreateDatabase)?;
        if !exists {
            tracing::info!("creating database {DATABASE} in the embedded cluster");
            // The name is a constant identifier; CREATE DATABASE takes no bind parameters.
            sqlx::query(&format!("create database \"{DATABASE}\""))
                .execute(&mut conn)
                .await
                .map_err(EmbeddedError::CreateDatabase)?;
        }
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the setup connection");
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Best effort for a handle that was never stopped: ask for a fast shutdown, don't wait.
        if let Some(pid) = self.child.as_ref().and_then(Child::id).and_then(to_pid) {
            tracing::warn!(pgdata = %self.pgdata.display(), "embedded PostgreSQL dropped without stop(); sending SIGINT");
            let _ = kill(pid, Signal::SIGINT);
        }
    }
}

/// SIGINT, wait up to `grace`, then SIGQUIT (and as a last resort SIGKILL).
async fn shutdown(mut child: Child, grace: Duration) -> Result<(), EmbeddedError> {
    let Some(pid) = child.id().and_then(to_pid) else {
        return Ok(()); // already reaped
    };
    if let Err(e) = kill(pid, Signal::SIGINT) {
        if e != Errno::ESRCH {
            return Err(sys(format!("cannot signal PostgreSQL (pid {pid})"))(e));
        }
    }
    if let Ok(waited) = tokio::time::timeout(grace, child.wait()).await {
        let status = waited.map_err(io("cannot wait for PostgreSQL"))?;
        tracing::info!(%status, "embedded PostgreSQL stopped");
        return Ok(());
    }
    tracing::warn!(%pid, secs = grace.as_secs(), "PostgreSQL did not stop after SIGINT; sending SIGQUIT");
    let _ = kill(pid, Signal::SIGQUIT);
    if let Ok(waited) = tokio::time::timeout(QUIT_TIMEOUT, child.wait()).await {
        waited.map_err(io("cannot wait for PostgreSQL"))?;
        return Ok(());
    }
    tracing::warn!(%pid, "PostgreSQL ignored SIGQUIT; sending SIGKILL");
    let _ = kill(pid, Signal::SIGKILL);
    match tokio::time::timeout(QUIT_TIMEOUT, child.wait()).await {
        Ok(waited) => waited.map(|_| ()).map_err(io("cannot wait for PostgreSQL")),
        Err(_) => Err(EmbeddedError::StopFailed { pid: pid.as_raw() }),
    }
}

fn to_pid(id: u32) -> Option<Pid> {
    i32::try_from(id).ok().map(Pid::from_raw)
}

// ---------------------------------------------------------------------------------------------
// Binaries

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) postgres: PathBuf,
}

/// First directory on `path_var` holding both binaries, else the highest `<root>/<version>/bin`.
pub(crate) fn locate_binaries(path_var: Option<&OsStr>, search_roots: &[&Path]) -> Result<Binaries, EmbeddedError> {
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if let Some(bins) = binaries_in(&dir) {
                return Ok(bins);
            }
        }
    }
    let mut best: Option<(Vec<u64>, Binaries)> = None;
    for root in search_roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(version) = parse_version(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let Some(bins) = binaries_in(&entry.path().join("bin")) else {
                continue;
            };
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bins));
            }
        }
    }
    best.map(|(_, bins)| bins).ok_or(EmbeddedError::BinariesNotFound)
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn binaries_in(dir: &Path) -> Option<Binaries> {
    let bins = Binaries { initdb: dir.join("initdb"), postgres: dir.join("postgres") };
    (is_executable(&bins.initdb) && is_executable(&bins.postgres)).then_some(bins)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------------------------
// Who runs the server, and where its files go

/// The account initdb and postgres run as when it is not the current one (recall runs as root).
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

fn server_user() -> Result<Option<RunAs>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SERVER_USER) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some(RunAs { uid: user.uid, gid: user.gid })),
        Ok(_) => Err(EmbeddedError::NoServerUser),
        Err(e) => Err(sys(format!("cannot look up user {SERVER_USER}"))(e)),
    }
}

/// Drop to the server user in the child (std also clears supplementary groups when it does).
fn run_as(cmd: &mut Command, who: Option<RunAs>) {
    if let Some(who) = who {
        cmd.uid(who.uid.as_raw()).gid(who.gid.as_raw());
    }
}

fn chown_to(path: &Path, who: Option<RunAs>) -> Result<(), EmbeddedError> {
    match who {
        Some(who) => nix::unistd::chown(path, Some(who.uid), Some(who.gid))
            .map_err(sys(format!("cannot chown {} to {SERVER_USER}", path.display()))),
        None => Ok(()),
    }
}

/// The first directory among `dir` and its ancestors that `who` cannot search (enter), if any.
/// Mode bits only: the server runs with its primary group and no supplementary groups.
fn unsearchable_ancestor(dir: &Path, who: RunAs) -> Option<PathBuf> {
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        let Ok(meta) = fs::metadata(ancestor) else {
            return Some(ancestor.to_path_buf());
        };
        let bit = if meta.uid() == who.uid.as_raw() {
            0o100
        } else if meta.gid() == who.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            return Some(ancestor.to_path_buf());
        }
    }
    None
}

/// First 16 hex digits of the SHA-256 of the canonical data directory path.
fn short_hash(canonical: &Path) -> String {
    let digest = Sha256::digest(canonical.as_os_str().as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(16);
    hex
}

#[derive(Debug)]
struct Layout {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
}

fn prepare_layout(data_dir: &Path, who: Option<RunAs>) -> Result<Layout, EmbeddedError> {
    DirBuilder::new()
        .recursive(true)
        .create(data_dir)
        .map_err(io(format!("cannot create data directory {}", data_dir.display())))?;
    let data_dir = fs::canonicalize(data_dir).map_err(io(format!("cannot resolve {}", data_dir.display())))?;
    let hash = short_hash(&data_dir);
    let link = data_dir.join("postgres");
    let blocked = who.and_then(|who| unsearchable_ancestor(&data_dir, who));

    let pgdata = match fs::symlink_metadata(&link) {
        // An earlier run kept the cluster elsewhere (see `fallback_cluster`).
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(&link).map_err(|e| {
            EmbeddedError::Layout(format!(
                "{} is a symlink to a cluster that cannot be reached ({e}); restore it, or remove the symlink to start an empty cluster",
                link.display()
            ))
        })?,
        Ok(_) => {
            if let Some(blocked) = &blocked {
                return Err(EmbeddedError::Layout(format!(
                    "the user {SERVER_USER} cannot reach the existing cluster {} because it cannot enter {}; \
                     make that directory searchable (chmod o+x) or move the data directory",
                    link.display(),
                    blocked.display()
                )));
            }
            link
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match (&blocked, who) {
            (Some(blocked), Some(who)) => fallback_cluster(&link, &hash, blocked, who)?,
            _ => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&link)
                    .map_err(io(format!("cannot create {}", link.display())))?;
                chown_to(&link, who)?;
                link
            }
        },
        Err(e) => return Err(io(format!("cannot inspect {}", link.display()))(e)),
    };

    let preferred = data_dir.join("run");
    let socket_dir = if blocked.is_none() && socket_path_fits(&preferred) {
        preferred
    } else {
        PathBuf::from(format!("/tmp/recall-pg-{hash}"))
    };
    prepare_socket_dir(&socket_dir, who)?;

    Ok(Layout { pgdata, socket_dir, log: data_dir.join("postgres.log") })
}

fn socket_path_fits(dir: &Path) -> bool {
    dir.as_os_str().len() + format!("/.s.PGSQL.{PORT}").len() <= SUN_PATH_MAX
}

/// The server user cannot enter the data directory (e.g. under /root, mode 700): keep the cluster
/// under /var/lib/recall/clusters/<hash> and link `<data_dir>/postgres` to it.
fn fallback_cluster(link: &Path, hash: &str, blocked: &Path, who: RunAs) -> Result<PathBuf, EmbeddedError> {
    let clusters = Path::new(FALLBACK_CLUSTERS);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(clusters)
        .map_err(io(format!("cannot create {}", clusters.display())))?;
    // The mode above is subject to the umask; the server user must be able to enter these.
    for dir in [Path::new("/var/lib/recall"), clusters] {
        let meta = fs::metadata(dir).map_err(io(format!("cannot inspect {}", dir.display())))?;
        if meta.uid() == 0 && meta.mode() & 0o005 != 0o005 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io(format!("cannot chmod {}", dir.display())))?;
        }
    }
    if let Some(still_blocked) = unsearchable_ancestor(clusters, who) {
        return Err(EmbeddedError::Layout(format!(
            "the user {SERVER_USER} can reach neither {} ({} is not searchable) nor {} ({} is not searchable)",
            link.display(),
            blocked.display(),
            clusters.display(),
            still_blocked.display()
        )));
    }
    let cluster = clusters.join(hash);
    match DirBuilder::new().mode(0o700).create(&cluster) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("cannot create {}", cluster.display()))(e)),
    }
    chown_to(&cluster, Some(who))?;
    std::os::unix::fs::symlink(&cluster, link).map_err(io(format!(
        "cannot link {} to {}",
        link.display(),
        cluster.display()
    )))?;
    tracing::warn!(
        cluster = %cluster.display(),
        link = %link.display(),
        "the user {SERVER_USER} cannot enter {} (PostgreSQL refuses to run as root, and runs as {SERVER_USER}); \
         keeping the embedded cluster in {} instead, linked from {}",
        blocked.display(),
        cluster.display(),
        link.display()
    );
    Ok(cluster)
}

/// A private (0700) directory for the socket, owned by the server user. A pre-existing one must be
/// a real directory owned by us or the server user (it may live in the shared /tmp).
fn prepare_socket_dir(dir: &Path, who: Option<RunAs>) -> Result<(), EmbeddedError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            let me = nix::unistd::geteuid().as_raw();
            let server = who.map_or(me, |w| w.uid.as_raw());
            if !meta.is_dir() || (meta.uid() != me && meta.uid() != server) {
                return Err(EmbeddedError::Layout(format!(
                    "socket directory {} exists but is not a directory owned by recall or {SERVER_USER}; remove it",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io(format!("cannot create socket directory {}", dir.display())))?;
        }
        Err(e) => return Err(io(format!("cannot inspect {}", dir.display()))(e)),
    }
    chown_to(dir, who)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(format!("cannot chmod {}", dir.display())))
}

// ---------------------------------------------------------------------------------------------
// initdb

async fn initdb(bins: &Binaries, pgdata: &Path, who: Option<RunAs>) -> Result<(), EmbeddedError> {
    tracing::info!(pgdata = %pgdata.display(), "initialising the embedded PostgreSQL cluster");
    let first = run_initdb(bins, pgdata, who, "--locale=C.UTF-8").await?;
    if first.status.success() {
        return Ok(());
    }
    tracing::warn!("initdb with locale C.UTF-8 failed; retrying with --no-locale");
    let second = run_initdb(bins, pgdata, who, "--no-locale").await?;
    if second.status.success() {
        return Ok(());
    }
    Err(EmbeddedError::Initdb {
        pgdata: pgdata.to_path_buf(),
        status: second.status,
        output: format!("{}\n--- retried with --no-locale ---\n{}", combined_output(&first), combined_output(&second)),
    })
}

async fn run_initdb(
    bins: &Binaries,
    pgdata: &Path,
    who: Option<RunAs>,
    locale_arg: &str,
) -> Result<Output, EmbeddedError> {
    let mut cmd = Command::new(&bins.initdb);
    cmd.arg("-D")
        .arg(pgdata)
        .arg("-U")
        .arg(SUPERUSER)
        .args(["--auth=trust", "--encoding=UTF8", locale_arg])
        .stdin(Stdio::null())
        .current_dir("/");
    run_as(&mut cmd, who);
    cmd.output().await.map_err(io(format!("cannot run {}", bins.initdb.display())))
}

fn combined_output(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

// ---------------------------------------------------------------------------------------------
// A postmaster left over from an earlier run

/// If `postmaster.pid` names a live postmaster of this very cluster (recall was killed and its
/// server survived), fast-shut it down. A dead pid is left to postgres, which handles stale files.
async fn stop_stale_postmaster(pgdata: &Path) -> Result<(), EmbeddedError> {
    let pid_file = pgdata.join("postmaster.pid");
    let text = match fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("cannot read {}", pid_file.display()))(e)),
    };
    let Some(pid) =
        text.lines().next().and_then(|line| line.trim().parse::<i32>().ok()).filter(|pid| *pid > 0).map(Pid::from_raw)
    else {
        return Ok(());
    };
    if !is_alive(pid) || !is_postmaster_of(pid, pgdata) {
        // Gone, or the pid now belongs to an unrelated process: postgres sorts the file out.
        return Ok(());
    }
    if let Some(parent) = parent_pid(pid) {
        if parent.as_raw() > 1 && same_executable(parent) {
            return Err(EmbeddedError::InUse {
                pid: pid.as_raw(),
                parent: parent.as_raw(),
                pgdata: pgdata.to_path_buf(),
            });
        }
    }
    tracing::warn!(%pid, pgdata = %pgdata.display(), "a PostgreSQL server from an earlier run is still running; stopping it");
    match kill(pid, Signal::SIGINT) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(sys(format!("cannot signal the old PostgreSQL (pid {pid})"))(e)),
    }
    let deadline = Instant::now() + STALE_TIMEOUT;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(EmbeddedError::StalePostmaster {
        pid: pid.as_raw(),
        pgdata: pgdata.to_path_buf(),
        secs: STALE_TIMEOUT.as_secs(),
    })
}

/// Alive and not a zombie waiting for a parent that never reaps it.
fn is_alive(pid: Pid) -> bool {
    match kill(pid, None) {
        Ok(()) => proc_stat(pid).is_none_or(|(state, _)| state != 'Z'),
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// The postmaster chdirs into its data directory; compare that with ours.
fn is_postmaster_of(pid: Pid, pgdata: &Path) -> bool {
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    fs::canonicalize(pgdata).is_ok_and(|ours| ours == cwd)
}

fn parent_pid(pid: Pid) -> Option<Pid> {
    proc_stat(pid).map(|(_, ppid)| ppid)
}

/// Whether `pid` runs the same executable as this process (another recall).
fn same_executable(pid: Pid) -> bool {
    let (Ok(theirs), Ok(ours)) = (fs::read_link(format!("/proc/{pid}/exe")), std::env::current_exe()) else {
        return false;
    };
    theirs == ours
}

/// (state, ppid) from /proc/<pid>/stat; the command name may contain spaces and parentheses.
fn proc_stat(pid: Pid) -> Option<(char, Pid)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, Pid::from_raw(ppid)))
}

/// The last lines postgres wrote to its log since `from`.
fn log_tail(log: &Path, from: u64) -> String {
    let mut text = String::new();
    let read = File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if let Err(e) = read {
        return format!("(cannot read {}: {e})", log.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("recall-embedded-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::create_dir_all(&dir);
        dir
    }

    fn fake_bin(dir: &Path) {
        let _ = fs::create_dir_all(dir);
        for name in ["initdb", "postgres"] {
            let path = dir.join(name);
            let _ = fs::write(&path, "#!/bin/sh\n");
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
        }
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let root = scratch_dir("nobins");
        let err = locate_binaries(Some(OsStr::new("/nonexistent")), &[root.as_path()]);
        let _ = fs::remove_dir_all(&root);
        let message = match err {
            Err(e) => e.to_string(),
            Ok(found) => panic!("found {found:?}"),
        };
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("--database-url"), "{message}");
    }

    #[test]
    fn picks_highest_version_under_search_root() {
        let root = scratch_dir("versions");
        for version in ["9.6", "15", "13", "notaversion"] {
            fake_bin(&root.join(version).join("bin"));
        }
        let found = locate_binaries(None, &[root.as_path()]);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(found.ok().map(|b| b.initdb), Some(root.join("15").join("bin").join("initdb")));
    }

    #[test]
    fn path_wins_over_search_root() {
        let root = scratch_dir("pathwins");
        fake_bin(&root.join("on-path"));
        fake_bin(&root.join("lib").join("16").join("bin"));
        let found = locate_binaries(Some(root.join("on-path").as_os_str()), &[root.join("lib").as_path()]);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(found.ok().map(|b| b.postgres), Some(root.join("on-path").join("postgres")));
    }

    #[test]
    fn searchability_follows_mode_bits() {
        let root = scratch_dir("search");
        let closed = root.join("closed");
        let _ = fs::create_dir_all(closed.join("inner"));
        let _ = fs::set_permissions(&closed, fs::Permissions::from_mode(0o700));
        let stranger = RunAs { uid: Uid::from_raw(54_321), gid: Gid::from_raw(54_321) };
        let blocked = unsearchable_ancestor(&closed.join("inner"), stranger);
        let open = unsearchable_ancestor(&root, stranger);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(blocked, Some(closed));
        assert_eq!(open, None);
    }

    #[test]
    fn long_socket_paths_are_detected() {
        assert!(socket_path_fits(Path::new("/tmp/recall-pg-0123456789abcdef")));
        assert!(!socket_path_fits(&Path::new("/").join("x".repeat(100))));
        assert_eq!(short_hash(Path::new("/var/lib/recall")).len(), 16);
    }

    /// Starts a real cluster when the server binaries are installed.
    #[tokio::test]
    async fn starts_restarts_and_keeps_data() {
        let search_roots: Vec<&Path> = SEARCH_ROOTS.iter().map(Path::new).collect();
        if locate_binaries(std::env::var_os("PATH").as_deref(), &search_roots).is_err() {
            eprintln!("skipping: PostgreSQL server binaries are not installed");
            return;
        }
        let dir = scratch_dir("cluster");
        let result = async {
            let pg = EmbeddedPostgres::start(&dir).await?;
            let mut conn = PgConnection::connect_with(&pg.connect_options()).await?;
            sqlx::raw_sql("create table kept (n int); insert into kept values (42)").execute(&mut conn).await?;
            conn.close().await?;
            pg.stop().await?;

            let pg = EmbeddedPostgres::start(&dir).await?;
            let mut conn = PgConnection::connect_with(&pg.connect_options()).await?;
            let n: i32 = sqlx::query_scalar("select n from kept").fetch_one(&mut conn).await?;
            conn.close().await?;
            pg.stop().await?;
            Ok::<i32, Box<dyn std::error::Error>>(n)
        }
        .await;
        // A cluster kept elsewhere (data dir not reachable by the server user) goes too.
        if let Ok(target) = fs::read_link(dir.join("postgres")) {
            let _ = fs::remove_dir_all(target);
        }
        let _ = fs::remove_dir_all(&dir);
        match result {
            Ok(n) => assert_eq!(n, 42),
            Err(e) => panic!("{e}"),
        }
    }
}
