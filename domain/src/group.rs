//! The group aggregate (keyed by group id): a named set of a tenant's users, with an optional time zone
//! its members fall back to. Membership is recorded on the users (a user may be in several groups);
//! names are unique within the tenant (case-insensitive). A group with members cannot be deleted.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::names::{display_name, timezone, NameError};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    state: GroupState,
    tenant_id: Option<Uuid>,
    name: String,
    timezone: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum GroupState {
    #[default]
    New,
    Active,
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupCommand {
    CreateGroup {
        tenant_id: Uuid,
        name: String,
        timezone: Option<String>,
    },
    RenameGroup {
        name: String,
    },
    /// `None` lets the members fall back to the tenant's time zone.
    SetGroupTimezone {
        timezone: Option<String>,
    },
    /// `members`: how many users are in the group now (a fact the command service looks up).
    DeleteGroup {
        members: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupEvent {
    GroupCreated { tenant_id: Uuid, name: String, timezone: Option<String> },
    GroupRenamed { name: String },
    GroupTimezoneChanged { timezone: Option<String> },
    GroupDeleted,
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::GroupCreated { .. } => "GroupCreated",
            Self::GroupRenamed { .. } => "GroupRenamed",
            Self::GroupTimezoneChanged { .. } => "GroupTimezoneChanged",
            Self::GroupDeleted => "GroupDeleted",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("this group already exists")]
    AlreadyExists,
    #[error("no such group")]
    NotFound,
    #[error("this group was deleted")]
    Deleted,
    #[error("invalid group name: {0}")]
    InvalidName(NameError),
    #[error("{0}")]
    InvalidTimezone(NameError),
    #[error("{0} user(s) are members of this group; move them to another group first")]
    HasMembers(u64),
}

impl Group {
    pub fn exists(&self) -> bool {
        self.state == GroupState::Active
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }

    fn existing(&self) -> Result<(), GroupError> {
        match self.state {
            GroupState::New => Err(GroupError::NotFound),
            GroupState::Deleted => Err(GroupError::Deleted),
            GroupState::Active => Ok(()),
        }
    }

    fn name_key(&self, name: &str) -> Option<IndexKey> {
        self.tenant_id.map(|tenant| IndexKey::name(Namespace::GroupName(tenant), name))
    }
}

fn optional_timezone(tz: Option<String>) -> Result<Option<String>, GroupError> {
    tz.filter(|tz| !tz.trim().is_empty()).map(|tz| timezone(&tz)).transpose().map_err(GroupError::InvalidTimezone)
}

impl Aggregate for Group {
    const TYPE: &'static str = "Group";
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;
    type Services = ();

    async fn decide(&self, command: GroupCommand, _: &()) -> Result<Vec<GroupEvent>, GroupError> {
        match command {
            GroupCommand::CreateGroup { tenant_id, name, timezone } => {
                if self.state != GroupState::New {
                    return Err(GroupError::AlreadyExists);
                }
                let name = display_name(&name).map_err(GroupError::InvalidName)?;
                Ok(vec![GroupEvent::GroupCreated { tenant_id, name, timezone: optional_timezone(timezone)? }])
            }
            GroupCommand::RenameGroup { name } => {
                self.existing()?;
                let name = display_name(&name).map_err(GroupError::InvalidName)?;
                Ok(if name == self.name { vec![] } else { vec![GroupEvent::GroupRenamed { name }] })
            }
            GroupCommand::SetGroupTimezone { timezone } => {
                self.existing()?;
                let timezone = optional_timezone(timezone)?;
                Ok(if timezone == self.timezone { vec![] } else { vec![GroupEvent::GroupTimezoneChanged { timezone }] })
            }
            GroupCommand::DeleteGroup { members } => {
                self.existing()?;
                if members > 0 {
                    return Err(GroupError::HasMembers(members));
                }
                Ok(vec![GroupEvent::GroupDeleted])
            }
        }
    }

    fn apply(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::GroupCreated { tenant_id, name, timezone } => {
                self.state = GroupState::Active;
                self.tenant_id = Some(tenant_id);
                self.name = name;
                self.timezone = timezone;
            }
            GroupEvent::GroupRenamed { name } => self.name = name,
            GroupEvent::GroupTimezoneChanged { timezone } => self.timezone = timezone,
            GroupEvent::GroupDeleted => self.state = GroupState::Deleted,
        }
    }

    fn index_changes(&self, event: &GroupEvent) -> Vec<IndexChange> {
        match event {
            GroupEvent::GroupCreated { tenant_id, name, .. } => {
                vec![IndexChange::Claim(IndexKey::name(Namespace::GroupName(*tenant_id), name))]
            }
            GroupEvent::GroupRenamed { name } => moves(&self.name_key(&self.name), &self.name_key(name)),
            GroupEvent::GroupDeleted => self.name_key(&self.name).map(IndexChange::Release).into_iter().collect(),
            GroupEvent::GroupTimezoneChanged { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);

    fn created() -> Vec<GroupEvent> {
        vec![GroupEvent::GroupCreated { tenant_id: TENANT, name: "Sales".into(), timezone: None }]
    }

    fn create(name: &str, timezone: Option<&str>) -> GroupCommand {
        GroupCommand::CreateGroup { tenant_id: TENANT, name: name.into(), timezone: timezone.map(Into::into) }
    }

    #[test]
    fn a_group_is_created_with_an_optional_timezone() {
        assert_eq!(
            when::<Group>([], create(" Support ", Some("Europe/Paris")), &()),
            Ok(vec![GroupEvent::GroupCreated {
                tenant_id: TENANT,
                name: "Support".into(),
                timezone: Some("Europe/Paris".into())
            }])
        );
        assert_eq!(
            when::<Group>([], create("Support", Some("  ")), &()),
            Ok(vec![GroupEvent::GroupCreated { tenant_id: TENANT, name: "Support".into(), timezone: None }])
        );
    }

    #[test]
    fn invalid_names_and_timezones_are_refused() {
        assert_eq!(when::<Group>([], create("", None), &()), Err(GroupError::InvalidName(NameError::Empty)));
        assert!(matches!(when::<Group>([], create("x", Some("Nowhere")), &()), Err(GroupError::InvalidTimezone(_))));
        assert_eq!(when::<Group>(created(), create("x", None), &()), Err(GroupError::AlreadyExists));
    }

    #[test]
    fn renaming_and_timezone_changes_are_events_only_when_they_change_something() {
        let rename = |n: &str| GroupCommand::RenameGroup { name: n.into() };
        assert_eq!(when::<Group>(created(), rename("Sales"), &()), Ok(vec![]));
        assert_eq!(
            when::<Group>(created(), rename("Inside Sales"), &()),
            Ok(vec![GroupEvent::GroupRenamed { name: "Inside Sales".into() }])
        );
        let tz = GroupCommand::SetGroupTimezone { timezone: Some("Asia/Tokyo".into()) };
        assert_eq!(
            when::<Group>(created(), tz, &()),
            Ok(vec![GroupEvent::GroupTimezoneChanged { timezone: Some("Asia/Tokyo".into()) }])
        );
        assert_eq!(when::<Group>(created(), GroupCommand::SetGroupTimezone { timezone: None }, &()), Ok(vec![]));
    }

    #[test]
    fn a_group_with_members_cannot_be_deleted_and_a_deleted_group_refuses_changes() {
        assert_eq!(
            when::<Group>(created(), GroupCommand::DeleteGroup { members: 2 }, &()),
            Err(GroupError::HasMembers(2))
        );
        assert_eq!(
            when::<Group>(created(), GroupCommand::DeleteGroup { members: 0 }, &()),
            Ok(vec![GroupEvent::GroupDeleted])
        );
        let mut deleted = created();
        deleted.push(GroupEvent::GroupDeleted);
        assert_eq!(
            when::<Group>(deleted, GroupCommand::RenameGroup { name: "x".into() }, &()),
            Err(GroupError::Deleted)
        );
        assert_eq!(when::<Group>([], GroupCommand::DeleteGroup { members: 0 }, &()), Err(GroupError::NotFound));
    }

    #[test]
    fn the_name_is_claimed_within_the_tenant_and_released_on_deletion() {
        let key = |name: &str| IndexKey::name(Namespace::GroupName(TENANT), name);
        assert_eq!(Group::default().index_changes(&created()[0]), vec![IndexChange::Claim(key("sales"))]);
        let group = given::<Group>(created());
        assert_eq!(
            group.index_changes(&GroupEvent::GroupRenamed { name: "B".into() }),
            vec![IndexChange::Release(key("sales")), IndexChange::Claim(key("b"))]
        );
        assert_eq!(group.index_changes(&GroupEvent::GroupDeleted), vec![IndexChange::Release(key("sales"))]);
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_group() {
        let (state, events) = run::<Group>(
            [
                create("Sales", None),
                GroupCommand::RenameGroup { name: "EMEA Sales".into() },
                GroupCommand::SetGroupTimezone { timezone: Some("Europe/London".into()) },
            ],
            &(),
        );
        assert_eq!(given::<Group>(events), state);
        assert_eq!((state.name(), state.timezone()), ("EMEA Sales", Some("Europe/London")));
    }
}
