//! File-encryption key custody in the administration service: tenant keys generated or imported, granted,
//! revoked, exported, activated and destroyed; each key-holding user's own key pair, made or unlocked at
//! sign-in and kept in memory (zeroised when dropped) for that session only; what a password change or an
//! administrator's reset does to it. Whatever a role allows, only a holder of a key can grant or export it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use recall_crypto::file::FileHeader;
use recall_crypto::{CryptoError, DataKey, Grant, KeyImport, PrivateKey, SealedUserKey, UnlockedUserKey, UserKeyIds};
use recall_domain::access::{Permission, Resource};
use recall_domain::encryption_key::{EncryptionKeyCommand, GrantEndReason};
use recall_domain::tenant::TenantCommand;
use recall_domain::user::{User, UserCommand};
use recall_domain::CommandMeta;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{now, Admin, AdminError, Caller, Ctx, Done};
use crate::key_store::{KeyStoreError, StoredUserKey};

/// The shortest passphrase an exported private key may be encrypted under.
const MIN_EXPORT_PASSPHRASE: usize = 12;

/// What an administrator asks of a tenant's encryption key.
#[derive(Debug, Clone)]
pub enum EncryptionKeyRequest {
    /// A new RSA-2048 key pair for the tenant; the caller holds it.
    Generate {
        tenant_id: Uuid,
        name: String,
    },
    /// A key pair from a PEM: public only (the site records files it cannot play), or with the private part
    /// (the caller then holds it); an encrypted PEM needs its passphrase.
    Import {
        tenant_id: Uuid,
        name: String,
        pem: SecretString,
        passphrase: Option<SecretString>,
    },
    /// Wraps the key to `user_id` (the caller must hold it).
    Grant {
        user_id: Uuid,
    },
    Revoke {
        user_id: Uuid,
    },
    /// The public key as PEM, or with `passphrase` the private key too, encrypted under it (holders only).
    Export {
        passphrase: Option<SecretString>,
    },
    Rename {
        name: String,
    },
    /// New recordings of the tenant are encrypted with this key (rotation: older files keep theirs).
    Activate,
    /// Crypto-shredding: every grant is destroyed, so nothing encrypted with the key can be played again.
    Destroy,
}

impl From<KeyStoreError> for AdminError {
    fn from(error: KeyStoreError) -> Self {
        match error {
            KeyStoreError::Database(e) => Self::Unavailable(e.to_string()),
            KeyStoreError::Corrupt(e) => Self::Internal(e),
        }
    }
}

fn crypto(error: CryptoError) -> AdminError {
    match error {
        CryptoError::InvalidKey(reason) => AdminError::Invalid(reason),
        CryptoError::WrongPassword => AdminError::Invalid("the passphrase does not open this key".to_owned()),
        other => AdminError::Internal(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| AdminError::Internal(e.to_string()))
}

struct SessionKeys {
    user: Arc<UnlockedUserKey>,
    expires_at: DateTime<Utc>,
    /// Tenant keys this session opened from its grants, by key id.
    tenant_keys: HashMap<Uuid, Arc<PrivateKey>>,
    /// Recordings' data keys this session unwrapped, by tenant key id and recording id: a player asks for
    /// many ranges of one file, and each would otherwise cost an RSA decryption. Forgotten with the tenant
    /// key (revocation, reset, destruction) and with the session.
    data_keys: HashMap<(Uuid, Uuid), Arc<DataKey>>,
}

impl SessionKeys {
    fn forget(&mut self, key_id: Uuid) {
        self.tenant_keys.remove(&key_id);
        self.data_keys.retain(|(key, _), _| *key != key_id);
    }
}

/// The most data keys a session keeps; past it the session's cache starts afresh.
const DATA_KEYS_PER_SESSION: usize = 256;

/// Unlocked keys of live sessions, in this process's memory only (never written anywhere). A session
/// signed in on another node has to sign in here to play encrypted recordings here.
#[derive(Default)]
pub(crate) struct Keyring {
    sessions: Mutex<HashMap<Uuid, SessionKeys>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sessions = self.sessions.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Keyring").field("sessions", &sessions).finish()
    }
}

impl Keyring {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, SessionKeys>) -> T) -> T {
        let mut sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut sessions)
    }

    fn insert(&self, session_id: Uuid, user: UnlockedUserKey, expires_at: DateTime<Utc>) {
        let now = now();
        self.with(|sessions| {
            sessions.retain(|_, keys| keys.expires_at > now);
            let keys = SessionKeys {
                user: Arc::new(user),
                expires_at,
                tenant_keys: HashMap::new(),
                data_keys: HashMap::new(),
            };
            sessions.insert(session_id, keys);
        });
    }

    fn user_key(&self, session_id: Uuid) -> Option<Arc<UnlockedUserKey>> {
        let now = now();
        self.with(|sessions| sessions.get(&session_id).filter(|k| k.expires_at > now).map(|k| k.user.clone()))
    }

    fn tenant_key(&self, session_id: Uuid, key_id: Uuid) -> Option<Arc<PrivateKey>> {
        self.with(|sessions| sessions.get(&session_id).and_then(|k| k.tenant_keys.get(&key_id).cloned()))
    }

    fn remember_tenant_key(&self, session_id: Uuid, key_id: Uuid, key: Arc<PrivateKey>) {
        self.with(|sessions| {
            if let Some(keys) = sessions.get_mut(&session_id) {
                keys.tenant_keys.insert(key_id, key);
            }
        });
    }

    fn data_key(&self, session_id: Uuid, key_id: Uuid, recording_id: Uuid) -> Option<Arc<DataKey>> {
        self.with(|sessions| sessions.get(&session_id).and_then(|k| k.data_keys.get(&(key_id, recording_id)).cloned()))
    }

    fn remember_data_key(&self, session_id: Uuid, key_id: Uuid, recording_id: Uuid, key: Arc<DataKey>) {
        self.with(|sessions| {
            if let Some(keys) = sessions.get_mut(&session_id) {
                if keys.data_keys.len() >= DATA_KEYS_PER_SESSION {
                    keys.data_keys.clear();
                }
                keys.data_keys.insert((key_id, recording_id), key);
            }
        });
    }

    /// Forgets `user_id`'s sessions' copies of `key_id` and what it unwrapped (`None`: the whole keyring of
    /// those sessions).
    fn forget_user(&self, user_id: Uuid, key_id: Option<Uuid>) {
        self.with(|sessions| match key_id {
            Some(key_id) => {
                sessions.values_mut().filter(|k| k.user.ids().user_id == user_id).for_each(|k| k.forget(key_id))
            }
            None => sessions.retain(|_, k| k.user.ids().user_id != user_id),
        });
    }

    fn forget_key(&self, key_id: Uuid) {
        self.with(|sessions| sessions.values_mut().for_each(|k| k.forget(key_id)));
    }

    pub(crate) fn forget_session(&self, session_id: Uuid) {
        self.with(|sessions| drop(sessions.remove(&session_id)));
    }
}

impl Admin {
    /// The caller's own unlocked key: signed in with a password on this node, not impersonating.
    fn caller_key(&self, caller: &Caller) -> Result<Arc<UnlockedUserKey>, AdminError> {
        if caller.impersonator.is_some() {
            return Err(AdminError::Forbidden("encryption keys cannot be used while impersonating".to_owned()));
        }
        caller.session_id.and_then(|session| self.keyring.user_key(session)).ok_or_else(|| {
            AdminError::Forbidden(
                "this session holds no unlocked key: sign in with your password (on this server) to use encryption keys"
                    .to_owned(),
            )
        })
    }

    /// The private part of tenant key `key_id`, opened from the caller's grant (remembered for the session).
    pub async fn open_tenant_key(&self, caller: &Caller, key_id: Uuid) -> Result<Arc<PrivateKey>, AdminError> {
        let key = self.load(&self.keys, key_id).await?;
        if !key.exists() || key.is_destroyed() {
            return Err(AdminError::NotFound("encryption key"));
        }
        if !key.holds(caller.user_id) {
            return Err(AdminError::Forbidden("you do not hold this encryption key".to_owned()));
        }
        let holder = self.caller_key(caller)?;
        let session = caller.session_id.ok_or(AdminError::NotFound("session"))?;
        if let Some(open) = self.keyring.tenant_key(session, key_id) {
            return Ok(open);
        }
        let grant = self
            .key_store
            .grant(key_id, caller.user_id)
            .await?
            .ok_or_else(|| AdminError::Forbidden("you do not hold this encryption key".to_owned()))?;
        let open = blocking(move || grant.open(&holder, key_id)).await?.map_err(|e| {
            tracing::error!(%key_id, error = %e, "a grant does not open with its holder's key");
            AdminError::Forbidden("your grant of this key cannot be opened; ask a holder to grant it again".to_owned())
        })?;
        let open = Arc::new(open);
        self.keyring.remember_tenant_key(session, key_id, open.clone());
        Ok(open)
    }

    /// The data key of an encrypted recording whose header is `header`, unwrapped with tenant key `key_id`
    /// (the key as this installation names it) for `caller`, who must hold it: checked on every call, so a
    /// revocation counts at once; the unwrap itself is done once per session and recording. The inner
    /// error: the header's wrapped key does not open (a damaged or forged file).
    pub async fn open_data_key(
        &self,
        caller: &Caller,
        key_id: Uuid,
        header: &FileHeader,
    ) -> Result<Result<Arc<DataKey>, CryptoError>, AdminError> {
        let tenant_key = self.open_tenant_key(caller, key_id).await?;
        let session = caller.session_id.ok_or(AdminError::NotFound("session"))?;
        let recording_id = header.recording_id();
        if let Some(open) = self.keyring.data_key(session, key_id, recording_id) {
            return Ok(Ok(open));
        }
        let header = header.clone();
        match blocking(move || header.unwrap_key(&tenant_key)).await? {
            Ok(data_key) => {
                let data_key = Arc::new(data_key);
                self.keyring.remember_data_key(session, key_id, recording_id, data_key.clone());
                Ok(Ok(data_key))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    pub(super) async fn encryption_key(
        &self,
        ctx: &Ctx<'_>,
        key_id: Uuid,
        request: EncryptionKeyRequest,
    ) -> Result<Done, AdminError> {
        let key = self.load(&self.keys, key_id).await?;
        let tenant_id = match &request {
            EncryptionKeyRequest::Generate { tenant_id, .. } | EncryptionKeyRequest::Import { tenant_id, .. } => {
                self.active_tenant(*tenant_id).await?;
                *tenant_id
            }
            _ => match key.tenant_id() {
                Some(tenant) if key.exists() => tenant,
                _ => return Err(AdminError::NotFound("encryption key")),
            },
        };
        ctx.authorize(Permission::ManageEncryptionKeys, &Resource::TenantConfig { tenant: tenant_id })?;
        let meta = ctx.meta(Some(tenant_id));
        let caller = ctx.caller.user_id;
        match request {
            EncryptionKeyRequest::Generate { tenant_id, name } => {
                let holder = self.caller_key(ctx.caller)?;
                let private = blocking(PrivateKey::generate).await?.map_err(crypto)?;
                let public = private.public();
                let grant = Grant::seal(&private, key_id, &holder.public(), caller).map_err(crypto)?;
                let command = EncryptionKeyCommand::GenerateEncryptionKey {
                    tenant_id,
                    name,
                    fingerprint: public.fingerprint(),
                    holder: caller,
                };
                self.store_new_key(key_id, tenant_id, &public, Some((caller, &grant)), command, meta).await
            }
            EncryptionKeyRequest::Import { tenant_id, name, pem, passphrase } => {
                let passphrase = passphrase.as_ref().map(|p| p.expose_secret().to_owned());
                let import = blocking(move || KeyImport::from_pem(pem.expose_secret(), passphrase.as_deref()))
                    .await?
                    .map_err(crypto)?;
                let grant = match &import.private {
                    Some(private) => {
                        let holder = self.caller_key(ctx.caller)?;
                        Some(Grant::seal(private, key_id, &holder.public(), caller).map_err(crypto)?)
                    }
                    None => None,
                };
                let command = EncryptionKeyCommand::ImportEncryptionKey {
                    tenant_id,
                    name,
                    fingerprint: import.public.fingerprint(),
                    with_private: grant.is_some(),
                    holder: grant.as_ref().map(|_| caller),
                };
                let grant = grant.as_ref().map(|g| (caller, g));
                self.store_new_key(key_id, tenant_id, &import.public, grant, command, meta).await
            }
            EncryptionKeyRequest::Grant { user_id } => {
                let grantee = self.load(&self.users, user_id).await?;
                if !grantee.exists() || !grantee.is_active() {
                    return Err(AdminError::NotFound("user"));
                }
                if grantee.tenant_id().is_some_and(|t| t != tenant_id) {
                    return Err(AdminError::Invalid("the user belongs to another tenant".to_owned()));
                }
                if !key.holds(caller) {
                    return Err(AdminError::Forbidden(
                        "only a holder of this key can grant it, whatever their role; you do not hold it".to_owned(),
                    ));
                }
                if key.holds(user_id) {
                    return Ok(Done::default());
                }
                let tenant_key = self.open_tenant_key(ctx.caller, key_id).await?;
                let stored = self.key_store.user_key(user_id).await?.ok_or_else(|| {
                    AdminError::Invalid(
                        "the user has no key pair yet: they must sign in once with their password first".to_owned(),
                    )
                })?;
                let public = stored.sealed.public().map_err(crypto)?;
                let grant = Grant::seal(&tenant_key, key_id, &public, user_id).map_err(crypto)?;
                self.key_store.put_grant(key_id, user_id, &grant).await?;
                let command = EncryptionKeyCommand::GrantEncryptionKey { by: caller, user_id };
                match self.run(&self.keys, key_id, command, meta).await {
                    Ok(receipt) => Ok(Done::of(receipt)),
                    Err(e) => {
                        self.key_store.delete_grant(key_id, user_id).await?;
                        Err(e)
                    }
                }
            }
            EncryptionKeyRequest::Revoke { user_id } => {
                if !key.holds(user_id) {
                    return Err(AdminError::Invalid("the user does not hold this key".to_owned()));
                }
                // The grant goes first: if the event cannot be written, the user has lost access (safe)
                // rather than kept it while the log says otherwise.
                self.key_store.delete_grant(key_id, user_id).await?;
                self.keyring.forget_user(user_id, Some(key_id));
                let command =
                    EncryptionKeyCommand::RevokeEncryptionKeyGrant { user_id, reason: GrantEndReason::Revoked };
                Ok(Done::of(self.run(&self.keys, key_id, command, meta).await?))
            }
            EncryptionKeyRequest::Export { passphrase } => {
                let (pem, with_private) = match passphrase {
                    None => {
                        let (_, public) =
                            self.key_store.tenant_key(key_id).await?.ok_or(AdminError::NotFound("encryption key"))?;
                        (SecretString::from(public.to_pem()), false)
                    }
                    Some(passphrase) => {
                        if passphrase.expose_secret().chars().count() < MIN_EXPORT_PASSPHRASE {
                            return Err(AdminError::Invalid(format!(
                                "an exported private key needs a passphrase of at least {MIN_EXPORT_PASSPHRASE} characters"
                            )));
                        }
                        if !key.holds(caller) {
                            return Err(AdminError::Forbidden(
                                "only a holder of this key can export its private part".to_owned(),
                            ));
                        }
                        let private = self.open_tenant_key(ctx.caller, key_id).await?;
                        let pem = blocking(move || private.export_encrypted_pem(passphrase.expose_secret()))
                            .await?
                            .map_err(crypto)?;
                        (SecretString::from(pem.as_str().to_owned()), true)
                    }
                };
                let command = EncryptionKeyCommand::ExportEncryptionKey { by: caller, with_private };
                let receipt = self.run(&self.keys, key_id, command, meta).await?;
                Ok(Done { receipts: vec![receipt], issued: Some(pem) })
            }
            EncryptionKeyRequest::Rename { name } => Ok(Done::of(
                self.run(&self.keys, key_id, EncryptionKeyCommand::RenameEncryptionKey { name }, meta).await?,
            )),
            EncryptionKeyRequest::Activate => {
                let command = self.use_key_command(tenant_id, key_id).await?;
                Ok(Done::of(self.run(&self.tenants, tenant_id, command, meta).await?))
            }
            EncryptionKeyRequest::Destroy => {
                if key.is_destroyed() {
                    return Err(AdminError::Invalid("the key is already destroyed".to_owned()));
                }
                let mut done = Done::default();
                let tenant = self.load(&self.tenants, tenant_id).await?;
                if tenant.active_encryption_key() == Some(key_id) {
                    let forget = TenantCommand::ForgetEncryptionKey { key_id };
                    done.receipts.push(self.run(&self.tenants, tenant_id, forget, meta.clone()).await?);
                }
                self.key_store.delete_grants_of_key(key_id).await?;
                self.keyring.forget_key(key_id);
                done.receipts
                    .push(self.run(&self.keys, key_id, EncryptionKeyCommand::DestroyEncryptionKey, meta).await?);
                Ok(done)
            }
        }
    }

    async fn store_new_key(
        &self,
        key_id: Uuid,
        tenant_id: Uuid,
        public: &recall_crypto::PublicKey,
        grant: Option<(Uuid, &Grant)>,
        command: EncryptionKeyCommand,
        meta: CommandMeta,
    ) -> Result<Done, AdminError> {
        self.key_store.put_tenant_key(key_id, tenant_id, public).await?;
        if let Some((holder, grant)) = grant {
            self.key_store.put_grant(key_id, holder, grant).await?;
        }
        match self.run(&self.keys, key_id, command, meta).await {
            Ok(receipt) => Ok(Done::of(receipt)),
            Err(e) => {
                self.key_store.delete_grants_of_key(key_id).await?;
                self.key_store.delete_tenant_key(key_id).await?;
                Err(e)
            }
        }
    }

    /// `UseEncryptionKey` with the facts looked up here, whatever a caller said.
    pub(super) async fn use_key_command(&self, tenant_id: Uuid, key_id: Uuid) -> Result<TenantCommand, AdminError> {
        let key = self.load(&self.keys, key_id).await?;
        let key_tenant = match key.tenant_id() {
            Some(tenant) if key.exists() => tenant,
            _ => return Err(AdminError::NotFound("encryption key")),
        };
        if self.key_store.tenant_key(key_id).await?.is_none() {
            return Err(AdminError::NotFound("encryption key"));
        }
        Ok(TenantCommand::UseEncryptionKey { tenant_id, key_id, key_tenant, key_destroyed: key.is_destroyed() })
    }

    /// At sign-in, with the password at hand: opens the user's key pair into the session's keyring, or makes
    /// one for a user whose role may play back, download or manage keys. Never fails the sign-in.
    pub(super) async fn unlock_keys(
        &self,
        user: &User,
        password: SecretString,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
    ) {
        if let Err(e) = self.try_unlock_keys(user, password, session_id, expires_at).await {
            tracing::warn!(user_id = %user.user_id(), error = %e, "the user's encryption key pair is not available in this session");
        }
    }

    async fn try_unlock_keys(
        &self,
        user: &User,
        password: SecretString,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), AdminError> {
        let user_id = user.user_id();
        let unlocked = match self.key_store.user_key(user_id).await? {
            Some(stored) => {
                let ids = UserKeyIds { tenant_id: user.tenant_id(), user_id, key_id: stored.key_id };
                blocking(move || stored.sealed.unlock(password.expose_secret().as_bytes(), &ids))
                    .await?
                    .map_err(crypto)?
            }
            None => {
                let role = self.load(&self.roles, user.role_id()).await?;
                let may_use_keys = role.grants().is_some_and(|g| {
                    [Permission::PlaybackCalls, Permission::DownloadCalls, Permission::ManageEncryptionKeys]
                        .into_iter()
                        .any(|p| g.allows(p))
                });
                if !may_use_keys {
                    return Ok(());
                }
                let ids = UserKeyIds { tenant_id: user.tenant_id(), user_id, key_id: Uuid::now_v7() };
                let (sealed, unlocked) =
                    blocking(move || SealedUserKey::generate(password.expose_secret().as_bytes(), &ids))
                        .await?
                        .map_err(crypto)?;
                let fingerprint = unlocked.public().fingerprint();
                let stored = StoredUserKey { key_id: ids.key_id, sealed };
                self.key_store.put_user_key(user_id, &stored, &fingerprint).await?;
                let mut meta = CommandMeta::by(recall_domain::Actor::User(user_id));
                meta.tenant_id = user.tenant_id();
                meta.session_id = Some(session_id);
                self.run(&self.users, user_id, UserCommand::RecordKeyPair { fingerprint }, meta).await?;
                unlocked
            }
        };
        self.keyring.insert(session_id, unlocked, expires_at);
        Ok(())
    }

    /// Before the user's own password change: their key pair sealed under the new password (`None` when
    /// they have none). Written with [`Self::store_resealed`] once the change is saved.
    pub(super) async fn reseal_user_key(
        &self,
        user: &User,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<Option<StoredUserKey>, AdminError> {
        let Some(stored) = self.key_store.user_key(user.user_id()).await? else { return Ok(None) };
        let ids = UserKeyIds { tenant_id: user.tenant_id(), user_id: user.user_id(), key_id: stored.key_id };
        let (current, new) = (current.clone(), new.clone());
        let sealed = blocking(move || {
            let unlocked = stored.sealed.unlock(current.expose_secret().as_bytes(), &ids)?;
            SealedUserKey::seal(&unlocked, new.expose_secret().as_bytes())
        })
        .await?;
        match sealed {
            Ok(sealed) => Ok(Some(StoredUserKey { key_id: ids.key_id, sealed })),
            Err(e) => {
                tracing::warn!(user_id = %user.user_id(), error = %e, "the user's key pair does not open with their current password; it is left as it is");
                Ok(None)
            }
        }
    }

    pub(super) async fn store_resealed(&self, user_id: Uuid, resealed: Option<StoredUserKey>) {
        let Some(stored) = resealed else { return };
        let fingerprint = match stored.sealed.public() {
            Ok(public) => public.fingerprint(),
            Err(_) => return,
        };
        if let Err(e) = self.key_store.put_user_key(user_id, &stored, &fingerprint).await {
            tracing::error!(%user_id, error = %e, "the key pair resealed under the new password could not be stored; it still opens with the old one");
        }
    }

    /// After an administrator's password reset: the user's key pair (sealed under a password nobody now
    /// knows) and every grant to it are destroyed, each revocation recorded so it can be granted again.
    pub(super) async fn discard_user_keys(&self, user_id: Uuid, meta: CommandMeta) -> Result<(), AdminError> {
        let held = self.key_store.delete_user_key(user_id).await?;
        self.keyring.forget_user(user_id, None);
        for key_id in held {
            let command =
                EncryptionKeyCommand::RevokeEncryptionKeyGrant { user_id, reason: GrantEndReason::PasswordReset };
            self.run(&self.keys, key_id, command, meta.clone()).await?;
        }
        Ok(())
    }
}
