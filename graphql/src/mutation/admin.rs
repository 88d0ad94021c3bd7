//! Mutations of the service's structure: tenants, roles and groups, one per administrative command. Inputs
//! name what the caller knows; ids of new things may be given (so a retried request cannot create twice) or
//! are made here. Enum inputs are the domain's enums. Users are in `users.rs`, configuration in `config.rs`.

use async_graphql::{Context, InputObject, Object};
use recall_commands::admin::{AdminCommand, GroupRequest, RoleRequest};
use recall_domain::access::Grants;
use recall_domain::recording_policy::{DefaultRecordingRule, RetentionPolicy};
use recall_domain::tenant::{RecordingClients, TenantCommand, TenantSettings};
use uuid::Uuid;

use super::{new_id, run, Changed, MutationResult};
use crate::error::ApiError;
use crate::types::{
    AudioFormatGql, PermissionGql, RecordDirectionGql, RecordModeGql, ScopeGql, StorageOptionGql, UnassignedCallRuleGql,
};

fn grants(scope: ScopeGql, permissions: Vec<PermissionGql>) -> Grants {
    Grants::new(scope.into(), permissions.into_iter().map(Into::into))
}

/// A tenant's default recording rule.
#[derive(Debug, InputObject)]
pub struct DefaultRecordingRuleInput {
    /// The record mode of users set to "tenant default" (not TENANT_DEFAULT itself).
    pub record: RecordModeGql,
    pub direction: RecordDirectionGql,
    pub unassigned_calls: UnassignedCallRuleGql,
}

impl From<DefaultRecordingRuleInput> for DefaultRecordingRule {
    fn from(input: DefaultRecordingRuleInput) -> Self {
        Self {
            record: input.record.into(),
            direction: input.direction.into(),
            unassigned_calls: input.unassigned_calls.into(),
        }
    }
}

/// A new tenant; what is left out takes the defaults (UTC, record everything, non-hosted, no encryption,
/// MP3 stereo 32 kbit/s).
#[derive(Debug, InputObject)]
pub struct CreateTenantInput {
    pub id: Option<Uuid>,
    pub name: String,
    pub timezone: Option<String>,
    pub default_recording_rule: Option<DefaultRecordingRuleInput>,
    pub storage_option: Option<StorageOptionGql>,
    pub file_encryption: Option<bool>,
    pub audio_format: Option<AudioFormatGql>,
}

#[derive(Debug, Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Creates a tenant (a customer organisation); what is left out takes the defaults.
    async fn create_tenant(
        &self,
        ctx: &Context<'_>,
        input: CreateTenantInput,
    ) -> async_graphql::Result<MutationResult> {
        let tenant_id = new_id(input.id);
        let mut settings = TenantSettings::named(input.name);
        if let Some(timezone) = input.timezone {
            settings.timezone = timezone;
        }
        if let Some(rule) = input.default_recording_rule {
            settings.default_rule = rule.into();
        }
        if let Some(option) = input.storage_option {
            settings.storage = option.into();
        }
        if let Some(encryption) = input.file_encryption {
            settings.file_encryption = encryption;
        }
        if let Some(format) = input.audio_format {
            settings.audio_format = format.into();
        }
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::CreateTenant(settings) };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Renames a tenant.
    async fn rename_tenant(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::RenameTenant { name } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets a tenant's time zone (an IANA name such as Europe/Berlin).
    async fn set_tenant_timezone(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        timezone: String,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetTenantTimezone { timezone } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets which calls of a tenant are recorded when a user's own setting says "tenant default".
    async fn set_default_recording_rule(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        rule: DefaultRecordingRuleInput,
    ) -> async_graphql::Result<MutationResult> {
        let command =
            AdminCommand::Tenant { tenant_id, command: TenantCommand::SetDefaultRecordingRule { rule: rule.into() } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets how a tenant's recordings are stored, as purchased.
    async fn set_storage_option(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        option: StorageOptionGql,
    ) -> async_graphql::Result<MutationResult> {
        let command =
            AdminCommand::Tenant { tenant_id, command: TenantCommand::SetStorageOption { option: option.into() } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Switches the encryption of a tenant's new recording files on or off.
    async fn set_file_encryption(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        enabled: bool,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetFileEncryption { enabled } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets the file format of a tenant's new recordings.
    async fn set_audio_format(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        format: AudioFormatGql,
    ) -> async_graphql::Result<MutationResult> {
        let command =
            AdminCommand::Tenant { tenant_id, command: TenantCommand::SetAudioFormat { format: format.into() } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets how long recordings (null: until deleted) and audit-trail events (at least 365 days) are kept.
    async fn set_retention_policy(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        recordings_days: Option<u32>,
        audit_days: u32,
    ) -> async_graphql::Result<MutationResult> {
        let policy = RetentionPolicy { recordings_days, audit_days };
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetRetentionPolicy { policy } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets whether impersonating a tenant's users needs a verification code first.
    async fn set_impersonation_verification(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        required: bool,
    ) -> async_graphql::Result<MutationResult> {
        let command =
            AdminCommand::Tenant { tenant_id, command: TenantCommand::SetImpersonationVerification { required } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Sets where a tenant's calls come from: the networks of its recording clients (addresses or CIDR
    /// networks) and the SIP domains it owns. Replaces both lists; a network or domain belongs to one tenant.
    async fn set_recording_clients(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        networks: Vec<String>,
        sip_domains: Vec<String>,
    ) -> async_graphql::Result<MutationResult> {
        let mut parsed = Vec::with_capacity(networks.len());
        for network in &networks {
            let network = network.trim();
            let net = network
                .parse::<ipnet::IpNet>()
                .or_else(|_| network.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ApiError::invalid_field("networks", format!("{network:?} is not an address or a CIDR network"))
                })?;
            parsed.push(net);
        }
        let clients = RecordingClients { networks: parsed, sip_domains };
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetRecordingClients(clients) };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    /// Deactivates a tenant: its users cannot sign in and its calls are not recorded; nothing is deleted.
    async fn deactivate_tenant(&self, ctx: &Context<'_>, tenant_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(
            ctx,
            Changed::Tenant,
            tenant_id,
            AdminCommand::Tenant { tenant_id, command: TenantCommand::DeactivateTenant },
        )
        .await
    }

    /// Reactivates a deactivated tenant.
    async fn reactivate_tenant(&self, ctx: &Context<'_>, tenant_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(
            ctx,
            Changed::Tenant,
            tenant_id,
            AdminCommand::Tenant { tenant_id, command: TenantCommand::ReactivateTenant },
        )
        .await
    }

    /// Defines a role: a name, how far it reaches and what it permits (no more than the caller's own role).
    async fn define_role(
        &self,
        ctx: &Context<'_>,
        id: Option<Uuid>,
        name: String,
        scope: ScopeGql,
        permissions: Vec<PermissionGql>,
    ) -> async_graphql::Result<MutationResult> {
        let role_id = new_id(id);
        let request = RoleRequest::Define { name, grants: grants(scope, permissions) };
        run(ctx, Changed::Role, role_id, AdminCommand::Role { role_id, request }).await
    }

    /// Renames a role.
    async fn rename_role(
        &self,
        ctx: &Context<'_>,
        role_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Role, role_id, AdminCommand::Role { role_id, request: RoleRequest::Rename { name } }).await
    }

    /// Replaces a role's scope and permissions; its holders have the new rights from their next request.
    async fn change_role_grants(
        &self,
        ctx: &Context<'_>,
        role_id: Uuid,
        scope: ScopeGql,
        permissions: Vec<PermissionGql>,
    ) -> async_graphql::Result<MutationResult> {
        let request = RoleRequest::ChangeGrants { grants: grants(scope, permissions) };
        run(ctx, Changed::Role, role_id, AdminCommand::Role { role_id, request }).await
    }

    /// Deletes a role nobody holds any more (the Root Administrator role stays).
    async fn delete_role(&self, ctx: &Context<'_>, role_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Role, role_id, AdminCommand::Role { role_id, request: RoleRequest::Delete }).await
    }

    /// Creates a group of users in a tenant (time zone null: the tenant's).
    async fn create_group(
        &self,
        ctx: &Context<'_>,
        id: Option<Uuid>,
        tenant_id: Uuid,
        name: String,
        timezone: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        let group_id = new_id(id);
        let command = AdminCommand::Group { group_id, request: GroupRequest::Create { tenant_id, name, timezone } };
        run(ctx, Changed::Group, group_id, command).await
    }

    /// Renames a group.
    async fn rename_group(
        &self,
        ctx: &Context<'_>,
        group_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Group, group_id, AdminCommand::Group { group_id, request: GroupRequest::Rename { name } })
            .await
    }

    /// Sets the group's time zone (null: its members fall back to the tenant's).
    async fn set_group_timezone(
        &self,
        ctx: &Context<'_>,
        group_id: Uuid,
        timezone: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Group { group_id, request: GroupRequest::SetTimezone { timezone } };
        run(ctx, Changed::Group, group_id, command).await
    }

    /// Deletes a group that has no members left.
    async fn delete_group(&self, ctx: &Context<'_>, group_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Group, group_id, AdminCommand::Group { group_id, request: GroupRequest::Delete }).await
    }
}
