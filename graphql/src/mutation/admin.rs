//! One mutation per administrative command. Inputs name what the caller knows; ids of new things may be
//! given (so a retried request cannot create twice) or are made here. Enum inputs are the domain's enums.

use async_graphql::{Context, InputObject, Object};
use recall_commands::admin::{AdminCommand, GroupRequest};
use recall_domain::recording_policy::{DefaultRecordingRule, RetentionPolicy};
use recall_domain::tenant::{TenantCommand, TenantSettings};
use uuid::Uuid;

use super::{run, Changed, MutationResult};
use crate::types::{AudioFormatGql, RecordDirectionGql, RecordModeGql, StorageOptionGql, UnassignedCallRuleGql};

fn new_id(id: Option<Uuid>) -> Uuid {
    id.unwrap_or_else(Uuid::now_v7)
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

    async fn rename_tenant(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::RenameTenant { name } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

    async fn set_tenant_timezone(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        timezone: String,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetTenantTimezone { timezone } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

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

    async fn set_file_encryption(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        enabled: bool,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::Tenant { tenant_id, command: TenantCommand::SetFileEncryption { enabled } };
        run(ctx, Changed::Tenant, tenant_id, command).await
    }

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

    async fn deactivate_tenant(&self, ctx: &Context<'_>, tenant_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(
            ctx,
            Changed::Tenant,
            tenant_id,
            AdminCommand::Tenant { tenant_id, command: TenantCommand::DeactivateTenant },
        )
        .await
    }

    async fn reactivate_tenant(&self, ctx: &Context<'_>, tenant_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(
            ctx,
            Changed::Tenant,
            tenant_id,
            AdminCommand::Tenant { tenant_id, command: TenantCommand::ReactivateTenant },
        )
        .await
    }

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

    async fn delete_group(&self, ctx: &Context<'_>, group_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Group, group_id, AdminCommand::Group { group_id, request: GroupRequest::Delete }).await
    }
}
