//! FTP and explicit FTPS (`AUTH TLS`, data connections protected too): log in, change to the directory,
//! upload, download and compare, delete, quit. The password goes to the server and nowhere else: not into
//! a detail, not into a log (the binary caps suppaftp's logging below the level that shows `PASS`).

use rustls::pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::FtpError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{endpoint, io_words, one_line, probe_contents, probe_file_name, tls_config, Steps};

#[derive(Debug)]
pub(super) struct FtpTarget<'a> {
    pub host: &'a str,
    pub port: u16,
    pub username: &'a str,
    pub password: &'a SecretString,
    pub directory: &'a str,
    pub tls: bool,
}

pub(super) async fn probe(
    steps: &Steps,
    target: &FtpTarget<'_>,
    extra_roots: &[CertificateDer<'static>],
) -> Result<String, String> {
    let endpoint = endpoint(target.host, target.port);
    let tcp = steps.connect_tcp(target.host, target.port).await?;
    let mut ftp = steps
        .bounded(
            &format!("connected to {endpoint} and waited for the FTP greeting"),
            AsyncRustlsFtpStream::connect_with_stream(tcp),
        )
        .await?
        .map_err(|e| format!("connected to {endpoint} but got no FTP greeting: {}", ftp_words(&e)))?;
    let mut done = format!("connected to {endpoint}");

    if target.tls {
        let config = tls_config(extra_roots).map_err(|e| format!("{done}, but {e}"))?;
        let connector = AsyncRustlsConnector::from(suppaftp::tokio_rustls::TlsConnector::from(config));
        ftp = steps
            .bounded(&format!("{done} and asked for TLS (AUTH TLS)"), ftp.into_secure(connector, target.host))
            .await?
            .map_err(|e| format!("{done}, but could not switch to TLS (AUTH TLS): {}", tls_words(&e)))?;
        done.push_str(" with TLS");
    }

    let username = target.username;
    steps
        .bounded(
            &format!("{done} and tried to log in as {username}"),
            ftp.login(username, target.password.expose_secret()),
        )
        .await?
        .map_err(|e| format!("{done}, but login as {username} refused by the server: {}", ftp_words(&e)))?;
    done.push_str(&format!(", logged in as {username}"));

    let result = after_login(steps, &mut ftp, target, &done).await;
    // Leave politely; the answer does not change the outcome.
    let _ = steps.quiet(ftp.quit()).await;
    result
}

async fn after_login(
    steps: &Steps,
    ftp: &mut AsyncRustlsFtpStream,
    target: &FtpTarget<'_>,
    done: &str,
) -> Result<String, String> {
    // Binary, so that the bytes read back are the bytes written.
    steps
        .bounded(&format!("{done} and asked for binary transfers"), ftp.transfer_type(FileType::Binary))
        .await?
        .map_err(|e| format!("{done}, but the server refused binary transfers: {}", ftp_words(&e)))?;
    // Behind NAT a server often announces a private address for passive transfers: use the one we reached.
    ftp.set_passive_nat_workaround(true);

    let place = if target.directory.is_empty() {
        "the login directory".to_owned()
    } else {
        let directory = target.directory;
        steps
            .bounded(&format!("{done} and asked to change to {directory}"), ftp.cwd(directory))
            .await?
            .map_err(|e| format!("{done}, but could not change to directory {directory}: {}", ftp_words(&e)))?;
        directory.to_owned()
    };

    let name = probe_file_name();
    let contents = probe_contents(&name);
    let upload = async {
        let mut stream = ftp.put_with_stream(&name).await?;
        stream.write_all(&contents).await.map_err(FtpError::ConnectionError)?;
        stream.finish().await
    };
    let uploaded = steps
        .bounded(&format!("{done} and tried to write {name} in {place}"), upload)
        .await
        .and_then(|r| r.map_err(|e| format!("{done}, but could not write {name} in {place}: {}", ftp_words(&e))));
    if let Err(failure) = uploaded {
        // Part of the file may have landed before the failure: try to leave nothing behind.
        let _ = steps.quiet(ftp.rm(&name)).await;
        return Err(failure);
    }

    let download = async {
        let mut stream = ftp.retr_as_stream(&name).await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.map_err(FtpError::ConnectionError)?;
        stream.finish().await?;
        Ok::<_, FtpError>(bytes)
    };
    let read = steps
        .bounded(&format!("{done}, wrote {name} in {place} and tried to read it back"), download)
        .await
        .and_then(|r| {
            r.map_err(|e| format!("{done}, wrote {name} in {place}, but could not read it back: {}", ftp_words(&e)))
        });
    let deleted = steps.quiet(ftp.rm(&name)).await.and_then(|r| r.map_err(|e| ftp_words(&e)));

    super::read_back_and_cleanup(done, &name, &place, &contents, read, deleted)
}

/// An FTP error as the server or the connection put it: "530 Login incorrect.", "connection reset".
fn ftp_words(error: &FtpError) -> String {
    match error {
        FtpError::UnexpectedResponse(response) => {
            let code = response.status.code().to_string();
            let text = response.as_string().unwrap_or_default();
            let text = one_line(&text);
            let text = text.strip_prefix(code.as_str()).unwrap_or(&text).trim_start_matches([' ', '-']);
            format!("{code} {text}")
        }
        FtpError::ConnectionError(e) => io_words(e),
        FtpError::SecureError(e) => format!("TLS: {}", certificate_hint(e.strip_prefix("Secure error: ").unwrap_or(e))),
        FtpError::BadResponse => "the server's answer is not FTP".into(),
        FtpError::InvalidAddress(e) => format!("the server announced an unusable address for the transfer: {e}"),
        FtpError::DataConnectionAlreadyOpen => "a transfer was still open".into(),
    }
}

fn tls_words(error: &FtpError) -> String {
    match error {
        FtpError::SecureError(e) => certificate_hint(e.strip_prefix("Secure error: ").unwrap_or(e)),
        other => ftp_words(other),
    }
}

/// rustls's certificate errors, with what to do about the usual ones.
fn certificate_hint(error: &str) -> String {
    if error.contains("UnknownIssuer") {
        format!("{error} (the server's certificate is not signed by an authority this machine trusts)")
    } else if error.contains("NotValidForName") {
        format!("{error} (the server's certificate does not name this host: use the name it was issued for)")
    } else if error.contains("Expired") {
        format!("{error} (the server's certificate has expired)")
    } else {
        error.to_owned()
    }
}
