//! The user aggregate (keyed by user id): an account of a tenant (or, without a tenant, of the service
//! provider), with its role, groups, managed groups, recording settings, extensions, web access and
//! licences. The domain never sees a password: the write side hashes it and hands over a `SecretRef`; nor
//! the user's personal key pair (for holding encryption keys), of which it knows the fingerprint only.
//! Usernames are unique service-wide, extensions unique within the tenant (the write side's index).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Scope;
use crate::aggregate::{Aggregate, DomainEvent};
use crate::encryption_key::sha256_fingerprint;
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::names::{self, NameError};
use crate::recording_policy::{RecordDirection, RecordMode};
use crate::secret::SecretRef;

/// A user may hold this many extensions at most.
pub const MAX_EXTENSIONS: usize = 100;
/// A user may be a member (or manager) of this many groups at most.
pub const MAX_GROUPS: usize = 500;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    created: bool,
    user_id: Uuid,
    tenant_id: Option<Uuid>,
    username: String,
    full_name: Option<String>,
    email: Option<String>,
    timezone: Option<String>,
    active: bool,
    role_id: Uuid,
    groups: Vec<Uuid>,
    managed_groups: BTreeSet<Uuid>,
    recording: RecordingSettings,
    extensions: BTreeSet<String>,
    login_enabled: bool,
    password: Option<SecretRef>,
    must_change_password: bool,
    reset_link: Option<ResetLink>,
    screen_login: Option<ScreenLogin>,
    licences: Licences,
    #[serde(default)]
    key_pair_fingerprint: Option<String>,
}

/// Whether and which of a user's calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSettings {
    pub record: RecordMode,
    pub direction: RecordDirection,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self { record: RecordMode::TenantDefault, direction: RecordDirection::Both }
    }
}

/// The Windows login a screen-recording client reports for this user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenLogin {
    pub login: String,
    pub domain: Option<String>,
}

/// The add-on licences a user holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licences {
    pub audio: bool,
    pub screen: bool,
    pub evaluate: bool,
}

/// An outstanding single-use password reset link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetLink {
    pub token: SecretRef,
    pub expires_at: DateTime<Utc>,
}

/// A role as the write side found it when the command was given: its id and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleFacts {
    pub role_id: Uuid,
    pub scope: Scope,
}

/// Everything a new user is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub username: String,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
    pub active: bool,
    pub role_id: Uuid,
    /// The first group is the user's primary group (its time zone is the user's fallback).
    pub groups: Vec<Uuid>,
    pub managed_groups: BTreeSet<Uuid>,
    pub recording: RecordingSettings,
    pub extensions: BTreeSet<String>,
    pub login_enabled: bool,
    pub password: Option<SecretRef>,
    pub must_change_password: bool,
    pub screen_login: Option<ScreenLogin>,
    pub licences: Licences,
}

impl UserProfile {
    /// An active user with the given role and nothing else set: no groups, no extensions, no web login.
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

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// `tenant_id: None` creates one of the service provider's own users, who hold service-wide roles.
    /// `role` is what the write side found for `profile.role_id`.
    CreateUser {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        profile: Box<UserProfile>,
        role: RoleFacts,
    },
    RenameUser {
        username: String,
    },
    SetFullName {
        full_name: Option<String>,
    },
    SetEmail {
        email: Option<String>,
    },
    /// `None` falls back to the primary group's time zone, then the tenant's.
    SetTimezone {
        timezone: Option<String>,
    },
    ActivateUser,
    DeactivateUser,
    /// Managed groups the new role's scope cannot use are dropped.
    AssignRole {
        role: RoleFacts,
    },
    SetGroups {
        groups: Vec<Uuid>,
    },
    /// `role_scope`: the scope of the user's current role, as the write side found it.
    SetManagedGroups {
        groups: BTreeSet<Uuid>,
        role_scope: Scope,
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
    /// An administrator sets a new password (the "create a new password for the user" reset).
    SetPassword {
        password: SecretRef,
        must_change: bool,
    },
    /// An administrator sends the user a single-use link to set a new password.
    IssuePasswordResetLink {
        token: SecretRef,
        expires_at: DateTime<Utc>,
    },
    /// The user followed the link: `token` is the outstanding link's secret the presented token matched.
    CompletePasswordReset {
        token: SecretRef,
        password: SecretRef,
        at: DateTime<Utc>,
    },
    /// The user changed their own password (the write side checked the current one).
    ChangeOwnPassword {
        password: SecretRef,
    },
    SetMustChangePassword {
        required: bool,
    },
    SetScreenRecordingLogin {
        login: Option<ScreenLogin>,
    },
    SetLicences {
        licences: Licences,
    },
    /// The write side made the user's personal key pair (at sign-in, with the password at hand to wrap its
    /// private part); `fingerprint` is the hex SHA-256 of its public key. The same pair again is no event.
    RecordKeyPair {
        fingerprint: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserCreated { user_id: Uuid, tenant_id: Option<Uuid>, profile: Box<UserProfile> },
    UserRenamed { username: String },
    FullNameChanged { full_name: Option<String> },
    EmailChanged { email: Option<String> },
    UserTimezoneChanged { timezone: Option<String> },
    UserActivated,
    UserDeactivated,
    RoleAssigned { role_id: Uuid },
    GroupsChanged { groups: Vec<Uuid> },
    ManagedGroupsChanged { groups: BTreeSet<Uuid> },
    RecordingSettingsChanged { recording: RecordingSettings },
    ExtensionAdded { extension: String },
    ExtensionRemoved { extension: String },
    WebAccessChanged { login_enabled: bool },
    PasswordSet { password: SecretRef, must_change: bool },
    PasswordResetLinkIssued { token: SecretRef, expires_at: DateTime<Utc> },
    PasswordReset { password: SecretRef },
    PasswordChanged { password: SecretRef },
    MustChangePasswordSet { required: bool },
    ScreenRecordingLoginChanged { login: Option<ScreenLogin> },
    LicencesChanged { licences: Licences },
    UserKeyPairCreated { fingerprint: String },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::UserCreated { .. } => "UserCreated",
            Self::UserRenamed { .. } => "UserRenamed",
            Self::FullNameChanged { .. } => "FullNameChanged",
            Self::EmailChanged { .. } => "EmailChanged",
            Self::UserTimezoneChanged { .. } => "UserTimezoneChanged",
            Self::UserActivated => "UserActivated",
            Self::UserDeactivated => "UserDeactivated",
            Self::RoleAssigned { .. } => "RoleAssigned",
            Self::GroupsChanged { .. } => "GroupsChanged",
            Self::ManagedGroupsChanged { .. } => "ManagedGroupsChanged",
            Self::RecordingSettingsChanged { .. } => "RecordingSettingsChanged",
            Self::ExtensionAdded { .. } => "ExtensionAdded",
            Self::ExtensionRemoved { .. } => "ExtensionRemoved",
            Self::WebAccessChanged { .. } => "WebAccessChanged",
            Self::PasswordSet { .. } => "PasswordSet",
            Self::PasswordResetLinkIssued { .. } => "PasswordResetLinkIssued",
            Self::PasswordReset { .. } => "PasswordReset",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::MustChangePasswordSet { .. } => "MustChangePasswordSet",
            Self::ScreenRecordingLoginChanged { .. } => "ScreenRecordingLoginChanged",
            Self::LicencesChanged { .. } => "LicencesChanged",
            Self::UserKeyPairCreated { .. } => "UserKeyPairCreated",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    #[error("invalid username: {0}")]
    InvalidUsername(NameError),
    #[error("invalid full name: {0}")]
    InvalidFullName(NameError),
    #[error("{0}")]
    InvalidEmail(NameError),
    #[error("{0}")]
    InvalidTimezone(NameError),
    #[error("{0}")]
    InvalidExtension(NameError),
    #[error("invalid screen-recording login: {0}")]
    InvalidScreenLogin(NameError),
    #[error("a service-wide role is for the service provider's own users, not for a tenant's")]
    ServiceRoleInTenant,
    #[error("the service provider's own users hold service-wide roles")]
    TenantRoleOutsideTenant,
    #[error("the service provider's own users have no groups or extensions")]
    NoTenantForGroupsOrExtensions,
    #[error("only users whose role reaches managed groups or the whole tenant can manage groups")]
    ManagedGroupsNotAllowed,
    #[error("a user can hold at most {MAX_EXTENSIONS} extensions")]
    TooManyExtensions,
    #[error("a user can be in (or manage) at most {MAX_GROUPS} groups")]
    TooManyGroups,
    #[error("the user already has extension {0}")]
    ExtensionAlreadyHeld(String),
    #[error("the user is already active")]
    AlreadyActive,
    #[error("the user is already inactive")]
    AlreadyInactive,
    #[error("no password reset link is outstanding")]
    NoResetLink,
    #[error("this password reset link was replaced by a newer one or already used")]
    ResetLinkSuperseded,
    #[error("this password reset link has expired")]
    ResetLinkExpired,
    #[error("the user has no password to change; an administrator must set one")]
    NoPassword,
    #[error("a key pair fingerprint must be the SHA-256 digest of the public key as 64 hexadecimal digits")]
    InvalidKeyPairFingerprint,
}

impl User {
    pub fn exists(&self) -> bool {
        self.created
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn full_name(&self) -> Option<&str> {
        self.full_name.as_deref()
    }

    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    /// The user's own time zone setting (see [`User::effective_timezone`] for the fallbacks).
    pub fn timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }

    pub fn is_active(&self) -> bool {
        self.created && self.active
    }

    pub fn role_id(&self) -> Uuid {
        self.role_id
    }

    /// The user's groups, the primary group first.
    pub fn groups(&self) -> &[Uuid] {
        &self.groups
    }

    pub fn primary_group(&self) -> Option<Uuid> {
        self.groups.first().copied()
    }

    pub fn managed_groups(&self) -> &BTreeSet<Uuid> {
        &self.managed_groups
    }

    pub fn recording(&self) -> RecordingSettings {
        self.recording
    }

    pub fn extensions(&self) -> &BTreeSet<String> {
        &self.extensions
    }

    pub fn login_enabled(&self) -> bool {
        self.login_enabled
    }

    pub fn password(&self) -> Option<SecretRef> {
        self.password
    }

    pub fn must_change_password(&self) -> bool {
        self.must_change_password
    }

    pub fn reset_link(&self) -> Option<ResetLink> {
        self.reset_link
    }

    pub fn screen_login(&self) -> Option<&ScreenLogin> {
        self.screen_login.as_ref()
    }

    pub fn licences(&self) -> Licences {
        self.licences
    }

    /// The fingerprint of the user's personal key pair, which the user's grants of encryption keys wrap
    /// to; `None` before the write side makes one and after an administrator resets the password (the
    /// pair's private part is wrapped under the old password, so it is lost).
    pub fn key_pair_fingerprint(&self) -> Option<&str> {
        self.key_pair_fingerprint.as_deref()
    }

    /// The time zone the user sees times in: their own, else their primary group's, else the tenant's.
    pub fn effective_timezone<'a>(
        &'a self,
        primary_group_timezone: Option<&'a str>,
        tenant_timezone: &'a str,
    ) -> &'a str {
        self.timezone.as_deref().or(primary_group_timezone).unwrap_or(tenant_timezone)
    }

    fn existing(&self) -> Result<(), UserError> {
        if self.created {
            Ok(())
        } else {
            Err(UserError::NotFound)
        }
    }

    fn username_key(username: &str) -> IndexKey {
        IndexKey::name(Namespace::Username, username)
    }

    fn extension_keys<'a>(&self, extensions: impl IntoIterator<Item = &'a String>) -> Vec<IndexKey> {
        match self.tenant_id {
            Some(tenant) => {
                extensions.into_iter().map(|e| IndexKey::new(Namespace::Extension(tenant), e.clone())).collect()
            }
            None => Vec::new(),
        }
    }

    fn member_keys(&self, groups: &[Uuid]) -> Vec<IndexKey> {
        groups.iter().map(|g| IndexKey::new(Namespace::GroupMembers(*g), self.user_id.to_string())).collect()
    }

    fn holder_key(&self, role_id: Uuid) -> IndexKey {
        IndexKey::new(Namespace::RoleHolders(role_id), self.user_id.to_string())
    }
}

fn optional<T>(raw: Option<String>, check: impl Fn(&str) -> Result<T, NameError>) -> Result<Option<T>, NameError> {
    raw.filter(|value| !value.trim().is_empty()).map(|value| check(&value)).transpose()
}

/// The service provider's users (no tenant) hold service-wide roles, and only they do.
fn role_fits(tenant_id: Option<Uuid>, role: RoleFacts) -> Result<(), UserError> {
    match (tenant_id, role.scope) {
        (Some(_), Scope::ServiceWide) => Err(UserError::ServiceRoleInTenant),
        (None, scope) if scope != Scope::ServiceWide => Err(UserError::TenantRoleOutsideTenant),
        _ => Ok(()),
    }
}

fn may_manage_groups(scope: Scope) -> bool {
    matches!(scope, Scope::ManagedGroups | Scope::Tenant)
}

/// Groups without duplicates, in the order given (the first stays the primary group).
fn group_list(groups: Vec<Uuid>) -> Result<Vec<Uuid>, UserError> {
    let mut seen = BTreeSet::new();
    let groups: Vec<Uuid> = groups.into_iter().filter(|g| seen.insert(*g)).collect();
    if groups.len() > MAX_GROUPS {
        return Err(UserError::TooManyGroups);
    }
    Ok(groups)
}

fn extension_set(extensions: BTreeSet<String>) -> Result<BTreeSet<String>, UserError> {
    let extensions = extensions
        .iter()
        .map(|e| names::extension(e))
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(UserError::InvalidExtension)?;
    if extensions.len() > MAX_EXTENSIONS {
        return Err(UserError::TooManyExtensions);
    }
    Ok(extensions)
}

fn screen_login(login: Option<ScreenLogin>) -> Result<Option<ScreenLogin>, UserError> {
    login
        .filter(|l| !l.login.trim().is_empty())
        .map(|l| Ok(ScreenLogin { login: names::username(&l.login)?, domain: optional(l.domain, names::username)? }))
        .transpose()
        .map_err(UserError::InvalidScreenLogin)
}

impl User {
    fn create(
        &self,
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        profile: Box<UserProfile>,
        role: RoleFacts,
    ) -> Result<Vec<UserEvent>, UserError> {
        let profile = *profile;
        if self.created {
            return Err(UserError::AlreadyExists);
        }
        role_fits(tenant_id, role)?;
        let groups = group_list(profile.groups)?;
        let extensions = extension_set(profile.extensions)?;
        if tenant_id.is_none() && (!groups.is_empty() || !extensions.is_empty() || !profile.managed_groups.is_empty()) {
            return Err(UserError::NoTenantForGroupsOrExtensions);
        }
        if !profile.managed_groups.is_empty() && !may_manage_groups(role.scope) {
            return Err(UserError::ManagedGroupsNotAllowed);
        }
        if profile.managed_groups.len() > MAX_GROUPS {
            return Err(UserError::TooManyGroups);
        }
        let profile = UserProfile {
            username: names::username(&profile.username).map_err(UserError::InvalidUsername)?,
            full_name: optional(profile.full_name, names::display_name).map_err(UserError::InvalidFullName)?,
            email: optional(profile.email, names::email).map_err(UserError::InvalidEmail)?,
            timezone: optional(profile.timezone, names::timezone).map_err(UserError::InvalidTimezone)?,
            groups,
            extensions,
            screen_login: screen_login(profile.screen_login)?,
            role_id: role.role_id,
            ..profile
        };
        Ok(vec![UserEvent::UserCreated { user_id, tenant_id, profile: Box::new(profile) }])
    }

    fn set_extensions(&self, extensions: BTreeSet<String>) -> Result<Vec<UserEvent>, UserError> {
        let extensions = extension_set(extensions)?;
        if self.tenant_id.is_none() && !extensions.is_empty() {
            return Err(UserError::NoTenantForGroupsOrExtensions);
        }
        let removed =
            self.extensions.difference(&extensions).map(|e| UserEvent::ExtensionRemoved { extension: e.clone() });
        let added = extensions.difference(&self.extensions).map(|e| UserEvent::ExtensionAdded { extension: e.clone() });
        Ok(removed.chain(added).collect())
    }

    fn decide_password(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        use UserEvent as E;
        Ok(match command {
            C::SetPassword { password, must_change } => vec![E::PasswordSet { password, must_change }],
            C::IssuePasswordResetLink { token, expires_at } => vec![E::PasswordResetLinkIssued { token, expires_at }],
            C::CompletePasswordReset { token, password, at } => {
                let link = self.reset_link.ok_or(UserError::NoResetLink)?;
                if link.token != token {
                    return Err(UserError::ResetLinkSuperseded);
                }
                if at >= link.expires_at {
                    return Err(UserError::ResetLinkExpired);
                }
                vec![E::PasswordReset { password }]
            }
            C::ChangeOwnPassword { password } => {
                if self.password.is_none() {
                    return Err(UserError::NoPassword);
                }
                vec![E::PasswordChanged { password }]
            }
            C::SetMustChangePassword { required } => {
                if required == self.must_change_password {
                    vec![]
                } else {
                    vec![E::MustChangePasswordSet { required }]
                }
            }
            _ => vec![],
        })
    }
}

/// `event` when `changed`, nothing otherwise: setting what is already set is no event.
fn changed(changed: bool, event: UserEvent) -> Vec<UserEvent> {
    if changed {
        vec![event]
    } else {
        vec![]
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn decide(&self, command: UserCommand, _: &()) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        use UserEvent as E;
        if let C::CreateUser { user_id, tenant_id, profile, role } = command {
            return self.create(user_id, tenant_id, profile, role);
        }
        self.existing()?;
        Ok(match command {
            C::CreateUser { .. } => unreachable!("handled above"),
            C::RenameUser { username } => {
                let username = names::username(&username).map_err(UserError::InvalidUsername)?;
                changed(username != self.username, E::UserRenamed { username })
            }
            C::SetFullName { full_name } => {
                let full_name = optional(full_name, names::display_name).map_err(UserError::InvalidFullName)?;
                changed(full_name != self.full_name, E::FullNameChanged { full_name })
            }
            C::SetEmail { email } => {
                let email = optional(email, names::email).map_err(UserError::InvalidEmail)?;
                changed(email != self.email, E::EmailChanged { email })
            }
            C::SetTimezone { timezone } => {
                let timezone = optional(timezone, names::timezone).map_err(UserError::InvalidTimezone)?;
                changed(timezone != self.timezone, E::UserTimezoneChanged { timezone })
            }
            C::ActivateUser => {
                if self.active {
                    return Err(UserError::AlreadyActive);
                }
                vec![E::UserActivated]
            }
            C::DeactivateUser => {
                if !self.active {
                    return Err(UserError::AlreadyInactive);
                }
                vec![E::UserDeactivated]
            }
            C::AssignRole { role } => {
                role_fits(self.tenant_id, role)?;
                let mut events = changed(role.role_id != self.role_id, E::RoleAssigned { role_id: role.role_id });
                if !may_manage_groups(role.scope) && !self.managed_groups.is_empty() {
                    events.push(E::ManagedGroupsChanged { groups: BTreeSet::new() });
                }
                events
            }
            C::SetGroups { groups } => {
                let groups = group_list(groups)?;
                if self.tenant_id.is_none() && !groups.is_empty() {
                    return Err(UserError::NoTenantForGroupsOrExtensions);
                }
                changed(groups != self.groups, E::GroupsChanged { groups })
            }
            C::SetManagedGroups { groups, role_scope } => {
                if !groups.is_empty() && (!may_manage_groups(role_scope) || self.tenant_id.is_none()) {
                    return Err(UserError::ManagedGroupsNotAllowed);
                }
                if groups.len() > MAX_GROUPS {
                    return Err(UserError::TooManyGroups);
                }
                changed(groups != self.managed_groups, E::ManagedGroupsChanged { groups })
            }
            C::SetRecordingSettings { recording } => {
                changed(recording != self.recording, E::RecordingSettingsChanged { recording })
            }
            C::AddExtension { extension } => {
                let extension = names::extension(&extension).map_err(UserError::InvalidExtension)?;
                if self.extensions.contains(&extension) {
                    return Err(UserError::ExtensionAlreadyHeld(extension));
                }
                let mut extensions = self.extensions.clone();
                extensions.insert(extension);
                self.set_extensions(extensions)?
            }
            C::SetExtensions { extensions } => self.set_extensions(extensions)?,
            C::SetWebAccess { login_enabled } => {
                changed(login_enabled != self.login_enabled, E::WebAccessChanged { login_enabled })
            }
            C::SetScreenRecordingLogin { login } => {
                let login = screen_login(login)?;
                changed(login != self.screen_login, E::ScreenRecordingLoginChanged { login })
            }
            C::SetLicences { licences } => changed(licences != self.licences, E::LicencesChanged { licences }),
            C::RecordKeyPair { fingerprint } => {
                let fingerprint = sha256_fingerprint(&fingerprint).ok_or(UserError::InvalidKeyPairFingerprint)?;
                changed(self.key_pair_fingerprint.as_ref() != Some(&fingerprint), E::UserKeyPairCreated { fingerprint })
            }
            password @ (C::SetPassword { .. }
            | C::IssuePasswordResetLink { .. }
            | C::CompletePasswordReset { .. }
            | C::ChangeOwnPassword { .. }
            | C::SetMustChangePassword { .. }) => self.decide_password(password)?,
        })
    }

    fn apply(&mut self, event: UserEvent) {
        use UserEvent as E;
        match event {
            E::UserCreated { user_id, tenant_id, profile } => {
                let profile = *profile;
                self.created = true;
                self.user_id = user_id;
                self.tenant_id = tenant_id;
                self.username = profile.username;
                self.full_name = profile.full_name;
                self.email = profile.email;
                self.timezone = profile.timezone;
                self.active = profile.active;
                self.role_id = profile.role_id;
                self.groups = profile.groups;
                self.managed_groups = profile.managed_groups;
                self.recording = profile.recording;
                self.extensions = profile.extensions;
                self.login_enabled = profile.login_enabled;
                self.password = profile.password;
                self.must_change_password = profile.must_change_password;
                self.screen_login = profile.screen_login;
                self.licences = profile.licences;
            }
            E::UserRenamed { username } => self.username = username,
            E::FullNameChanged { full_name } => self.full_name = full_name,
            E::EmailChanged { email } => self.email = email,
            E::UserTimezoneChanged { timezone } => self.timezone = timezone,
            E::UserActivated => self.active = true,
            E::UserDeactivated => self.active = false,
            E::RoleAssigned { role_id } => self.role_id = role_id,
            E::GroupsChanged { groups } => self.groups = groups,
            E::ManagedGroupsChanged { groups } => self.managed_groups = groups,
            E::RecordingSettingsChanged { recording } => self.recording = recording,
            E::ExtensionAdded { extension } => {
                self.extensions.insert(extension);
            }
            E::ExtensionRemoved { extension } => {
                self.extensions.remove(&extension);
            }
            E::WebAccessChanged { login_enabled } => self.login_enabled = login_enabled,
            // A reset by an administrator loses the key pair, whose private part the old password wrapped;
            // the user's own change keeps it (the write side wraps it again under the new password).
            E::PasswordSet { password, must_change } => {
                self.password = Some(password);
                self.must_change_password = must_change;
                self.reset_link = None;
                self.key_pair_fingerprint = None;
            }
            E::PasswordResetLinkIssued { token, expires_at } => self.reset_link = Some(ResetLink { token, expires_at }),
            E::PasswordReset { password } => {
                self.password = Some(password);
                self.must_change_password = false;
                self.reset_link = None;
                self.key_pair_fingerprint = None;
            }
            E::PasswordChanged { password } => {
                self.password = Some(password);
                self.must_change_password = false;
                self.reset_link = None;
            }
            E::MustChangePasswordSet { required } => self.must_change_password = required,
            E::ScreenRecordingLoginChanged { login } => self.screen_login = login,
            E::LicencesChanged { licences } => self.licences = licences,
            E::UserKeyPairCreated { fingerprint } => self.key_pair_fingerprint = Some(fingerprint),
        }
    }

    fn index_changes(&self, event: &UserEvent) -> Vec<IndexChange> {
        use UserEvent as E;
        match event {
            E::UserCreated { user_id, tenant_id, profile } => {
                let created = User { user_id: *user_id, tenant_id: *tenant_id, ..User::default() };
                let keys = std::iter::once(Self::username_key(&profile.username))
                    .chain(std::iter::once(created.holder_key(profile.role_id)))
                    .chain(created.member_keys(&profile.groups))
                    .chain(created.extension_keys(&profile.extensions));
                keys.map(IndexChange::Claim).collect()
            }
            E::UserRenamed { username } => {
                moves(&[Self::username_key(&self.username)], &[Self::username_key(username)])
            }
            E::RoleAssigned { role_id } => moves(&[self.holder_key(self.role_id)], &[self.holder_key(*role_id)]),
            E::GroupsChanged { groups } => moves(&self.member_keys(&self.groups), &self.member_keys(groups)),
            E::ExtensionAdded { extension } => {
                self.extension_keys([extension]).into_iter().map(IndexChange::Claim).collect()
            }
            E::ExtensionRemoved { extension } => {
                self.extension_keys([extension]).into_iter().map(IndexChange::Release).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::PredefinedRole;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const ALICE: Uuid = Uuid::from_u128(0xA11CE);
    const SALES: Uuid = Uuid::from_u128(100);
    const SUPPORT: Uuid = Uuid::from_u128(200);

    fn role(role: PredefinedRole) -> RoleFacts {
        RoleFacts { role_id: role.role_id(), scope: role.grants().scope }
    }

    fn profile() -> UserProfile {
        let mut profile = UserProfile::new("alice", PredefinedRole::Agent.role_id());
        profile.groups = vec![SALES];
        profile.extensions = BTreeSet::from(["2001".to_owned()]);
        profile
    }

    fn create(profile: UserProfile, role: RoleFacts) -> UserCommand {
        UserCommand::CreateUser { user_id: ALICE, tenant_id: Some(TENANT), profile: Box::new(profile), role }
    }

    fn created() -> Vec<UserEvent> {
        vec![UserEvent::UserCreated { user_id: ALICE, tenant_id: Some(TENANT), profile: Box::new(profile()) }]
    }

    fn after(more: impl IntoIterator<Item = UserEvent>) -> Vec<UserEvent> {
        created().into_iter().chain(more).collect()
    }

    fn secret(n: u128) -> SecretRef {
        SecretRef(Uuid::from_u128(n))
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    const PAIR: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    const NEW_PAIR: &str = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";

    fn key_pair(fingerprint: &str) -> UserEvent {
        UserEvent::UserKeyPairCreated { fingerprint: fingerprint.into() }
    }

    fn record_key_pair(fingerprint: &str) -> UserCommand {
        UserCommand::RecordKeyPair { fingerprint: fingerprint.into() }
    }

    #[test]
    fn a_user_is_created_with_normalised_fields() {
        let mut messy = profile();
        messy.username = " alice ".into();
        messy.email = Some(" alice@example.com ".into());
        messy.full_name = Some("  ".into());
        messy.timezone = Some("Europe/Paris".into());
        messy.groups = vec![SALES, SUPPORT, SALES];
        let events = when::<User>([], create(messy, role(PredefinedRole::Agent)), &()).expect("created");
        let UserEvent::UserCreated { profile, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!(profile.username, "alice");
        assert_eq!(profile.email.as_deref(), Some("alice@example.com"));
        assert_eq!(profile.full_name, None);
        assert_eq!(profile.groups, vec![SALES, SUPPORT]);
    }

    #[test]
    fn a_user_cannot_be_created_twice_or_with_invalid_fields() {
        assert_eq!(
            when::<User>(created(), create(profile(), role(PredefinedRole::Agent)), &()),
            Err(UserError::AlreadyExists)
        );
        let mut bad = profile();
        bad.username = "a b".into();
        assert_eq!(
            when::<User>([], create(bad, role(PredefinedRole::Agent)), &()),
            Err(UserError::InvalidUsername(NameError::WhiteSpace))
        );
        let mut bad = profile();
        bad.email = Some("nope".into());
        assert!(matches!(
            when::<User>([], create(bad, role(PredefinedRole::Agent)), &()),
            Err(UserError::InvalidEmail(_))
        ));
        let mut bad = profile();
        bad.extensions.insert("20 01".into());
        assert!(matches!(
            when::<User>([], create(bad, role(PredefinedRole::Agent)), &()),
            Err(UserError::InvalidExtension(_))
        ));
        let mut bad = profile();
        bad.extensions = (0..=MAX_EXTENSIONS).map(|n| n.to_string()).collect();
        assert_eq!(when::<User>([], create(bad, role(PredefinedRole::Agent)), &()), Err(UserError::TooManyExtensions));
    }

    #[test]
    fn service_wide_roles_belong_to_the_providers_users_only() {
        let mut root = UserProfile::new("root", PredefinedRole::RootAdministrator.role_id());
        let in_tenant = create(root.clone(), role(PredefinedRole::RootAdministrator));
        assert_eq!(when::<User>([], in_tenant, &()), Err(UserError::ServiceRoleInTenant));
        let provider = |profile: UserProfile, role| UserCommand::CreateUser {
            user_id: ALICE,
            tenant_id: None,
            profile: Box::new(profile),
            role,
        };
        assert!(when::<User>([], provider(root.clone(), role(PredefinedRole::RootAdministrator)), &()).is_ok());
        assert_eq!(
            when::<User>([], provider(root.clone(), role(PredefinedRole::Administrator)), &()),
            Err(UserError::TenantRoleOutsideTenant)
        );
        root.extensions.insert("1".into());
        assert_eq!(
            when::<User>([], provider(root, role(PredefinedRole::RootAdministrator)), &()),
            Err(UserError::NoTenantForGroupsOrExtensions)
        );
        let promote = UserCommand::AssignRole { role: role(PredefinedRole::RootAdministrator) };
        assert_eq!(when::<User>(created(), promote, &()), Err(UserError::ServiceRoleInTenant));
    }

    #[test]
    fn only_supervisors_and_administrators_manage_groups() {
        let mut agent = profile();
        agent.managed_groups = BTreeSet::from([SALES]);
        assert_eq!(
            when::<User>([], create(agent.clone(), role(PredefinedRole::Agent)), &()),
            Err(UserError::ManagedGroupsNotAllowed)
        );
        agent.role_id = PredefinedRole::Supervisor.role_id();
        assert!(when::<User>([], create(agent, role(PredefinedRole::Supervisor)), &()).is_ok());
        let manage = |scope| UserCommand::SetManagedGroups { groups: BTreeSet::from([SUPPORT]), role_scope: scope };
        assert_eq!(when::<User>(created(), manage(Scope::OwnCalls), &()), Err(UserError::ManagedGroupsNotAllowed));
        assert_eq!(
            when::<User>(created(), manage(Scope::ManagedGroups), &()),
            Ok(vec![UserEvent::ManagedGroupsChanged { groups: BTreeSet::from([SUPPORT]) }])
        );
    }

    #[test]
    fn a_role_that_cannot_manage_groups_drops_the_managed_groups() {
        let supervisor = after([
            UserEvent::RoleAssigned { role_id: PredefinedRole::Supervisor.role_id() },
            UserEvent::ManagedGroupsChanged { groups: BTreeSet::from([SALES]) },
        ]);
        assert_eq!(
            when::<User>(supervisor, UserCommand::AssignRole { role: role(PredefinedRole::Agent) }, &()),
            Ok(vec![
                UserEvent::RoleAssigned { role_id: PredefinedRole::Agent.role_id() },
                UserEvent::ManagedGroupsChanged { groups: BTreeSet::new() },
            ])
        );
        assert_eq!(
            when::<User>(created(), UserCommand::AssignRole { role: role(PredefinedRole::Agent) }, &()),
            Ok(vec![])
        );
    }

    #[test]
    fn profile_changes_are_events_only_when_something_changes() {
        let cases = [
            (
                UserCommand::RenameUser { username: "alice2".into() },
                Some(UserEvent::UserRenamed { username: "alice2".into() }),
            ),
            (UserCommand::RenameUser { username: "alice".into() }, None),
            (
                UserCommand::SetFullName { full_name: Some("Alice A".into()) },
                Some(UserEvent::FullNameChanged { full_name: Some("Alice A".into()) }),
            ),
            (UserCommand::SetEmail { email: None }, None),
            (
                UserCommand::SetEmail { email: Some("a@b.c".into()) },
                Some(UserEvent::EmailChanged { email: Some("a@b.c".into()) }),
            ),
            (
                UserCommand::SetTimezone { timezone: Some("UTC".into()) },
                Some(UserEvent::UserTimezoneChanged { timezone: Some("UTC".into()) }),
            ),
            (UserCommand::SetGroups { groups: vec![SALES] }, None),
            (
                UserCommand::SetGroups { groups: vec![SUPPORT, SALES] },
                Some(UserEvent::GroupsChanged { groups: vec![SUPPORT, SALES] }),
            ),
            (UserCommand::SetRecordingSettings { recording: RecordingSettings::default() }, None),
            (
                UserCommand::SetWebAccess { login_enabled: true },
                Some(UserEvent::WebAccessChanged { login_enabled: true }),
            ),
            (
                UserCommand::SetLicences { licences: Licences { audio: true, screen: false, evaluate: true } },
                Some(UserEvent::LicencesChanged { licences: Licences { audio: true, screen: false, evaluate: true } }),
            ),
            (
                UserCommand::SetScreenRecordingLogin {
                    login: Some(ScreenLogin { login: " ALICE ".into(), domain: Some("CORP".into()) }),
                },
                Some(UserEvent::ScreenRecordingLoginChanged {
                    login: Some(ScreenLogin { login: "ALICE".into(), domain: Some("CORP".into()) }),
                }),
            ),
            (UserCommand::SetMustChangePassword { required: false }, None),
        ];
        for (command, event) in cases {
            assert_eq!(when::<User>(created(), command.clone(), &()), Ok(event.into_iter().collect()), "{command:?}");
        }
    }

    #[test]
    fn activation_toggles_once_each_way() {
        assert_eq!(when::<User>(created(), UserCommand::ActivateUser, &()), Err(UserError::AlreadyActive));
        assert_eq!(when::<User>(created(), UserCommand::DeactivateUser, &()), Ok(vec![UserEvent::UserDeactivated]));
        let inactive = after([UserEvent::UserDeactivated]);
        assert_eq!(when::<User>(inactive.clone(), UserCommand::DeactivateUser, &()), Err(UserError::AlreadyInactive));
        assert!(!given::<User>(inactive).is_active());
    }

    #[test]
    fn extensions_are_added_and_replaced_as_individual_events() {
        assert_eq!(
            when::<User>(created(), UserCommand::AddExtension { extension: " 2002 ".into() }, &()),
            Ok(vec![UserEvent::ExtensionAdded { extension: "2002".into() }])
        );
        assert_eq!(
            when::<User>(created(), UserCommand::AddExtension { extension: "2001".into() }, &()),
            Err(UserError::ExtensionAlreadyHeld("2001".into()))
        );
        let set = UserCommand::SetExtensions { extensions: BTreeSet::from(["3001".to_owned()]) };
        assert_eq!(
            when::<User>(created(), set, &()),
            Ok(vec![
                UserEvent::ExtensionRemoved { extension: "2001".into() },
                UserEvent::ExtensionAdded { extension: "3001".into() }
            ])
        );
    }

    #[test]
    fn the_index_holds_username_role_groups_and_extensions() {
        let who = ALICE.to_string();
        let claims = User::default().index_changes(&created()[0]);
        assert_eq!(
            claims,
            vec![
                IndexChange::Claim(IndexKey::name(Namespace::Username, "alice")),
                IndexChange::Claim(IndexKey::new(Namespace::RoleHolders(PredefinedRole::Agent.role_id()), who.clone())),
                IndexChange::Claim(IndexKey::new(Namespace::GroupMembers(SALES), who.clone())),
                IndexChange::Claim(IndexKey::new(Namespace::Extension(TENANT), "2001")),
            ]
        );
        let user = given::<User>(created());
        assert_eq!(
            user.index_changes(&UserEvent::GroupsChanged { groups: vec![SUPPORT] }),
            vec![
                IndexChange::Release(IndexKey::new(Namespace::GroupMembers(SALES), who.clone())),
                IndexChange::Claim(IndexKey::new(Namespace::GroupMembers(SUPPORT), who.clone())),
            ]
        );
        assert_eq!(
            user.index_changes(&UserEvent::RoleAssigned { role_id: PredefinedRole::Supervisor.role_id() }),
            vec![
                IndexChange::Release(IndexKey::new(
                    Namespace::RoleHolders(PredefinedRole::Agent.role_id()),
                    who.clone()
                )),
                IndexChange::Claim(IndexKey::new(Namespace::RoleHolders(PredefinedRole::Supervisor.role_id()), who)),
            ]
        );
        assert_eq!(
            user.index_changes(&UserEvent::ExtensionRemoved { extension: "2001".into() }),
            vec![IndexChange::Release(IndexKey::new(Namespace::Extension(TENANT), "2001"))]
        );
        assert_eq!(
            user.index_changes(&UserEvent::UserRenamed { username: "Bob".into() }),
            vec![
                IndexChange::Release(IndexKey::name(Namespace::Username, "alice")),
                IndexChange::Claim(IndexKey::name(Namespace::Username, "bob")),
            ]
        );
    }

    #[test]
    fn an_administrator_sets_a_password_and_may_require_a_change() {
        let set = UserCommand::SetPassword { password: secret(1), must_change: true };
        assert_eq!(
            when::<User>(created(), set, &()),
            Ok(vec![UserEvent::PasswordSet { password: secret(1), must_change: true }])
        );
        let user = given::<User>(after([UserEvent::PasswordSet { password: secret(1), must_change: true }]));
        assert_eq!((user.password(), user.must_change_password()), (Some(secret(1)), true));
    }

    #[test]
    fn a_reset_link_works_once_and_only_before_it_expires() {
        let issued = after([UserEvent::PasswordResetLinkIssued { token: secret(9), expires_at: at(3600) }]);
        let complete = |token, when| UserCommand::CompletePasswordReset { token, password: secret(2), at: when };
        assert_eq!(
            when::<User>(issued.clone(), complete(secret(9), at(10)), &()),
            Ok(vec![UserEvent::PasswordReset { password: secret(2) }])
        );
        assert_eq!(when::<User>(issued.clone(), complete(secret(9), at(3600)), &()), Err(UserError::ResetLinkExpired));
        assert_eq!(when::<User>(issued.clone(), complete(secret(8), at(10)), &()), Err(UserError::ResetLinkSuperseded));
        let used: Vec<UserEvent> =
            issued.into_iter().chain([UserEvent::PasswordReset { password: secret(2) }]).collect();
        assert_eq!(when::<User>(used, complete(secret(9), at(10)), &()), Err(UserError::NoResetLink));
        assert_eq!(when::<User>(created(), complete(secret(9), at(10)), &()), Err(UserError::NoResetLink));
    }

    #[test]
    fn a_new_password_clears_the_must_change_flag_and_any_reset_link() {
        let events = after([
            UserEvent::PasswordSet { password: secret(1), must_change: true },
            UserEvent::PasswordResetLinkIssued { token: secret(9), expires_at: at(3600) },
        ]);
        assert_eq!(
            when::<User>(events.clone(), UserCommand::ChangeOwnPassword { password: secret(3) }, &()),
            Ok(vec![UserEvent::PasswordChanged { password: secret(3) }])
        );
        let changed = given::<User>(events.into_iter().chain([UserEvent::PasswordChanged { password: secret(3) }]));
        assert!(!changed.must_change_password());
        assert_eq!(changed.reset_link(), None);
        assert_eq!(
            when::<User>(created(), UserCommand::ChangeOwnPassword { password: secret(3) }, &()),
            Err(UserError::NoPassword)
        );
    }

    #[test]
    fn a_users_key_pair_is_recorded_by_its_fingerprint_once() {
        assert_eq!(when::<User>(created(), record_key_pair(&PAIR.to_ascii_uppercase()), &()), Ok(vec![key_pair(PAIR)]));
        assert_eq!(when::<User>(after([key_pair(PAIR)]), record_key_pair(PAIR), &()), Ok(vec![]));
        assert_eq!(when::<User>(after([key_pair(PAIR)]), record_key_pair(NEW_PAIR), &()), Ok(vec![key_pair(NEW_PAIR)]));
        for bad in ["", "2c26b46b", &PAIR.replace('2', "z")] {
            assert_eq!(
                when::<User>(created(), record_key_pair(bad), &()),
                Err(UserError::InvalidKeyPairFingerprint),
                "{bad:?}"
            );
        }
        assert_eq!(when::<User>([], record_key_pair(PAIR), &()), Err(UserError::NotFound));
        assert_eq!(given::<User>(created()).key_pair_fingerprint(), None);
        assert_eq!(given::<User>(after([key_pair(PAIR)])).key_pair_fingerprint(), Some(PAIR));
    }

    #[test]
    fn an_administrators_password_reset_loses_the_key_pair_but_the_users_own_change_keeps_it() {
        let set = UserEvent::PasswordSet { password: secret(1), must_change: true };
        let reset = UserEvent::PasswordReset { password: secret(2) };
        for lost in
            [vec![set], vec![UserEvent::PasswordResetLinkIssued { token: secret(9), expires_at: at(60) }, reset]]
        {
            let events = after(std::iter::once(key_pair(PAIR)).chain(lost));
            assert_eq!(given::<User>(events.clone()).key_pair_fingerprint(), None);
            assert_eq!(when::<User>(events, record_key_pair(PAIR), &()), Ok(vec![key_pair(PAIR)]), "a new pair");
        }
        let changed = after([key_pair(PAIR), UserEvent::PasswordChanged { password: secret(3) }]);
        assert_eq!(given::<User>(changed).key_pair_fingerprint(), Some(PAIR));
    }

    #[test]
    fn an_unknown_user_refuses_every_change() {
        assert_eq!(when::<User>([], UserCommand::DeactivateUser, &()), Err(UserError::NotFound));
        assert_eq!(
            when::<User>([], UserCommand::SetPassword { password: secret(1), must_change: false }, &()),
            Err(UserError::NotFound)
        );
    }

    #[test]
    fn the_timezone_falls_back_to_the_primary_group_then_the_tenant() {
        let user = given::<User>(created());
        assert_eq!(user.effective_timezone(Some("Asia/Tokyo"), "UTC"), "Asia/Tokyo");
        assert_eq!(user.effective_timezone(None, "Europe/Paris"), "Europe/Paris");
        let own = given::<User>(after([UserEvent::UserTimezoneChanged { timezone: Some("America/Chicago".into()) }]));
        assert_eq!(own.effective_timezone(Some("Asia/Tokyo"), "UTC"), "America/Chicago");
        assert_eq!(user.primary_group(), Some(SALES));
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_user() {
        let (state, events) = run::<User>(
            [
                create(profile(), role(PredefinedRole::Agent)),
                UserCommand::AssignRole { role: role(PredefinedRole::Supervisor) },
                UserCommand::SetManagedGroups { groups: BTreeSet::from([SUPPORT]), role_scope: Scope::ManagedGroups },
                UserCommand::AddExtension { extension: "2002".into() },
                UserCommand::SetPassword { password: secret(1), must_change: true },
                UserCommand::ChangeOwnPassword { password: secret(2) },
                record_key_pair(PAIR),
                UserCommand::DeactivateUser,
            ],
            &(),
        );
        assert_eq!(given::<User>(events), state);
        assert_eq!(state.role_id(), PredefinedRole::Supervisor.role_id());
        assert_eq!(state.extensions().len(), 2);
        assert!(!state.is_active());
        assert_eq!(state.password(), Some(secret(2)));
        assert_eq!(state.key_pair_fingerprint(), Some(PAIR));
    }
}
