//! The storage target aggregate (keyed by target id): a place a tenant's recordings are written to (a local
//! directory, an S3 bucket, an FTP or SFTP server), with the outcome of its last connection test. Secrets
//! (S3 secret keys, passwords, private keys) never enter its events: they are named by `SecretRef` only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::lifecycle::{lifecycle_refusals, Lifecycle};
use crate::names::{display_name, NameError};
use crate::secret::SecretRef;

/// The longest absolute path or remote directory accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest S3 key prefix accepted, in bytes (an S3 object key is at most 1024 bytes).
pub const MAX_PREFIX_BYTES: usize = 1024;
/// The longest connection-test detail kept, in characters; longer details are cut.
pub const MAX_TEST_DETAIL_CHARS: usize = 1000;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageTarget {
    state: Lifecycle,
    tenant_id: Option<Uuid>,
    name: String,
    kind: Option<StorageKind>,
    last_test: Option<ConnectionTest>,
}

/// Where and how recordings are written. Surrounding white space is removed from hosts, endpoints,
/// regions, buckets, access key ids and fingerprints; paths, directories, prefixes and usernames are kept
/// exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StorageKind {
    /// A directory on the recall node's file system.
    LocalFilesystem { path: String },
    /// An S3 bucket, at AWS or at any S3-compatible service (`endpoint`).
    S3 {
        /// `None` for AWS itself.
        endpoint: Option<String>,
        region: String,
        bucket: String,
        prefix: Option<String>,
        access_key_id: String,
        secret_access_key: SecretRef,
        /// Address the bucket as `endpoint/bucket` rather than `bucket.endpoint` (most S3-compatible
        /// services need this).
        path_style: bool,
    },
    Ftp {
        host: String,
        port: u16,
        username: String,
        password: SecretRef,
        /// Empty: the login directory.
        directory: String,
        /// Explicit FTPS (`AUTH TLS`).
        tls: bool,
    },
    /// Needs a password, a private key, or both.
    Sftp {
        host: String,
        port: u16,
        username: String,
        password: Option<SecretRef>,
        private_key: Option<SecretRef>,
        /// Empty: the login directory.
        directory: String,
        /// The server's host key fingerprint as `ssh-keygen -l` shows it (`SHA256:…`); `None` trusts
        /// whatever key the server shows.
        host_key_fingerprint: Option<String>,
    },
}

impl StorageKind {
    /// The secrets these settings refer to, so the write side can destroy them when they are replaced or
    /// the target is purged.
    pub fn secrets(&self) -> Vec<SecretRef> {
        match self {
            Self::LocalFilesystem { .. } => Vec::new(),
            Self::S3 { secret_access_key, .. } => vec![*secret_access_key],
            Self::Ftp { password, .. } => vec![*password],
            Self::Sftp { password, private_key, .. } => password.iter().chain(private_key).copied().collect(),
        }
    }
}

/// The outcome of the last connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTest {
    pub ok: bool,
    pub detail: String,
    pub tested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StorageTargetCommand {
    AddStorageTarget {
        tenant_id: Uuid,
        name: String,
        kind: StorageKind,
    },
    /// Replaces the name and the settings; nothing happens if neither changes.
    EditStorageTarget {
        name: String,
        kind: StorageKind,
    },
    /// Records the outcome of a connection test the write side ran. `detail` (an error message, say) is
    /// made one line (each run of white space or control characters, line breaks too, becomes one space,
    /// none at either end) and cut to `MAX_TEST_DETAIL_CHARS` characters: it comes from a library or a
    /// remote server, not from a person, so it is cleaned rather than refused.
    RecordConnectionTest {
        ok: bool,
        detail: String,
        tested_at: DateTime<Utc>,
    },
    /// Deletes the target; it keeps its name and can be restored until it is purged.
    DeleteStorageTarget,
    /// Undoes a deletion.
    RestoreStorageTarget,
    /// Removes a deleted target for good and frees its name.
    PurgeStorageTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StorageTargetEvent {
    StorageTargetAdded { tenant_id: Uuid, name: String, kind: StorageKind },
    StorageTargetEdited { name: String, kind: StorageKind },
    StorageTargetTested { ok: bool, detail: String, tested_at: DateTime<Utc> },
    StorageTargetDeleted,
    StorageTargetRestored,
    StorageTargetPurged,
}

impl DomainEvent for StorageTargetEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::StorageTargetAdded { .. } => "StorageTargetAdded",
            Self::StorageTargetEdited { .. } => "StorageTargetEdited",
            Self::StorageTargetTested { .. } => "StorageTargetTested",
            Self::StorageTargetDeleted => "StorageTargetDeleted",
            Self::StorageTargetRestored => "StorageTargetRestored",
            Self::StorageTargetPurged => "StorageTargetPurged",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageTargetError {
    #[error("this storage target already exists")]
    AlreadyExists,
    #[error("no such storage target")]
    NotFound,
    #[error("this storage target was deleted")]
    Deleted,
    #[error("this storage target is not deleted")]
    NotDeleted,
    #[error("this storage target was purged")]
    Purged,
    #[error("invalid storage target name: {0}")]
    InvalidName(NameError),
    #[error("a local path must be absolute (start with /), not the root itself, at most {MAX_PATH_BYTES} bytes, without control characters")]
    InvalidLocalPath,
    #[error("an S3 endpoint must be an http:// or https:// URL without white space, at most 2048 characters")]
    InvalidEndpoint,
    #[error("an S3 region must be 1 to 64 lowercase letters, digits or hyphens (e.g. eu-west-1)")]
    InvalidRegion,
    #[error("{0:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit, no two dots in a row, not an IP address)")]
    InvalidBucket(String),
    #[error("an S3 key prefix must not start with /, must be at most {MAX_PREFIX_BYTES} bytes and must not contain control characters")]
    InvalidPrefix,
    #[error("an access key id must be 1 to 128 printable characters without white space")]
    InvalidAccessKeyId,
    #[error("a host must be 1 to 253 characters without white space or control characters")]
    InvalidHost,
    #[error("port 0 is not a port")]
    InvalidPort,
    #[error("a username must be 1 to 128 characters without control characters")]
    InvalidUsername,
    #[error("a directory must be at most {MAX_PATH_BYTES} bytes without control characters")]
    InvalidDirectory,
    #[error("a host key fingerprint must be at most 256 printable characters without white space (e.g. SHA256:…)")]
    InvalidHostKeyFingerprint,
    #[error("an SFTP target needs a password, a private key or both")]
    SftpWithoutCredentials,
}

lifecycle_refusals!(StorageTargetError);

impl StorageTarget {
    /// Added and not deleted.
    pub fn exists(&self) -> bool {
        self.state == Lifecycle::Active
    }

    /// Deleted and still restorable.
    pub fn is_deleted(&self) -> bool {
        self.state == Lifecycle::Deleted
    }

    pub fn is_purged(&self) -> bool {
        self.state == Lifecycle::Purged
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    /// Empty before it is added and after it is purged.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` before it is added and after it is purged.
    pub fn kind(&self) -> Option<&StorageKind> {
        self.kind.as_ref()
    }

    /// The last connection test of the current settings (an edit that changes the settings forgets it).
    pub fn last_test(&self) -> Option<&ConnectionTest> {
        self.last_test.as_ref()
    }

    /// The secrets the current settings refer to (none after a purge: the write side destroys them then).
    pub fn secrets(&self) -> Vec<SecretRef> {
        self.kind.as_ref().map(StorageKind::secrets).unwrap_or_default()
    }

    fn existing(&self) -> Result<(), StorageTargetError> {
        Ok(self.state.require_active()?)
    }

    fn deleted(&self) -> Result<(), StorageTargetError> {
        Ok(self.state.require_deleted()?)
    }

    fn name_key(&self, name: &str) -> Option<IndexKey> {
        self.tenant_id.map(|tenant| IndexKey::name(Namespace::StorageTargetName(tenant), name))
    }
}

fn valid_kind(kind: StorageKind) -> Result<StorageKind, StorageTargetError> {
    use StorageTargetError as E;
    Ok(match kind {
        StorageKind::LocalFilesystem { path } => {
            let valid = path.starts_with('/')
                && path.len() <= MAX_PATH_BYTES
                && !path.chars().any(char::is_control)
                && path.chars().any(|c| c != '/');
            if !valid {
                return Err(E::InvalidLocalPath);
            }
            StorageKind::LocalFilesystem { path }
        }
        StorageKind::S3 { endpoint, region, bucket, prefix, access_key_id, secret_access_key, path_style } => {
            StorageKind::S3 {
                endpoint: nonempty_trimmed(endpoint).map(valid_endpoint).transpose()?,
                region: valid_region(&region)?,
                bucket: valid_bucket(&bucket)?,
                prefix: prefix.filter(|p| !p.is_empty()).map(valid_prefix).transpose()?,
                access_key_id: valid_access_key_id(&access_key_id)?,
                secret_access_key,
                path_style,
            }
        }
        StorageKind::Ftp { host, port, username, password, directory, tls } => StorageKind::Ftp {
            host: valid_host(&host)?,
            port: valid_port(port)?,
            username: valid_username(username)?,
            password,
            directory: valid_directory(directory)?,
            tls,
        },
        StorageKind::Sftp { host, port, username, password, private_key, directory, host_key_fingerprint } => {
            if password.is_none() && private_key.is_none() {
                return Err(E::SftpWithoutCredentials);
            }
            StorageKind::Sftp {
                host: valid_host(&host)?,
                port: valid_port(port)?,
                username: valid_username(username)?,
                password,
                private_key,
                directory: valid_directory(directory)?,
                host_key_fingerprint: nonempty_trimmed(host_key_fingerprint).map(valid_fingerprint).transpose()?,
            }
        }
    })
}

fn nonempty_trimmed(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn valid_endpoint(endpoint: String) -> Result<String, StorageTargetError> {
    let rest = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://"));
    let valid = rest.is_some_and(|rest| !rest.is_empty())
        && endpoint.chars().count() <= 2048
        && !endpoint.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(endpoint)
    } else {
        Err(StorageTargetError::InvalidEndpoint)
    }
}

fn valid_region(region: &str) -> Result<String, StorageTargetError> {
    let region = region.trim();
    let valid = (1..=64).contains(&region.len())
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(region.to_owned())
    } else {
        Err(StorageTargetError::InvalidRegion)
    }
}

/// S3's bucket naming rules (the general-purpose bucket rules AWS documents).
fn valid_bucket(bucket: &str) -> Result<String, StorageTargetError> {
    let bucket = bucket.trim();
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| alnum(c) || c == '.' || c == '-')
        && bucket.starts_with(alnum)
        && bucket.ends_with(alnum)
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err();
    if valid {
        Ok(bucket.to_owned())
    } else {
        Err(StorageTargetError::InvalidBucket(bucket.to_owned()))
    }
}

fn valid_prefix(prefix: String) -> Result<String, StorageTargetError> {
    if prefix.starts_with('/') || prefix.len() > MAX_PREFIX_BYTES || prefix.chars().any(char::is_control) {
        Err(StorageTargetError::InvalidPrefix)
    } else {
        Ok(prefix)
    }
}

fn valid_access_key_id(id: &str) -> Result<String, StorageTargetError> {
    let id = id.trim();
    if (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_graphic()) {
        Ok(id.to_owned())
    } else {
        Err(StorageTargetError::InvalidAccessKeyId)
    }
}

fn valid_host(host: &str) -> Result<String, StorageTargetError> {
    let host = host.trim();
    let valid = (1..=253).contains(&host.chars().count()) && !host.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(host.to_owned())
    } else {
        Err(StorageTargetError::InvalidHost)
    }
}

fn valid_port(port: u16) -> Result<u16, StorageTargetError> {
    if port == 0 {
        Err(StorageTargetError::InvalidPort)
    } else {
        Ok(port)
    }
}

fn valid_username(username: String) -> Result<String, StorageTargetError> {
    if (1..=128).contains(&username.chars().count()) && !username.chars().any(char::is_control) {
        Ok(username)
    } else {
        Err(StorageTargetError::InvalidUsername)
    }
}

/// Control characters are refused, not only NUL: FTP is a line protocol, and a line break in a directory
/// would smuggle in a command.
fn valid_directory(directory: String) -> Result<String, StorageTargetError> {
    if directory.len() <= MAX_PATH_BYTES && !directory.chars().any(char::is_control) {
        Ok(directory)
    } else {
        Err(StorageTargetError::InvalidDirectory)
    }
}

fn valid_fingerprint(fingerprint: String) -> Result<String, StorageTargetError> {
    if fingerprint.len() <= 256 && fingerprint.chars().all(|c| c.is_ascii_graphic()) {
        Ok(fingerprint)
    } else {
        Err(StorageTargetError::InvalidHostKeyFingerprint)
    }
}

impl Aggregate for StorageTarget {
    const TYPE: &'static str = "StorageTarget";
    type Command = StorageTargetCommand;
    type Event = StorageTargetEvent;
    type Error = StorageTargetError;
    type Services = ();

    async fn decide(
        &self,
        command: StorageTargetCommand,
        _: &(),
    ) -> Result<Vec<StorageTargetEvent>, StorageTargetError> {
        use StorageTargetCommand as C;
        use StorageTargetEvent as E;
        match command {
            C::AddStorageTarget { tenant_id, name, kind } => {
                match self.state {
                    Lifecycle::New => {}
                    Lifecycle::Purged => return Err(StorageTargetError::Purged),
                    Lifecycle::Active | Lifecycle::Deleted => return Err(StorageTargetError::AlreadyExists),
                }
                let name = display_name(&name).map_err(StorageTargetError::InvalidName)?;
                Ok(vec![E::StorageTargetAdded { tenant_id, name, kind: valid_kind(kind)? }])
            }
            C::EditStorageTarget { name, kind } => {
                self.existing()?;
                let name = display_name(&name).map_err(StorageTargetError::InvalidName)?;
                let kind = valid_kind(kind)?;
                let unchanged = name == self.name && self.kind.as_ref() == Some(&kind);
                Ok(if unchanged { vec![] } else { vec![E::StorageTargetEdited { name, kind }] })
            }
            C::RecordConnectionTest { ok, detail, tested_at } => {
                self.existing()?;
                Ok(vec![E::StorageTargetTested {
                    ok,
                    detail: crate::names::one_line(&detail, MAX_TEST_DETAIL_CHARS),
                    tested_at,
                }])
            }
            C::DeleteStorageTarget => {
                self.existing()?;
                Ok(vec![E::StorageTargetDeleted])
            }
            C::RestoreStorageTarget => {
                self.deleted()?;
                Ok(vec![E::StorageTargetRestored])
            }
            C::PurgeStorageTarget => {
                self.deleted()?;
                Ok(vec![E::StorageTargetPurged])
            }
        }
    }

    fn apply(&mut self, event: StorageTargetEvent) {
        use StorageTargetEvent as E;
        match event {
            E::StorageTargetAdded { tenant_id, name, kind } => {
                self.state = Lifecycle::Active;
                self.tenant_id = Some(tenant_id);
                self.name = name;
                self.kind = Some(kind);
            }
            E::StorageTargetEdited { name, kind } => {
                // A test of other settings says nothing about these.
                if self.kind.as_ref() != Some(&kind) {
                    self.last_test = None;
                }
                self.name = name;
                self.kind = Some(kind);
            }
            E::StorageTargetTested { ok, detail, tested_at } => {
                self.last_test = Some(ConnectionTest { ok, detail, tested_at });
            }
            E::StorageTargetDeleted => self.state = Lifecycle::Deleted,
            E::StorageTargetRestored => self.state = Lifecycle::Active,
            E::StorageTargetPurged => {
                self.state = Lifecycle::Purged;
                self.name = String::new();
                self.kind = None;
                self.last_test = None;
            }
        }
    }

    /// The name is claimed on add and moved on edit; a deleted target keeps it (so restoring it cannot
    /// fail on a name taken meanwhile) until it is purged.
    fn index_changes(&self, event: &StorageTargetEvent) -> Vec<IndexChange> {
        use StorageTargetEvent as E;
        match event {
            E::StorageTargetAdded { tenant_id, name, .. } => {
                vec![IndexChange::Claim(IndexKey::name(Namespace::StorageTargetName(*tenant_id), name))]
            }
            E::StorageTargetEdited { name, .. } => moves(&self.name_key(&self.name), &self.name_key(name)),
            E::StorageTargetPurged => self.name_key(&self.name).map(IndexChange::Release).into_iter().collect(),
            E::StorageTargetTested { .. } | E::StorageTargetDeleted | E::StorageTargetRestored => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const SECRET: SecretRef = SecretRef(Uuid::from_u128(100));
    const KEY: SecretRef = SecretRef(Uuid::from_u128(101));

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("a valid time")
    }

    fn local(path: &str) -> StorageKind {
        StorageKind::LocalFilesystem { path: path.into() }
    }

    fn s3() -> StorageKind {
        StorageKind::S3 {
            endpoint: None,
            region: "eu-west-1".into(),
            bucket: "acme-recordings".into(),
            prefix: Some("calls/".into()),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: SECRET,
            path_style: false,
        }
    }

    fn ftp() -> StorageKind {
        StorageKind::Ftp {
            host: "ftp.example.com".into(),
            port: 21,
            username: "recall".into(),
            password: SECRET,
            directory: "recordings".into(),
            tls: true,
        }
    }

    fn sftp(password: Option<SecretRef>, private_key: Option<SecretRef>) -> StorageKind {
        StorageKind::Sftp {
            host: "sftp.example.com".into(),
            port: 22,
            username: "recall".into(),
            password,
            private_key,
            directory: String::new(),
            host_key_fingerprint: Some("SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8".into()),
        }
    }

    fn add(name: &str, kind: StorageKind) -> StorageTargetCommand {
        StorageTargetCommand::AddStorageTarget { tenant_id: TENANT, name: name.into(), kind }
    }

    fn added() -> Vec<StorageTargetEvent> {
        vec![StorageTargetEvent::StorageTargetAdded { tenant_id: TENANT, name: "Archive".into(), kind: s3() }]
    }

    fn deleted() -> Vec<StorageTargetEvent> {
        let mut events = added();
        events.push(StorageTargetEvent::StorageTargetDeleted);
        events
    }

    fn purged() -> Vec<StorageTargetEvent> {
        let mut events = deleted();
        events.push(StorageTargetEvent::StorageTargetPurged);
        events
    }

    fn edit(name: &str, kind: StorageKind) -> StorageTargetCommand {
        StorageTargetCommand::EditStorageTarget { name: name.into(), kind }
    }

    fn test(ok: bool, detail: &str) -> StorageTargetCommand {
        StorageTargetCommand::RecordConnectionTest { ok, detail: detail.into(), tested_at: at(0) }
    }

    /// The error adding a target of `kind` gives, if any.
    fn refusal(kind: StorageKind) -> Option<StorageTargetError> {
        when::<StorageTarget>([], add("x", kind), &()).err()
    }

    #[test]
    fn a_target_of_each_kind_is_added_with_a_trimmed_name() {
        for kind in [local("/var/lib/recall"), s3(), ftp(), sftp(None, Some(KEY))] {
            assert_eq!(
                when::<StorageTarget>([], add("  Archive ", kind.clone()), &()),
                Ok(vec![StorageTargetEvent::StorageTargetAdded { tenant_id: TENANT, name: "Archive".into(), kind }])
            );
        }
    }

    #[test]
    fn identifiers_are_trimmed_but_paths_and_usernames_are_kept_as_given() {
        let kind = StorageKind::S3 {
            endpoint: Some(" https://minio.local:9000 ".into()),
            region: " us-east-1 ".into(),
            bucket: " b.example ".into(),
            prefix: Some(" p ".into()),
            access_key_id: " key ".into(),
            secret_access_key: SECRET,
            path_style: true,
        };
        let expected = StorageKind::S3 {
            endpoint: Some("https://minio.local:9000".into()),
            region: "us-east-1".into(),
            bucket: "b.example".into(),
            prefix: Some(" p ".into()),
            access_key_id: "key".into(),
            secret_access_key: SECRET,
            path_style: true,
        };
        let events = when::<StorageTarget>([], add("x", kind), &()).expect("valid");
        assert_eq!(
            events,
            vec![StorageTargetEvent::StorageTargetAdded { tenant_id: TENANT, name: "x".into(), kind: expected }]
        );
        let sftp_with = |host: &str, fingerprint: Option<&str>| StorageKind::Sftp {
            host: host.into(),
            port: 2222,
            username: " me".into(),
            password: Some(KEY),
            private_key: None,
            directory: " /up ".into(),
            host_key_fingerprint: fingerprint.map(Into::into),
        };
        assert_eq!(
            when::<StorageTarget>([], add("x", sftp_with(" sftp.example.com ", Some("   "))), &()),
            Ok(vec![StorageTargetEvent::StorageTargetAdded {
                tenant_id: TENANT,
                name: "x".into(),
                kind: sftp_with("sftp.example.com", None)
            }])
        );
    }

    #[test]
    fn empty_optional_settings_are_none() {
        let StorageKind::S3 { region, bucket, access_key_id, .. } = s3() else { unreachable!() };
        let kind = StorageKind::S3 {
            endpoint: Some("  ".into()),
            region,
            bucket,
            prefix: Some(String::new()),
            access_key_id,
            secret_access_key: SECRET,
            path_style: false,
        };
        let events = when::<StorageTarget>([], add("x", kind), &()).expect("valid");
        let StorageTargetEvent::StorageTargetAdded { kind: StorageKind::S3 { endpoint, prefix, .. }, .. } = &events[0]
        else {
            panic!("an S3 target was added: {events:?}")
        };
        assert_eq!((endpoint, prefix), (&None, &None));
    }

    #[test]
    fn a_local_path_must_be_absolute_bounded_and_more_than_the_root() {
        assert_eq!(refusal(local("/srv/recall/recordings")), None);
        assert_eq!(refusal(local(&format!("/{}", "a".repeat(MAX_PATH_BYTES - 1)))), None);
        for bad in [
            String::new(),
            "relative/path".into(),
            "/".into(),
            "//".into(),
            "/a\0b".into(),
            "/a\nb".into(),
            format!("/{}", "a".repeat(MAX_PATH_BYTES)),
        ] {
            assert_eq!(refusal(local(&bad)), Some(StorageTargetError::InvalidLocalPath), "{bad:?}");
        }
    }

    /// The error adding the S3 target `s3()` with one setting changed by `change` gives, if any.
    fn s3_refusal(change: impl FnOnce(&mut StorageKind)) -> Option<StorageTargetError> {
        let mut kind = s3();
        change(&mut kind);
        refusal(kind)
    }

    #[test]
    fn s3_endpoints_are_http_urls() {
        let endpoint = |e: &str| {
            s3_refusal(|k| {
                if let StorageKind::S3 { endpoint, .. } = k {
                    *endpoint = Some(e.into());
                }
            })
        };
        assert_eq!(endpoint("http://10.0.0.5:9000"), None);
        assert_eq!(endpoint("https://s3.example.com/base"), None);
        for bad in ["s3.example.com", "ftp://x", "https://", "https://a b", "https://a\u{7}"] {
            assert_eq!(endpoint(bad), Some(StorageTargetError::InvalidEndpoint), "{bad:?}");
        }
    }

    #[test]
    fn s3_regions_buckets_prefixes_and_key_ids_follow_the_s3_rules() {
        let region = |r: &str| {
            s3_refusal(|k| {
                if let StorageKind::S3 { region, .. } = k {
                    *region = r.into();
                }
            })
        };
        assert_eq!(region("us-gov-west-1"), None);
        for bad in ["", "EU-WEST-1", "eu_west_1", &"a".repeat(65)] {
            assert_eq!(region(bad), Some(StorageTargetError::InvalidRegion), "{bad:?}");
        }

        let bucket = |b: &str| {
            s3_refusal(|k| {
                if let StorageKind::S3 { bucket, .. } = k {
                    *bucket = b.into();
                }
            })
        };
        for good in ["abc", "my.bucket-1", "0bucket9", &"a".repeat(63)] {
            assert_eq!(bucket(good), None, "{good:?}");
        }
        let too_long = "a".repeat(64);
        for bad in
            ["ab", "Bucket", "-bucket", "bucket-", ".bucket", "my..bucket", "my_bucket", "192.168.5.4", &too_long]
        {
            assert_eq!(bucket(bad), Some(StorageTargetError::InvalidBucket(bad.into())), "{bad:?}");
        }

        let prefix = |p: &str| {
            s3_refusal(|k| {
                if let StorageKind::S3 { prefix, .. } = k {
                    *prefix = Some(p.into());
                }
            })
        };
        assert_eq!(prefix("tenant/acme/"), None);
        for bad in ["/calls", "a\0b", &"p".repeat(MAX_PREFIX_BYTES + 1)] {
            assert_eq!(prefix(bad), Some(StorageTargetError::InvalidPrefix), "{bad:?}");
        }

        let key_id = |id: &str| {
            s3_refusal(|k| {
                if let StorageKind::S3 { access_key_id, .. } = k {
                    *access_key_id = id.into();
                }
            })
        };
        for bad in ["", "AKIA EXAMPLE", "AKIA\u{1}", "clé", &"K".repeat(129)] {
            assert_eq!(key_id(bad), Some(StorageTargetError::InvalidAccessKeyId), "{bad:?}");
        }
    }

    #[test]
    fn ftp_and_sftp_servers_need_a_host_a_port_and_a_username() {
        let ftp_with = |host: &str, port: u16, username: &str, directory: &str| {
            refusal(StorageKind::Ftp {
                host: host.into(),
                port,
                username: username.into(),
                password: SECRET,
                directory: directory.into(),
                tls: false,
            })
        };
        assert_eq!(ftp_with("ftp.example.com", 21, "u", ""), None);
        assert_eq!(ftp_with("[2001:db8::1]", 65535, &"u".repeat(128), &"d".repeat(MAX_PATH_BYTES)), None);
        assert_eq!(ftp_with("", 21, "u", ""), Some(StorageTargetError::InvalidHost));
        assert_eq!(ftp_with("ftp example.com", 21, "u", ""), Some(StorageTargetError::InvalidHost));
        assert_eq!(ftp_with(&"h".repeat(254), 21, "u", ""), Some(StorageTargetError::InvalidHost));
        assert_eq!(ftp_with("h", 0, "u", ""), Some(StorageTargetError::InvalidPort));
        assert_eq!(ftp_with("h", 21, "", ""), Some(StorageTargetError::InvalidUsername));
        assert_eq!(ftp_with("h", 21, "a\tb", ""), Some(StorageTargetError::InvalidUsername));
        assert_eq!(ftp_with("h", 21, &"u".repeat(129), ""), Some(StorageTargetError::InvalidUsername));
        assert_eq!(ftp_with("h", 21, "u", "up\r\nDELE x"), Some(StorageTargetError::InvalidDirectory));
        assert_eq!(ftp_with("h", 21, "u", &"d".repeat(MAX_PATH_BYTES + 1)), Some(StorageTargetError::InvalidDirectory));

        let mut bad_fingerprint = sftp(Some(KEY), None);
        if let StorageKind::Sftp { host_key_fingerprint, .. } = &mut bad_fingerprint {
            *host_key_fingerprint = Some("SHA256: spaced".into());
        }
        assert_eq!(refusal(bad_fingerprint), Some(StorageTargetError::InvalidHostKeyFingerprint));
        let mut bad_port = sftp(Some(KEY), None);
        if let StorageKind::Sftp { port, .. } = &mut bad_port {
            *port = 0;
        }
        assert_eq!(refusal(bad_port), Some(StorageTargetError::InvalidPort));
    }

    #[test]
    fn an_sftp_target_needs_a_password_or_a_private_key() {
        assert_eq!(refusal(sftp(None, None)), Some(StorageTargetError::SftpWithoutCredentials));
        assert_eq!(refusal(sftp(Some(SECRET), None)), None);
        assert_eq!(refusal(sftp(None, Some(KEY))), None);
        assert_eq!(refusal(sftp(Some(SECRET), Some(KEY))), None);
    }

    #[test]
    fn a_target_cannot_be_added_twice_or_with_an_invalid_name() {
        assert_eq!(when::<StorageTarget>(added(), add("B", ftp()), &()), Err(StorageTargetError::AlreadyExists));
        assert_eq!(when::<StorageTarget>(deleted(), add("B", ftp()), &()), Err(StorageTargetError::AlreadyExists));
        assert_eq!(
            when::<StorageTarget>([], add(" ", ftp()), &()),
            Err(StorageTargetError::InvalidName(NameError::Empty))
        );
    }

    #[test]
    fn editing_replaces_name_and_settings_and_an_unchanged_edit_is_no_event() {
        assert_eq!(when::<StorageTarget>(added(), edit(" Archive ", s3()), &()), Ok(vec![]));
        assert_eq!(
            when::<StorageTarget>(added(), edit("Cold archive", s3()), &()),
            Ok(vec![StorageTargetEvent::StorageTargetEdited { name: "Cold archive".into(), kind: s3() }])
        );
        assert_eq!(
            when::<StorageTarget>(added(), edit("Archive", ftp()), &()),
            Ok(vec![StorageTargetEvent::StorageTargetEdited { name: "Archive".into(), kind: ftp() }])
        );
        assert_eq!(
            when::<StorageTarget>(added(), edit("Archive", local("/")), &()),
            Err(StorageTargetError::InvalidLocalPath)
        );
        assert_eq!(
            when::<StorageTarget>(added(), edit("", s3()), &()),
            Err(StorageTargetError::InvalidName(NameError::Empty))
        );
    }

    #[test]
    fn a_connection_test_is_recorded_with_a_clean_bounded_detail() {
        assert_eq!(
            when::<StorageTarget>(added(), test(false, "  530 Login incorrect.\r\n  retrying\u{7}\tnow "), &()),
            Ok(vec![StorageTargetEvent::StorageTargetTested {
                ok: false,
                detail: "530 Login incorrect. retrying now".into(),
                tested_at: at(0),
            }])
        );
        let long = "é".repeat(MAX_TEST_DETAIL_CHARS + 50);
        let Ok(events) = when::<StorageTarget>(added(), test(true, &long), &()) else { panic!("recorded") };
        let StorageTargetEvent::StorageTargetTested { detail, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!(detail.chars().count(), MAX_TEST_DETAIL_CHARS);

        let mut tested = added();
        tested.extend(when::<StorageTarget>(added(), test(true, "ok"), &()).expect("recorded"));
        let target = given::<StorageTarget>(tested);
        assert_eq!(target.last_test(), Some(&ConnectionTest { ok: true, detail: "ok".into(), tested_at: at(0) }));
    }

    #[test]
    fn changing_the_settings_forgets_the_last_test_but_renaming_keeps_it() {
        let mut tested = added();
        tested.push(StorageTargetEvent::StorageTargetTested { ok: true, detail: String::new(), tested_at: at(5) });
        let mut renamed = tested.clone();
        renamed.push(StorageTargetEvent::StorageTargetEdited { name: "Other".into(), kind: s3() });
        assert!(given::<StorageTarget>(renamed).last_test().is_some());
        let mut moved = tested;
        moved.push(StorageTargetEvent::StorageTargetEdited { name: "Archive".into(), kind: ftp() });
        assert_eq!(given::<StorageTarget>(moved).last_test(), None);
    }

    #[test]
    fn an_unknown_target_refuses_every_change() {
        for command in [
            edit("x", s3()),
            test(true, ""),
            StorageTargetCommand::DeleteStorageTarget,
            StorageTargetCommand::RestoreStorageTarget,
            StorageTargetCommand::PurgeStorageTarget,
        ] {
            assert_eq!(
                when::<StorageTarget>([], command.clone(), &()),
                Err(StorageTargetError::NotFound),
                "{command:?}"
            );
        }
    }

    #[test]
    fn a_deleted_target_can_be_restored_but_not_edited_tested_or_deleted_again() {
        assert_eq!(
            when::<StorageTarget>(added(), StorageTargetCommand::DeleteStorageTarget, &()),
            Ok(vec![StorageTargetEvent::StorageTargetDeleted])
        );
        for command in [edit("x", s3()), test(true, ""), StorageTargetCommand::DeleteStorageTarget] {
            assert_eq!(
                when::<StorageTarget>(deleted(), command.clone(), &()),
                Err(StorageTargetError::Deleted),
                "{command:?}"
            );
        }
        assert_eq!(
            when::<StorageTarget>(deleted(), StorageTargetCommand::RestoreStorageTarget, &()),
            Ok(vec![StorageTargetEvent::StorageTargetRestored])
        );
        let target = given::<StorageTarget>(deleted());
        assert!(target.is_deleted() && !target.exists());
        assert_eq!(target.name(), "Archive");
        let mut restored = deleted();
        restored.push(StorageTargetEvent::StorageTargetRestored);
        let target = given::<StorageTarget>(restored);
        assert!(target.exists() && !target.is_deleted());
        assert_eq!(target.kind(), Some(&s3()));
    }

    #[test]
    fn only_a_deleted_target_is_restored_or_purged() {
        assert_eq!(
            when::<StorageTarget>(added(), StorageTargetCommand::RestoreStorageTarget, &()),
            Err(StorageTargetError::NotDeleted)
        );
        assert_eq!(
            when::<StorageTarget>(added(), StorageTargetCommand::PurgeStorageTarget, &()),
            Err(StorageTargetError::NotDeleted)
        );
        assert_eq!(
            when::<StorageTarget>(deleted(), StorageTargetCommand::PurgeStorageTarget, &()),
            Ok(vec![StorageTargetEvent::StorageTargetPurged])
        );
    }

    #[test]
    fn a_purged_target_refuses_every_command() {
        for command in [
            add("Archive", s3()),
            edit("x", s3()),
            test(true, ""),
            StorageTargetCommand::DeleteStorageTarget,
            StorageTargetCommand::RestoreStorageTarget,
            StorageTargetCommand::PurgeStorageTarget,
        ] {
            assert_eq!(
                when::<StorageTarget>(purged(), command.clone(), &()),
                Err(StorageTargetError::Purged),
                "{command:?}"
            );
        }
        let target = given::<StorageTarget>(purged());
        assert!(target.is_purged() && !target.exists() && !target.is_deleted());
        assert_eq!((target.kind(), target.secrets()), (None, vec![]));
        assert_eq!(target.tenant_id(), Some(TENANT));
    }

    #[test]
    fn the_secrets_are_those_the_current_settings_name() {
        assert_eq!(local("/x").secrets(), vec![]);
        assert_eq!(s3().secrets(), vec![SECRET]);
        assert_eq!(ftp().secrets(), vec![SECRET]);
        assert_eq!(sftp(Some(SECRET), Some(KEY)).secrets(), vec![SECRET, KEY]);
        assert_eq!(sftp(None, Some(KEY)).secrets(), vec![KEY]);
        let mut edited = added();
        edited.push(StorageTargetEvent::StorageTargetEdited { name: "Archive".into(), kind: sftp(None, Some(KEY)) });
        assert_eq!(given::<StorageTarget>(added()).secrets(), vec![SECRET]);
        assert_eq!(given::<StorageTarget>(edited).secrets(), vec![KEY]);
        assert_eq!(StorageTarget::default().secrets(), vec![]);
    }

    #[test]
    fn events_name_secrets_by_reference_and_tag_the_kind() {
        let json = serde_json::to_value(&added()[0]).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"StorageTargetAdded": {
                "tenant_id": TENANT,
                "name": "Archive",
                "kind": {
                    "type": "s3",
                    "endpoint": null,
                    "region": "eu-west-1",
                    "bucket": "acme-recordings",
                    "prefix": "calls/",
                    "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                    "secret_access_key": SECRET.0,
                    "path_style": false,
                },
            }})
        );
        for (kind, tag) in [(local("/x"), "local_filesystem"), (ftp(), "ftp"), (sftp(None, Some(KEY)), "sftp")] {
            let json = serde_json::to_value(&kind).expect("serializes");
            assert_eq!(json["type"], tag);
            assert_eq!(serde_json::from_value::<StorageKind>(json).expect("deserializes"), kind);
        }
    }

    #[test]
    fn the_name_is_claimed_on_add_moved_on_rename_kept_while_deleted_and_released_on_purge() {
        let key = |name: &str| IndexKey::name(Namespace::StorageTargetName(TENANT), name);
        assert_eq!(StorageTarget::default().index_changes(&added()[0]), vec![IndexChange::Claim(key("archive"))]);
        let target = given::<StorageTarget>(added());
        assert_eq!(
            target.index_changes(&StorageTargetEvent::StorageTargetEdited { name: "Cold".into(), kind: s3() }),
            vec![IndexChange::Release(key("archive")), IndexChange::Claim(key("cold"))]
        );
        assert_eq!(
            target.index_changes(&StorageTargetEvent::StorageTargetEdited { name: "ARCHIVE".into(), kind: ftp() }),
            vec![]
        );
        assert_eq!(target.index_changes(&StorageTargetEvent::StorageTargetDeleted), vec![]);
        let deleted_target = given::<StorageTarget>(deleted());
        assert_eq!(deleted_target.index_changes(&StorageTargetEvent::StorageTargetRestored), vec![]);
        assert_eq!(
            deleted_target.index_changes(&StorageTargetEvent::StorageTargetPurged),
            vec![IndexChange::Release(key("archive"))]
        );
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_target() {
        let (state, events) = run::<StorageTarget>(
            [
                add("Archive", local("/var/lib/recall")),
                StorageTargetCommand::RecordConnectionTest {
                    ok: false,
                    detail: "permission denied".into(),
                    tested_at: at(1),
                },
                edit("Offsite", sftp(None, Some(KEY))),
                StorageTargetCommand::RecordConnectionTest { ok: true, detail: String::new(), tested_at: at(2) },
                StorageTargetCommand::DeleteStorageTarget,
                StorageTargetCommand::RestoreStorageTarget,
            ],
            &(),
        );
        assert_eq!(events.len(), 6);
        assert_eq!(given::<StorageTarget>(events), state);
        assert!(state.exists());
        assert_eq!(state.name(), "Offsite");
        assert_eq!(state.kind(), Some(&sftp(None, Some(KEY))));
        assert_eq!(state.last_test(), Some(&ConnectionTest { ok: true, detail: String::new(), tested_at: at(2) }));
    }
}
