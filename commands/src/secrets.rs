//! The secret store: what must never enter the immutable log, kept in the `secrets` table and named by
//! events through a `SecretRef`. Hashes and digests are stored as they are; secrets recall must read back
//! in clear (storage credentials) are sealed with AES-256-GCM under the site's secrets key, with the
//! secret's id as associated data, so a sealed value cannot be moved to another row. Destroying a secret
//! clears its value for good.

use std::path::Path;

use aes_gcm::aead::{Aead, Generate, Key, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use recall_domain::secret::SecretRef;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

/// What a secret is, as stored in `secrets.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An Argon2id PHC string.
    PasswordHash,
    /// SHA-256 of a password reset token's secret part.
    ResetToken,
    /// SHA-256 of a session token's secret part.
    SessionToken,
    /// SHA-256 of a verification code.
    VerificationCode,
    /// A storage target credential, sealed.
    StorageCredential,
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::PasswordHash => "password_hash",
            Self::ResetToken => "reset_token",
            Self::SessionToken => "session_token",
            Self::VerificationCode => "verification_code",
            Self::StorageCredential => "storage_credential",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret store is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no secrets key is configured, so credentials cannot be stored or read")]
    NoKey,
    #[error("secret {0} could not be unsealed: wrong secrets key, or the stored value was altered")]
    Unseal(Uuid),
    #[error("the secrets key file {path} is unusable: {reason}")]
    KeyFile { path: String, reason: String },
}

/// The site's key for sealing secrets (32 random bytes, kept in a file only the owner may read).
pub struct SecretsKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    pub fn generate() -> Self {
        let key = Key::<Aes256Gcm>::generate();
        Self(SecretBox::new(Box::new(key.into())))
    }

    /// Reads the key from `path` (64 hex digits), creating the file (mode 0600) with a new key when it does
    /// not exist. Every recall process of a site must use the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let key_file = |reason: String| SecretError::KeyFile { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let mut bytes = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(text.trim(), bytes.as_mut_slice())
                    .map_err(|_| key_file("expected 64 hexadecimal digits".into()))?;
                Ok(Self(SecretBox::new(Box::new(*bytes))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let key = Self::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| key_file(e.to_string()))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| key_file(e.to_string()))?;
                let text = Zeroizing::new(hex::encode(key.0.expose_secret()));
                file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| key_file(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(key_file(e.to_string())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0.expose_secret()))
    }
}

const SEAL_VERSION: u8 = 1;

#[derive(Debug)]
pub struct SecretStore {
    pool: PgPool,
    key: Option<SecretsKey>,
}

impl SecretStore {
    /// A store that keeps hashes and digests; `key` is needed for credentials that must be read back.
    pub fn new(pool: PgPool, key: Option<SecretsKey>) -> Self {
        Self { pool, key }
    }

    /// Stores a hash or digest; returns its reference.
    pub async fn put(
        &self,
        kind: SecretKind,
        tenant_id: Option<Uuid>,
        holder: &str,
        value: &[u8],
    ) -> Result<SecretRef, SecretError> {
        let id = Uuid::now_v7();
        self.insert(id, kind, tenant_id, holder, value).await?;
        Ok(SecretRef(id))
    }

    /// Stores a hash or digest under an id chosen by the caller (a token that carries its record's id).
    pub async fn put_as(
        &self,
        id: Uuid,
        kind: SecretKind,
        tenant_id: Option<Uuid>,
        holder: &str,
        value: &[u8],
    ) -> Result<SecretRef, SecretError> {
        self.insert(id, kind, tenant_id, holder, value).await?;
        Ok(SecretRef(id))
    }

    /// Seals `plaintext` under the site's secrets key and stores it.
    pub async fn put_sealed(
        &self,
        kind: SecretKind,
        tenant_id: Option<Uuid>,
        holder: &str,
        plaintext: &SecretString,
    ) -> Result<SecretRef, SecretError> {
        let key = self.key.as_ref().ok_or(SecretError::NoKey)?;
        let id = Uuid::now_v7();
        let nonce = Nonce::generate();
        let sealed = key
            .cipher()
            .encrypt(&nonce, Payload { msg: plaintext.expose_secret().as_bytes(), aad: id.as_bytes() })
            .map_err(|_| SecretError::Unseal(id))?;
        let mut value = Vec::with_capacity(1 + nonce.len() + sealed.len());
        value.push(SEAL_VERSION);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        self.insert(id, kind, tenant_id, holder, &value).await?;
        Ok(SecretRef(id))
    }

    async fn insert(
        &self,
        id: Uuid,
        kind: SecretKind,
        tenant_id: Option<Uuid>,
        holder: &str,
        value: &[u8],
    ) -> Result<(), SecretError> {
        sqlx::query("INSERT INTO secrets (id, kind, tenant_id, holder, value) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(kind.as_str())
            .bind(tenant_id)
            .bind(holder)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The stored hash or digest; `None` when it was destroyed or never existed.
    pub async fn get(&self, secret: SecretRef) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        let value: Option<Option<Vec<u8>>> = sqlx::query_scalar("SELECT value FROM secrets WHERE id = $1")
            .bind(secret.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.flatten().map(Zeroizing::new))
    }

    /// What the secret belongs to (e.g. `User/<id>`), while it is not destroyed.
    pub async fn holder(&self, secret: SecretRef) -> Result<Option<String>, SecretError> {
        let holder: Option<Option<String>> =
            sqlx::query_scalar("SELECT holder FROM secrets WHERE id = $1 AND destroyed_at IS NULL")
                .bind(secret.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(holder.flatten())
    }

    /// A sealed secret in clear; `None` when it was destroyed or never existed.
    pub async fn open_sealed(&self, secret: SecretRef) -> Result<Option<SecretString>, SecretError> {
        let key = self.key.as_ref().ok_or(SecretError::NoKey)?;
        let Some(value) = self.get(secret).await? else { return Ok(None) };
        let unseal = || SecretError::Unseal(secret.0);
        let (version, rest) = value.split_first().ok_or_else(unseal)?;
        if *version != SEAL_VERSION || rest.len() < 12 + 16 {
            return Err(unseal());
        }
        let (nonce, sealed) = rest.split_at(12);
        let nonce = Nonce::try_from(nonce).map_err(|_| unseal())?;
        let clear =
            key.cipher().decrypt(&nonce, Payload { msg: sealed, aad: secret.0.as_bytes() }).map_err(|_| unseal())?;
        let clear = Zeroizing::new(clear);
        let text = std::str::from_utf8(&clear).map_err(|_| unseal())?;
        Ok(Some(SecretString::from(text.to_owned())))
    }

    /// Destroys a secret: its value is gone for good, the row stays as a tombstone.
    pub async fn destroy(&self, secret: SecretRef) -> Result<(), SecretError> {
        sqlx::query("UPDATE secrets SET value = NULL, destroyed_at = now() WHERE id = $1 AND destroyed_at IS NULL")
            .bind(secret.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
