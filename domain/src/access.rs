//! Who may do what: permissions, access scopes, and the pre-defined roles a new installation starts with.
//! The domain states the rules; the command service applies them to every command before it is decided.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An operation a role may permit. The serialized names are frozen once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ConfigureSystem,
    ConfigureUsers,
    ViewCalls,
    PlaybackCalls,
    DownloadCalls,
    DeleteCalls,
    ExportCalls,
    AssignCalls,
    ManageStorage,
    ManageEncryptionKeys,
    ViewAuditTrail,
    ManageRetention,
    Impersonate,
    ManageCustomization,
    ManageEvaluationForms,
    ScreenRecordingSettings,
}

impl Permission {
    pub const ALL: [Permission; 16] = [
        Self::ConfigureSystem,
        Self::ConfigureUsers,
        Self::ViewCalls,
        Self::PlaybackCalls,
        Self::DownloadCalls,
        Self::DeleteCalls,
        Self::ExportCalls,
        Self::AssignCalls,
        Self::ManageStorage,
        Self::ManageEncryptionKeys,
        Self::ViewAuditTrail,
        Self::ManageRetention,
        Self::Impersonate,
        Self::ManageCustomization,
        Self::ManageEvaluationForms,
        Self::ScreenRecordingSettings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ConfigureSystem => "configure_system",
            Self::ConfigureUsers => "configure_users",
            Self::ViewCalls => "view_calls",
            Self::PlaybackCalls => "playback_calls",
            Self::DownloadCalls => "download_calls",
            Self::DeleteCalls => "delete_calls",
            Self::ExportCalls => "export_calls",
            Self::AssignCalls => "assign_calls",
            Self::ManageStorage => "manage_storage",
            Self::ManageEncryptionKeys => "manage_encryption_keys",
            Self::ViewAuditTrail => "view_audit_trail",
            Self::ManageRetention => "manage_retention",
            Self::Impersonate => "impersonate",
            Self::ManageCustomization => "manage_customization",
            Self::ManageEvaluationForms => "manage_evaluation_forms",
            Self::ScreenRecordingSettings => "screen_recording_settings",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

/// Which resources a role's permissions reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every tenant: the service provider.
    ServiceWide,
    /// Everything of the user's own tenant.
    Tenant,
    /// Users (and their calls) in the groups the user manages.
    ManagedGroups,
    /// The user's own account and calls.
    OwnCalls,
}

impl Scope {
    /// How far the scope reaches: service-wide is the widest, own calls the narrowest.
    pub fn breadth(self) -> u8 {
        match self {
            Self::ServiceWide => 3,
            Self::Tenant => 2,
            Self::ManagedGroups => 1,
            Self::OwnCalls => 0,
        }
    }
}

/// What a role grants: a set of permissions within a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub permissions: BTreeSet<Permission>,
    pub scope: Scope,
}

impl Grants {
    pub fn new(scope: Scope, permissions: impl IntoIterator<Item = Permission>) -> Self {
        Self { permissions: permissions.into_iter().collect(), scope }
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Whether these grants include everything `other` grants: each of its permissions, as far as its scope
    /// reaches. Nobody hands out (or takes on, by impersonation) more than they hold.
    pub fn covers(&self, other: &Grants) -> bool {
        other.scope.breadth() <= self.scope.breadth() && other.permissions.is_subset(&self.permissions)
    }
}

/// What the command service established about whoever issues a command: their account, their tenant and
/// the grants of their role. During an impersonation it is the impersonated user's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub user_id: Uuid,
    /// `None` for the service provider's own users (root administrators), who belong to no tenant.
    pub tenant_id: Option<Uuid>,
    pub grants: Grants,
    /// Groups whose users (and their calls) a managed-groups scope reaches.
    pub managed_groups: BTreeSet<Uuid>,
}

/// What a command acts on, as far as authorization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// Service-wide configuration: tenants, roles.
    Service,
    /// A tenant's configuration: its settings, groups, users to be created, storage, customization.
    TenantConfig { tenant: Uuid },
    /// A tenant's shared working material that supervisors may be allowed to manage (evaluation forms).
    TenantContent { tenant: Uuid },
    /// A user account and what belongs to it (settings, sessions, devices).
    User { tenant: Option<Uuid>, user: Uuid, groups: BTreeSet<Uuid> },
    /// A call, with the user it is assigned to and that user's groups, or assigned to nobody.
    Call { tenant: Uuid, owner: Option<(Uuid, BTreeSet<Uuid>)> },
}

/// Why an authority may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("your role does not permit {0}")]
    MissingPermission(Permission),
    #[error("this is outside what your role's scope reaches")]
    OutOfScope,
}

impl Authority {
    fn in_tenant(&self, tenant: Uuid) -> bool {
        self.tenant_id == Some(tenant)
    }

    fn manages_any(&self, groups: &BTreeSet<Uuid>) -> bool {
        !self.managed_groups.is_disjoint(groups)
    }

    /// Whether this authority may use `permission` on `resource`: the role must grant the permission, and
    /// its scope must reach the resource. Service-wide reaches everything; tenant reaches everything of the
    /// own tenant; managed groups reaches the own tenant's shared content and the users (and calls) in the
    /// managed groups; own calls reaches the own account and calls only. Calls assigned to nobody are
    /// reached from tenant scope up.
    pub fn authorize(&self, permission: Permission, resource: &Resource) -> Result<(), Denied> {
        if !self.grants.allows(permission) {
            return Err(Denied::MissingPermission(permission));
        }
        let reached = match (self.grants.scope, resource) {
            (Scope::ServiceWide, _) => true,
            (_, Resource::Service) => false,
            (Scope::Tenant, Resource::TenantConfig { tenant } | Resource::TenantContent { tenant }) => {
                self.in_tenant(*tenant)
            }
            (Scope::Tenant, Resource::User { tenant, .. }) => tenant.is_some_and(|t| self.in_tenant(t)),
            (Scope::Tenant, Resource::Call { tenant, .. }) => self.in_tenant(*tenant),
            (Scope::ManagedGroups, Resource::TenantContent { tenant }) => self.in_tenant(*tenant),
            (Scope::ManagedGroups, Resource::User { tenant, groups, .. }) => {
                tenant.is_some_and(|t| self.in_tenant(t)) && self.manages_any(groups)
            }
            (Scope::ManagedGroups, Resource::Call { tenant, owner: Some((_, groups)) }) => {
                self.in_tenant(*tenant) && self.manages_any(groups)
            }
            (Scope::OwnCalls, Resource::User { tenant, user, .. }) => {
                *user == self.user_id && *tenant == self.tenant_id
            }
            (Scope::OwnCalls, Resource::Call { tenant, owner: Some((user, _)) }) => {
                *user == self.user_id && self.in_tenant(*tenant)
            }
            (
                Scope::ManagedGroups | Scope::OwnCalls,
                Resource::TenantConfig { .. } | Resource::Call { owner: None, .. },
            )
            | (Scope::OwnCalls, Resource::TenantContent { .. }) => false,
        };
        if reached {
            Ok(())
        } else {
            Err(Denied::OutOfScope)
        }
    }
}

impl Grants {
    /// The same permissions within another scope.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
}

/// The roles every installation starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredefinedRole {
    RootAdministrator,
    Administrator,
    Supervisor,
    Agent,
}

impl PredefinedRole {
    pub const ALL: [PredefinedRole; 4] = [Self::RootAdministrator, Self::Administrator, Self::Supervisor, Self::Agent];

    /// The role's id: the same on every installation, so the seeded roles are found without a lookup.
    pub fn role_id(self) -> Uuid {
        Uuid::from_u128(match self {
            Self::RootAdministrator => 0x0000_0000_0000_7000_8000_0000_0000_0001,
            Self::Administrator => 0x0000_0000_0000_7000_8000_0000_0000_0002,
            Self::Supervisor => 0x0000_0000_0000_7000_8000_0000_0000_0003,
            Self::Agent => 0x0000_0000_0000_7000_8000_0000_0000_0004,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RootAdministrator => "Root Administrator",
            Self::Administrator => "Administrator",
            Self::Supervisor => "Supervisor",
            Self::Agent => "User/Agent",
        }
    }

    /// The defaults of the administrator guide: root has everything service-wide; a tenant administrator
    /// manages its tenant (but not roles, retention or system configuration, which are the provider's); a
    /// supervisor reviews and assigns the calls of managed groups; an agent at most views their own calls.
    pub fn grants(self) -> Grants {
        use Permission::*;
        match self {
            Self::RootAdministrator => Grants::new(Scope::ServiceWide, Permission::ALL),
            Self::Administrator => Grants::new(
                Scope::Tenant,
                [
                    ConfigureUsers,
                    ViewCalls,
                    PlaybackCalls,
                    DownloadCalls,
                    DeleteCalls,
                    ExportCalls,
                    AssignCalls,
                    ManageStorage,
                    ManageEncryptionKeys,
                    ViewAuditTrail,
                    Impersonate,
                    ManageCustomization,
                    ManageEvaluationForms,
                    ScreenRecordingSettings,
                ],
            ),
            Self::Supervisor => {
                Grants::new(Scope::ManagedGroups, [ViewCalls, PlaybackCalls, DownloadCalls, ExportCalls, AssignCalls])
            }
            Self::Agent => Grants::new(Scope::OwnCalls, [ViewCalls, PlaybackCalls]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_names_round_trip_and_match_their_serialized_form() {
        for permission in Permission::ALL {
            assert_eq!(permission.name().parse::<Permission>(), Ok(permission));
            assert_eq!(serde_json::to_value(permission).ok(), Some(serde_json::json!(permission.name())));
        }
        assert!("root".parse::<Permission>().is_err());
    }

    #[test]
    fn only_root_holds_the_providers_permissions() {
        for role in PredefinedRole::ALL {
            let grants = role.grants();
            let provider = grants.allows(Permission::ConfigureSystem) || grants.allows(Permission::ManageRetention);
            assert_eq!(provider, role == PredefinedRole::RootAdministrator, "{role:?}");
        }
    }

    fn authority(grants: Grants, tenant: Option<Uuid>, managed: &[Uuid]) -> Authority {
        Authority {
            user_id: Uuid::from_u128(1),
            tenant_id: tenant,
            grants,
            managed_groups: managed.iter().copied().collect(),
        }
    }

    #[test]
    fn grants_cover_only_what_they_include() {
        let admin = PredefinedRole::Administrator.grants();
        assert!(admin.covers(&PredefinedRole::Supervisor.grants()));
        assert!(admin.covers(&admin));
        assert!(!admin.covers(&PredefinedRole::RootAdministrator.grants()));
        assert!(!PredefinedRole::Supervisor.grants().covers(&PredefinedRole::Agent.grants().with_scope(Scope::Tenant)));
    }

    #[test]
    fn scope_decides_which_users_are_reached() {
        let (t1, t2, g1, g2) = (Uuid::from_u128(10), Uuid::from_u128(20), Uuid::from_u128(100), Uuid::from_u128(200));
        let user = |tenant: Uuid, id: u128, groups: &[Uuid]| Resource::User {
            tenant: Some(tenant),
            user: Uuid::from_u128(id),
            groups: groups.iter().copied().collect(),
        };
        let root = authority(PredefinedRole::RootAdministrator.grants(), None, &[]);
        let admin = authority(PredefinedRole::Administrator.grants(), Some(t1), &[]);
        let supervisor = authority(Grants::new(Scope::ManagedGroups, [Permission::ConfigureUsers]), Some(t1), &[g1]);
        let p = Permission::ConfigureUsers;
        assert_eq!(root.authorize(p, &user(t2, 5, &[g2])), Ok(()));
        assert_eq!(admin.authorize(p, &user(t1, 5, &[g2])), Ok(()));
        assert_eq!(admin.authorize(p, &user(t2, 5, &[g2])), Err(Denied::OutOfScope));
        assert_eq!(supervisor.authorize(p, &user(t1, 5, &[g1, g2])), Ok(()));
        assert_eq!(supervisor.authorize(p, &user(t1, 5, &[g2])), Err(Denied::OutOfScope));
        assert_eq!(supervisor.authorize(p, &Resource::TenantConfig { tenant: t1 }), Err(Denied::OutOfScope));
        let agent = authority(PredefinedRole::Agent.grants(), Some(t1), &[]);
        assert_eq!(agent.authorize(p, &user(t1, 1, &[])), Err(Denied::MissingPermission(p)));
        assert_eq!(
            agent.authorize(
                Permission::ViewCalls,
                &Resource::Call { tenant: t1, owner: Some((Uuid::from_u128(1), BTreeSet::new())) }
            ),
            Ok(())
        );
        assert_eq!(
            agent.authorize(
                Permission::ViewCalls,
                &Resource::Call { tenant: t1, owner: Some((Uuid::from_u128(2), BTreeSet::new())) }
            ),
            Err(Denied::OutOfScope)
        );
    }

    #[test]
    fn calls_assigned_to_nobody_are_reached_from_tenant_scope_up() {
        let t1 = Uuid::from_u128(10);
        let unassigned = Resource::Call { tenant: t1, owner: None };
        let admin = authority(PredefinedRole::Administrator.grants(), Some(t1), &[]);
        let supervisor = authority(PredefinedRole::Supervisor.grants(), Some(t1), &[Uuid::from_u128(100)]);
        assert_eq!(admin.authorize(Permission::AssignCalls, &unassigned), Ok(()));
        assert_eq!(supervisor.authorize(Permission::AssignCalls, &unassigned), Err(Denied::OutOfScope));
    }

    #[test]
    fn scopes_narrow_from_root_to_agent() {
        let scopes: Vec<Scope> = PredefinedRole::ALL.iter().map(|r| r.grants().scope).collect();
        assert_eq!(scopes, [Scope::ServiceWide, Scope::Tenant, Scope::ManagedGroups, Scope::OwnCalls]);
    }
}
