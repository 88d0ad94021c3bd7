//! The role aggregate (service-wide, keyed by role id): a named set of permissions within an access scope.
//! Only root administrators define, change or delete roles (checked by the command service). The Root
//! Administrator role itself always keeps every permission service-wide, so nobody can lock the provider
//! out, and a role that users hold cannot be deleted.

use serde::{Deserialize, Serialize};

use crate::access::{Grants, Permission, PredefinedRole, Scope};
use crate::aggregate::{Aggregate, DomainEvent};
use crate::names::{display_name, NameError};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    state: RoleState,
    name: String,
    grants: Option<Grants>,
    predefined: Option<PredefinedRole>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum RoleState {
    #[default]
    New,
    Defined,
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoleCommand {
    /// Defines a role. `predefined` marks the four roles an installation is seeded with.
    DefineRole {
        name: String,
        grants: Grants,
        predefined: Option<PredefinedRole>,
    },
    RenameRole {
        name: String,
    },
    ChangeRoleGrants {
        grants: Grants,
    },
    /// `users_holding_it`: how many users hold the role now (a fact the command service looks up).
    DeleteRole {
        users_holding_it: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoleEvent {
    RoleDefined { name: String, grants: Grants, predefined: Option<PredefinedRole> },
    RoleRenamed { name: String },
    RoleGrantsChanged { grants: Grants },
    RoleDeleted,
}

impl DomainEvent for RoleEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::RoleDefined { .. } => "RoleDefined",
            Self::RoleRenamed { .. } => "RoleRenamed",
            Self::RoleGrantsChanged { .. } => "RoleGrantsChanged",
            Self::RoleDeleted => "RoleDeleted",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("this role already exists")]
    AlreadyDefined,
    #[error("no such role")]
    NotFound,
    #[error("this role was deleted")]
    Deleted,
    #[error("invalid role name: {0}")]
    InvalidName(#[from] NameError),
    #[error("the Root Administrator role keeps every permission, service-wide")]
    RootRoleIsFixed,
    #[error("{0} user(s) hold this role; give them another role first")]
    InUse(u64),
    #[error("a pre-defined role cannot be deleted (it can be renamed and its permissions changed)")]
    PredefinedRole,
}

impl Role {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn grants(&self) -> Option<&Grants> {
        self.grants.as_ref()
    }

    pub fn predefined(&self) -> Option<PredefinedRole> {
        self.predefined
    }

    pub fn is_defined(&self) -> bool {
        self.state == RoleState::Defined
    }

    fn existing(&self) -> Result<(), RoleError> {
        match self.state {
            RoleState::New => Err(RoleError::NotFound),
            RoleState::Deleted => Err(RoleError::Deleted),
            RoleState::Defined => Ok(()),
        }
    }

    fn is_root(&self) -> bool {
        self.predefined == Some(PredefinedRole::RootAdministrator)
    }
}

fn full_root_grants(grants: &Grants) -> bool {
    grants.scope == Scope::ServiceWide && Permission::ALL.iter().all(|p| grants.allows(*p))
}

impl Aggregate for Role {
    const TYPE: &'static str = "Role";
    type Command = RoleCommand;
    type Event = RoleEvent;
    type Error = RoleError;
    type Services = ();

    async fn decide(&self, command: RoleCommand, _: &()) -> Result<Vec<RoleEvent>, RoleError> {
        match command {
            RoleCommand::DefineRole { name, grants, predefined } => {
                if self.state != RoleState::New {
                    return Err(RoleError::AlreadyDefined);
                }
                if predefined == Some(PredefinedRole::RootAdministrator) && !full_root_grants(&grants) {
                    return Err(RoleError::RootRoleIsFixed);
                }
                Ok(vec![RoleEvent::RoleDefined { name: display_name(&name)?, grants, predefined }])
            }
            RoleCommand::RenameRole { name } => {
                self.existing()?;
                let name = display_name(&name)?;
                Ok(if name == self.name { vec![] } else { vec![RoleEvent::RoleRenamed { name }] })
            }
            RoleCommand::ChangeRoleGrants { grants } => {
                self.existing()?;
                if self.is_root() && !full_root_grants(&grants) {
                    return Err(RoleError::RootRoleIsFixed);
                }
                Ok(if self.grants.as_ref() == Some(&grants) {
                    vec![]
                } else {
                    vec![RoleEvent::RoleGrantsChanged { grants }]
                })
            }
            RoleCommand::DeleteRole { users_holding_it } => {
                self.existing()?;
                if self.is_root() {
                    return Err(RoleError::RootRoleIsFixed);
                }
                if self.predefined.is_some() {
                    return Err(RoleError::PredefinedRole);
                }
                if users_holding_it > 0 {
                    return Err(RoleError::InUse(users_holding_it));
                }
                Ok(vec![RoleEvent::RoleDeleted])
            }
        }
    }

    fn apply(&mut self, event: RoleEvent) {
        match event {
            RoleEvent::RoleDefined { name, grants, predefined } => {
                self.state = RoleState::Defined;
                self.name = name;
                self.grants = Some(grants);
                self.predefined = predefined;
            }
            RoleEvent::RoleRenamed { name } => self.name = name,
            RoleEvent::RoleGrantsChanged { grants } => self.grants = Some(grants),
            RoleEvent::RoleDeleted => self.state = RoleState::Deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    fn defined(name: &str, role: Option<PredefinedRole>) -> RoleEvent {
        let grants = role.map_or_else(|| PredefinedRole::Agent.grants(), PredefinedRole::grants);
        RoleEvent::RoleDefined { name: name.into(), grants, predefined: role }
    }

    fn supervisor() -> Vec<RoleEvent> {
        vec![defined("Supervisor", Some(PredefinedRole::Supervisor))]
    }

    fn root() -> Vec<RoleEvent> {
        vec![defined("Root Administrator", Some(PredefinedRole::RootAdministrator))]
    }

    #[test]
    fn a_role_is_defined_with_a_trimmed_name() {
        let grants = Grants::new(Scope::Tenant, [Permission::ViewCalls]);
        let command = RoleCommand::DefineRole { name: " QA ".into(), grants: grants.clone(), predefined: None };
        assert_eq!(
            when::<Role>([], command, &()),
            Ok(vec![RoleEvent::RoleDefined { name: "QA".into(), grants, predefined: None }])
        );
    }

    #[test]
    fn a_role_cannot_be_defined_twice() {
        let command =
            RoleCommand::DefineRole { name: "x".into(), grants: PredefinedRole::Agent.grants(), predefined: None };
        assert_eq!(when::<Role>(supervisor(), command, &()), Err(RoleError::AlreadyDefined));
    }

    #[test]
    fn a_role_needs_a_valid_name() {
        let command =
            RoleCommand::DefineRole { name: " ".into(), grants: PredefinedRole::Agent.grants(), predefined: None };
        assert_eq!(when::<Role>([], command, &()), Err(RoleError::InvalidName(NameError::Empty)));
        let rename = RoleCommand::RenameRole { name: "a\u{7}".into() };
        assert_eq!(when::<Role>(supervisor(), rename, &()), Err(RoleError::InvalidName(NameError::ControlCharacter)));
    }

    #[test]
    fn the_root_role_is_seeded_only_with_every_permission_service_wide() {
        let partial = RoleCommand::DefineRole {
            name: "Root Administrator".into(),
            grants: PredefinedRole::Administrator.grants(),
            predefined: Some(PredefinedRole::RootAdministrator),
        };
        assert_eq!(when::<Role>([], partial, &()), Err(RoleError::RootRoleIsFixed));
    }

    #[test]
    fn renaming_to_the_same_name_changes_nothing() {
        assert_eq!(when::<Role>(supervisor(), RoleCommand::RenameRole { name: "Supervisor".into() }, &()), Ok(vec![]));
        assert_eq!(
            when::<Role>(supervisor(), RoleCommand::RenameRole { name: "Team lead".into() }, &()),
            Ok(vec![RoleEvent::RoleRenamed { name: "Team lead".into() }])
        );
    }

    #[test]
    fn grants_change_and_an_identical_change_is_no_event() {
        let wider = Grants::new(Scope::ManagedGroups, [Permission::ViewCalls, Permission::DeleteCalls]);
        assert_eq!(
            when::<Role>(supervisor(), RoleCommand::ChangeRoleGrants { grants: wider.clone() }, &()),
            Ok(vec![RoleEvent::RoleGrantsChanged { grants: wider }])
        );
        let same = PredefinedRole::Supervisor.grants();
        assert_eq!(when::<Role>(supervisor(), RoleCommand::ChangeRoleGrants { grants: same }, &()), Ok(vec![]));
    }

    #[test]
    fn the_root_role_keeps_every_permission_and_cannot_be_deleted() {
        let narrower = Grants::new(Scope::Tenant, Permission::ALL);
        assert_eq!(
            when::<Role>(root(), RoleCommand::ChangeRoleGrants { grants: narrower }, &()),
            Err(RoleError::RootRoleIsFixed)
        );
        assert_eq!(
            when::<Role>(root(), RoleCommand::DeleteRole { users_holding_it: 0 }, &()),
            Err(RoleError::RootRoleIsFixed)
        );
    }

    #[test]
    fn a_role_in_use_cannot_be_deleted() {
        let custom = || vec![defined("QA", None)];
        assert_eq!(
            when::<Role>(custom(), RoleCommand::DeleteRole { users_holding_it: 3 }, &()),
            Err(RoleError::InUse(3))
        );
        assert_eq!(
            when::<Role>(custom(), RoleCommand::DeleteRole { users_holding_it: 0 }, &()),
            Ok(vec![RoleEvent::RoleDeleted])
        );
    }

    #[test]
    fn a_predefined_role_is_never_deleted() {
        assert_eq!(
            when::<Role>(supervisor(), RoleCommand::DeleteRole { users_holding_it: 0 }, &()),
            Err(RoleError::PredefinedRole)
        );
    }

    #[test]
    fn a_deleted_or_unknown_role_refuses_changes() {
        let deleted = vec![defined("QA", None), RoleEvent::RoleDeleted];
        let rename = || RoleCommand::RenameRole { name: "y".into() };
        assert_eq!(when::<Role>(deleted.clone(), rename(), &()), Err(RoleError::Deleted));
        assert_eq!(when::<Role>([], rename(), &()), Err(RoleError::NotFound));
        assert_eq!(
            when::<Role>(deleted, RoleCommand::DeleteRole { users_holding_it: 0 }, &()),
            Err(RoleError::Deleted)
        );
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_role() {
        let (state, events) = run::<Role>(
            [
                RoleCommand::DefineRole { name: "QA".into(), grants: PredefinedRole::Agent.grants(), predefined: None },
                RoleCommand::RenameRole { name: "Quality".into() },
                RoleCommand::ChangeRoleGrants { grants: PredefinedRole::Supervisor.grants() },
            ],
            &(),
        );
        assert_eq!(given::<Role>(events), state);
        assert_eq!(state.name(), "Quality");
        assert_eq!(state.grants(), Some(&PredefinedRole::Supervisor.grants()));
    }
}
