//! Configuration actions: tenants, roles, groups, storage targets, custom fields, field visibility and
//! evaluation forms. Each names the permission it needs and what it acts on, loads what it must know, and
//! hands the domain a command.

use std::collections::BTreeMap;

use recall_domain::access::{Permission, Resource};
use recall_domain::custom_field::CustomFieldCommand;
use recall_domain::evaluation_form::EvaluationFormCommand;
use recall_domain::field_visibility::FieldVisibilityCommand;
use recall_domain::group::GroupCommand;
use recall_domain::index::Namespace;
use recall_domain::role::RoleCommand;
use recall_domain::secret::SecretRef;
use recall_domain::storage_target::{StorageKind, StorageTargetCommand};
use recall_domain::tenant::TenantCommand;
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    now, Admin, AdminError, Ctx, Done, EvaluationFormRequest, GroupRequest, RoleRequest, StorageSettings,
    StorageTargetRequest,
};
use crate::secrets::SecretKind;
use crate::storage_probe::ResolvedStorage;

fn required(secret: Option<SecretRef>, what: &str) -> Result<SecretRef, AdminError> {
    secret.ok_or_else(|| AdminError::Invalid(format!("the {what} is required")))
}

impl Admin {
    pub(super) async fn tenant(
        &self,
        ctx: &Ctx<'_>,
        tenant_id: Uuid,
        command: TenantCommand,
    ) -> Result<Done, AdminError> {
        let permission = match &command {
            TenantCommand::SetFileEncryption { .. }
            | TenantCommand::UseEncryptionKey { .. }
            | TenantCommand::ForgetEncryptionKey { .. } => Permission::ManageEncryptionKeys,
            TenantCommand::SetAudioFormat { .. } => Permission::ManageStorage,
            TenantCommand::SetRetentionPolicy { .. } => Permission::ManageRetention,
            _ => Permission::ConfigureSystem,
        };
        if matches!(command, TenantCommand::CreateTenant(_)) {
            ctx.authorize(permission, &Resource::Service)?;
        } else {
            ctx.authorize(permission, &Resource::TenantConfig { tenant: tenant_id })?;
            if !self.load(&self.tenants, tenant_id).await?.exists() {
                return Err(AdminError::NotFound("tenant"));
            }
        }
        if matches!(command, TenantCommand::SetImpersonationVerification { required: true })
            && !self.delivery.available()
        {
            return Err(AdminError::Invalid(
                "impersonation cannot require a verification code: no e-mail or SMS delivery is configured".to_owned(),
            ));
        }
        // The key's facts are looked up here, whatever the caller said.
        let command = match command {
            TenantCommand::UseEncryptionKey { key_id, .. } => self.use_key_command(tenant_id, key_id).await?,
            other => other,
        };
        Ok(Done::of(self.run(&self.tenants, tenant_id, command, ctx.meta(Some(tenant_id))).await?))
    }

    pub(super) async fn role(&self, ctx: &Ctx<'_>, role_id: Uuid, request: RoleRequest) -> Result<Done, AdminError> {
        ctx.authorize(Permission::ConfigureSystem, &Resource::Service)?;
        let role = self.load(&self.roles, role_id).await?;
        if !matches!(request, RoleRequest::Define { .. }) && !role.is_defined() {
            return Err(AdminError::NotFound("role"));
        }
        let command = match request {
            RoleRequest::Define { name, grants } => {
                ctx.covers(&grants, "this role")?;
                RoleCommand::DefineRole { name, grants, predefined: None }
            }
            RoleRequest::Rename { name } => RoleCommand::RenameRole { name },
            RoleRequest::ChangeGrants { grants } => {
                ctx.covers(&grants, "this role")?;
                RoleCommand::ChangeRoleGrants { grants }
            }
            RoleRequest::Delete => {
                RoleCommand::DeleteRole { users_holding_it: self.index.count(&Namespace::RoleHolders(role_id)).await? }
            }
        };
        Ok(Done::of(self.run(&self.roles, role_id, command, ctx.meta(None)).await?))
    }

    pub(super) async fn group(&self, ctx: &Ctx<'_>, group_id: Uuid, request: GroupRequest) -> Result<Done, AdminError> {
        let tenant_id = match &request {
            GroupRequest::Create { tenant_id, .. } => {
                self.active_tenant(*tenant_id).await?;
                *tenant_id
            }
            _ => {
                let group = self.load(&self.groups, group_id).await?;
                match group.tenant_id() {
                    Some(tenant) if group.exists() => tenant,
                    _ => return Err(AdminError::NotFound("group")),
                }
            }
        };
        ctx.authorize(Permission::ConfigureUsers, &Resource::TenantConfig { tenant: tenant_id })?;
        let command = match request {
            GroupRequest::Create { tenant_id, name, timezone } => {
                GroupCommand::CreateGroup { tenant_id, name, timezone }
            }
            GroupRequest::Rename { name } => GroupCommand::RenameGroup { name },
            GroupRequest::SetTimezone { timezone } => GroupCommand::SetGroupTimezone { timezone },
            GroupRequest::Delete => {
                GroupCommand::DeleteGroup { members: self.index.count(&Namespace::GroupMembers(group_id)).await? }
            }
        };
        Ok(Done::of(self.run(&self.groups, group_id, command, ctx.meta(Some(tenant_id))).await?))
    }

    /// A tenant's storage target with its credentials opened, for the recorder's uploads (a system
    /// action, not a caller's: nothing is authorized or recorded). Refused when the target does not belong
    /// to the tenant or is deleted.
    pub async fn resolve_storage_target(
        &self,
        tenant_id: Uuid,
        target_id: Uuid,
    ) -> Result<ResolvedStorage, AdminError> {
        let target = self.load(&self.storage, target_id).await?;
        if target.tenant_id() != Some(tenant_id) || !target.exists() {
            return Err(AdminError::NotFound("storage target"));
        }
        let kind = target.kind().cloned().ok_or(AdminError::NotFound("storage target"))?;
        self.resolve(kind).await
    }

    /// The object store a tenant's recordings are in: its storage target `target_id` (local directory or S3),
    /// or, for a recording stored without a target, the installation's recordings directory `local` (none:
    /// this process does not hold them).
    pub async fn recordings_store(
        &self,
        tenant_id: Uuid,
        target_id: Option<Uuid>,
        local: Option<&std::path::Path>,
    ) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, AdminError> {
        match target_id {
            Some(target_id) => {
                let resolved = self.resolve_storage_target(tenant_id, target_id).await?;
                crate::storage_probe::object_store_for(&resolved).map_err(|e| AdminError::Invalid(e.to_string()))
            }
            None => {
                let dir = local.ok_or_else(|| {
                    AdminError::Unavailable("this process does not hold the installation's recordings".to_owned())
                })?;
                std::fs::create_dir_all(dir)
                    .map_err(|e| AdminError::Unavailable(format!("cannot use {}: {e}", dir.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| AdminError::Unavailable(format!("cannot use {}: {e}", dir.display())))?
                    .with_automatic_cleanup(false)
                    .with_fsync(true);
                Ok(std::sync::Arc::new(store))
            }
        }
    }

    /// A target's settings with the credentials they name opened.
    async fn resolve(&self, kind: StorageKind) -> Result<ResolvedStorage, AdminError> {
        let mut secrets = BTreeMap::new();
        for secret in kind.secrets() {
            let clear = self.secrets.open_sealed(secret).await?.ok_or_else(|| {
                AdminError::Invalid("a credential of this storage target is missing; enter it again".to_owned())
            })?;
            secrets.insert(secret, clear);
        }
        Ok(ResolvedStorage { kind, secrets })
    }

    pub(super) async fn storage_target(
        &self,
        ctx: &Ctx<'_>,
        target_id: Uuid,
        request: StorageTargetRequest,
    ) -> Result<Done, AdminError> {
        let target = self.load(&self.storage, target_id).await?;
        let tenant_id = match &request {
            StorageTargetRequest::Add { tenant_id, .. } => {
                self.active_tenant(*tenant_id).await?;
                *tenant_id
            }
            _ => target.tenant_id().filter(|_| !target.is_purged()).ok_or(AdminError::NotFound("storage target"))?,
        };
        ctx.authorize(Permission::ManageStorage, &Resource::TenantConfig { tenant: tenant_id })?;
        let holder = format!("StorageTarget/{target_id}");
        let meta = ctx.meta(Some(tenant_id));
        match request {
            StorageTargetRequest::Add { tenant_id, name, settings } => {
                let kind = self.seal_storage(settings, None, tenant_id, &holder).await?;
                let added = kind.secrets();
                let result = self
                    .run(
                        &self.storage,
                        target_id,
                        StorageTargetCommand::AddStorageTarget { tenant_id, name, kind },
                        meta,
                    )
                    .await;
                if result.is_err() {
                    self.destroy_all(&added).await;
                }
                Ok(Done::of(result?))
            }
            StorageTargetRequest::Edit { name, settings } => {
                let before = target.secrets();
                let kind = self.seal_storage(settings, target.kind(), tenant_id, &holder).await?;
                let after = kind.secrets();
                let result = self
                    .run(&self.storage, target_id, StorageTargetCommand::EditStorageTarget { name, kind }, meta)
                    .await;
                // Secrets of the losing side are destroyed: the new ones when the edit failed, the replaced
                // ones when it was saved.
                let (keep, drop) = if result.is_ok() { (&after, &before) } else { (&before, &after) };
                let unused: Vec<SecretRef> = drop.iter().filter(|s| !keep.contains(s)).copied().collect();
                self.destroy_all(&unused).await;
                Ok(Done::of(result?))
            }
            StorageTargetRequest::Test => {
                let kind = target
                    .kind()
                    .cloned()
                    .ok_or(AdminError::Invalid("a deleted storage target cannot be tested".to_owned()))?;
                if !target.exists() {
                    return Err(AdminError::Invalid("a deleted storage target cannot be tested".to_owned()));
                }
                let report = self.probe.probe(&self.resolve(kind).await?).await;
                let command = StorageTargetCommand::RecordConnectionTest {
                    ok: report.ok,
                    detail: report.detail,
                    tested_at: now(),
                };
                Ok(Done::of(self.run(&self.storage, target_id, command, meta).await?))
            }
            StorageTargetRequest::Delete => {
                Ok(Done::of(self.run(&self.storage, target_id, StorageTargetCommand::DeleteStorageTarget, meta).await?))
            }
            StorageTargetRequest::Restore => Ok(Done::of(
                self.run(&self.storage, target_id, StorageTargetCommand::RestoreStorageTarget, meta).await?,
            )),
            StorageTargetRequest::Purge => {
                let secrets = target.secrets();
                let receipt =
                    self.run(&self.storage, target_id, StorageTargetCommand::PurgeStorageTarget, meta).await?;
                self.destroy_all(&secrets).await;
                Ok(Done::of(receipt))
            }
        }
    }

    /// Turns entered settings into the domain's, sealing each new secret; a secret left out keeps the one
    /// `current` has in the same place (same kind of target).
    async fn seal_storage(
        &self,
        settings: StorageSettings,
        current: Option<&StorageKind>,
        tenant_id: Uuid,
        holder: &str,
    ) -> Result<StorageKind, AdminError> {
        Ok(match settings {
            StorageSettings::LocalFilesystem { path } => StorageKind::LocalFilesystem { path },
            StorageSettings::S3 { endpoint, region, bucket, prefix, access_key_id, secret_access_key, path_style } => {
                let kept = match current {
                    Some(StorageKind::S3 { secret_access_key, .. }) => Some(*secret_access_key),
                    _ => None,
                };
                let sealed = self.seal_secret(secret_access_key, kept, tenant_id, holder).await?;
                let secret_access_key = required(sealed, "secret access key")?;
                StorageKind::S3 { endpoint, region, bucket, prefix, access_key_id, secret_access_key, path_style }
            }
            StorageSettings::Ftp { host, port, username, password, directory, tls } => {
                let kept = match current {
                    Some(StorageKind::Ftp { password, .. }) => Some(*password),
                    _ => None,
                };
                let password = required(self.seal_secret(password, kept, tenant_id, holder).await?, "password")?;
                StorageKind::Ftp { host, port, username, password, directory, tls }
            }
            StorageSettings::Sftp { host, port, username, password, private_key, directory, host_key_fingerprint } => {
                let (kept_password, kept_key) = match current {
                    Some(StorageKind::Sftp { password, private_key, .. }) => (*password, *private_key),
                    _ => (None, None),
                };
                let password = self.seal_secret(password, kept_password, tenant_id, holder).await?;
                let private_key = self.seal_secret(private_key, kept_key, tenant_id, holder).await?;
                StorageKind::Sftp { host, port, username, password, private_key, directory, host_key_fingerprint }
            }
        })
    }

    /// A newly entered secret, sealed; or, when none was entered, the one kept from before.
    async fn seal_secret(
        &self,
        entered: Option<SecretString>,
        kept: Option<SecretRef>,
        tenant_id: Uuid,
        holder: &str,
    ) -> Result<Option<SecretRef>, AdminError> {
        match entered {
            Some(secret) => Ok(Some(
                self.secrets.put_sealed(SecretKind::StorageCredential, Some(tenant_id), holder, &secret).await?,
            )),
            None => Ok(kept),
        }
    }

    async fn destroy_all(&self, secrets: &[SecretRef]) {
        for secret in secrets {
            if let Err(e) = self.secrets.destroy(*secret).await {
                tracing::warn!(error = %e, secret = %secret.0, "could not destroy an unused secret");
            }
        }
    }

    pub(super) async fn custom_field(
        &self,
        ctx: &Ctx<'_>,
        field_id: Uuid,
        command: CustomFieldCommand,
    ) -> Result<Done, AdminError> {
        let tenant_id = match &command {
            CustomFieldCommand::AddCustomField { tenant_id, .. } => {
                self.active_tenant(*tenant_id).await?;
                *tenant_id
            }
            _ => {
                let field = self.load(&self.fields, field_id).await?;
                field.tenant_id().filter(|_| !field.is_purged()).ok_or(AdminError::NotFound("custom field"))?
            }
        };
        ctx.authorize(Permission::ManageCustomization, &Resource::TenantConfig { tenant: tenant_id })?;
        Ok(Done::of(self.run(&self.fields, field_id, command, ctx.meta(Some(tenant_id))).await?))
    }

    pub(super) async fn field_visibility(
        &self,
        ctx: &Ctx<'_>,
        command: FieldVisibilityCommand,
    ) -> Result<Done, AdminError> {
        let FieldVisibilityCommand::SetLayoutVisibility { tenant_id, .. } = &command;
        let tenant_id = *tenant_id;
        ctx.authorize(Permission::ManageCustomization, &Resource::TenantConfig { tenant: tenant_id })?;
        self.active_tenant(tenant_id).await?;
        Ok(Done::of(self.run(&self.visibility, tenant_id, command, ctx.meta(Some(tenant_id))).await?))
    }

    pub(super) async fn evaluation_form(
        &self,
        ctx: &Ctx<'_>,
        form_id: Uuid,
        request: EvaluationFormRequest,
    ) -> Result<Done, AdminError> {
        let form = self.load(&self.forms, form_id).await?;
        let existing_tenant = || form.tenant_id().ok_or(AdminError::NotFound("evaluation form"));
        let (tenant_id, command) = match request {
            EvaluationFormRequest::Create { tenant_id, definition } => {
                self.active_tenant(tenant_id).await?;
                (tenant_id, EvaluationFormCommand::CreateForm { tenant_id, definition })
            }
            EvaluationFormRequest::Clone { source_id, name } => {
                let source = self.load(&self.forms, source_id).await?;
                let tenant_id =
                    source.tenant_id().filter(|_| source.exists()).ok_or(AdminError::NotFound("evaluation form"))?;
                let source = source.definition().clone();
                (tenant_id, EvaluationFormCommand::CloneForm { tenant_id, source_id, source, name })
            }
            EvaluationFormRequest::Revise { definition } => {
                (existing_tenant()?, EvaluationFormCommand::ReviseForm { definition })
            }
            EvaluationFormRequest::Delete => (existing_tenant()?, EvaluationFormCommand::DeleteForm),
            EvaluationFormRequest::Restore => (existing_tenant()?, EvaluationFormCommand::RestoreForm),
            EvaluationFormRequest::Purge => (existing_tenant()?, EvaluationFormCommand::PurgeForm),
        };
        ctx.authorize(Permission::ManageEvaluationForms, &Resource::TenantContent { tenant: tenant_id })?;
        Ok(Done::of(self.run(&self.forms, form_id, command, ctx.meta(Some(tenant_id))).await?))
    }
}
