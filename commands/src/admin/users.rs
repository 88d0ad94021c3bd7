//! Actions on users and what belongs to them: accounts, passwords, sessions, devices, impersonation, and
//! assigning calls to users. Besides role and scope, two rules hold throughout: nobody acts on an account
//! whose role holds rights theirs does not (no taking over a stronger account), and nobody changes their own
//! status, role or managed groups.

use std::collections::BTreeSet;

use recall_domain::access::{Grants, Permission, Resource, Scope};
use recall_domain::call::CallCommand;
use recall_domain::device::DeviceCommand;
use recall_domain::index::{IndexKey, Namespace};
use recall_domain::secret::SecretRef;
use recall_domain::session::{Challenge, SessionCommand};
use recall_domain::user::{RoleFacts, User, UserCommand, UserProfile};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{after, now, Admin, AdminError, Ctx, Done, NewUser, UserRequest};
use crate::credentials::{self, Token};
use crate::delivery::Recipient;
use crate::secrets::SecretKind;

/// Unassigned calls assigned in one round of "apply to all similar calls".
const SIMILAR_CALLS_BATCH: u32 = 500;

/// What authorization knows of a user account.
pub(crate) fn user_resource(user: &User) -> Resource {
    Resource::User { tenant: user.tenant_id(), user: user.user_id(), groups: user.groups().iter().copied().collect() }
}

fn holder(user_id: Uuid) -> String {
    format!("User/{user_id}")
}

impl Admin {
    /// The role's facts and grants; refused when the role does not exist.
    async fn role_facts(&self, role_id: Uuid) -> Result<(RoleFacts, Grants), AdminError> {
        let role = self.load(&self.roles, role_id).await?;
        match role.grants() {
            Some(grants) if role.is_defined() => Ok((RoleFacts { role_id, scope: grants.scope }, grants.clone())),
            _ => Err(AdminError::NotFound("role")),
        }
    }

    /// An existing user, or `NotFound`.
    async fn existing_user(&self, user_id: Uuid) -> Result<User, AdminError> {
        let user = self.load(&self.users, user_id).await?;
        if user.exists() {
            Ok(user)
        } else {
            Err(AdminError::NotFound("user"))
        }
    }

    /// The caller may act on `user` with `permission`: within scope, and the user's role holds nothing the
    /// caller's does not (unless it is the caller's own account).
    async fn reach_user(&self, ctx: &Ctx<'_>, permission: Permission, user: &User) -> Result<(), AdminError> {
        ctx.authorize(permission, &user_resource(user))?;
        if !ctx.is_self(user.user_id()) {
            if let Ok((_, grants)) = self.role_facts(user.role_id()).await {
                ctx.covers(&grants, "this user")?;
            }
        }
        Ok(())
    }

    /// Every group exists in the tenant, and a caller whose reach is their managed groups only places
    /// users in (or hands out) groups they manage.
    async fn check_groups(&self, ctx: &Ctx<'_>, tenant_id: Option<Uuid>, groups: &[Uuid]) -> Result<(), AdminError> {
        for group_id in groups {
            let group = self.load(&self.groups, *group_id).await?;
            if !group.exists() || group.tenant_id() != tenant_id || tenant_id.is_none() {
                return Err(AdminError::Invalid(format!("group {group_id} does not exist in the user's tenant")));
            }
            if ctx.authority.grants.scope == Scope::ManagedGroups && !ctx.authority.managed_groups.contains(group_id) {
                return Err(AdminError::Forbidden(format!("group {:?} is not one you manage", group.name())));
            }
        }
        Ok(())
    }

    async fn store_password(
        &self,
        password: SecretString,
        username: &str,
        tenant_id: Option<Uuid>,
        user_id: Uuid,
    ) -> Result<SecretRef, AdminError> {
        credentials::check_policy(&password, username).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let hash = credentials::hash_password(password).await.map_err(|e| AdminError::Internal(e.to_string()))?;
        Ok(self.secrets.put(SecretKind::PasswordHash, tenant_id, &holder(user_id), hash.as_bytes()).await?)
    }

    /// Destroys a secret nobody refers to any more; a failure leaves an unreferenced row behind, no more.
    async fn forget(&self, secret: Option<SecretRef>) {
        if let Some(secret) = secret {
            if let Err(e) = self.secrets.destroy(secret).await {
                tracing::warn!(error = %e, secret = %secret.0, "could not destroy a replaced secret");
            }
        }
    }

    pub(super) async fn user(&self, ctx: &Ctx<'_>, user_id: Uuid, request: UserRequest) -> Result<Done, AdminError> {
        match request {
            UserRequest::Create { tenant_id, user } => self.create_user(ctx, user_id, tenant_id, *user).await,
            request => self.change_user(ctx, user_id, request).await,
        }
    }

    async fn create_user(
        &self,
        ctx: &Ctx<'_>,
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        new: NewUser,
    ) -> Result<Done, AdminError> {
        let resource = match tenant_id {
            Some(tenant) => {
                self.active_tenant(tenant).await?;
                Resource::TenantConfig { tenant }
            }
            None => Resource::Service,
        };
        ctx.authorize(Permission::ConfigureUsers, &resource)?;
        let (role, grants) = self.role_facts(new.role_id).await?;
        ctx.covers(&grants, "this role")?;
        let all_groups: Vec<Uuid> = new.groups.iter().chain(&new.managed_groups).copied().collect();
        self.check_groups(ctx, tenant_id, &all_groups).await?;
        let password = match new.password {
            Some(password) => Some(self.store_password(password, &new.username, tenant_id, user_id).await?),
            None => None,
        };
        let profile = UserProfile {
            username: new.username,
            full_name: new.full_name,
            email: new.email,
            timezone: new.timezone,
            active: new.active,
            role_id: new.role_id,
            groups: new.groups,
            managed_groups: new.managed_groups,
            recording: new.recording,
            extensions: new.extensions,
            login_enabled: new.login_enabled,
            password,
            must_change_password: new.must_change_password,
            screen_login: new.screen_login,
            licences: new.licences,
        };
        let command = UserCommand::CreateUser { user_id, tenant_id, profile: Box::new(profile), role };
        let result = self.run(&self.users, user_id, command, ctx.meta(tenant_id)).await;
        if result.is_err() {
            self.forget(password).await;
        }
        Ok(Done::of(result?))
    }

    async fn change_user(&self, ctx: &Ctx<'_>, user_id: Uuid, request: UserRequest) -> Result<Done, AdminError> {
        let user = self.existing_user(user_id).await?;
        let permission = match request {
            UserRequest::SetScreenRecordingLogin { .. } => Permission::ScreenRecordingSettings,
            _ => Permission::ConfigureUsers,
        };
        self.reach_user(ctx, permission, &user).await?;
        if ctx.is_self(user_id)
            && matches!(
                request,
                UserRequest::Activate
                    | UserRequest::Deactivate
                    | UserRequest::AssignRole { .. }
                    | UserRequest::SetManagedGroups { .. }
            )
        {
            return Err(AdminError::Forbidden(
                "you cannot change your own status, role or managed groups; ask another administrator".to_owned(),
            ));
        }
        let tenant_id = user.tenant_id();
        let mut issued = None;
        let mut replaced = None;
        let mut stored = None;
        let command = match request {
            UserRequest::Create { .. } => unreachable!("creation is handled apart"),
            UserRequest::Rename { username } => UserCommand::RenameUser { username },
            UserRequest::SetFullName { full_name } => UserCommand::SetFullName { full_name },
            UserRequest::SetEmail { email } => UserCommand::SetEmail { email },
            UserRequest::SetTimezone { timezone } => UserCommand::SetTimezone { timezone },
            UserRequest::Activate => UserCommand::ActivateUser,
            UserRequest::Deactivate => UserCommand::DeactivateUser,
            UserRequest::AssignRole { role_id } => {
                let (role, grants) = self.role_facts(role_id).await?;
                ctx.covers(&grants, "this role")?;
                UserCommand::AssignRole { role }
            }
            UserRequest::SetGroups { groups } => {
                self.check_groups(ctx, tenant_id, &groups).await?;
                UserCommand::SetGroups { groups }
            }
            UserRequest::SetManagedGroups { groups } => {
                self.check_groups(ctx, tenant_id, &groups.iter().copied().collect::<Vec<_>>()).await?;
                let role_scope = self.role_facts(user.role_id()).await.map_or(Scope::OwnCalls, |(role, _)| role.scope);
                UserCommand::SetManagedGroups { groups, role_scope }
            }
            UserRequest::SetRecordingSettings { recording } => UserCommand::SetRecordingSettings { recording },
            UserRequest::AddExtension { extension } => UserCommand::AddExtension { extension },
            UserRequest::SetExtensions { extensions } => UserCommand::SetExtensions { extensions },
            UserRequest::SetWebAccess { login_enabled } => UserCommand::SetWebAccess { login_enabled },
            UserRequest::SetPassword { password, must_change } => {
                let secret = self.store_password(password, user.username(), tenant_id, user_id).await?;
                (stored, replaced) = (Some(secret), user.password());
                UserCommand::SetPassword { password: secret, must_change }
            }
            UserRequest::IssuePasswordResetLink => {
                let token = Token::new(Uuid::now_v7());
                let secret = self
                    .secrets
                    .put_as(token.id, SecretKind::ResetToken, tenant_id, &holder(user_id), &token.digest)
                    .await?;
                (stored, replaced) = (Some(secret), user.reset_link().map(|link| link.token));
                issued = Some(token.text);
                UserCommand::IssuePasswordResetLink {
                    token: secret,
                    expires_at: after(self.config.reset_link_lifetime),
                }
            }
            UserRequest::SetMustChangePassword { required } => UserCommand::SetMustChangePassword { required },
            UserRequest::SetScreenRecordingLogin { login } => UserCommand::SetScreenRecordingLogin { login },
            UserRequest::SetLicences { licences } => UserCommand::SetLicences { licences },
        };
        let is_reset = matches!(command, UserCommand::SetPassword { .. });
        let result = self.run(&self.users, user_id, command, ctx.meta(tenant_id)).await;
        // The secret that lost its place is destroyed: the new one if the change failed, else the old one.
        self.forget(if result.is_ok() { replaced } else { stored }).await;
        let receipt = result?;
        if is_reset {
            self.discard_user_keys(user_id, ctx.meta(tenant_id)).await?;
        }
        Ok(Done { receipts: vec![receipt], issued })
    }

    pub(super) async fn change_own_password(
        &self,
        ctx: &Ctx<'_>,
        current: SecretString,
        new: SecretString,
    ) -> Result<Done, AdminError> {
        if ctx.caller.impersonator.is_some() {
            return Err(AdminError::Forbidden(
                "an impersonating administrator cannot change the user's password".to_owned(),
            ));
        }
        let user = self.existing_user(ctx.caller.user_id).await?;
        let Some(old) = user.password() else {
            return Err(AdminError::Invalid(
                "you have no password to change; ask an administrator to set one".to_owned(),
            ));
        };
        let hash =
            self.secrets.get(old).await?.and_then(|hash| String::from_utf8(hash.to_vec()).ok()).unwrap_or_default();
        let current_copy = current.clone();
        if !credentials::verify_password(current, hash).await {
            return Err(AdminError::Invalid("the current password is wrong".to_owned()));
        }
        let resealed = self.reseal_user_key(&user, &current_copy, &new).await?;
        let secret = self.store_password(new, user.username(), user.tenant_id(), user.user_id()).await?;
        let result = self
            .run(
                &self.users,
                user.user_id(),
                UserCommand::ChangeOwnPassword { password: secret },
                ctx.meta(user.tenant_id()),
            )
            .await;
        self.forget(if result.is_ok() { Some(old) } else { Some(secret) }).await;
        let receipt = result?;
        self.store_resealed(user.user_id(), resealed).await;
        Ok(Done::of(receipt))
    }

    pub(super) async fn terminate_session(&self, ctx: &Ctx<'_>, session_id: Uuid) -> Result<Done, AdminError> {
        let session = self.load(&self.sessions, session_id).await?;
        let owner = session.user_id().ok_or(AdminError::NotFound("session"))?;
        if !ctx.is_self(owner) {
            self.reach_user(ctx, Permission::ConfigureUsers, &self.existing_user(owner).await?).await?;
        }
        let command = if ctx.is_self(owner) && ctx.caller.session_id == Some(session_id) {
            SessionCommand::SignOut { at: now() }
        } else {
            SessionCommand::TerminateSession { at: now() }
        };
        let receipt = self.run(&self.sessions, session_id, command, ctx.meta(session.tenant_id())).await?;
        self.keyring.forget_session(session_id);
        Ok(Done::of(receipt))
    }

    pub(super) async fn revoke_device(&self, ctx: &Ctx<'_>, device_id: Uuid) -> Result<Done, AdminError> {
        let device = self.load(&self.devices, device_id).await?;
        let owner = device.user_id().ok_or(AdminError::NotFound("device"))?;
        if !ctx.is_self(owner) {
            self.reach_user(ctx, Permission::ConfigureUsers, &self.existing_user(owner).await?).await?;
        }
        let command = DeviceCommand::RevokeDevice { at: now() };
        Ok(Done::of(self.run(&self.devices, device_id, command, ctx.meta(device.tenant_id())).await?))
    }

    fn own_session(ctx: &Ctx<'_>) -> Result<Uuid, AdminError> {
        ctx.caller.session_id.ok_or_else(|| AdminError::Invalid("impersonation needs a signed-in session".to_owned()))
    }

    pub(super) async fn start_impersonation(&self, ctx: &Ctx<'_>, target_id: Uuid) -> Result<Done, AdminError> {
        let session_id = Self::own_session(ctx)?;
        if ctx.caller.impersonator.is_some() {
            return Err(AdminError::Invalid("you are impersonating a user already; stop that first".to_owned()));
        }
        let target = self.existing_user(target_id).await?;
        self.reach_user(ctx, Permission::Impersonate, &target).await?;
        if !target.is_active() {
            return Err(AdminError::Invalid("an inactive user cannot be impersonated".to_owned()));
        }
        let verification = match target.tenant_id() {
            Some(tenant) => self.load(&self.tenants, tenant).await?.impersonation_verification(),
            None => false,
        };
        let session = self.load(&self.sessions, session_id).await?;
        let challenge =
            if verification { Some(self.send_verification_code(ctx, session.tenant_id()).await?) } else { None };
        let command = SessionCommand::StartImpersonation {
            target_user_id: target_id,
            target_tenant_id: target.tenant_id(),
            challenge,
            at: now(),
        };
        let result = self.run(&self.sessions, session_id, command, ctx.meta(session.tenant_id())).await;
        if result.is_err() {
            self.forget(challenge.map(|c| c.code)).await;
        }
        Ok(Done::of(result?))
    }

    /// Sends the caller a verification code and keeps its digest; the challenge names it.
    async fn send_verification_code(&self, ctx: &Ctx<'_>, tenant_id: Option<Uuid>) -> Result<Challenge, AdminError> {
        if !self.delivery.available() {
            return Err(AdminError::Invalid(
                "this tenant requires a verification code, but no e-mail or SMS delivery is configured".to_owned(),
            ));
        }
        let me = self.existing_user(ctx.caller.user_id).await?;
        let (code, digest) = credentials::verification_code();
        let holder = format!("Session/{}", Self::own_session(ctx)?);
        let secret = self.secrets.put(SecretKind::VerificationCode, tenant_id, &holder, &digest).await?;
        let to = Recipient {
            user_id: me.user_id(),
            username: me.username().to_owned(),
            email: me.email().map(str::to_owned),
        };
        if let Err(reason) = self.delivery.deliver(&to, &code).await {
            self.forget(Some(secret)).await;
            return Err(AdminError::Invalid(format!("the verification code could not be sent: {reason}")));
        }
        Ok(Challenge { code: secret, expires_at: after(self.config.verification_code_lifetime) })
    }

    pub(super) async fn verify_impersonation(&self, ctx: &Ctx<'_>, code: SecretString) -> Result<Done, AdminError> {
        let session_id = Self::own_session(ctx)?;
        let session = self.load(&self.sessions, session_id).await?;
        let challenge = *session
            .pending_challenge()
            .ok_or_else(|| AdminError::Invalid("no impersonation is waiting for a verification code".to_owned()))?;
        let stored = self.secrets.get(challenge.code).await?;
        let presented = credentials::digest(code.expose_secret().trim().as_bytes());
        let code_matches = stored.is_some_and(|digest| credentials::digests_equal(&digest, &presented));
        let command = SessionCommand::VerifyImpersonation { code_matches, at: now() };
        let receipt = self.run(&self.sessions, session_id, command, ctx.meta(session.tenant_id())).await?;
        if code_matches {
            self.forget(Some(challenge.code)).await;
            return Ok(Done::of(receipt));
        }
        let cancelled = receipt.events.iter().any(|e| e.event_type == "ImpersonationRequestCancelled");
        if cancelled {
            self.forget(Some(challenge.code)).await;
            return Err(AdminError::Invalid("the verification code was wrong too often; start again".to_owned()));
        }
        Err(AdminError::Invalid("the verification code is wrong".to_owned()))
    }

    pub(super) async fn stop_impersonation(&self, ctx: &Ctx<'_>) -> Result<Done, AdminError> {
        let session_id = Self::own_session(ctx)?;
        let session = self.load(&self.sessions, session_id).await?;
        let pending = session.pending_challenge().map(|c| c.code);
        let command = SessionCommand::StopImpersonation { at: now() };
        let receipt = self.run(&self.sessions, session_id, command, ctx.meta(session.tenant_id())).await?;
        self.forget(pending).await;
        Ok(Done::of(receipt))
    }

    pub(super) async fn assign_call(
        &self,
        ctx: &Ctx<'_>,
        call_id: Uuid,
        user_id: Uuid,
        extension: Option<String>,
        apply_to_similar: bool,
    ) -> Result<Done, AdminError> {
        let call = self.load(&self.calls, call_id).await?;
        let tenant_id = call.tenant_id().ok_or(AdminError::NotFound("call"))?;
        let owner = match call.user_id() {
            Some(owner) => Some((owner, self.load(&self.users, owner).await?.groups().iter().copied().collect())),
            None => None,
        };
        ctx.authorize(Permission::AssignCalls, &Resource::Call { tenant: tenant_id, owner })?;
        let user = self.existing_user(user_id).await?;
        if user.tenant_id() != Some(tenant_id) {
            return Err(AdminError::Invalid("the user belongs to another tenant than the call".to_owned()));
        }
        let groups: BTreeSet<Uuid> = user.groups().iter().copied().collect();
        ctx.authorize(Permission::AssignCalls, &Resource::Call { tenant: tenant_id, owner: Some((user_id, groups)) })?;
        let extension = extension
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().to_owned())
            .or_else(|| call.extension().map(str::to_owned));
        let meta = ctx.meta(Some(tenant_id));
        let mut done = Done::default();
        if apply_to_similar {
            let extension = extension.clone().ok_or_else(|| {
                AdminError::Invalid("a call without an extension has no similar calls; choose an extension".to_owned())
            })?;
            self.reach_user(ctx, Permission::ConfigureUsers, &user).await?;
            let key = IndexKey::new(Namespace::Extension(tenant_id), extension.clone());
            match self.index.holder(&key).await? {
                Some(holder) if holder.aggregate_id != user_id.to_string() => {
                    return Err(AdminError::Invalid(format!("extension {extension} belongs to another user")));
                }
                Some(_) => {}
                None => {
                    let add = UserCommand::AddExtension { extension: extension.clone() };
                    done.receipts.push(self.run(&self.users, user_id, add, meta.clone()).await?);
                }
            }
        }
        let assign = CallCommand::AssignCall { user_id, extension: extension.clone() };
        done.receipts.push(self.run(&self.calls, call_id, assign, meta.clone()).await?);
        if let (true, Some(extension)) = (apply_to_similar, extension) {
            self.assign_similar(&mut done, tenant_id, &extension, user_id, meta).await?;
        }
        Ok(done)
    }

    /// Assigns every unassigned call of the tenant with `extension` to the user, batch by batch, until none
    /// is left. Each assignment takes its call off the list, so running it again after a failure carries on.
    async fn assign_similar(
        &self,
        done: &mut Done,
        tenant_id: Uuid,
        extension: &str,
        user_id: Uuid,
        meta: recall_domain::CommandMeta,
    ) -> Result<(), AdminError> {
        let namespace = Namespace::UnassignedCalls(tenant_id);
        let prefix = format!("{extension}/");
        loop {
            let batch = self.index.with_prefix(&namespace, &prefix, SIMILAR_CALLS_BATCH).await?;
            let mut progressed = false;
            for (_, holder) in &batch {
                let Ok(call_id) = Uuid::parse_str(&holder.aggregate_id) else { continue };
                let assign = CallCommand::AssignCall { user_id, extension: Some(extension.to_owned()) };
                let receipt = self.run(&self.calls, call_id, assign, meta.clone()).await?;
                progressed |= !receipt.events.is_empty();
                done.receipts.push(receipt);
            }
            if batch.len() < SIMILAR_CALLS_BATCH as usize || !progressed {
                return Ok(());
            }
        }
    }
}

impl Admin {
    pub(super) async fn issue_api_token(
        &self,
        ctx: &Ctx<'_>,
        token_id: Uuid,
        user_id: Uuid,
        name: String,
        expires_in_days: Option<u32>,
    ) -> Result<Done, AdminError> {
        let user = self.existing_user(user_id).await?;
        if !ctx.is_self(user_id) {
            self.reach_user(ctx, Permission::ConfigureUsers, &user).await?;
        }
        if ctx.caller.impersonator.is_some() || ctx.caller.api_token.is_some() {
            return Err(AdminError::Forbidden(
                "API tokens are issued by a signed-in user acting as themself, not by a token or an impersonation"
                    .to_owned(),
            ));
        }
        let token = Token::new(token_id);
        let secret = self
            .secrets
            .put(SecretKind::SessionToken, user.tenant_id(), &format!("ApiToken/{token_id}"), &token.digest)
            .await?;
        let expires_at = expires_in_days.map(|days| after(std::time::Duration::from_secs(u64::from(days) * 86_400)));
        let command = recall_domain::api_token::ApiTokenCommand::IssueApiToken {
            user_id,
            tenant_id: user.tenant_id(),
            name,
            secret,
            expires_at,
            at: now(),
        };
        match self.run(&self.api_tokens, token_id, command, ctx.meta(user.tenant_id())).await {
            Ok(receipt) => Ok(Done { receipts: vec![receipt], issued: Some(token.text) }),
            Err(e) => {
                self.forget(Some(secret)).await;
                Err(e)
            }
        }
    }

    pub(super) async fn revoke_api_token(&self, ctx: &Ctx<'_>, token_id: Uuid) -> Result<Done, AdminError> {
        let token = self.load(&self.api_tokens, token_id).await?;
        let owner = token.user_id().ok_or(AdminError::NotFound("API token"))?;
        if !ctx.is_self(owner) {
            self.reach_user(ctx, Permission::ConfigureUsers, &self.existing_user(owner).await?).await?;
        }
        let command = recall_domain::api_token::ApiTokenCommand::RevokeApiToken { at: now() };
        let receipt = self.run(&self.api_tokens, token_id, command, ctx.meta(token.tenant_id())).await?;
        self.forget(token.secret()).await;
        Ok(Done::of(receipt))
    }
}
