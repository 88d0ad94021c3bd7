//! Testing a storage target's connection: the settings with their secrets in clear go to a probe, which
//! writes, reads back and deletes a small file there and reports what happened in words an administrator
//! can act on. The probe never reports a secret, and never leaves its test file behind when it can help it.

mod ftp;
mod object;
mod sftp;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use recall_domain::secret::SecretRef;
use recall_domain::storage_target::StorageKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;

pub use object::{object_store_for, ObjectStoreSetupError};

/// A storage target's settings with the secrets they name, in clear (for a test or an upload only).
#[derive(Debug)]
pub struct ResolvedStorage {
    pub kind: StorageKind,
    pub secrets: BTreeMap<SecretRef, SecretString>,
}

impl ResolvedStorage {
    pub fn secret(&self, secret: SecretRef) -> Option<&SecretString> {
        self.secrets.get(&secret)
    }
}

/// The outcome of a connection test, as recorded on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub ok: bool,
    /// What was tried and what happened, e.g. "wrote, read back and deleted recall-probe-….txt in
    /// /var/recordings" or "S3 said: 403 Forbidden (InvalidAccessKeyId)".
    pub detail: String,
}

/// Tests connections to storage targets.
pub trait StorageProbe: Send + Sync + std::fmt::Debug {
    fn probe<'a>(&'a self, storage: &'a ResolvedStorage) -> BoxFuture<'a, ProbeReport>;
}

/// How long one step of a test (connect, log in, write, read, delete…) may take by default.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The real probe: connects to the target (a local directory, S3, FTP, FTPS or SFTP), writes a small file
/// `recall-probe-<uuid>.txt`, reads it back, compares and deletes it. Every step is bounded by a timeout,
/// so a host that never answers reports a time-out instead of hanging.
#[derive(Debug, Clone)]
pub struct ConnectionProbe {
    step_timeout: Duration,
    /// Certificates trusted for FTPS besides the system's (a private CA, or a test server's).
    extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for ConnectionProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// The PEM given to [`ConnectionProbe::with_root_certificates_pem`] holds no usable certificate.
#[derive(Debug, thiserror::Error)]
#[error("no usable certificate in the PEM given: {0}")]
pub struct RootCertificatesError(String);

impl ConnectionProbe {
    /// A probe trusting the system's certificate authorities, with [`DEFAULT_STEP_TIMEOUT`] per step.
    pub fn new() -> Self {
        Self { step_timeout: DEFAULT_STEP_TIMEOUT, extra_roots: Vec::new() }
    }

    /// Bounds each step (connect, log in, write, read, delete…) by `timeout` instead.
    pub fn with_step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = timeout;
        self
    }

    /// Also trusts the certificates in `pem` (one or more `CERTIFICATE` blocks) for FTPS.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, RootCertificatesError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RootCertificatesError(e.to_string()))?;
        if certificates.is_empty() {
            return Err(RootCertificatesError("no CERTIFICATE block".into()));
        }
        self.extra_roots.extend(certificates);
        Ok(self)
    }

    async fn run(&self, storage: &ResolvedStorage) -> Result<String, String> {
        let steps = Steps { timeout: self.step_timeout };
        match &storage.kind {
            StorageKind::LocalFilesystem { path } => object::probe_local(&steps, storage, path).await,
            StorageKind::S3 { .. } => object::probe_s3(&steps, storage).await,
            StorageKind::Ftp { host, port, username, password, directory, tls } => {
                let password = storage.secret(*password).ok_or_else(missing_secret("password"))?;
                let target = ftp::FtpTarget { host, port: *port, username, password, directory, tls: *tls };
                ftp::probe(&steps, &target, &self.extra_roots).await
            }
            StorageKind::Sftp { host, port, username, password, private_key, directory, host_key_fingerprint } => {
                let password = match password {
                    Some(secret) => Some(storage.secret(*secret).ok_or_else(missing_secret("password"))?),
                    None => None,
                };
                let private_key = match private_key {
                    Some(secret) => Some(storage.secret(*secret).ok_or_else(missing_secret("private key"))?),
                    None => None,
                };
                let target = sftp::SftpTarget {
                    host,
                    port: *port,
                    username,
                    password,
                    private_key,
                    directory,
                    host_key_fingerprint: host_key_fingerprint.as_deref(),
                };
                sftp::probe(&steps, &target).await
            }
        }
    }
}

impl StorageProbe for ConnectionProbe {
    fn probe<'a>(&'a self, storage: &'a ResolvedStorage) -> BoxFuture<'a, ProbeReport> {
        Box::pin(async move {
            let (ok, detail) = match self.run(storage).await {
                Ok(detail) => (true, detail),
                Err(detail) => (false, detail),
            };
            let detail = redact(&one_line(&detail), storage.secrets.values());
            tracing::info!(kind = kind_name(&storage.kind), ok, detail = %detail, "storage connection tested");
            ProbeReport { ok, detail }
        })
    }
}

fn missing_secret(what: &'static str) -> impl FnOnce() -> String {
    move || format!("the {what} of this target is missing from the secret store; enter it again")
}

fn kind_name(kind: &StorageKind) -> &'static str {
    match kind {
        StorageKind::LocalFilesystem { .. } => "local_filesystem",
        StorageKind::S3 { .. } => "s3",
        StorageKind::Ftp { .. } => "ftp",
        StorageKind::Sftp { .. } => "sftp",
    }
}

/// Runs the steps of one test, each bounded by the same timeout.
#[derive(Debug, Clone, Copy)]
struct Steps {
    timeout: Duration,
}

impl Steps {
    /// `future`'s output, or "`what`, but got no answer within N s": `what` says what was done and tried,
    /// e.g. "connected to ftp.example.com:21 and tried to log in as rec".
    async fn bounded<T>(&self, what: &str, future: impl Future<Output = T>) -> Result<T, String> {
        self.quiet(future).await.map_err(|no_answer| format!("{what}, but got {no_answer}"))
    }

    /// `future`'s output, or "no answer within N s".
    async fn quiet<T>(&self, future: impl Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(self.timeout, future).await.map_err(|_| self.no_answer())
    }

    fn no_answer(&self) -> String {
        let timeout = self.timeout;
        if timeout.subsec_millis() == 0 {
            format!("no answer within {} s", timeout.as_secs())
        } else {
            format!("no answer within {} ms", timeout.as_millis())
        }
    }

    /// A TCP connection to `host:port`, trying each address the name resolves to.
    async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let endpoint = endpoint(host, port);
        let addresses: Vec<SocketAddr> = self
            .bounded(&format!("tried to look up {host}"), tokio::net::lookup_host((host, port)))
            .await?
            .map_err(|e| format!("could not look up {host}: {}", io_words(&e)))?
            .collect();
        let mut last = format!("could not connect to {endpoint}: {host} has no address");
        for address in addresses {
            match tokio::time::timeout(self.timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = format!("could not connect to {endpoint}: {}", io_words(&e)),
                Err(_) => last = format!("could not connect to {endpoint}: {}", self.no_answer()),
            }
        }
        Err(last)
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A fresh name for the test file, so two tests never meet and no real file is touched.
fn probe_file_name() -> String {
    format!("recall-probe-{}.txt", uuid::Uuid::now_v7())
}

/// What the test file holds: its own name and a line that tells whoever finds it what it is.
fn probe_contents(name: &str) -> Vec<u8> {
    format!("{name}\nwritten by recall to test this storage target; it should have been deleted at once\n").into_bytes()
}

/// An I/O error in a few words, without "(os error N)", lower-cased to sit inside a sentence.
/// Where a write, read back and delete of the probe file came to: `read` holds what was read back (or the
/// failure in words), `deleted` whether the file is gone (or why not).
fn read_back_and_cleanup(
    done: &str,
    name: &str,
    place: &str,
    contents: &[u8],
    read: Result<Vec<u8>, String>,
    deleted: Result<(), String>,
) -> Result<String, String> {
    let read = read.and_then(|bytes| {
        if bytes == contents {
            Ok(())
        } else {
            Err(format!(
                "{done}, wrote {name} in {place}, but read back {} bytes that differ from the {} written",
                bytes.len(),
                contents.len()
            ))
        }
    });
    let deleted = deleted.map_err(|reason| format!("could not delete {name} in {place} ({reason}); delete it by hand"));
    match (read, deleted) {
        (Ok(()), Ok(())) => Ok(format!("{done}, wrote, read back and deleted {name} in {place}")),
        (Ok(()), Err(failure)) => Err(format!("{done}, wrote and read back {name} in {place}, but {failure}")),
        (Err(failure), Ok(())) => Err(failure),
        (Err(failure), Err(cleanup)) => Err(format!("{failure}; {cleanup}")),
    }
}

fn io_words(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    lower_first(text)
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.as_str().starts_with(char::is_lowercase) => first.to_lowercase().chain(chars).collect(),
        _ => text.to_owned(),
    }
}

/// The error and its causes, joined with ": ", each message once (wrappers often repeat their cause).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Line breaks and other control characters become single spaces.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces every secret that might have slipped into `detail` (a server echoing a password, say).
fn redact<'a>(detail: &str, secrets: impl Iterator<Item = &'a SecretString>) -> String {
    let mut detail = detail.to_owned();
    for secret in secrets {
        let secret = secret.expose_secret();
        for candidate in [secret, secret.trim()] {
            if !candidate.is_empty() && detail.contains(candidate) {
                detail = detail.replace(candidate, "[secret]");
            }
        }
        // A multi-line secret (a private key) cannot appear whole in one line: hide each of its lines.
        for line in secret.lines().map(str::trim).filter(|line| line.len() >= 16) {
            if detail.contains(line) {
                detail = detail.replace(line, "[secret]");
            }
        }
    }
    detail
}

/// Trust for FTPS: the system's certificate authorities plus `extra`.
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(extra.iter().cloned());
    if roots.is_empty() {
        return Err("no trusted certificate authorities on this machine to check the server's certificate".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("could not set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_is_one_line_without_secrets() {
        let secrets =
            [SecretString::from("hunter22"), SecretString::from("-----BEGIN KEY-----\nAAAABBBBCCCCDDDDEEEE\n")];
        assert_eq!(
            redact(&one_line("login as rec refused:\r\n 530 bad password hunter22\n"), secrets.iter()),
            "login as rec refused: 530 bad password [secret]"
        );
        assert_eq!(redact("key AAAABBBBCCCCDDDDEEEE unreadable", secrets.iter()), "key [secret] unreadable");
    }

    #[test]
    fn io_errors_read_as_words() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_words(&refused), "connection refused");
        assert_eq!(lower_first("S3 said"), "S3 said");
        assert_eq!(lower_first("No such file"), "no such file");
    }

    #[test]
    fn endpoints_bracket_ipv6_addresses() {
        assert_eq!(endpoint("::1", 22), "[::1]:22");
        assert_eq!(endpoint("ftp.example.com", 21), "ftp.example.com:21");
    }
}
