//! SFTP over SSH (russh and russh-sftp): check the server's host key against the fingerprint given, log in
//! with the private key and/or the password, write, read back and delete a file in the directory.
//! A server whose key does not match is refused before any credential is sent.

use std::sync::{Arc, Mutex};

use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{decode_secret_key, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{MethodKind, MethodSet};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;

use super::{endpoint, probe_contents, probe_file_name, Steps};

#[derive(Debug)]
pub(super) struct SftpTarget<'a> {
    pub host: &'a str,
    pub port: u16,
    pub username: &'a str,
    pub password: Option<&'a SecretString>,
    pub private_key: Option<&'a SecretString>,
    pub directory: &'a str,
    pub host_key_fingerprint: Option<&'a str>,
}

/// Accepts the server's host key if it has the expected fingerprint (or none is expected), and remembers
/// the fingerprint it saw so a refusal can say what the server showed.
#[derive(Debug)]
struct HostKeyCheck {
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fingerprint = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
            PublicKeyOrCertificate::Certificate(certificate) => certificate.public_key().fingerprint(HashAlg::Sha256),
        }
        .to_string();
        let accepted = match &self.expected {
            None => true,
            Some(expected) => same_fingerprint(expected, &fingerprint),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint);
        }
        Ok(accepted)
    }
}

/// `SHA256:abc…` as `ssh-keygen -l` prints it; the `SHA256:` label and base64 padding are optional.
fn same_fingerprint(expected: &str, actual: &str) -> bool {
    let bare = |fingerprint: &str| {
        let fingerprint = fingerprint.trim();
        let fingerprint = match fingerprint.get(..7) {
            Some(label) if label.eq_ignore_ascii_case("SHA256:") => &fingerprint[7..],
            _ => fingerprint,
        };
        fingerprint.trim_end_matches('=').to_owned()
    };
    !bare(expected).is_empty() && bare(expected) == bare(actual)
}

pub(super) async fn probe(steps: &Steps, target: &SftpTarget<'_>) -> Result<String, String> {
    let endpoint = endpoint(target.host, target.port);
    let tcp = steps.connect_tcp(target.host, target.port).await?;
    let seen = Arc::new(Mutex::new(None));
    let handler = HostKeyCheck { expected: target.host_key_fingerprint.map(str::to_owned), seen: Arc::clone(&seen) };
    let config = Arc::new(client::Config::default());
    let connected = steps
        .bounded(
            &format!("connected to {endpoint} and started the SSH handshake"),
            client::connect_stream(config, tcp, handler),
        )
        .await?;
    let mut ssh = match connected {
        Ok(ssh) => ssh,
        Err(russh::Error::UnknownKey) => {
            let seen = seen.lock().ok().and_then(|seen| seen.clone()).unwrap_or_else(|| "unknown".into());
            let expected = target.host_key_fingerprint.unwrap_or_default();
            return Err(format!(
                "refused {endpoint}: its host key is {seen}, not {expected} as configured (a different server, \
                 or its key was changed: check with its administrator before updating the fingerprint)"
            ));
        }
        Err(e) => return Err(format!("connected to {endpoint}, but the SSH handshake failed: {}", ssh_words(&e))),
    };
    let mut done = format!("connected to {endpoint}");

    authenticate(steps, &mut ssh, target, &done).await?;
    done.push_str(&format!(", logged in as {}", target.username));

    let result = transfer(steps, &ssh, target, &done).await;
    let _ = steps.quiet(ssh.disconnect(russh::Disconnect::ByApplication, "", "en")).await;
    result
}

/// Logs in with the private key and/or the password, as the server allows: it is first asked which
/// methods it accepts (`none`), and a password goes by keyboard-interactive to a server that takes
/// passwords only that way (OpenSSH with PAM, often).
async fn authenticate(
    steps: &Steps,
    ssh: &mut Handle<HostKeyCheck>,
    target: &SftpTarget<'_>,
    done: &str,
) -> Result<(), String> {
    let username = target.username;
    let trying = format!("{done} and tried to log in as {username}");
    let failed = |e: russh::Error| format!("{done}, but logging in as {username} failed: {}", ssh_words(&e));

    let mut accepted = match steps.bounded(&trying, ssh.authenticate_none(username)).await?.map_err(failed)? {
        AuthResult::Success => return Ok(()),
        AuthResult::Failure { remaining_methods, .. } => remaining_methods,
    };
    let offers = |methods: &MethodSet, kind: MethodKind| methods.is_empty() || methods.contains(&kind);
    let mut tried = Vec::new();

    if let Some(key) = target.private_key.filter(|_| offers(&accepted, MethodKind::PublicKey)) {
        let key = private_key(key, target.password).map_err(|e| format!("{done}, but {e}"))?;
        let hash = steps.quiet(ssh.best_supported_rsa_hash()).await.ok().and_then(Result::ok).flatten().flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        tried.push("the private key");
        match steps.bounded(&trying, ssh.authenticate_publickey(username, key)).await?.map_err(failed)? {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure { remaining_methods, .. } => accepted = remaining_methods,
        }
    }

    if let Some(password) = target.password {
        if offers(&accepted, MethodKind::Password) {
            tried.push("the password");
            let login = ssh.authenticate_password(username, password.expose_secret());
            match steps.bounded(&trying, login).await?.map_err(failed)? {
                AuthResult::Success => return Ok(()),
                AuthResult::Failure { remaining_methods, .. } => accepted = remaining_methods,
            }
        } else if accepted.contains(&MethodKind::KeyboardInteractive) {
            tried.push("the password, by keyboard-interactive");
            let login = keyboard_interactive(ssh, username, password);
            match steps.bounded(&trying, login).await?.map_err(failed)? {
                KeyboardInteractiveAuthResponse::Success => return Ok(()),
                KeyboardInteractiveAuthResponse::Failure { remaining_methods, .. } => accepted = remaining_methods,
                KeyboardInteractiveAuthResponse::InfoRequest { .. } => {}
            }
        }
    }

    let names: Vec<&'static str> = accepted.iter().map(<&'static str>::from).collect();
    let accepts = if names.is_empty() { String::new() } else { format!("; it accepts {}", names.join(", ")) };
    if tried.is_empty() {
        let has = match (target.private_key, target.password) {
            (Some(_), Some(_)) => "a private key and a password",
            (Some(_), None) => "a private key",
            _ => "a password",
        };
        return Err(format!("{done}, but could not log in as {username}: this target has {has}{accepts}"));
    }
    Err(format!("{done}, but login as {username} refused by the server (tried {}){accepts}", tried.join(" and ")))
}

/// The private key, opened with the password if it has a passphrase.
fn private_key(key: &SecretString, password: Option<&SecretString>) -> Result<russh::keys::PrivateKey, String> {
    match decode_secret_key(key.expose_secret(), None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => match password {
            Some(password) => decode_secret_key(key.expose_secret(), Some(password.expose_secret()))
                .map_err(|_| "the private key has a passphrase that the password does not open".to_owned()),
            None => Err("the private key has a passphrase: give it as the password, or use a key without one".into()),
        },
        Err(e) => Err(format!("the private key could not be read ({e}); give it in OpenSSH or PEM form")),
    }
}

/// Answers every hidden prompt with the password (a few rounds at most: a server asking on and on wants
/// something else, a one-time code say).
async fn keyboard_interactive(
    ssh: &mut Handle<HostKeyCheck>,
    username: &str,
    password: &SecretString,
) -> Result<KeyboardInteractiveAuthResponse, russh::Error> {
    let mut response = ssh.authenticate_keyboard_interactive_start(username, None).await?;
    for _ in 0..3 {
        let KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } = &response else { break };
        let answers =
            prompts.iter().map(|p| if p.echo { String::new() } else { password.expose_secret().to_owned() }).collect();
        response = ssh.authenticate_keyboard_interactive_respond(answers).await?;
    }
    Ok(response)
}

async fn transfer(
    steps: &Steps,
    ssh: &Handle<HostKeyCheck>,
    target: &SftpTarget<'_>,
    done: &str,
) -> Result<String, String> {
    let open = async {
        let channel = ssh.channel_open_session().await?;
        channel.request_subsystem(true, "sftp").await?;
        Ok::<_, russh::Error>(channel)
    };
    let channel = steps
        .bounded(&format!("{done} and asked for SFTP"), open)
        .await?
        .map_err(|e| format!("{done}, but the server offers no SFTP: {}", ssh_words(&e)))?;
    let sftp = steps
        .bounded(&format!("{done} and started SFTP"), SftpSession::new(channel.into_stream()))
        .await?
        .map_err(|e| format!("{done}, but SFTP did not start: {}", sftp_words(&e)))?;
    sftp.set_timeout(steps.timeout.as_secs().max(1));

    let directory = target.directory;
    let place = if directory.is_empty() {
        "the login directory".to_owned()
    } else {
        let metadata = steps
            .bounded(&format!("{done} and looked for directory {directory}"), sftp.metadata(directory))
            .await?
            .map_err(|e| match &e {
                SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile => {
                    format!("{done}, but there is no directory {directory} on the server")
                }
                _ => format!("{done}, but could not use directory {directory}: {}", sftp_words(&e)),
            })?;
        if !metadata.is_dir() {
            return Err(format!("{done}, but {directory} is not a directory"));
        }
        directory.to_owned()
    };

    let name = probe_file_name();
    let path = if directory.is_empty() { name.clone() } else { format!("{}/{name}", directory.trim_end_matches('/')) };
    let contents = probe_contents(&name);
    let write = async {
        let mut file = sftp.create(path.as_str()).await?;
        file.write_all(&contents).await?;
        file.shutdown().await?;
        Ok::<_, SftpError>(())
    };
    let written = steps
        .bounded(&format!("{done} and tried to write {name} in {place}"), write)
        .await
        .and_then(|r| r.map_err(|e| format!("{done}, but could not write {name} in {place}: {}", sftp_words(&e))));
    if let Err(failure) = written {
        // The file may have been created before the failure: try to leave nothing behind.
        let _ = steps.quiet(sftp.remove_file(path.as_str())).await;
        return Err(failure);
    }

    let read = steps
        .bounded(&format!("{done}, wrote {name} in {place} and tried to read it back"), sftp.read(path.as_str()))
        .await
        .and_then(|r| {
            r.map_err(|e| format!("{done}, wrote {name} in {place}, but could not read it back: {}", sftp_words(&e)))
        });
    let deleted = steps.quiet(sftp.remove_file(path.as_str())).await.and_then(|r| r.map_err(|e| sftp_words(&e)));
    let _ = steps.quiet(sftp.close()).await;

    super::read_back_and_cleanup(done, &name, &place, &contents, read, deleted)
}

fn ssh_words(error: &russh::Error) -> String {
    match error {
        russh::Error::IO(e) => super::io_words(e),
        russh::Error::Disconnect | russh::Error::HUP => "the server closed the connection".into(),
        other => super::lower_first(&other.to_string()),
    }
}

fn sftp_words(error: &SftpError) -> String {
    match error {
        SftpError::Status(status) if !status.error_message.trim().is_empty() => {
            format!("{} ({})", super::lower_first(&status.status_code.to_string()), status.error_message.trim())
        }
        SftpError::Status(status) => super::lower_first(&status.status_code.to_string()),
        SftpError::Timeout => "the server did not answer in time".into(),
        other => super::lower_first(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_with_or_without_label_and_padding() {
        let actual = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert!(same_fingerprint(actual, actual));
        assert!(same_fingerprint(" uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s= ", actual));
        assert!(same_fingerprint("sha256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", actual));
        assert!(!same_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2S", actual));
        assert!(!same_fingerprint("SHA256:", actual));
    }
}
