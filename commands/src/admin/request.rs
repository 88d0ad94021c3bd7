//! What callers ask of the administration service. Where a domain command needs nothing from outside, the
//! request carries it as it is; where it needs facts the write side looks up (a role's scope, how many hold a
//! role), secrets (passwords, credentials) or ids it makes, the request says only what the caller knows, so a
//! caller can never hand in a fact or a secret reference of its own making.

use std::collections::BTreeSet;

use recall_domain::access::Grants;
use recall_domain::custom_field::CustomFieldCommand;
use recall_domain::evaluation_form::FormDefinition;
use recall_domain::field_visibility::FieldVisibilityCommand;
use recall_domain::tenant::TenantCommand;
use recall_domain::user::{Licences, RecordingSettings, ScreenLogin};
use secrecy::SecretString;
use uuid::Uuid;

/// One administrative action, with the id of what it acts on. Ids of things to be created are chosen by
/// the caller (`Uuid::now_v7()`), so a retried request cannot create twice.
#[derive(Debug)]
pub enum AdminCommand {
    Tenant {
        tenant_id: Uuid,
        command: TenantCommand,
    },
    Role {
        role_id: Uuid,
        request: RoleRequest,
    },
    Group {
        group_id: Uuid,
        request: GroupRequest,
    },
    User {
        user_id: Uuid,
        request: UserRequest,
    },
    /// Ends a session: the owner's own, or, with the right to configure users, anyone's within reach.
    TerminateSession {
        session_id: Uuid,
    },
    /// Revokes a device: every session on it is refused from then on.
    RevokeDevice {
        device_id: Uuid,
    },
    /// Starts acting as another user, on the caller's session (a verification code may be asked first).
    StartImpersonation {
        user_id: Uuid,
    },
    VerifyImpersonation {
        code: SecretString,
    },
    StopImpersonation,
    /// The caller changes their own password.
    ChangeOwnPassword {
        current: SecretString,
        new: SecretString,
    },
    /// Assigns a call to a user; with `apply_to_similar`, every other unassigned call with the same extension
    /// too, and the extension joins the user's profile.
    AssignCall {
        call_id: Uuid,
        user_id: Uuid,
        extension: Option<String>,
        apply_to_similar: bool,
    },
    StorageTarget {
        target_id: Uuid,
        request: StorageTargetRequest,
    },
    CustomField {
        field_id: Uuid,
        command: CustomFieldCommand,
    },
    FieldVisibility {
        command: FieldVisibilityCommand,
    },
    EvaluationForm {
        form_id: Uuid,
        request: EvaluationFormRequest,
    },
    /// Issues an API token for a program acting as `user_id` (oneself, or a user one configures); the token
    /// is in the outcome, once.
    IssueApiToken {
        token_id: Uuid,
        user_id: Uuid,
        name: String,
        expires_in_days: Option<u32>,
    },
    RevokeApiToken {
        token_id: Uuid,
    },
    /// A tenant's file-encryption key: generate, import, grant, revoke, export, rename, activate, destroy.
    EncryptionKey {
        key_id: Uuid,
        request: super::EncryptionKeyRequest,
    },
    /// A backup or restore job: define, edit, delete, run now.
    Job {
        job_id: Uuid,
        request: super::JobRequest,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoleRequest {
    Define { name: String, grants: Grants },
    Rename { name: String },
    ChangeGrants { grants: Grants },
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupRequest {
    Create { tenant_id: Uuid, name: String, timezone: Option<String> },
    Rename { name: String },
    SetTimezone { timezone: Option<String> },
    Delete,
}

/// A new user as an administrator enters it.
#[derive(Debug)]
pub struct NewUser {
    pub username: String,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
    pub active: bool,
    pub role_id: Uuid,
    /// The first group is the primary group.
    pub groups: Vec<Uuid>,
    pub managed_groups: BTreeSet<Uuid>,
    pub recording: RecordingSettings,
    pub extensions: BTreeSet<String>,
    pub login_enabled: bool,
    pub password: Option<SecretString>,
    pub must_change_password: bool,
    pub screen_login: Option<ScreenLogin>,
    pub licences: Licences,
}

impl NewUser {
    /// An active user with a role and nothing else: no groups, extensions, web login or password.
    pub fn new(username: impl Into<String>, role_id: Uuid) -> Self {
        Self {
            username: username.into(),
            full_name: None,
            email: None,
            timezone: None,
            active: true,
            role_id,
            groups: Vec::new(),
            managed_groups: BTreeSet::new(),
            recording: RecordingSettings::default(),
            extensions: BTreeSet::new(),
            login_enabled: false,
            password: None,
            must_change_password: false,
            screen_login: None,
            licences: Licences::default(),
        }
    }
}

#[derive(Debug)]
pub enum UserRequest {
    /// `tenant_id: None` creates one of the service provider's own users.
    Create {
        tenant_id: Option<Uuid>,
        user: Box<NewUser>,
    },
    Rename {
        username: String,
    },
    SetFullName {
        full_name: Option<String>,
    },
    SetEmail {
        email: Option<String>,
    },
    SetTimezone {
        timezone: Option<String>,
    },
    Activate,
    Deactivate,
    AssignRole {
        role_id: Uuid,
    },
    SetGroups {
        groups: Vec<Uuid>,
    },
    SetManagedGroups {
        groups: BTreeSet<Uuid>,
    },
    SetRecordingSettings {
        recording: RecordingSettings,
    },
    AddExtension {
        extension: String,
    },
    SetExtensions {
        extensions: BTreeSet<String>,
    },
    SetWebAccess {
        login_enabled: bool,
    },
    /// "Create a new password for the user".
    SetPassword {
        password: SecretString,
        must_change: bool,
    },
    /// "Send the user a reset password link": the link's token is returned once, in the outcome.
    IssuePasswordResetLink,
    SetMustChangePassword {
        required: bool,
    },
    SetScreenRecordingLogin {
        login: Option<ScreenLogin>,
    },
    SetLicences {
        licences: Licences,
    },
}

/// A storage target's settings as an administrator enters them, secrets in clear. On an edit, a secret
/// left out (`None`) keeps the one the target has.
#[derive(Debug)]
pub enum StorageSettings {
    LocalFilesystem {
        path: String,
    },
    S3 {
        endpoint: Option<String>,
        region: String,
        bucket: String,
        prefix: Option<String>,
        access_key_id: String,
        secret_access_key: Option<SecretString>,
        path_style: bool,
    },
    Ftp {
        host: String,
        port: u16,
        username: String,
        password: Option<SecretString>,
        directory: String,
        tls: bool,
    },
    Sftp {
        host: String,
        port: u16,
        username: String,
        password: Option<SecretString>,
        private_key: Option<SecretString>,
        directory: String,
        host_key_fingerprint: Option<String>,
    },
}

#[derive(Debug)]
pub enum StorageTargetRequest {
    Add {
        tenant_id: Uuid,
        name: String,
        settings: StorageSettings,
    },
    Edit {
        name: String,
        settings: StorageSettings,
    },
    /// Tests the connection with the stored settings and records the result.
    Test,
    Delete,
    /// Undoes a delete.
    Restore,
    /// Removes a deleted target for good, with its credentials.
    Purge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationFormRequest {
    Create {
        tenant_id: Uuid,
        definition: FormDefinition,
    },
    Revise {
        definition: FormDefinition,
    },
    /// Creates this form (the request's id) as a copy of `source_id` named `name`.
    Clone {
        source_id: Uuid,
        name: String,
    },
    Delete,
    Restore,
    Purge,
}

/// The name of a request's variant, for the audit trail: `RenameTenant`, `AssignRole`, …
pub(crate) fn variant_name(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    text.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().to_owned()
}

impl AdminCommand {
    /// What the command is called in the audit trail, e.g. `User.AssignRole`.
    pub fn name(&self) -> String {
        match self {
            Self::Tenant { command, .. } => format!("Tenant.{}", variant_name(command)),
            Self::Role { request, .. } => format!("Role.{}", variant_name(request)),
            Self::Group { request, .. } => format!("Group.{}", variant_name(request)),
            Self::User { request, .. } => format!("User.{}", variant_name(request)),
            Self::StorageTarget { request, .. } => format!("StorageTarget.{}", variant_name(request)),
            Self::CustomField { command, .. } => format!("CustomField.{}", variant_name(command)),
            Self::FieldVisibility { command } => format!("FieldVisibility.{}", variant_name(command)),
            Self::EvaluationForm { request, .. } => format!("EvaluationForm.{}", variant_name(request)),
            Self::EncryptionKey { request, .. } => format!("EncryptionKey.{}", variant_name(request)),
            Self::Job { request, .. } => format!("Job.{}", variant_name(request)),
            other => variant_name(other),
        }
    }

    /// What the command acts on, e.g. `User/0192…`.
    pub fn target(&self) -> String {
        match self {
            Self::Tenant { tenant_id, .. } => format!("Tenant/{tenant_id}"),
            Self::Role { role_id, .. } => format!("Role/{role_id}"),
            Self::Group { group_id, .. } => format!("Group/{group_id}"),
            Self::User { user_id, .. } | Self::StartImpersonation { user_id } => format!("User/{user_id}"),
            Self::TerminateSession { session_id } => format!("Session/{session_id}"),
            Self::RevokeDevice { device_id } => format!("Device/{device_id}"),
            Self::VerifyImpersonation { .. } | Self::StopImpersonation | Self::ChangeOwnPassword { .. } => {
                "Session".to_owned()
            }
            Self::AssignCall { call_id, .. } => format!("Call/{call_id}"),
            Self::StorageTarget { target_id, .. } => format!("StorageTarget/{target_id}"),
            Self::CustomField { field_id, .. } => format!("CustomField/{field_id}"),
            Self::FieldVisibility { command } => {
                let FieldVisibilityCommand::SetLayoutVisibility { tenant_id, .. } = command;
                format!("FieldVisibility/{tenant_id}")
            }
            Self::EvaluationForm { form_id, .. } => format!("EvaluationForm/{form_id}"),
            Self::IssueApiToken { token_id, .. } | Self::RevokeApiToken { token_id } => format!("ApiToken/{token_id}"),
            Self::EncryptionKey { key_id, .. } => format!("EncryptionKey/{key_id}"),
            Self::Job { job_id, .. } => format!("Job/{job_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_come_from_the_variants_and_never_show_secrets() {
        let id = Uuid::nil();
        let set = AdminCommand::User {
            user_id: id,
            request: UserRequest::SetPassword { password: SecretString::from("hunter2hunter2"), must_change: true },
        };
        assert_eq!(set.name(), "User.SetPassword");
        assert_eq!(set.target(), format!("User/{id}"));
        assert!(!format!("{set:?}").contains("hunter2"));
        assert_eq!(AdminCommand::StopImpersonation.name(), "StopImpersonation");
        let rename = AdminCommand::Tenant { tenant_id: id, command: TenantCommand::DeactivateTenant };
        assert_eq!(rename.name(), "Tenant.DeactivateTenant");
    }
}
