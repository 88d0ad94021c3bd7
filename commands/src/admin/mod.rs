//! The administration service: every administrative action of recall, checked against the caller's role
//! and scope, with the facts and secrets the domain needs looked up or stored here, then decided by the
//! aggregates and appended with the caller's envelope. A refused action writes nothing to the aggregate it
//! aimed at; the refusal itself is recorded as a `FailedAttempt` for the audit trail.

mod auth;
mod bootstrap;
mod config;
mod jobs;
mod keys;
mod recordings;
mod request;
mod users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use recall_domain::access::{Authority, Denied, Grants, Permission, Resource};
use recall_domain::api_token::ApiToken;
use recall_domain::call::Call;
use recall_domain::custom_field::CustomField;
use recall_domain::device::Device;
use recall_domain::encryption_key::EncryptionKey;
use recall_domain::evaluation_form::EvaluationForm;
use recall_domain::failed_attempt::{FailedAttempt, FailedAttemptCommand, RefusalKind};
use recall_domain::field_visibility::FieldVisibility;
use recall_domain::group::Group;
use recall_domain::index::IndexKey;
use recall_domain::job::Job;
use recall_domain::role::Role;
use recall_domain::session::Session;
use recall_domain::storage_target::StorageTarget;
use recall_domain::tenant::Tenant;
use recall_domain::user::User;
use recall_domain::{Actor, Aggregate, CommandMeta};
use secrecy::SecretString;
use uuid::Uuid;

pub use auth::{AuthError, Principal, SignInError, SignInRequest, SignedIn};
pub use bootstrap::DEFAULT_TENANT;
pub use jobs::{JobRequest, JOBS_CHANNEL};
pub use keys::EncryptionKeyRequest;
pub use recordings::RecordingAccess;
pub use request::{
    AdminCommand, EvaluationFormRequest, GroupRequest, NewUser, RoleRequest, StorageSettings, StorageTargetRequest,
    UserRequest,
};

use crate::delivery::CodeDelivery;
use crate::key_store::KeyStore;
use crate::log::EventLog;
use crate::secrets::{SecretError, SecretStore};
use crate::service::{CommandError, CommandService, Receipt};
use crate::storage_probe::StorageProbe;
use crate::write_index::WriteIndex;

/// Who issues a command, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user whose rights apply: during an impersonation, the impersonated user.
    pub user_id: Uuid,
    /// The administrator impersonating `user_id`, if any.
    pub impersonator: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub source_addr: Option<IpAddr>,
    /// Ties the events of one request together; made for the command when absent.
    pub correlation_id: Option<Uuid>,
    /// The API token the request came with (the actor of its events), when it came with one.
    pub api_token: Option<Uuid>,
}

impl Caller {
    /// A user acting without a session (the command line, tests).
    pub fn user(user_id: Uuid) -> Self {
        Self {
            user_id,
            impersonator: None,
            session_id: None,
            device_id: None,
            source_addr: None,
            correlation_id: None,
            api_token: None,
        }
    }

    fn meta(&self, tenant_id: Option<Uuid>) -> CommandMeta {
        CommandMeta {
            tenant_id,
            actor: self.api_token.map_or(Actor::User(self.user_id), Actor::ApiToken),
            impersonator: self.impersonator.map(Actor::User),
            session_id: self.session_id,
            device_id: self.device_id,
            source_addr: self.source_addr,
            correlation_id: self.correlation_id,
            causation_id: None,
        }
    }
}

/// Why an administrative action did not happen. Refusals (`Forbidden`, `NotFound`, `Invalid`, `Taken`)
/// are the caller's to fix; the others are the system's.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The caller's account cannot act at all (unknown, inactive, tenant deactivated).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The action is not valid for what it acts on; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("the {0} is already taken")]
    Taken(IndexKey),
    /// Another change to the same thing was saved first, several times over; nothing was written.
    #[error("{0}")]
    Conflict(String),
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("the action could not be completed: {0}")]
    Internal(String),
}

impl AdminError {
    fn refusal_kind(&self) -> Option<RefusalKind> {
        match self {
            Self::Unauthenticated(_) | Self::Forbidden(_) => Some(RefusalKind::Forbidden),
            Self::NotFound(_) | Self::Invalid(_) | Self::Taken(_) => Some(RefusalKind::Invalid),
            Self::Conflict(_) | Self::Unavailable(_) | Self::Internal(_) => None,
        }
    }
}

impl From<Denied> for AdminError {
    fn from(denied: Denied) -> Self {
        Self::Forbidden(denied.to_string())
    }
}

impl<E: std::error::Error + 'static> From<CommandError<E>> for AdminError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Refused(e) => Self::Invalid(e.to_string()),
            CommandError::Taken(key) => Self::Taken(key),
            e @ CommandError::Conflict { .. } => Self::Conflict(e.to_string()),
            CommandError::Unavailable(e) => Self::Unavailable(e),
            CommandError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<SecretError> for AdminError {
    fn from(error: SecretError) -> Self {
        match error {
            SecretError::Database(e) => Self::Unavailable(e.to_string()),
            SecretError::NoKey => Self::Invalid(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for AdminError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// What an action appended, and anything issued once to the caller (a password reset link's token).
#[derive(Debug, Default)]
pub struct Done {
    /// One receipt per aggregate the action changed, in order.
    pub receipts: Vec<Receipt>,
    /// A token to hand to its user, shown only this once.
    pub issued: Option<SecretString>,
}

impl Done {
    fn of(receipt: Receipt) -> Self {
        Self { receipts: vec![receipt], issued: None }
    }

    /// Ids of every event the action appended.
    pub fn event_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.receipts.iter().flat_map(|r| r.events.iter().map(|e| e.event_id))
    }
}

/// Lifetimes of what the service hands out.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub session_lifetime: Duration,
    pub reset_link_lifetime: Duration,
    pub verification_code_lifetime: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::from_secs(12 * 3600),
            reset_link_lifetime: Duration::from_secs(24 * 3600),
            verification_code_lifetime: Duration::from_secs(10 * 60),
        }
    }
}

/// How often a command that lost a race for its aggregate is decided again on the new state.
const CONFLICT_RETRIES: usize = 3;

/// The administration service. One per process; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Admin {
    pub(crate) log: Arc<EventLog>,
    pub(crate) tenants: CommandService<Tenant>,
    pub(crate) roles: CommandService<Role>,
    pub(crate) groups: CommandService<Group>,
    pub(crate) users: CommandService<User>,
    pub(crate) sessions: CommandService<Session>,
    pub(crate) devices: CommandService<Device>,
    pub(crate) calls: CommandService<Call>,
    pub(crate) storage: CommandService<StorageTarget>,
    pub(crate) fields: CommandService<CustomField>,
    pub(crate) visibility: CommandService<FieldVisibility>,
    pub(crate) forms: CommandService<EvaluationForm>,
    pub(crate) attempts: CommandService<FailedAttempt>,
    pub(crate) api_tokens: CommandService<ApiToken>,
    pub(crate) keys: CommandService<EncryptionKey>,
    pub(crate) jobs: CommandService<Job>,
    pub(crate) index: WriteIndex,
    pub(crate) key_store: KeyStore,
    pub(crate) keyring: keys::Keyring,
    pub(crate) accesses: recordings::RecentAccesses,
    pub(crate) secrets: SecretStore,
    pub(crate) config: AdminConfig,
    pub(crate) delivery: Arc<dyn CodeDelivery>,
    pub(crate) probe: Arc<dyn StorageProbe>,
    pub(crate) limiter: auth::FailureLimiter,
    pub(crate) recognised: auth::RecognisedTokens,
}

impl Admin {
    pub fn new(
        log: Arc<EventLog>,
        secrets: SecretStore,
        delivery: Arc<dyn CodeDelivery>,
        probe: Arc<dyn StorageProbe>,
        config: AdminConfig,
    ) -> Self {
        Self {
            tenants: CommandService::new(log.clone(), ()),
            roles: CommandService::new(log.clone(), ()),
            groups: CommandService::new(log.clone(), ()),
            users: CommandService::new(log.clone(), ()),
            sessions: CommandService::new(log.clone(), ()),
            devices: CommandService::new(log.clone(), ()),
            calls: CommandService::new(log.clone(), ()),
            storage: CommandService::new(log.clone(), ()),
            fields: CommandService::new(log.clone(), ()),
            // One per tenant, changed now and then for as long as the tenant lives.
            visibility: CommandService::with_snapshots(log.clone(), (), 50),
            forms: CommandService::new(log.clone(), ()),
            attempts: CommandService::new(log.clone(), ()),
            api_tokens: CommandService::new(log.clone(), ()),
            keys: CommandService::new(log.clone(), ()),
            jobs: CommandService::new(log.clone(), ()),
            index: WriteIndex::new(log.pool().clone()),
            key_store: KeyStore::new(log.pool().clone()),
            keyring: keys::Keyring::default(),
            accesses: recordings::RecentAccesses::default(),
            secrets,
            config,
            delivery,
            probe,
            limiter: auth::FailureLimiter::default(),
            recognised: auth::RecognisedTokens::default(),
            log,
        }
    }

    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    pub fn index(&self) -> &WriteIndex {
        &self.index
    }

    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// Carries out `command` for `caller`: authorization, facts, the domain's decision, the append. A
    /// refusal is recorded in the audit trail before it is returned.
    pub async fn execute(&self, caller: &Caller, command: AdminCommand) -> Result<Done, AdminError> {
        let (name, target) = (command.name(), command.target());
        let result = self.dispatch(caller, command).await;
        if let Err(error) = &result {
            if let Some(kind) = error.refusal_kind() {
                self.record_refusal(caller, &name, &target, kind, &error.to_string()).await;
            }
        }
        result
    }

    async fn dispatch(&self, caller: &Caller, command: AdminCommand) -> Result<Done, AdminError> {
        let authority = self.authority(caller).await?;
        let caller_user = self.users.load(&caller.user_id.to_string()).await?;
        let is_password_change = matches!(command, AdminCommand::ChangeOwnPassword { .. });
        if caller_user.must_change_password() && caller.impersonator.is_none() && !is_password_change {
            return Err(AdminError::Forbidden("change your password first".to_owned()));
        }
        let ctx = Ctx { caller, authority: &authority };
        match command {
            AdminCommand::Tenant { tenant_id, command } => self.tenant(&ctx, tenant_id, command).await,
            AdminCommand::Role { role_id, request } => self.role(&ctx, role_id, request).await,
            AdminCommand::Group { group_id, request } => self.group(&ctx, group_id, request).await,
            AdminCommand::User { user_id, request } => self.user(&ctx, user_id, request).await,
            AdminCommand::TerminateSession { session_id } => self.terminate_session(&ctx, session_id).await,
            AdminCommand::RevokeDevice { device_id } => self.revoke_device(&ctx, device_id).await,
            AdminCommand::StartImpersonation { user_id } => self.start_impersonation(&ctx, user_id).await,
            AdminCommand::VerifyImpersonation { code } => self.verify_impersonation(&ctx, code).await,
            AdminCommand::StopImpersonation => self.stop_impersonation(&ctx).await,
            AdminCommand::ChangeOwnPassword { current, new } => self.change_own_password(&ctx, current, new).await,
            AdminCommand::AssignCall { call_id, user_id, extension, apply_to_similar } => {
                self.assign_call(&ctx, call_id, user_id, extension, apply_to_similar).await
            }
            AdminCommand::StorageTarget { target_id, request } => self.storage_target(&ctx, target_id, request).await,
            AdminCommand::CustomField { field_id, command } => self.custom_field(&ctx, field_id, command).await,
            AdminCommand::FieldVisibility { command } => self.field_visibility(&ctx, command).await,
            AdminCommand::EvaluationForm { form_id, request } => self.evaluation_form(&ctx, form_id, request).await,
            AdminCommand::IssueApiToken { token_id, user_id, name, expires_in_days } => {
                self.issue_api_token(&ctx, token_id, user_id, name, expires_in_days).await
            }
            AdminCommand::RevokeApiToken { token_id } => self.revoke_api_token(&ctx, token_id).await,
            AdminCommand::EncryptionKey { key_id, request } => self.encryption_key(&ctx, key_id, request).await,
            AdminCommand::Job { job_id, request } => self.job(&ctx, job_id, request).await,
        }
    }

    /// The caller's rights, read fresh for every command: an account deactivated, a role changed or a tenant
    /// switched off a moment ago counts now. A role that no longer exists grants nothing.
    pub async fn authority(&self, caller: &Caller) -> Result<Authority, AdminError> {
        self.authority_reading(caller, &mut auth::Reads::default()).await
    }

    /// [`Self::authority`], noting every aggregate it reads in `reads`.
    pub(crate) async fn authority_reading(
        &self,
        caller: &Caller,
        reads: &mut auth::Reads,
    ) -> Result<Authority, AdminError> {
        let user = self.load_noted(&self.users, caller.user_id, reads).await?;
        if !user.exists() {
            return Err(AdminError::Unauthenticated("unknown account".to_owned()));
        }
        if !user.is_active() {
            return Err(AdminError::Unauthenticated("this account is inactive".to_owned()));
        }
        if let Some(tenant_id) = user.tenant_id() {
            let tenant = self.load_noted(&self.tenants, tenant_id, reads).await?;
            if !tenant.is_active() {
                return Err(AdminError::Unauthenticated("this account's tenant is deactivated".to_owned()));
            }
        }
        let role = self.load_noted(&self.roles, user.role_id(), reads).await?;
        let grants = match role.grants() {
            Some(grants) if role.is_defined() => grants.clone(),
            _ => Grants::new(recall_domain::access::Scope::OwnCalls, []),
        };
        Ok(Authority {
            user_id: caller.user_id,
            tenant_id: user.tenant_id(),
            grants,
            managed_groups: user.managed_groups().clone(),
        })
    }

    async fn record_refusal(&self, caller: &Caller, command: &str, target: &str, kind: RefusalKind, reason: &str) {
        let attempt = FailedAttemptCommand::RecordRefusal {
            command: command.to_owned(),
            target: target.to_owned(),
            kind,
            reason: reason.to_owned(),
        };
        let tenant = match self.users.load(&caller.user_id.to_string()).await {
            Ok(user) => user.tenant_id(),
            Err(_) => None,
        };
        if let Err(e) = self.attempts.execute(&Uuid::now_v7().to_string(), attempt, caller.meta(tenant)).await {
            tracing::warn!(error = %e, command, target, "could not record a refused command in the audit trail");
        }
    }

    /// Decides and appends `command` on aggregate `id`, deciding again (up to three times) when another
    /// change to the aggregate was saved first.
    pub(crate) async fn run<A>(
        &self,
        service: &CommandService<A>,
        id: Uuid,
        command: A::Command,
        meta: CommandMeta,
    ) -> Result<Receipt, AdminError>
    where
        A: Aggregate,
        A::Command: Clone,
    {
        let id = id.to_string();
        let mut attempt = 0;
        loop {
            match service.execute(&id, command.clone(), meta.clone()).await {
                Err(CommandError::Conflict { .. }) if attempt < CONFLICT_RETRIES => attempt += 1,
                result => return result.map_err(AdminError::from),
            }
        }
    }

    pub(crate) async fn load<A: Aggregate>(&self, service: &CommandService<A>, id: Uuid) -> Result<A, AdminError> {
        Ok(service.load(&id.to_string()).await?)
    }

    /// [`Self::load`], noting the aggregate and the sequence it was read at in `reads`.
    pub(crate) async fn load_noted<A: Aggregate>(
        &self,
        service: &CommandService<A>,
        id: Uuid,
        reads: &mut auth::Reads,
    ) -> Result<A, AdminError> {
        let id = id.to_string();
        let (aggregate, sequence) = service.load_versioned(&id).await?;
        reads.0.push((A::TYPE, id, i64::try_from(sequence).unwrap_or(i64::MAX)));
        Ok(aggregate)
    }

    /// A tenant that exists and is active, for actions that put something into it.
    pub(crate) async fn active_tenant(&self, tenant_id: Uuid) -> Result<Tenant, AdminError> {
        let tenant = self.load(&self.tenants, tenant_id).await?;
        if !tenant.exists() {
            return Err(AdminError::NotFound("tenant"));
        }
        Ok(tenant)
    }
}

/// The caller of the command being handled, with their rights.
pub(crate) struct Ctx<'a> {
    pub caller: &'a Caller,
    pub authority: &'a Authority,
}

impl Ctx<'_> {
    pub fn authorize(&self, permission: Permission, resource: &Resource) -> Result<(), AdminError> {
        Ok(self.authority.authorize(permission, resource)?)
    }

    pub fn meta(&self, tenant_id: Option<Uuid>) -> CommandMeta {
        self.caller.meta(tenant_id)
    }

    /// Nobody hands out, or takes on, more than they hold.
    pub fn covers(&self, grants: &Grants, what: &str) -> Result<(), AdminError> {
        if self.authority.grants.covers(grants) {
            Ok(())
        } else {
            Err(AdminError::Forbidden(format!("{what} has rights your role does not hold")))
        }
    }

    pub fn is_self(&self, user_id: Uuid) -> bool {
        self.caller.user_id == user_id
    }
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn after(lifetime: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1))
}
