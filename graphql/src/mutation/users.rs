//! Mutations of user accounts and what hangs off them: one per user request, ending sessions, revoking
//! devices, and assigning calls to users. Passwords arrive as `SecretString` and never sit in a plain
//! `String` here; a reset link's token goes back only in the result's `issuedToken`.

use async_graphql::{Context, InputObject, Object};
use recall_commands::admin::{AdminCommand, NewUser, UserRequest};
use recall_domain::user::{Licences, RecordingSettings, ScreenLogin};
use secrecy::SecretString;
use uuid::Uuid;

use super::{new_id, run, Changed, MutationResult};
use crate::types::{RecordDirectionGql, RecordModeGql};

/// The Windows login a screen-recording client reports for a user.
#[derive(Debug, InputObject)]
#[graphql(name = "ScreenRecordingLoginInput")]
pub struct ScreenLoginInput {
    pub login: String,
    /// The Windows domain, if the login belongs to one.
    pub domain: Option<String>,
}

impl From<ScreenLoginInput> for ScreenLogin {
    fn from(input: ScreenLoginInput) -> Self {
        Self { login: input.login, domain: input.domain }
    }
}

/// The add-on licences a user holds; each one left out is not held.
#[derive(Debug, Default, InputObject)]
pub struct LicencesInput {
    #[graphql(default)]
    pub audio: bool,
    #[graphql(default)]
    pub screen: bool,
    #[graphql(default)]
    pub evaluate: bool,
}

impl From<LicencesInput> for Licences {
    fn from(input: LicencesInput) -> Self {
        Self { audio: input.audio, screen: input.screen, evaluate: input.evaluate }
    }
}

/// A new user account. What is left out takes the default shown.
#[derive(Debug, InputObject)]
pub struct CreateUserInput {
    /// The new user's id (made here when left out).
    pub id: Option<Uuid>,
    /// The tenant the user belongs to; null creates one of the service provider's own users.
    pub tenant_id: Option<Uuid>,
    pub username: String,
    pub full_name: Option<String>,
    pub email: Option<String>,
    /// The user's own time zone (null: the primary group's, then the tenant's).
    pub timezone: Option<String>,
    #[graphql(default = true)]
    pub active: bool,
    pub role_id: Uuid,
    /// The user's groups; the first is the primary group.
    #[graphql(default)]
    pub groups: Vec<Uuid>,
    /// The groups the user manages (for roles reaching managed groups).
    #[graphql(default)]
    pub managed_groups: Vec<Uuid>,
    #[graphql(default_with = "RecordModeGql::TenantDefault")]
    pub record_mode: RecordModeGql,
    #[graphql(default_with = "RecordDirectionGql::Both")]
    pub record_direction: RecordDirectionGql,
    #[graphql(default)]
    pub extensions: Vec<String>,
    /// Whether the user may sign in to the web interface.
    #[graphql(default)]
    pub login_enabled: bool,
    pub password: Option<SecretString>,
    /// The user must change the password at the next sign-in.
    #[graphql(default)]
    pub must_change_password: bool,
    pub screen_recording_login: Option<ScreenLoginInput>,
    pub licences: Option<LicencesInput>,
}

fn recording(record_mode: RecordModeGql, record_direction: RecordDirectionGql) -> RecordingSettings {
    RecordingSettings { record: record_mode.into(), direction: record_direction.into() }
}

impl From<CreateUserInput> for NewUser {
    fn from(input: CreateUserInput) -> Self {
        Self {
            username: input.username,
            full_name: input.full_name,
            email: input.email,
            timezone: input.timezone,
            active: input.active,
            role_id: input.role_id,
            groups: input.groups,
            managed_groups: input.managed_groups.into_iter().collect(),
            recording: recording(input.record_mode, input.record_direction),
            extensions: input.extensions.into_iter().collect(),
            login_enabled: input.login_enabled,
            password: input.password,
            must_change_password: input.must_change_password,
            screen_login: input.screen_recording_login.map(Into::into),
            licences: input.licences.unwrap_or_default().into(),
        }
    }
}

async fn change(ctx: &Context<'_>, user_id: Uuid, request: UserRequest) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::User, user_id, AdminCommand::User { user_id, request }).await
}

#[derive(Debug, Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates a user account in a tenant (or, with tenantId null, one of the service provider's own).
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> async_graphql::Result<MutationResult> {
        let user_id = new_id(input.id);
        let tenant_id = input.tenant_id;
        let request = UserRequest::Create { tenant_id, user: Box::new(input.into()) };
        change(ctx, user_id, request).await
    }

    /// Changes a user's username (unique across the service).
    async fn rename_user(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        username: String,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::Rename { username }).await
    }

    /// Sets a user's full name (null clears it).
    async fn set_user_full_name(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        full_name: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetFullName { full_name }).await
    }

    /// Sets a user's e-mail address (null clears it).
    async fn set_user_email(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        email: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetEmail { email }).await
    }

    /// Sets a user's own time zone (null: the primary group's, then the tenant's).
    async fn set_user_timezone(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        timezone: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetTimezone { timezone }).await
    }

    /// Activates an inactive user.
    async fn activate_user(&self, ctx: &Context<'_>, user_id: Uuid) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::Activate).await
    }

    /// Deactivates a user: they can no longer sign in and their calls are no longer recorded.
    async fn deactivate_user(&self, ctx: &Context<'_>, user_id: Uuid) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::Deactivate).await
    }

    /// Gives a user another role (managed groups the new role cannot use are dropped).
    async fn assign_role(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        role_id: Uuid,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::AssignRole { role_id }).await
    }

    /// Sets the groups a user is in; the first is the primary group.
    async fn set_user_groups(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        groups: Vec<Uuid>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetGroups { groups }).await
    }

    /// Sets the groups a user manages (their role must reach managed groups or the whole tenant).
    async fn set_managed_groups(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        groups: Vec<Uuid>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetManagedGroups { groups: groups.into_iter().collect() }).await
    }

    /// Sets whether and which of a user's calls are recorded.
    async fn set_recording_settings(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        record_mode: RecordModeGql,
        record_direction: RecordDirectionGql,
    ) -> async_graphql::Result<MutationResult> {
        let recording = recording(record_mode, record_direction);
        change(ctx, user_id, UserRequest::SetRecordingSettings { recording }).await
    }

    /// Adds an extension to a user's (an extension belongs to one user of the tenant).
    async fn add_extension(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        extension: String,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::AddExtension { extension }).await
    }

    /// Replaces a user's extensions.
    async fn set_extensions(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        extensions: Vec<String>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetExtensions { extensions: extensions.into_iter().collect() }).await
    }

    /// Allows or refuses a user's sign-in to the web interface.
    async fn set_web_access(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        login_enabled: bool,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetWebAccess { login_enabled }).await
    }

    /// Sets a new password for a user, who must change it at the next sign-in when mustChange is true.
    async fn set_password(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        password: SecretString,
        must_change: bool,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetPassword { password, must_change }).await
    }

    /// Issues a single-use password reset link for a user; its token is in issuedToken, shown only this once.
    async fn issue_password_reset_link(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::IssuePasswordResetLink).await
    }

    /// Sets whether a user must change their password at the next sign-in.
    async fn set_must_change_password(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        required: bool,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetMustChangePassword { required }).await
    }

    /// Sets the Windows login a user's screen recordings are matched by (null clears it).
    async fn set_screen_recording_login(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        login: Option<ScreenLoginInput>,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetScreenRecordingLogin { login: login.map(Into::into) }).await
    }

    /// Sets the add-on licences a user holds.
    async fn set_licences(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        licences: LicencesInput,
    ) -> async_graphql::Result<MutationResult> {
        change(ctx, user_id, UserRequest::SetLicences { licences: licences.into() }).await
    }

    /// Ends a web session: one's own, or, with the right to configure users, anyone's within reach.
    async fn terminate_session(&self, ctx: &Context<'_>, session_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Session, session_id, AdminCommand::TerminateSession { session_id }).await
    }

    /// Revokes a device: every session on it is refused from then on.
    async fn revoke_device(&self, ctx: &Context<'_>, device_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Device, device_id, AdminCommand::RevokeDevice { device_id }).await
    }

    /// Assigns a call to a user; with applyToSimilar, every unassigned call of the extension too, and the
    /// extension (the call's, unless one is given) joins the user's.
    async fn assign_call(
        &self,
        ctx: &Context<'_>,
        call_id: Uuid,
        user_id: Uuid,
        extension: Option<String>,
        #[graphql(default)] apply_to_similar: bool,
    ) -> async_graphql::Result<MutationResult> {
        let command = AdminCommand::AssignCall { call_id, user_id, extension, apply_to_similar };
        run(ctx, Changed::Call, call_id, command).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_new_user_keeps_the_primary_group_first_and_collapses_repeated_extensions() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let input = CreateUserInput {
            id: None,
            tenant_id: None,
            username: "carol".into(),
            full_name: None,
            email: None,
            timezone: None,
            active: true,
            role_id: Uuid::nil(),
            groups: vec![a, b],
            managed_groups: vec![b, b],
            record_mode: RecordModeGql::Always,
            record_direction: RecordDirectionGql::Inbound,
            extensions: vec!["200".into(), "100".into(), "200".into()],
            login_enabled: false,
            password: None,
            must_change_password: false,
            screen_recording_login: None,
            licences: None,
        };
        let user = NewUser::from(input);
        assert_eq!(user.groups, vec![a, b]);
        assert_eq!(user.managed_groups, BTreeSet::from([b]));
        assert_eq!(user.extensions, BTreeSet::from(["100".to_owned(), "200".to_owned()]));
        assert_eq!(user.licences, Licences::default());
    }
}
