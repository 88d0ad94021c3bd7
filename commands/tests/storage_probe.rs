//! The connection probe against real servers: a temporary directory, moto (S3), pyftpdlib (FTP and FTPS)
//! and asyncssh (SFTP). Each test starts its own server on a free port and stops it when it ends, failed
//! or not. The Python packages come from `scripts/test`; a missing one fails the test, it is not skipped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use recall_commands::storage_probe::{object_store_for, ConnectionProbe, ProbeReport, ResolvedStorage, StorageProbe};
use recall_domain::secret::SecretRef;
use recall_domain::storage_target::StorageKind;
use secrecy::{ExposeSecret, SecretString};
use tempfile::TempDir;
use uuid::Uuid;

const USER: &str = "rec";
const PASSWORD: &str = "s3cret-Pa55word";
const BUCKET: &str = "recordings";

// --- Servers -----------------------------------------------------------------------------------

/// A test server: a Python script from `tests/support` that prints one JSON line when ready. Killed when
/// dropped, so a failing test does not leave it running.
struct Server {
    child: Child,
    ready: serde_json::Value,
    /// Where the server keeps its files, its log (`server.log`) and anything it wrote for the test.
    dir: TempDir,
}

impl Server {
    fn start(script: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the server");
        Self::start_in(dir, script, args)
    }

    fn start_in(dir: TempDir, script: &str, args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(script);
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 runs (scripts/test installs the packages the test servers need)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // A bound on start-up only, so a wedged interpreter fails the test instead of hanging it.
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
        let mut server = Self { child, ready: serde_json::Value::Null, dir };
        match serde_json::from_str(&line) {
            Ok(ready) => {
                server.ready = ready;
                server
            }
            Err(_) => {
                let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
                panic!("{} did not start (said {line:?}); its log:\n{log}", script.display());
            }
        }
    }

    fn port(&self) -> u16 {
        let port = self.ready["port"].as_u64().expect("the server reports its port");
        u16::try_from(port).expect("a port")
    }

    fn field(&self, name: &str) -> String {
        self.ready[name].as_str().unwrap_or_else(|| panic!("the server reports {name}")).to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 where nothing listens (it was free a moment ago).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A server that accepts connections and never says a word: a black hole with the port open.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

// --- Targets -----------------------------------------------------------------------------------

fn secret_ref() -> SecretRef {
    SecretRef(Uuid::now_v7())
}

fn resolved(kind: StorageKind, secrets: &[(SecretRef, String)]) -> ResolvedStorage {
    let secrets: BTreeMap<_, _> = secrets.iter().map(|(r, value)| (*r, SecretString::from(value.clone()))).collect();
    ResolvedStorage { kind, secrets }
}

async fn probe(storage: &ResolvedStorage) -> ProbeReport {
    probe_with(&ConnectionProbe::new(), storage).await
}

/// Runs the probe and checks what every report must be: one line, no secret in it.
async fn probe_with(probe: &ConnectionProbe, storage: &ResolvedStorage) -> ProbeReport {
    let report = probe.probe(storage).await;
    eprintln!("{report:?}");
    assert!(!report.detail.contains('\n') && !report.detail.contains('\r'), "one line: {report:?}");
    for secret in storage.secrets.values() {
        assert!(!report.detail.contains(secret.expose_secret().trim()), "a secret in the detail: {report:?}");
    }
    report
}

fn assert_ok(report: &ProbeReport, parts: &[&str]) {
    assert!(report.ok, "{report:?}");
    assert_detail(report, parts);
}

fn assert_failed(report: &ProbeReport, parts: &[&str]) {
    assert!(!report.ok, "{report:?}");
    assert_detail(report, parts);
}

fn assert_detail(report: &ProbeReport, parts: &[&str]) {
    for part in parts {
        assert!(report.detail.contains(part), "{part:?} not in {:?}", report.detail);
    }
}

/// Nothing left behind in `dir`.
fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").file_name()).collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", dir.display());
}

// --- Local file system -------------------------------------------------------------------------

fn local(path: &Path) -> ResolvedStorage {
    resolved(StorageKind::LocalFilesystem { path: path.display().to_string() }, &[])
}

#[tokio::test]
async fn a_local_directory_is_written_read_back_and_left_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = probe(&local(dir.path())).await;
    assert_ok(&report, &["wrote, read back and deleted recall-probe-", &format!("in {}", dir.path().display())]);
    assert_empty(dir.path());
}

#[tokio::test]
async fn a_missing_local_directory_is_reported_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing");
    let report = probe(&local(&missing)).await;
    assert_failed(&report, &[&missing.display().to_string(), "no such directory"]);
}

#[tokio::test]
async fn a_local_path_under_a_regular_file_cannot_be_written() {
    // Root may write anywhere, but not below a regular file.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write file");
    let report = probe(&local(&file.join("sub"))).await;
    assert_failed(&report, &["file", "not a directory"]);

    let report = probe(&local(&file)).await;
    assert_failed(&report, &[&format!("{} is a file, not a directory", file.display())]);
}

// --- S3 (moto) ---------------------------------------------------------------------------------

fn s3(server: &Server, bucket: &str, access_key_id: &str, secret: &str, prefix: Option<&str>) -> ResolvedStorage {
    let secret_access_key = secret_ref();
    resolved(
        StorageKind::S3 {
            endpoint: Some(format!("http://127.0.0.1:{}", server.port())),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: prefix.map(str::to_owned),
            access_key_id: access_key_id.into(),
            secret_access_key,
            path_style: true,
        },
        &[(secret_access_key, secret.into())],
    )
}

fn start_s3() -> Server {
    Server::start("s3_server.py", &["--bucket", BUCKET])
}

#[tokio::test]
async fn an_s3_bucket_is_written_read_back_and_left_clean_under_the_prefix() {
    let server = start_s3();
    let storage =
        s3(&server, BUCKET, &server.field("access_key_id"), &server.field("secret_access_key"), Some("calls/"));
    let report = probe(&storage).await;
    assert_ok(&report, &["wrote, read back and deleted recall-probe-", "in bucket recordings under calls/"]);

    // The store the recorder writes through puts its objects under the prefix, and nothing was left there.
    let store = object_store_for(&storage).expect("object store");
    store.put(&ObjectPath::from("x.txt"), PutPayload::from_static(b"x")).await.expect("put");
    let whole = s3(&server, BUCKET, &server.field("access_key_id"), &server.field("secret_access_key"), None);
    let whole = object_store_for(&whole).expect("object store");
    let keys: Vec<String> =
        whole.list(None).map_ok(|meta| meta.location.to_string()).try_collect().await.expect("list");
    assert_eq!(keys, ["calls/x.txt"]);
}

#[tokio::test]
async fn a_missing_s3_bucket_is_reported_as_s3_put_it() {
    let server = start_s3();
    let storage =
        s3(&server, "no-such-bucket", &server.field("access_key_id"), &server.field("secret_access_key"), None);
    let report = probe(&storage).await;
    assert_failed(
        &report,
        &["could not write recall-probe-", "in bucket no-such-bucket", "S3 said 404", "NoSuchBucket"],
    );
}

#[tokio::test]
async fn wrong_s3_credentials_are_refused_without_showing_the_secret() {
    let server = start_s3();
    let wrong_secret = s3(&server, BUCKET, &server.field("access_key_id"), "wrong-secret-access-key", None);
    let report = probe(&wrong_secret).await;
    assert_failed(&report, &["S3 said 403", "SignatureDoesNotMatch"]);

    let unknown_key = s3(&server, BUCKET, "AKIAUNKNOWNKEY000000", &server.field("secret_access_key"), None);
    let report = probe(&unknown_key).await;
    assert_failed(&report, &["S3 said 403", "InvalidAccessKeyId"]);
}

#[tokio::test]
async fn an_s3_endpoint_where_nothing_listens_is_reported() {
    let secret_access_key = secret_ref();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let storage = resolved(
        StorageKind::S3 {
            endpoint: Some(endpoint.clone()),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: None,
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key,
            path_style: true,
        },
        &[(secret_access_key, "secret-key-value".into())],
    );
    let report = probe(&storage).await;
    assert_failed(&report, &["could not write", &endpoint, "connect"]);
}

// --- FTP and FTPS (pyftpdlib) ------------------------------------------------------------------

fn start_ftp(tls: bool) -> (Server, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("in")).expect("ftp root");
    let root_arg = root.display().to_string();
    let tls_dir = dir.path().display().to_string();
    let mut args = vec!["--root", &root_arg, "--user", USER, "--password", PASSWORD];
    if tls {
        args.extend(["--tls", &tls_dir]);
    }
    (Server::start_in(dir, "ftp_server.py", &args), root)
}

fn ftp(port: u16, password: &str, directory: &str, tls: bool) -> ResolvedStorage {
    let secret = secret_ref();
    resolved(
        StorageKind::Ftp {
            host: "127.0.0.1".into(),
            port,
            username: USER.into(),
            password: secret,
            directory: directory.into(),
            tls,
        },
        &[(secret, password.into())],
    )
}

#[tokio::test]
async fn an_ftp_directory_is_written_read_back_and_left_clean() {
    let (server, root) = start_ftp(false);
    let report = probe(&ftp(server.port(), PASSWORD, "/in", false)).await;
    assert_ok(
        &report,
        &[
            &format!(
                "connected to 127.0.0.1:{}, logged in as rec, wrote, read back and deleted recall-probe-",
                server.port()
            ),
            ".txt in /in",
        ],
    );
    assert_empty(&root.join("in"));

    let report = probe(&ftp(server.port(), PASSWORD, "", false)).await;
    assert_ok(&report, &["in the login directory"]);
    assert_empty(&root.join("in"));
}

#[tokio::test]
async fn a_wrong_ftp_password_is_refused_by_the_server() {
    let (server, _root) = start_ftp(false);
    let report = probe(&ftp(server.port(), "not-the-password", "/in", false)).await;
    assert_failed(&report, &["login as rec refused by the server: 530"]);
}

#[tokio::test]
async fn a_missing_ftp_directory_is_reported_with_the_servers_answer() {
    let (server, _root) = start_ftp(false);
    let report = probe(&ftp(server.port(), PASSWORD, "/nope", false)).await;
    assert_failed(&report, &["logged in as rec", "could not change to directory /nope: 550"]);
}

#[tokio::test]
async fn ftps_with_a_trusted_certificate_is_written_read_back_and_left_clean() {
    let (server, root) = start_ftp(true);
    let ca = std::fs::read(server.path("ca.pem")).expect("the server wrote its CA");
    let probe = ConnectionProbe::new().with_root_certificates_pem(&ca).expect("CA certificate");
    let report = probe_with(&probe, &ftp(server.port(), PASSWORD, "/in", true)).await;
    assert_ok(&report, &["with TLS, logged in as rec, wrote, read back and deleted recall-probe-", "in /in"]);
    assert_empty(&root.join("in"));
}

#[tokio::test]
async fn ftps_with_a_certificate_from_an_unknown_authority_is_refused() {
    let (server, _root) = start_ftp(true);
    let report = probe(&ftp(server.port(), PASSWORD, "/in", true)).await;
    assert_failed(&report, &["could not switch to TLS", "not signed by an authority this machine trusts"]);
}

#[tokio::test]
async fn plain_ftp_to_a_server_that_requires_tls_reports_the_refusal() {
    let (server, _root) = start_ftp(true);
    let report = probe(&ftp(server.port(), PASSWORD, "/in", false)).await;
    assert_failed(&report, &["login as rec refused by the server: 550"]);
}

#[tokio::test]
async fn an_ftp_port_where_nothing_listens_is_reported() {
    let port = closed_port();
    let report = probe(&ftp(port, PASSWORD, "", false)).await;
    assert_failed(&report, &[&format!("could not connect to 127.0.0.1:{port}: connection refused")]);
}

#[tokio::test]
async fn a_server_that_never_answers_is_reported_as_a_time_out() {
    let (port, task) = silent_server().await;
    let probe = ConnectionProbe::new().with_step_timeout(Duration::from_millis(500));
    let report = probe_with(&probe, &ftp(port, PASSWORD, "", false)).await;
    assert_failed(&report, &[&format!("127.0.0.1:{port}"), "no answer within 500 ms"]);
    let report = probe_with(&probe, &sftp_password(port, PASSWORD, "", None)).await;
    assert_failed(&report, &[&format!("127.0.0.1:{port}"), "no answer within 500 ms"]);
    task.abort();
}

// --- SFTP (asyncssh) ---------------------------------------------------------------------------

fn start_sftp() -> (Server, PathBuf) {
    start_sftp_with(&[])
}

fn start_sftp_with(extra: &[&str]) -> (Server, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("in")).expect("sftp root");
    let root_arg = root.display().to_string();
    let keys = dir.path().display().to_string();
    let mut args = vec!["--root", &root_arg, "--keys", &keys, "--user", USER, "--password", PASSWORD];
    args.extend(extra);
    (Server::start_in(dir, "sftp_server.py", &args), root)
}

fn sftp(
    port: u16,
    password: Option<&str>,
    private_key: Option<String>,
    directory: &str,
    fingerprint: Option<String>,
) -> ResolvedStorage {
    let password_ref = password.map(|_| secret_ref());
    let key_ref = private_key.as_ref().map(|_| secret_ref());
    let mut secrets = Vec::new();
    if let (Some(r), Some(p)) = (password_ref, password) {
        secrets.push((r, p.to_owned()));
    }
    if let (Some(r), Some(k)) = (key_ref, private_key) {
        secrets.push((r, k));
    }
    resolved(
        StorageKind::Sftp {
            host: "127.0.0.1".into(),
            port,
            username: USER.into(),
            password: password_ref,
            private_key: key_ref,
            directory: directory.into(),
            host_key_fingerprint: fingerprint,
        },
        &secrets,
    )
}

fn sftp_password(port: u16, password: &str, directory: &str, fingerprint: Option<String>) -> ResolvedStorage {
    sftp(port, Some(password), None, directory, fingerprint)
}

#[tokio::test]
async fn an_sftp_directory_is_written_read_back_and_left_clean_with_a_password() {
    let (server, root) = start_sftp();
    let report = probe(&sftp_password(server.port(), PASSWORD, "/in", Some(server.field("fingerprint")))).await;
    assert_ok(
        &report,
        &[
            &format!(
                "connected to 127.0.0.1:{}, logged in as rec, wrote, read back and deleted recall-probe-",
                server.port()
            ),
            ".txt in /in",
        ],
    );
    assert_empty(&root.join("in"));

    // No fingerprint given: whatever key the server shows is trusted; no directory: the login directory.
    let report = probe(&sftp_password(server.port(), PASSWORD, "", None)).await;
    assert_ok(&report, &["in the login directory"]);
    let left: Vec<_> = std::fs::read_dir(&root).expect("read dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, ["in"]);
}

#[tokio::test]
async fn an_sftp_login_works_with_an_openssh_or_a_pem_private_key() {
    let (server, root) = start_sftp();
    for key in ["client_ed25519", "client_rsa"] {
        let pem = std::fs::read_to_string(server.path(key)).expect("the server wrote the client key");
        let storage = sftp(server.port(), None, Some(pem), "/in", Some(server.field("fingerprint")));
        let report = probe(&storage).await;
        assert_ok(&report, &["logged in as rec, wrote, read back and deleted recall-probe-"]);
        assert_empty(&root.join("in"));
    }

    let garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n";
    let report = probe(&sftp(server.port(), None, Some(garbage.into()), "/in", None)).await;
    assert_failed(&report, &["the private key could not be read"]);
}

#[tokio::test]
async fn an_sftp_password_goes_by_keyboard_interactive_to_a_server_that_takes_it_only_so() {
    let (server, root) = start_sftp_with(&["--kbdint-only"]);
    let report = probe(&sftp_password(server.port(), PASSWORD, "/in", None)).await;
    assert_ok(&report, &["logged in as rec, wrote, read back and deleted recall-probe-"]);
    assert_empty(&root.join("in"));

    let report = probe(&sftp_password(server.port(), "not-the-password", "/in", None)).await;
    assert_failed(&report, &["login as rec refused by the server (tried the password, by keyboard-interactive)"]);
}

#[tokio::test]
async fn a_wrong_sftp_password_is_refused_by_the_server() {
    let (server, _root) = start_sftp();
    let report = probe(&sftp_password(server.port(), "not-the-password", "/in", None)).await;
    assert_failed(&report, &["login as rec refused by the server (tried the password)"]);
}

#[tokio::test]
async fn an_sftp_server_with_another_host_key_is_refused() {
    let (server, _root) = start_sftp();
    let expected = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".to_owned();
    let report = probe(&sftp_password(server.port(), PASSWORD, "/in", Some(expected.clone()))).await;
    assert_failed(
        &report,
        &[&format!(
            "refused 127.0.0.1:{}: its host key is {}, not {expected}",
            server.port(),
            server.field("fingerprint")
        )],
    );
}

#[tokio::test]
async fn a_missing_sftp_directory_is_reported_by_name() {
    let (server, _root) = start_sftp();
    let report = probe(&sftp_password(server.port(), PASSWORD, "/nope", None)).await;
    assert_failed(&report, &["logged in as rec", "there is no directory /nope on the server"]);
}
