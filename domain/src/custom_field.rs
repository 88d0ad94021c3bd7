//! The custom field aggregate (keyed by field id): an extra field a tenant's administrator defines on calls
//! (free text, a date, or one of a list of options), for reporting and search. It holds the definition
//! only, never a call's value; names are unique within the tenant (case-insensitive).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::lifecycle::{lifecycle_refusals, Lifecycle};
use crate::names::{display_name, unique_key, NameError};

/// At most this many options in an option field.
pub const MAX_OPTIONS: usize = 200;
/// The longest a text field's `length` may be set to.
pub const MAX_TEXT_LENGTH: u32 = 4000;
/// The length of a text field that does not set one (not stored: `length` stays `None`).
pub const DEFAULT_TEXT_LENGTH: u32 = 255;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    state: Lifecycle,
    tenant_id: Option<Uuid>,
    definition: Option<CustomFieldDefinition>,
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Date,
    /// One of `options`, in the order they are offered.
    Option {
        options: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// Offered as a filter in the advanced search.
    pub advanced_search: bool,
    /// Searched by the free-text search box (not for date fields).
    pub free_text: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldDefinition {
    pub name: String,
    pub description: Option<String>,
    pub field_type: FieldType,
    /// The longest value of a text field, in characters; `None` means `DEFAULT_TEXT_LENGTH`. Text only.
    pub length: Option<u32>,
    /// Whether users may change a call's value (otherwise only integrations set it).
    pub editable: bool,
    pub search: SearchSettings,
}

impl CustomFieldDefinition {
    /// The longest value a text field takes, if this is a text field.
    pub fn text_length(&self) -> Option<u32> {
        (self.field_type == FieldType::Text).then(|| self.length.unwrap_or(DEFAULT_TEXT_LENGTH))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomFieldCommand {
    AddCustomField {
        tenant_id: Uuid,
        definition: CustomFieldDefinition,
    },
    /// Replaces the whole definition; nothing happens if it does not change.
    EditCustomField {
        definition: CustomFieldDefinition,
    },
    /// Deletes the field; it keeps its name and can be restored until it is purged.
    DeleteCustomField,
    /// Undoes a deletion.
    RestoreCustomField,
    /// Removes a deleted field for good and frees its name.
    PurgeCustomField,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomFieldEvent {
    CustomFieldAdded { tenant_id: Uuid, definition: CustomFieldDefinition },
    CustomFieldEdited { definition: CustomFieldDefinition },
    CustomFieldDeleted,
    CustomFieldRestored,
    CustomFieldPurged,
}

impl DomainEvent for CustomFieldEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CustomFieldAdded { .. } => "CustomFieldAdded",
            Self::CustomFieldEdited { .. } => "CustomFieldEdited",
            Self::CustomFieldDeleted => "CustomFieldDeleted",
            Self::CustomFieldRestored => "CustomFieldRestored",
            Self::CustomFieldPurged => "CustomFieldPurged",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomFieldError {
    #[error("this custom field already exists")]
    AlreadyExists,
    #[error("no such custom field")]
    NotFound,
    #[error("this custom field was deleted")]
    Deleted,
    #[error("this custom field is not deleted")]
    NotDeleted,
    #[error("this custom field was purged")]
    Purged,
    #[error("invalid custom field name: {0}")]
    InvalidName(NameError),
    #[error("a description must be at most {MAX_DESCRIPTION_CHARS} characters, without control characters other than line breaks")]
    InvalidDescription,
    #[error("an option field needs 1 to {MAX_OPTIONS} options")]
    OptionCount,
    #[error("invalid option: {0}")]
    InvalidOption(NameError),
    #[error("the option {0:?} is listed twice")]
    DuplicateOption(String),
    #[error("a text field's length must be 1 to {MAX_TEXT_LENGTH} characters")]
    InvalidLength,
    #[error("only text fields have a length")]
    LengthNotApplicable,
    #[error("date fields cannot be searched as free text")]
    FreeTextOnDate,
}

lifecycle_refusals!(CustomFieldError);

impl CustomField {
    /// Added and not deleted.
    pub fn exists(&self) -> bool {
        self.state == Lifecycle::Active
    }

    /// Deleted and still restorable.
    pub fn is_deleted(&self) -> bool {
        self.state == Lifecycle::Deleted
    }

    pub fn is_purged(&self) -> bool {
        self.state == Lifecycle::Purged
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    /// `None` before it is added and after it is purged.
    pub fn definition(&self) -> Option<&CustomFieldDefinition> {
        self.definition.as_ref()
    }

    /// Empty before it is added and after it is purged.
    pub fn name(&self) -> &str {
        self.definition.as_ref().map_or("", |d| d.name.as_str())
    }

    fn existing(&self) -> Result<(), CustomFieldError> {
        Ok(self.state.require_active()?)
    }

    fn deleted(&self) -> Result<(), CustomFieldError> {
        Ok(self.state.require_deleted()?)
    }

    fn name_key(&self, name: &str) -> Option<IndexKey> {
        self.tenant_id.map(|tenant| IndexKey::name(Namespace::CustomFieldName(tenant), name))
    }
}

fn valid_definition(definition: CustomFieldDefinition) -> Result<CustomFieldDefinition, CustomFieldError> {
    let CustomFieldDefinition { name, description, field_type, length, editable, search } = definition;
    let name = display_name(&name).map_err(CustomFieldError::InvalidName)?;
    let description = description.map(|d| valid_description(&d)).transpose()?.flatten();
    let field_type = match field_type {
        FieldType::Option { options } => FieldType::Option { options: valid_options(options)? },
        other => other,
    };
    match (&field_type, length) {
        (_, None) => {}
        (FieldType::Text, Some(length)) if (1..=MAX_TEXT_LENGTH).contains(&length) => {}
        (FieldType::Text, Some(_)) => return Err(CustomFieldError::InvalidLength),
        (FieldType::Date | FieldType::Option { .. }, Some(_)) => return Err(CustomFieldError::LengthNotApplicable),
    }
    if field_type == FieldType::Date && search.free_text {
        return Err(CustomFieldError::FreeTextOnDate);
    }
    Ok(CustomFieldDefinition { name, description, field_type, length, editable, search })
}

/// Trimmed, `\r\n` read as `\n` (what browsers send from a text area), empty as none.
fn valid_description(raw: &str) -> Result<Option<String>, CustomFieldError> {
    let description = raw.replace("\r\n", "\n");
    let description = description.trim();
    if description.chars().count() > MAX_DESCRIPTION_CHARS || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CustomFieldError::InvalidDescription);
    }
    Ok((!description.is_empty()).then(|| description.to_owned()))
}

fn valid_options(options: Vec<String>) -> Result<Vec<String>, CustomFieldError> {
    if !(1..=MAX_OPTIONS).contains(&options.len()) {
        return Err(CustomFieldError::OptionCount);
    }
    let mut seen = BTreeSet::new();
    options
        .iter()
        .map(|option| {
            let option = display_name(option).map_err(CustomFieldError::InvalidOption)?;
            if seen.insert(unique_key(&option)) {
                Ok(option)
            } else {
                Err(CustomFieldError::DuplicateOption(option))
            }
        })
        .collect()
}

impl Aggregate for CustomField {
    const TYPE: &'static str = "CustomField";
    type Command = CustomFieldCommand;
    type Event = CustomFieldEvent;
    type Error = CustomFieldError;
    type Services = ();

    async fn decide(&self, command: CustomFieldCommand, _: &()) -> Result<Vec<CustomFieldEvent>, CustomFieldError> {
        use CustomFieldCommand as C;
        use CustomFieldEvent as E;
        match command {
            C::AddCustomField { tenant_id, definition } => {
                match self.state {
                    Lifecycle::New => {}
                    Lifecycle::Purged => return Err(CustomFieldError::Purged),
                    Lifecycle::Active | Lifecycle::Deleted => return Err(CustomFieldError::AlreadyExists),
                }
                Ok(vec![E::CustomFieldAdded { tenant_id, definition: valid_definition(definition)? }])
            }
            C::EditCustomField { definition } => {
                self.existing()?;
                let definition = valid_definition(definition)?;
                Ok(if self.definition.as_ref() == Some(&definition) {
                    vec![]
                } else {
                    vec![E::CustomFieldEdited { definition }]
                })
            }
            C::DeleteCustomField => {
                self.existing()?;
                Ok(vec![E::CustomFieldDeleted])
            }
            C::RestoreCustomField => {
                self.deleted()?;
                Ok(vec![E::CustomFieldRestored])
            }
            C::PurgeCustomField => {
                self.deleted()?;
                Ok(vec![E::CustomFieldPurged])
            }
        }
    }

    fn apply(&mut self, event: CustomFieldEvent) {
        use CustomFieldEvent as E;
        match event {
            E::CustomFieldAdded { tenant_id, definition } => {
                self.state = Lifecycle::Active;
                self.tenant_id = Some(tenant_id);
                self.definition = Some(definition);
            }
            E::CustomFieldEdited { definition } => self.definition = Some(definition),
            E::CustomFieldDeleted => self.state = Lifecycle::Deleted,
            E::CustomFieldRestored => self.state = Lifecycle::Active,
            E::CustomFieldPurged => {
                self.state = Lifecycle::Purged;
                self.definition = None;
            }
        }
    }

    /// The name is claimed on add and moved on edit; a deleted field keeps it (so restoring it cannot fail
    /// on a name taken meanwhile) until it is purged.
    fn index_changes(&self, event: &CustomFieldEvent) -> Vec<IndexChange> {
        use CustomFieldEvent as E;
        match event {
            E::CustomFieldAdded { tenant_id, definition } => {
                vec![IndexChange::Claim(IndexKey::name(Namespace::CustomFieldName(*tenant_id), &definition.name))]
            }
            E::CustomFieldEdited { definition } => moves(&self.name_key(self.name()), &self.name_key(&definition.name)),
            E::CustomFieldPurged => self.name_key(self.name()).map(IndexChange::Release).into_iter().collect(),
            E::CustomFieldDeleted | E::CustomFieldRestored => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);

    fn text(name: &str) -> CustomFieldDefinition {
        CustomFieldDefinition {
            name: name.into(),
            description: None,
            field_type: FieldType::Text,
            length: None,
            editable: true,
            search: SearchSettings { advanced_search: true, free_text: true },
        }
    }

    fn date(name: &str) -> CustomFieldDefinition {
        CustomFieldDefinition {
            field_type: FieldType::Date,
            search: SearchSettings { advanced_search: true, free_text: false },
            ..text(name)
        }
    }

    fn options(name: &str, options: &[&str]) -> CustomFieldDefinition {
        CustomFieldDefinition {
            field_type: FieldType::Option { options: options.iter().map(|o| (*o).to_owned()).collect() },
            ..text(name)
        }
    }

    fn add(definition: CustomFieldDefinition) -> CustomFieldCommand {
        CustomFieldCommand::AddCustomField { tenant_id: TENANT, definition }
    }

    fn edit(definition: CustomFieldDefinition) -> CustomFieldCommand {
        CustomFieldCommand::EditCustomField { definition }
    }

    fn added() -> Vec<CustomFieldEvent> {
        vec![CustomFieldEvent::CustomFieldAdded { tenant_id: TENANT, definition: text("Ticket") }]
    }

    fn deleted() -> Vec<CustomFieldEvent> {
        let mut events = added();
        events.push(CustomFieldEvent::CustomFieldDeleted);
        events
    }

    fn purged() -> Vec<CustomFieldEvent> {
        let mut events = deleted();
        events.push(CustomFieldEvent::CustomFieldPurged);
        events
    }

    /// The error adding `definition` gives, if any.
    fn refusal(definition: CustomFieldDefinition) -> Option<CustomFieldError> {
        when::<CustomField>([], add(definition), &()).err()
    }

    /// The definition adding `definition` records.
    fn recorded(definition: CustomFieldDefinition) -> CustomFieldDefinition {
        match when::<CustomField>([], add(definition), &()) {
            Ok(events) => match events.as_slice() {
                [CustomFieldEvent::CustomFieldAdded { definition, .. }] => definition.clone(),
                other => panic!("one CustomFieldAdded expected, got {other:?}"),
            },
            Err(error) => panic!("refused: {error}"),
        }
    }

    #[test]
    fn a_field_of_each_type_is_added() {
        for definition in [text("Ticket"), date("Follow-up"), options("Outcome", &["Sale", "No sale"])] {
            assert_eq!(
                when::<CustomField>([], add(definition.clone()), &()),
                Ok(vec![CustomFieldEvent::CustomFieldAdded { tenant_id: TENANT, definition }])
            );
        }
    }

    #[test]
    fn names_options_and_descriptions_are_trimmed_and_an_empty_description_is_none() {
        let definition = CustomFieldDefinition {
            description: Some("  Where the call\r\nended up.  ".into()),
            ..options("  Outcome ", &[" Sale ", "No sale"])
        };
        let outcome = recorded(definition);
        assert_eq!(outcome.name, "Outcome");
        assert_eq!(outcome.description.as_deref(), Some("Where the call\nended up."));
        assert_eq!(outcome.field_type, FieldType::Option { options: vec!["Sale".into(), "No sale".into()] });
        let blank = CustomFieldDefinition { description: Some(" \n ".into()), ..text("Ticket") };
        assert_eq!(recorded(blank).description, None);
    }

    #[test]
    fn invalid_names_and_descriptions_are_refused() {
        assert_eq!(refusal(text(" ")), Some(CustomFieldError::InvalidName(NameError::Empty)));
        assert_eq!(refusal(text(&"n".repeat(101))), Some(CustomFieldError::InvalidName(NameError::TooLong)));
        let described = |d: &str| CustomFieldDefinition { description: Some(d.into()), ..text("Ticket") };
        assert_eq!(refusal(described(&"é".repeat(MAX_DESCRIPTION_CHARS))), None);
        assert_eq!(
            refusal(described(&"é".repeat(MAX_DESCRIPTION_CHARS + 1))),
            Some(CustomFieldError::InvalidDescription)
        );
        assert_eq!(refusal(described("tab\there")), Some(CustomFieldError::InvalidDescription));
        assert_eq!(refusal(described("bare\rreturn")), Some(CustomFieldError::InvalidDescription));
    }

    #[test]
    fn an_option_field_has_one_to_two_hundred_distinct_options() {
        assert_eq!(refusal(options("Outcome", &[])), Some(CustomFieldError::OptionCount));
        let many: Vec<String> = (0..=MAX_OPTIONS).map(|i| format!("Option {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(refusal(options("Outcome", &many[..MAX_OPTIONS])), None);
        assert_eq!(refusal(options("Outcome", &many)), Some(CustomFieldError::OptionCount));
        assert_eq!(
            refusal(options("Outcome", &["Sale", " "])),
            Some(CustomFieldError::InvalidOption(NameError::Empty))
        );
        assert_eq!(
            refusal(options("Outcome", &["Sale", "No sale", " SALE "])),
            Some(CustomFieldError::DuplicateOption("SALE".into()))
        );
    }

    #[test]
    fn only_text_fields_have_a_length_of_one_to_four_thousand() {
        let sized =
            |definition: CustomFieldDefinition, length| CustomFieldDefinition { length: Some(length), ..definition };
        assert_eq!(refusal(sized(text("T"), 1)), None);
        assert_eq!(refusal(sized(text("T"), MAX_TEXT_LENGTH)), None);
        assert_eq!(refusal(sized(text("T"), 0)), Some(CustomFieldError::InvalidLength));
        assert_eq!(refusal(sized(text("T"), MAX_TEXT_LENGTH + 1)), Some(CustomFieldError::InvalidLength));
        assert_eq!(refusal(sized(date("D"), 10)), Some(CustomFieldError::LengthNotApplicable));
        assert_eq!(refusal(sized(options("O", &["a"]), 10)), Some(CustomFieldError::LengthNotApplicable));
        assert_eq!(recorded(text("T")).length, None);
        assert_eq!(text("T").text_length(), Some(DEFAULT_TEXT_LENGTH));
        assert_eq!(sized(text("T"), 40).text_length(), Some(40));
        assert_eq!(date("D").text_length(), None);
    }

    #[test]
    fn date_fields_are_not_searched_as_free_text() {
        let free_text_date =
            CustomFieldDefinition { search: SearchSettings { advanced_search: false, free_text: true }, ..date("D") };
        assert_eq!(refusal(free_text_date), Some(CustomFieldError::FreeTextOnDate));
        assert_eq!(refusal(options("O", &["a"])), None);
    }

    #[test]
    fn a_field_cannot_be_added_twice() {
        assert_eq!(when::<CustomField>(added(), add(text("Other")), &()), Err(CustomFieldError::AlreadyExists));
        assert_eq!(when::<CustomField>(deleted(), add(text("Other")), &()), Err(CustomFieldError::AlreadyExists));
    }

    #[test]
    fn editing_replaces_the_definition_and_an_unchanged_edit_is_no_event() {
        assert_eq!(when::<CustomField>(added(), edit(text(" Ticket ")), &()), Ok(vec![]));
        let longer = CustomFieldDefinition { length: Some(40), ..text("Ticket") };
        assert_eq!(
            when::<CustomField>(added(), edit(longer.clone()), &()),
            Ok(vec![CustomFieldEvent::CustomFieldEdited { definition: longer }])
        );
        assert_eq!(
            when::<CustomField>(added(), edit(options("Outcome", &["a"])), &()),
            Ok(vec![CustomFieldEvent::CustomFieldEdited { definition: options("Outcome", &["a"]) }])
        );
        assert_eq!(
            when::<CustomField>(added(), edit(options("Outcome", &["a", "A"])), &()),
            Err(CustomFieldError::DuplicateOption("A".into()))
        );
    }

    #[test]
    fn an_unknown_field_refuses_every_change() {
        for command in [
            edit(text("x")),
            CustomFieldCommand::DeleteCustomField,
            CustomFieldCommand::RestoreCustomField,
            CustomFieldCommand::PurgeCustomField,
        ] {
            assert_eq!(when::<CustomField>([], command.clone(), &()), Err(CustomFieldError::NotFound), "{command:?}");
        }
    }

    #[test]
    fn a_deleted_field_can_be_restored_but_not_edited_or_deleted_again() {
        assert_eq!(
            when::<CustomField>(added(), CustomFieldCommand::DeleteCustomField, &()),
            Ok(vec![CustomFieldEvent::CustomFieldDeleted])
        );
        assert_eq!(when::<CustomField>(deleted(), edit(text("x")), &()), Err(CustomFieldError::Deleted));
        assert_eq!(
            when::<CustomField>(deleted(), CustomFieldCommand::DeleteCustomField, &()),
            Err(CustomFieldError::Deleted)
        );
        assert_eq!(
            when::<CustomField>(deleted(), CustomFieldCommand::RestoreCustomField, &()),
            Ok(vec![CustomFieldEvent::CustomFieldRestored])
        );
        let field = given::<CustomField>(deleted());
        assert!(field.is_deleted() && !field.exists());
        assert_eq!(field.name(), "Ticket");
    }

    #[test]
    fn only_a_deleted_field_is_restored_or_purged() {
        assert_eq!(
            when::<CustomField>(added(), CustomFieldCommand::RestoreCustomField, &()),
            Err(CustomFieldError::NotDeleted)
        );
        assert_eq!(
            when::<CustomField>(added(), CustomFieldCommand::PurgeCustomField, &()),
            Err(CustomFieldError::NotDeleted)
        );
        assert_eq!(
            when::<CustomField>(deleted(), CustomFieldCommand::PurgeCustomField, &()),
            Ok(vec![CustomFieldEvent::CustomFieldPurged])
        );
    }

    #[test]
    fn a_purged_field_refuses_every_command() {
        for command in [
            add(text("Ticket")),
            edit(text("x")),
            CustomFieldCommand::DeleteCustomField,
            CustomFieldCommand::RestoreCustomField,
            CustomFieldCommand::PurgeCustomField,
        ] {
            assert_eq!(
                when::<CustomField>(purged(), command.clone(), &()),
                Err(CustomFieldError::Purged),
                "{command:?}"
            );
        }
        let field = given::<CustomField>(purged());
        assert!(field.is_purged() && !field.exists() && !field.is_deleted());
        assert_eq!((field.definition(), field.name()), (None, ""));
    }

    #[test]
    fn the_name_is_claimed_on_add_moved_on_rename_kept_while_deleted_and_released_on_purge() {
        let key = |name: &str| IndexKey::name(Namespace::CustomFieldName(TENANT), name);
        assert_eq!(CustomField::default().index_changes(&added()[0]), vec![IndexChange::Claim(key("ticket"))]);
        let field = given::<CustomField>(added());
        assert_eq!(
            field.index_changes(&CustomFieldEvent::CustomFieldEdited { definition: text("Case") }),
            vec![IndexChange::Release(key("ticket")), IndexChange::Claim(key("case"))]
        );
        let retyped = CustomFieldDefinition { length: Some(9), ..text("TICKET") };
        assert_eq!(field.index_changes(&CustomFieldEvent::CustomFieldEdited { definition: retyped }), vec![]);
        assert_eq!(field.index_changes(&CustomFieldEvent::CustomFieldDeleted), vec![]);
        let deleted_field = given::<CustomField>(deleted());
        assert_eq!(deleted_field.index_changes(&CustomFieldEvent::CustomFieldRestored), vec![]);
        assert_eq!(
            deleted_field.index_changes(&CustomFieldEvent::CustomFieldPurged),
            vec![IndexChange::Release(key("ticket"))]
        );
    }

    #[test]
    fn definitions_serialize_with_a_tagged_field_type() {
        let json = serde_json::to_value(options("Outcome", &["Sale"])).expect("serializes");
        assert_eq!(json["field_type"], serde_json::json!({"type": "option", "options": ["Sale"]}));
        assert_eq!(serde_json::to_value(FieldType::Date).expect("serializes"), serde_json::json!({"type": "date"}));
        let back: CustomFieldDefinition = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, options("Outcome", &["Sale"]));
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_field() {
        let (state, events) = run::<CustomField>(
            [
                add(text("Ticket")),
                edit(options("Outcome", &["Sale", "No sale"])),
                CustomFieldCommand::DeleteCustomField,
                CustomFieldCommand::RestoreCustomField,
                edit(CustomFieldDefinition {
                    description: Some("Set by the CRM".into()),
                    ..options("Outcome", &["Sale"])
                }),
            ],
            &(),
        );
        assert_eq!(events.len(), 5);
        assert_eq!(given::<CustomField>(events), state);
        assert!(state.exists());
        assert_eq!(state.tenant_id(), Some(TENANT));
        let definition = state.definition().expect("defined");
        assert_eq!(definition.description.as_deref(), Some("Set by the CRM"));
        assert_eq!(definition.field_type, FieldType::Option { options: vec!["Sale".into()] });
    }
}
