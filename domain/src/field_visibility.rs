//! The field visibility aggregate (keyed by the tenant id): which fields each view ("layout") of a tenant
//! shows. Every field is visible until hidden; only the hidden ones are recorded. It knows the built-in
//! fields of each layout, but not which custom fields exist: it never refuses a well-formed `custom:<id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};

/// The prefix of a custom field's name in a layout: `custom:<field id>`.
pub const CUSTOM_FIELD_PREFIX: &str = "custom:";

/// How a layout names the custom field `id`.
pub fn custom_field(id: Uuid) -> String {
    format!("{CUSTOM_FIELD_PREFIX}{id}")
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldVisibility {
    tenant_id: Option<Uuid>,
    /// The hidden fields of each layout; a layout with none hidden has no entry.
    hidden: BTreeMap<Layout, BTreeSet<String>>,
}

/// A view whose fields can be shown or hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The list of recordings.
    Recordings,
    /// One call's page.
    CallDetails,
    /// The list of users.
    Users,
    /// The audit trail.
    AuditTrail,
}

const RECORDINGS_FIELDS: &[&str] = &[
    "start_time",
    "duration",
    "direction",
    "caller",
    "callee",
    "extension",
    "user",
    "group",
    "tags",
    "notes",
    "recorder",
    "site",
];

const CALL_DETAILS_FIELDS: &[&str] = &[
    "start_time",
    "duration",
    "direction",
    "caller",
    "callee",
    "extension",
    "user",
    "group",
    "tags",
    "notes",
    "recorder",
    "site",
    "participants",
    "dtmf",
    "pauses",
    "storage_target",
];

const USERS_FIELDS: &[&str] =
    &["username", "email", "role", "groups", "extensions", "timezone", "active", "last_sign_in"];

const AUDIT_TRAIL_FIELDS: &[&str] =
    &["time", "actor", "impersonator", "tenant", "action", "target", "outcome", "source_address"];

impl Layout {
    pub const ALL: [Layout; 4] = [Layout::Recordings, Layout::CallDetails, Layout::Users, Layout::AuditTrail];

    /// The built-in fields of this layout. Stored names: frozen once shipped.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Recordings => RECORDINGS_FIELDS,
            Self::CallDetails => CALL_DETAILS_FIELDS,
            Self::Users => USERS_FIELDS,
            Self::AuditTrail => AUDIT_TRAIL_FIELDS,
        }
    }

    /// Whether calls' custom fields (`custom:<id>`) appear in this layout.
    pub fn shows_custom_fields(self) -> bool {
        matches!(self, Self::Recordings | Self::CallDetails)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recordings => "recordings",
            Self::CallDetails => "call_details",
            Self::Users => "users",
            Self::AuditTrail => "audit_trail",
        }
    }

    /// The canonical name of `field` in this layout (a custom field's id in its hyphenated lower-case
    /// form), or `None` if this layout has no such field.
    fn field(self, field: &str) -> Option<String> {
        if self.fields().contains(&field) {
            return Some(field.to_owned());
        }
        let id = field.strip_prefix(CUSTOM_FIELD_PREFIX).filter(|_| self.shows_custom_fields())?;
        Uuid::parse_str(id).ok().map(custom_field)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldVisibilityCommand {
    /// Shows (`true`) or hides (`false`) the listed fields of `layout`; the others keep their setting.
    SetLayoutVisibility { tenant_id: Uuid, layout: Layout, visible: BTreeMap<String, bool> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldVisibilityEvent {
    /// `hidden`: every field of `layout` hidden from now on (all others are visible).
    LayoutVisibilitySet { tenant_id: Uuid, layout: Layout, hidden: BTreeSet<String> },
}

impl DomainEvent for FieldVisibilityEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::LayoutVisibilitySet { .. } => "LayoutVisibilitySet",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldVisibilityError {
    #[error("{field:?} is not a field of the {layout} layout")]
    UnknownField { layout: Layout, field: String },
    #[error("these field settings belong to another tenant")]
    OtherTenant,
}

static NOTHING_HIDDEN: BTreeSet<String> = BTreeSet::new();

impl FieldVisibility {
    /// `None` until a field is first hidden.
    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn is_visible(&self, layout: Layout, field: &str) -> bool {
        !self.hidden(layout).contains(field)
    }

    /// The hidden fields of `layout`.
    pub fn hidden(&self, layout: Layout) -> &BTreeSet<String> {
        self.hidden.get(&layout).unwrap_or(&NOTHING_HIDDEN)
    }
}

impl Aggregate for FieldVisibility {
    const TYPE: &'static str = "FieldVisibility";
    type Command = FieldVisibilityCommand;
    type Event = FieldVisibilityEvent;
    type Error = FieldVisibilityError;
    type Services = ();

    async fn decide(
        &self,
        command: FieldVisibilityCommand,
        _: &(),
    ) -> Result<Vec<FieldVisibilityEvent>, FieldVisibilityError> {
        match command {
            FieldVisibilityCommand::SetLayoutVisibility { tenant_id, layout, visible } => {
                if self.tenant_id.is_some_and(|own| own != tenant_id) {
                    return Err(FieldVisibilityError::OtherTenant);
                }
                let mut hidden = self.hidden(layout).clone();
                for (field, shown) in visible {
                    let Some(field) = layout.field(&field) else {
                        return Err(FieldVisibilityError::UnknownField { layout, field });
                    };
                    if shown {
                        hidden.remove(&field);
                    } else {
                        hidden.insert(field);
                    }
                }
                Ok(if &hidden == self.hidden(layout) {
                    vec![]
                } else {
                    vec![FieldVisibilityEvent::LayoutVisibilitySet { tenant_id, layout, hidden }]
                })
            }
        }
    }

    fn apply(&mut self, event: FieldVisibilityEvent) {
        match event {
            FieldVisibilityEvent::LayoutVisibilitySet { tenant_id, layout, hidden } => {
                self.tenant_id = Some(tenant_id);
                if hidden.is_empty() {
                    self.hidden.remove(&layout);
                } else {
                    self.hidden.insert(layout, hidden);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const FIELD: Uuid = Uuid::from_u128(0xabcdef);

    fn set(layout: Layout, settings: &[(&str, bool)]) -> FieldVisibilityCommand {
        FieldVisibilityCommand::SetLayoutVisibility {
            tenant_id: TENANT,
            layout,
            visible: settings.iter().map(|(field, shown)| ((*field).to_owned(), *shown)).collect(),
        }
    }

    fn hidden(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    fn notes_hidden() -> Vec<FieldVisibilityEvent> {
        vec![FieldVisibilityEvent::LayoutVisibilitySet {
            tenant_id: TENANT,
            layout: Layout::Recordings,
            hidden: hidden(&["notes"]),
        }]
    }

    #[test]
    fn every_field_is_visible_until_hidden() {
        let visibility = FieldVisibility::default();
        for layout in Layout::ALL {
            assert!(!layout.fields().is_empty());
            assert!(layout.fields().iter().all(|field| visibility.is_visible(layout, field)));
            assert!(visibility.hidden(layout).is_empty());
        }
        assert_eq!(visibility.tenant_id(), None);
    }

    #[test]
    fn the_first_setting_creates_the_aggregate_and_records_the_hidden_set() {
        assert_eq!(when::<FieldVisibility>([], set(Layout::Recordings, &[("notes", false)]), &()), Ok(notes_hidden()));
        let visibility = given::<FieldVisibility>(notes_hidden());
        assert_eq!(visibility.tenant_id(), Some(TENANT));
        assert!(!visibility.is_visible(Layout::Recordings, "notes"));
        assert!(visibility.is_visible(Layout::Recordings, "tags"));
        assert!(visibility.is_visible(Layout::CallDetails, "notes"), "layouts are independent");
    }

    #[test]
    fn unlisted_fields_keep_their_setting_and_the_event_carries_the_whole_hidden_set() {
        assert_eq!(
            when::<FieldVisibility>(notes_hidden(), set(Layout::Recordings, &[("site", false), ("tags", true)]), &()),
            Ok(vec![FieldVisibilityEvent::LayoutVisibilitySet {
                tenant_id: TENANT,
                layout: Layout::Recordings,
                hidden: hidden(&["notes", "site"]),
            }])
        );
        assert_eq!(
            when::<FieldVisibility>(notes_hidden(), set(Layout::Recordings, &[("notes", true)]), &()),
            Ok(vec![FieldVisibilityEvent::LayoutVisibilitySet {
                tenant_id: TENANT,
                layout: Layout::Recordings,
                hidden: BTreeSet::new(),
            }])
        );
    }

    #[test]
    fn a_setting_that_changes_nothing_is_no_event() {
        assert_eq!(
            when::<FieldVisibility>(notes_hidden(), set(Layout::Recordings, &[("notes", false)]), &()),
            Ok(vec![])
        );
        assert_eq!(when::<FieldVisibility>([], set(Layout::Users, &[("email", true)]), &()), Ok(vec![]));
        assert_eq!(when::<FieldVisibility>([], set(Layout::Users, &[]), &()), Ok(vec![]));
    }

    #[test]
    fn showing_every_field_again_leaves_the_same_state_as_never_hiding_one() {
        let mut events = notes_hidden();
        events.extend(
            when::<FieldVisibility>(notes_hidden(), set(Layout::Recordings, &[("notes", true)]), &()).expect("set"),
        );
        let visibility = given::<FieldVisibility>(events);
        assert!(visibility.is_visible(Layout::Recordings, "notes"));
        assert_eq!(visibility, FieldVisibility { tenant_id: Some(TENANT), hidden: BTreeMap::new() });
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        assert_eq!(
            when::<FieldVisibility>([], set(Layout::Users, &[("email", false), ("salary", false)]), &()),
            Err(FieldVisibilityError::UnknownField { layout: Layout::Users, field: "salary".into() })
        );
        assert_eq!(
            when::<FieldVisibility>([], set(Layout::Recordings, &[("dtmf", false)]), &()),
            Err(FieldVisibilityError::UnknownField { layout: Layout::Recordings, field: "dtmf".into() })
        );
        assert_eq!(
            when::<FieldVisibility>([], set(Layout::CallDetails, &[("Notes", false)]), &()),
            Err(FieldVisibilityError::UnknownField { layout: Layout::CallDetails, field: "Notes".into() })
        );
        let error = FieldVisibilityError::UnknownField { layout: Layout::AuditTrail, field: "x".into() };
        assert_eq!(error.to_string(), "\"x\" is not a field of the audit_trail layout");
    }

    #[test]
    fn custom_fields_are_shown_in_call_layouts_only_and_named_by_their_canonical_id() {
        let upper = format!("custom:{}", FIELD.simple().to_string().to_uppercase());
        assert_eq!(
            when::<FieldVisibility>([], set(Layout::CallDetails, &[(&upper, false)]), &()),
            Ok(vec![FieldVisibilityEvent::LayoutVisibilitySet {
                tenant_id: TENANT,
                layout: Layout::CallDetails,
                hidden: BTreeSet::from([custom_field(FIELD)]),
            }])
        );
        let name = custom_field(FIELD);
        assert_eq!(name, "custom:00000000-0000-0000-0000-000000abcdef");
        assert!(when::<FieldVisibility>([], set(Layout::Recordings, &[(&name, false)]), &()).is_ok());
        for layout in [Layout::Users, Layout::AuditTrail] {
            assert_eq!(
                when::<FieldVisibility>([], set(layout, &[(&name, false)]), &()),
                Err(FieldVisibilityError::UnknownField { layout, field: name.clone() })
            );
        }
        assert_eq!(
            when::<FieldVisibility>([], set(Layout::Recordings, &[("custom:nope", false)]), &()),
            Err(FieldVisibilityError::UnknownField { layout: Layout::Recordings, field: "custom:nope".into() })
        );
    }

    #[test]
    fn another_tenant_cannot_change_these_settings() {
        let other = FieldVisibilityCommand::SetLayoutVisibility {
            tenant_id: Uuid::from_u128(8),
            layout: Layout::Recordings,
            visible: BTreeMap::from([("notes".to_owned(), true)]),
        };
        assert_eq!(when::<FieldVisibility>(notes_hidden(), other, &()), Err(FieldVisibilityError::OtherTenant));
    }

    #[test]
    fn the_catalogues_have_the_documented_fields_and_no_duplicates() {
        for layout in Layout::ALL {
            let unique: BTreeSet<_> = layout.fields().iter().collect();
            assert_eq!(unique.len(), layout.fields().len(), "{layout}");
        }
        assert!(Layout::Recordings.fields().iter().all(|f| Layout::CallDetails.fields().contains(f)));
        assert!(Layout::CallDetails.fields().contains(&"storage_target"));
        assert!(Layout::AuditTrail.fields().contains(&"impersonator"));
        assert_eq!(serde_json::to_value(Layout::CallDetails).expect("serializes"), "call_details");
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_settings() {
        let name = custom_field(FIELD);
        let (state, events) = run::<FieldVisibility>(
            [
                set(Layout::Recordings, &[("notes", false), ("site", false)]),
                set(Layout::Users, &[("last_sign_in", false)]),
                set(Layout::Recordings, &[("notes", true), (&name, false)]),
                set(Layout::AuditTrail, &[("source_address", false)]),
                set(Layout::AuditTrail, &[("source_address", true)]),
            ],
            &(),
        );
        assert_eq!(events.len(), 5);
        assert_eq!(given::<FieldVisibility>(events), state);
        assert_eq!(state.hidden(Layout::Recordings), &BTreeSet::from([name, "site".to_owned()]));
        assert_eq!(state.hidden(Layout::Users), &hidden(&["last_sign_in"]));
        assert!(state.hidden(Layout::AuditTrail).is_empty());
        let snapshot = serde_json::to_string(&state).expect("serializes");
        assert_eq!(serde_json::from_str::<FieldVisibility>(&snapshot).expect("deserializes"), state);
    }
}
