//! Signing in and out, recognising a session's bearer token on each request, and the password reset link.
//! A failed sign-in tells the caller only "wrong username or password" (or to wait); the audit trail gets
//! the precise reason. Repeated failures from one address for one username are slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use recall_domain::access::Authority;
use recall_domain::device::DeviceCommand;
use recall_domain::failed_attempt::{FailedAttemptCommand, RefusalKind, SignInFailure};
use recall_domain::index::{IndexKey, Namespace};
use recall_domain::secret::SecretRef;
use recall_domain::session::SessionCommand;
use recall_domain::user::{User, UserCommand};
use recall_domain::{Actor, CommandMeta};
use secrecy::SecretString;
use uuid::Uuid;

use super::{after, now, Admin, AdminError, Caller};
use crate::credentials::{self, Token};
use crate::secrets::SecretKind;

/// Failed sign-ins allowed per username and address within [`FAILURE_WINDOW`].
const FAILURES_PER_ACCOUNT_AND_ADDRESS: usize = 5;
/// Failed sign-ins allowed per address (any username) within [`FAILURE_WINDOW`].
const FAILURES_PER_ADDRESS: usize = 50;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct SignInRequest {
    pub username: String,
    pub password: SecretString,
    /// The device id the client kept from an earlier sign-in, if any.
    pub device_id: Option<Uuid>,
    /// What the device says it is (the user agent).
    pub device_label: String,
    pub source_addr: Option<IpAddr>,
}

#[derive(Debug)]
pub struct SignedIn {
    pub session_id: Uuid,
    /// The bearer token (`<session id>.<secret>`); shown this once, stored only as a digest.
    pub token: SecretString,
    pub user_id: Uuid,
    pub device_id: Uuid,
    /// The user must change their password before anything else.
    pub must_change_password: bool,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("wrong username or password")]
    Failed,
    #[error("too many failed sign-ins; try again in {0} seconds")]
    RateLimited(u64),
    #[error("signing in is unavailable: {0}")]
    Unavailable(String),
}

/// A request's session, recognised.
#[derive(Debug, Clone)]
pub struct Principal {
    pub caller: Caller,
    /// The signed-in user (the administrator during an impersonation).
    pub signed_in_user: Uuid,
    pub must_change_password: bool,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("not signed in, or the token is not valid")]
    Invalid,
    #[error("the session has ended; sign in again")]
    Ended,
    #[error("the session has expired; sign in again")]
    Expired,
    #[error("this device was revoked; ask an administrator")]
    DeviceRevoked,
    #[error("this account cannot sign in")]
    AccountDisabled,
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

impl From<AdminError> for AuthError {
    fn from(e: AdminError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// The aggregates a recognition read, each with the sequence of its last event then.
#[derive(Debug, Default, Clone)]
pub(crate) struct Reads(pub(crate) Vec<(&'static str, String, i64)>);

/// How long a recognised token is taken from memory at most before it is recognised afresh.
const REMEMBER_FOR: Duration = Duration::from_secs(5 * 60);
/// Tokens remembered at most; beyond that the memory starts over.
const REMEMBER_AT_MOST: usize = 10_000;

#[derive(Debug)]
pub(crate) struct Recognised {
    digest: [u8; 32],
    principal: Principal,
    authority: Authority,
    reads: Reads,
    at: Instant,
}

/// Recently recognised tokens by session (or API token) id.
#[derive(Debug, Default)]
pub(crate) struct RecognisedTokens {
    tokens: Mutex<HashMap<Uuid, Arc<Recognised>>>,
}

impl RecognisedTokens {
    fn get(&self, id: Uuid, digest: &[u8; 32]) -> Option<Arc<Recognised>> {
        let tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = tokens.get(&id)?;
        let fresh = known.at.elapsed() < REMEMBER_FOR && now() < known.principal.expires_at;
        (fresh && credentials::digests_equal(&known.digest, digest)).then(|| known.clone())
    }

    fn forget(&self, id: Uuid) {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    }

    fn remember(&self, id: Uuid, digest: [u8; 32], principal: &Principal, authority: &Authority, reads: Reads) {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= REMEMBER_AT_MOST {
            tokens.clear();
        }
        let principal = principal.clone();
        tokens.insert(
            id,
            Arc::new(Recognised { digest, principal, authority: authority.clone(), reads, at: Instant::now() }),
        );
    }
}

/// Recent failed sign-ins, per (username, address) and per address.
#[derive(Debug, Default)]
pub(crate) struct FailureLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl FailureLimiter {
    fn keys(username: &str, source: Option<IpAddr>) -> [(String, usize); 2] {
        let address = source.map_or_else(|| "-".to_owned(), |a| a.to_string());
        [
            (format!("{}|{address}", username.trim().to_lowercase()), FAILURES_PER_ACCOUNT_AND_ADDRESS),
            (format!("|{address}"), FAILURES_PER_ADDRESS),
        ]
    }

    /// Seconds to wait before trying again, when a limit is reached.
    fn wait(&self, username: &str, source: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
            !times.is_empty()
        });
        Self::keys(username, source).iter().find_map(|(key, limit)| {
            let times = failures.get(key)?;
            (times.len() >= *limit).then(|| {
                let oldest = times.iter().min().copied().unwrap_or(now);
                FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)).as_secs().max(1)
            })
        })
    }

    fn failed(&self, username: &str, source: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, _) in Self::keys(username, source) {
            failures.entry(key).or_default().push(Instant::now());
        }
    }

    fn succeeded(&self, username: &str, source: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let [(account, _), _] = Self::keys(username, source);
        failures.remove(&account);
    }
}

fn system(component: &str, source: Option<IpAddr>) -> CommandMeta {
    let mut meta = CommandMeta::system(component);
    meta.source_addr = source;
    meta
}

impl Admin {
    /// Checks a username and password and starts a session on the device.
    pub async fn sign_in(&self, request: SignInRequest) -> Result<SignedIn, SignInError> {
        let unavailable = |e: AdminError| SignInError::Unavailable(e.to_string());
        let source = request.source_addr;
        if let Some(seconds) = self.limiter.wait(&request.username, source) {
            self.record_sign_in_failure(&request.username, None, SignInFailure::RateLimited, source).await;
            return Err(SignInError::RateLimited(seconds));
        }
        let user = self.user_by_username(&request.username).await.map_err(unavailable)?;
        let hash = match &user {
            Some(user) => self.password_hash(user).await.map_err(unavailable)?,
            None => None,
        };
        // An unknown user or an account without a password still costs one hash, like a wrong password.
        let checked = match &hash {
            Some(hash) => hash.clone(),
            None => credentials::dummy_hash().await.to_owned(),
        };
        let password = request.password.clone();
        let verified = credentials::verify_password(request.password, checked).await;
        let failure = match &user {
            None => Some(SignInFailure::UnknownUser),
            Some(_) if hash.is_none() || !verified => Some(SignInFailure::WrongPassword),
            Some(user) if !self.may_sign_in(user, &mut Reads::default()).await.map_err(unavailable)? => {
                Some(SignInFailure::AccountDisabled)
            }
            Some(_) => None,
        };
        let user_id = user.as_ref().map(User::user_id);
        if let Some(failure) = failure {
            self.limiter.failed(&request.username, source);
            self.record_sign_in_failure(&request.username, user_id, failure, source).await;
            return Err(SignInError::Failed);
        }
        let Some(user) = user else { return Err(SignInError::Failed) };
        let device_id = match self.device_for(&user, request.device_id, &request.device_label, source).await {
            Ok(device_id) => device_id,
            Err(SignInFailure::DeviceRevoked) => {
                self.limiter.failed(&request.username, source);
                self.record_sign_in_failure(&request.username, user_id, SignInFailure::DeviceRevoked, source).await;
                return Err(SignInError::Failed);
            }
            Err(_) => return Err(SignInError::Unavailable("the device could not be registered".to_owned())),
        };
        self.limiter.succeeded(&request.username, source);
        let session_id = Uuid::now_v7();
        let token = Token::new(session_id);
        let secret = self
            .secrets
            .put(SecretKind::SessionToken, user.tenant_id(), &format!("Session/{session_id}"), &token.digest)
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        let expires_at = after(self.config.session_lifetime);
        let start = SessionCommand::StartSession {
            user_id: user.user_id(),
            tenant_id: user.tenant_id(),
            device_id,
            token: secret,
            at: now(),
            expires_at,
        };
        let mut meta = Caller {
            device_id: Some(device_id),
            session_id: Some(session_id),
            source_addr: source,
            ..Caller::user(user.user_id())
        }
        .meta(user.tenant_id());
        meta.correlation_id = Some(session_id);
        self.run(&self.sessions, session_id, start, meta).await.map_err(unavailable)?;
        self.unlock_keys(&user, password, session_id, expires_at).await;
        Ok(SignedIn {
            session_id,
            token: token.text,
            user_id: user.user_id(),
            device_id,
            must_change_password: user.must_change_password(),
            expires_at,
        })
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, AdminError> {
        let key = IndexKey::name(Namespace::Username, username);
        let Some(holder) = self.index.holder(&key).await? else { return Ok(None) };
        let Ok(user_id) = Uuid::parse_str(&holder.aggregate_id) else { return Ok(None) };
        let user = self.load(&self.users, user_id).await?;
        Ok(user.exists().then_some(user))
    }

    async fn password_hash(&self, user: &User) -> Result<Option<String>, AdminError> {
        let Some(secret) = user.password() else { return Ok(None) };
        Ok(self.secrets.get(secret).await?.and_then(|hash| String::from_utf8(hash.to_vec()).ok()))
    }

    /// Active, web login enabled, and (for a tenant's user) the tenant active.
    async fn may_sign_in(&self, user: &User, reads: &mut Reads) -> Result<bool, AdminError> {
        if !user.is_active() || !user.login_enabled() {
            return Ok(false);
        }
        match user.tenant_id() {
            Some(tenant) => Ok(self.load_noted(&self.tenants, tenant, reads).await?.is_active()),
            None => Ok(true),
        }
    }

    /// The device to start the session on: the one the client kept if it is this user's, else a new one.
    async fn device_for(
        &self,
        user: &User,
        kept: Option<Uuid>,
        label: &str,
        source: Option<IpAddr>,
    ) -> Result<Uuid, SignInFailure> {
        if let Some(device_id) = kept {
            let device = self.load(&self.devices, device_id).await.map_err(|_| SignInFailure::AccountDisabled)?;
            match device.user_id() {
                Some(owner) if owner == user.user_id() && device.is_revoked() => {
                    return Err(SignInFailure::DeviceRevoked)
                }
                Some(owner) if owner == user.user_id() => return Ok(device_id),
                _ => {}
            }
        }
        let device_id = match kept {
            Some(id) if !self.load(&self.devices, id).await.map_err(|_| SignInFailure::AccountDisabled)?.exists() => id,
            _ => Uuid::now_v7(),
        };
        let register = DeviceCommand::RegisterDevice {
            user_id: user.user_id(),
            tenant_id: user.tenant_id(),
            label: label.to_owned(),
            at: now(),
        };
        let meta = Caller { device_id: Some(device_id), source_addr: source, ..Caller::user(user.user_id()) }
            .meta(user.tenant_id());
        self.run(&self.devices, device_id, register, meta).await.map_err(|_| SignInFailure::AccountDisabled)?;
        Ok(device_id)
    }

    async fn record_sign_in_failure(
        &self,
        username: &str,
        user_id: Option<Uuid>,
        failure: SignInFailure,
        source: Option<IpAddr>,
    ) {
        let command = FailedAttemptCommand::RecordFailedSignIn { username: username.to_owned(), user_id, failure };
        if let Err(e) = self.attempts.execute(&Uuid::now_v7().to_string(), command, system("sign-in", source)).await {
            tracing::warn!(error = %e, "could not record a failed sign-in in the audit trail");
        }
    }

    /// Recognises a request's bearer token and reads the rights its caller acts with: one step for the
    /// API's every request. A token recognised recently is taken from memory when none of the aggregates
    /// its recognition read (session, device, user, tenant, role, API token) has had an event since, which
    /// one indexed query tells; a terminated session, a revoked device or a changed role is therefore seen
    /// by the very next request, on any node, as without the memory.
    pub async fn recognise(&self, token: &str, source: Option<IpAddr>) -> Result<(Principal, Authority), AdminError> {
        let refused = |e: AuthError| match e {
            AuthError::Unavailable(cause) => AdminError::Unavailable(cause),
            other => AdminError::Unauthenticated(other.to_string()),
        };
        let (id, digest) = Token::parse(token).ok_or_else(|| refused(AuthError::Invalid))?;
        if let Some(known) = self.recognised.get(id, &digest) {
            if self.unchanged(&known.reads).await? {
                let mut principal = known.principal.clone();
                principal.caller.source_addr = source;
                return Ok((principal, known.authority.clone()));
            }
            self.recognised.forget(id);
        }
        let mut reads = Reads::default();
        let principal = self.authenticate_reading(token, source, &mut reads).await.map_err(refused)?;
        let authority = self.authority_reading(&principal.caller, &mut reads).await?;
        self.recognised.remember(id, digest, &principal, &authority, reads);
        Ok((principal, authority))
    }

    /// Whether none of `reads` has an event newer than the one it was read at.
    async fn unchanged(&self, reads: &Reads) -> Result<bool, AdminError> {
        let (mut types, mut ids, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
        for (aggregate_type, id, sequence) in &reads.0 {
            types.push(*aggregate_type);
            ids.push(id.as_str());
            sequences.push(*sequence);
        }
        let changed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS r(t, i, s)
                             WHERE EXISTS (SELECT 1 FROM events e
                                            WHERE e.aggregate_type = r.t AND e.aggregate_id = r.i AND e.sequence > r.s))",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .fetch_one(self.log.pool())
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        Ok(!changed)
    }

    /// Recognises a bearer token: a live session on a device that is not revoked, of a user who may sign in;
    /// or a valid API token of an active user.
    pub async fn authenticate(&self, token: &str, source: Option<IpAddr>) -> Result<Principal, AuthError> {
        self.authenticate_reading(token, source, &mut Reads::default()).await
    }

    /// [`Self::authenticate`], noting every aggregate it reads in `reads`.
    async fn authenticate_reading(
        &self,
        token: &str,
        source: Option<IpAddr>,
        reads: &mut Reads,
    ) -> Result<Principal, AuthError> {
        let (session_id, digest) = Token::parse(token).ok_or(AuthError::Invalid)?;
        let session = self.load_noted(&self.sessions, session_id, reads).await?;
        if !session.exists() {
            return self.authenticate_api_token(session_id, &digest, source, reads).await;
        }
        let (Some(user_id), Some(secret), Some(device_id), Some(expires_at)) =
            (session.user_id(), session.token(), session.device_id(), session.expires_at())
        else {
            return Err(AuthError::Invalid);
        };
        let stored = self.secrets.get(secret).await.map_err(AdminError::from)?;
        if !stored.is_some_and(|stored| credentials::digests_equal(&stored, &digest)) {
            return Err(AuthError::Invalid);
        }
        if session.ended().is_some() {
            return Err(AuthError::Ended);
        }
        if !session.is_live(now()) {
            return Err(AuthError::Expired);
        }
        if self.load_noted(&self.devices, device_id, reads).await?.is_revoked() {
            return Err(AuthError::DeviceRevoked);
        }
        let user = self.load_noted(&self.users, user_id, reads).await?;
        if !self.may_sign_in(&user, reads).await? {
            return Err(AuthError::AccountDisabled);
        }
        let (acting, impersonator) = match session.impersonating() {
            Some((target, _)) => (target, Some(user_id)),
            None => (user_id, None),
        };
        Ok(Principal {
            caller: Caller {
                user_id: acting,
                impersonator,
                session_id: Some(session_id),
                device_id: Some(device_id),
                source_addr: source,
                correlation_id: None,
                api_token: None,
            },
            signed_in_user: user_id,
            must_change_password: user.must_change_password(),
            expires_at,
        })
    }

    async fn authenticate_api_token(
        &self,
        token_id: Uuid,
        digest: &[u8; 32],
        source: Option<IpAddr>,
        reads: &mut Reads,
    ) -> Result<Principal, AuthError> {
        let token = self.load_noted(&self.api_tokens, token_id, reads).await?;
        let (Some(user_id), Some(secret)) = (token.user_id(), token.secret()) else {
            return Err(AuthError::Invalid);
        };
        let stored = self.secrets.get(secret).await.map_err(AdminError::from)?;
        if !stored.is_some_and(|stored| credentials::digests_equal(&stored, digest)) {
            return Err(AuthError::Invalid);
        }
        if token.is_revoked() {
            return Err(AuthError::Ended);
        }
        if !token.is_valid(now()) {
            return Err(AuthError::Expired);
        }
        let user = self.load_noted(&self.users, user_id, reads).await?;
        let tenant_active = match user.tenant_id() {
            Some(tenant) => self.load_noted(&self.tenants, tenant, reads).await?.is_active(),
            None => true,
        };
        if !user.is_active() || !tenant_active {
            return Err(AuthError::AccountDisabled);
        }
        Ok(Principal {
            caller: Caller { source_addr: source, api_token: Some(token_id), ..Caller::user(user_id) },
            signed_in_user: user_id,
            // A program cannot answer a password prompt; the token acts with the user's rights as they are.
            must_change_password: false,
            expires_at: token.expires_at().unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
        })
    }

    /// Sets a new password with a reset link's token (the user is not signed in).
    pub async fn complete_password_reset(
        &self,
        token: &str,
        password: SecretString,
        source: Option<IpAddr>,
    ) -> Result<(), AdminError> {
        let result = self.reset_password(token, password, source).await;
        if let Err(e) = &result {
            if matches!(e, AdminError::Invalid(_) | AdminError::NotFound(_)) {
                let refusal = FailedAttemptCommand::RecordRefusal {
                    command: "CompletePasswordReset".to_owned(),
                    target: "User".to_owned(),
                    kind: RefusalKind::Invalid,
                    reason: e.to_string(),
                };
                if let Err(e) =
                    self.attempts.execute(&Uuid::now_v7().to_string(), refusal, system("password-reset", source)).await
                {
                    tracing::warn!(error = %e, "could not record a refused password reset in the audit trail");
                }
            }
        }
        result
    }

    async fn reset_password(
        &self,
        token: &str,
        password: SecretString,
        source: Option<IpAddr>,
    ) -> Result<(), AdminError> {
        let invalid = || AdminError::Invalid("this password reset link is not valid".to_owned());
        let (secret_id, digest) = Token::parse(token).ok_or_else(invalid)?;
        let secret = SecretRef(secret_id);
        let stored = self.secrets.get(secret).await?.ok_or_else(invalid)?;
        if !credentials::digests_equal(&stored, &digest) {
            return Err(invalid());
        }
        let holder = self.secrets.holder(secret).await?.ok_or_else(invalid)?;
        let user_id = holder.strip_prefix("User/").and_then(|id| Uuid::parse_str(id).ok()).ok_or_else(invalid)?;
        let user = self.load(&self.users, user_id).await?;
        if !user.exists() {
            return Err(invalid());
        }
        credentials::check_policy(&password, user.username()).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let hash = credentials::hash_password(password).await.map_err(|e| AdminError::Internal(e.to_string()))?;
        let new = self.secrets.put(SecretKind::PasswordHash, user.tenant_id(), &holder, hash.as_bytes()).await?;
        let command = UserCommand::CompletePasswordReset { token: secret, password: new, at: now() };
        let mut meta = CommandMeta::by(Actor::User(user_id));
        meta.tenant_id = user.tenant_id();
        meta.source_addr = source;
        match self.run(&self.users, user_id, command, meta).await {
            Ok(_) => {
                for old in [Some(secret), user.password()].into_iter().flatten() {
                    let _ = self.secrets.destroy(old).await;
                }
                let mut meta = CommandMeta::by(Actor::User(user_id));
                meta.tenant_id = user.tenant_id();
                meta.source_addr = source;
                self.discard_user_keys(user_id, meta).await
            }
            Err(e) => {
                let _ = self.secrets.destroy(new).await;
                Err(e)
            }
        }
    }
}
