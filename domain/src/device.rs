//! The device aggregate (keyed by device id): a browser or program one user signs in from, registered by
//! its first sign-in and revocable by an administrator, after which no session on it is accepted. A device
//! never changes hands: another user signing in from it gets a new device id from the write side.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};

/// The longest label kept, in characters; a user agent longer than this is cut.
pub const MAX_LABEL_CHARS: usize = 200;

/// The label of a device that did not describe itself.
pub const UNKNOWN_DEVICE: &str = "unknown device";

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    state: DeviceState,
    user_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    label: String,
    registered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum DeviceState {
    #[default]
    New,
    Active,
    Revoked,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    /// Sent on every sign-in; only the first one from a device registers it. `label` is what the device
    /// says it is (e.g. the user agent), cleaned up here.
    RegisterDevice {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        label: String,
        at: DateTime<Utc>,
    },
    RevokeDevice {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceEvent {
    DeviceRegistered { user_id: Uuid, tenant_id: Option<Uuid>, label: String, at: DateTime<Utc> },
    DeviceRevoked { at: DateTime<Utc> },
}

impl DomainEvent for DeviceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::DeviceRegistered { .. } => "DeviceRegistered",
            Self::DeviceRevoked { .. } => "DeviceRevoked",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no such device")]
    NotFound,
    #[error("this device belongs to another user")]
    BelongsToAnotherUser,
    #[error("this device was revoked")]
    Revoked,
    #[error("this device is already revoked")]
    AlreadyRevoked,
}

impl Device {
    /// Whether the device was ever registered (a revoked device still exists).
    pub fn exists(&self) -> bool {
        self.state != DeviceState::New
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    /// `None` for an unknown device and for a device of a user of the service provider.
    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_revoked(&self) -> bool {
        self.state == DeviceState::Revoked
    }

    pub fn registered_at(&self) -> Option<DateTime<Utc>> {
        self.registered_at
    }

    fn existing(&self) -> Result<(), DeviceError> {
        if self.exists() {
            Ok(())
        } else {
            Err(DeviceError::NotFound)
        }
    }
}

/// A label as shown to administrators: control characters removed, surrounding white space trimmed, at most
/// [`MAX_LABEL_CHARS`] characters, [`UNKNOWN_DEVICE`] when nothing is left. The device is not refused for
/// a bad label: it is whatever the client sent.
fn label(raw: &str) -> String {
    let printable: String = raw.chars().filter(|c| !c.is_control()).collect();
    let cut: String = printable.trim().chars().take(MAX_LABEL_CHARS).collect();
    let cut = cut.trim_end();
    if cut.is_empty() {
        UNKNOWN_DEVICE.to_owned()
    } else {
        cut.to_owned()
    }
}

impl Aggregate for Device {
    const TYPE: &'static str = "Device";
    type Command = DeviceCommand;
    type Event = DeviceEvent;
    type Error = DeviceError;
    type Services = ();

    async fn decide(&self, command: DeviceCommand, _: &()) -> Result<Vec<DeviceEvent>, DeviceError> {
        match command {
            DeviceCommand::RegisterDevice { user_id, tenant_id, label: raw, at } => {
                // Ownership first: a revocation concerns its owner's sign-ins; another user gets a new device.
                if self.exists() && self.user_id != Some(user_id) {
                    return Err(DeviceError::BelongsToAnotherUser);
                }
                match self.state {
                    DeviceState::New => {
                        Ok(vec![DeviceEvent::DeviceRegistered { user_id, tenant_id, label: label(&raw), at }])
                    }
                    DeviceState::Active => Ok(vec![]),
                    DeviceState::Revoked => Err(DeviceError::Revoked),
                }
            }
            DeviceCommand::RevokeDevice { at } => {
                self.existing()?;
                if self.is_revoked() {
                    return Err(DeviceError::AlreadyRevoked);
                }
                Ok(vec![DeviceEvent::DeviceRevoked { at }])
            }
        }
    }

    fn apply(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::DeviceRegistered { user_id, tenant_id, label, at } => {
                self.state = DeviceState::Active;
                self.user_id = Some(user_id);
                self.tenant_id = tenant_id;
                self.label = label;
                self.registered_at = Some(at);
            }
            DeviceEvent::DeviceRevoked { .. } => self.state = DeviceState::Revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const USER: Uuid = Uuid::from_u128(1);
    const OTHER_USER: Uuid = Uuid::from_u128(2);
    const TENANT: Uuid = Uuid::from_u128(7);

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("a representable instant")
    }

    fn register(user_id: Uuid, label: &str) -> DeviceCommand {
        DeviceCommand::RegisterDevice { user_id, tenant_id: Some(TENANT), label: label.into(), at: t(0) }
    }

    fn registered() -> Vec<DeviceEvent> {
        vec![DeviceEvent::DeviceRegistered {
            user_id: USER,
            tenant_id: Some(TENANT),
            label: "Firefox".into(),
            at: t(0),
        }]
    }

    fn revoked() -> Vec<DeviceEvent> {
        let mut events = registered();
        events.push(DeviceEvent::DeviceRevoked { at: t(50) });
        events
    }

    fn registered_label(command: DeviceCommand) -> String {
        match when::<Device>([], command, &()).as_deref() {
            Ok([DeviceEvent::DeviceRegistered { label, .. }]) => label.clone(),
            other => panic!("expected one DeviceRegistered, got {other:?}"),
        }
    }

    #[test]
    fn the_first_sign_in_from_a_device_registers_it() {
        assert_eq!(when::<Device>([], register(USER, "Firefox"), &()), Ok(registered()));
        let device = given::<Device>(registered());
        assert!(device.exists() && !device.is_revoked());
        assert_eq!((device.user_id(), device.tenant_id()), (Some(USER), Some(TENANT)));
        assert_eq!((device.label(), device.registered_at()), ("Firefox", Some(t(0))));
        assert!(!Device::default().exists());
    }

    #[test]
    fn the_label_is_trimmed_printable_and_at_most_200_characters() {
        assert_eq!(registered_label(register(USER, "  Mozilla/5.0\t(X11)\u{0}\r\n ")), "Mozilla/5.0(X11)");
        assert_eq!(registered_label(register(USER, "\u{7}  curl/8.5 \u{1b}")), "curl/8.5");
        // Cut by characters, not bytes: 250 two-byte characters become 200 characters (400 bytes).
        let long = registered_label(register(USER, &"é".repeat(250)));
        assert_eq!((long.chars().count(), long.len()), (MAX_LABEL_CHARS, 400));
        let exact = "x".repeat(MAX_LABEL_CHARS);
        assert_eq!(registered_label(register(USER, &exact)), exact);
        // White space where the label is cut does not end it.
        let spaced = format!("{} tail", "y".repeat(MAX_LABEL_CHARS - 1));
        assert_eq!(registered_label(register(USER, &spaced)), "y".repeat(MAX_LABEL_CHARS - 1));
    }

    #[test]
    fn an_empty_label_becomes_unknown_device() {
        for raw in ["", "   ", "\u{0}\t\n"] {
            assert_eq!(registered_label(register(USER, raw)), UNKNOWN_DEVICE, "{raw:?}");
        }
    }

    #[test]
    fn registering_again_for_the_same_user_changes_nothing() {
        assert_eq!(when::<Device>(registered(), register(USER, "Another label"), &()), Ok(vec![]));
    }

    #[test]
    fn a_device_of_another_user_is_refused() {
        assert_eq!(
            when::<Device>(registered(), register(OTHER_USER, "Firefox"), &()),
            Err(DeviceError::BelongsToAnotherUser)
        );
        // Its owner's revocation is not the other user's concern: they are told to use a new device.
        assert_eq!(
            when::<Device>(revoked(), register(OTHER_USER, "Firefox"), &()),
            Err(DeviceError::BelongsToAnotherUser)
        );
    }

    #[test]
    fn a_revoked_device_cannot_be_registered_again() {
        assert_eq!(when::<Device>(revoked(), register(USER, "Firefox"), &()), Err(DeviceError::Revoked));
    }

    #[test]
    fn an_administrator_revokes_a_device_once() {
        let revoke = DeviceCommand::RevokeDevice { at: t(50) };
        assert_eq!(
            when::<Device>(registered(), revoke.clone(), &()),
            Ok(vec![DeviceEvent::DeviceRevoked { at: t(50) }])
        );
        let device = given::<Device>(revoked());
        assert!(device.is_revoked() && device.exists());
        assert_eq!(device.user_id(), Some(USER));
        assert_eq!(when::<Device>(revoked(), revoke.clone(), &()), Err(DeviceError::AlreadyRevoked));
        assert_eq!(when::<Device>([], revoke, &()), Err(DeviceError::NotFound));
    }

    #[test]
    fn event_types_are_the_names_the_events_are_stored_under() {
        for event in revoked() {
            let json = serde_json::to_value(&event).expect("an event serializes");
            assert!(json.get(event.event_type()).is_some(), "{json}");
        }
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_device() {
        let (state, events) = run::<Device>(
            [
                DeviceCommand::RegisterDevice {
                    user_id: USER,
                    tenant_id: None,
                    label: " API client ".into(),
                    at: t(0),
                },
                register(USER, "ignored"),
                DeviceCommand::RevokeDevice { at: t(90) },
            ],
            &(),
        );
        assert_eq!(events.len(), 2);
        assert_eq!(given::<Device>(events), state);
        assert_eq!((state.label(), state.tenant_id(), state.is_revoked()), ("API client", None, true));
    }
}
