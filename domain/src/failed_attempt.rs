//! Failed attempts (one aggregate per attempt, keyed by a fresh id): a command that was refused, or a
//! sign-in that failed. The refused command changes nothing; this record is how the audit trail shows it
//! (PCI DSS 10.2 asks for failures too). It never holds what was typed as a password.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};

/// Texts of a failed attempt are cut to this many characters: they come from outside.
pub const MAX_TEXT_CHARS: usize = 500;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    recorded: bool,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The caller's role or scope does not allow it.
    Forbidden,
    /// The command is not valid for what it acts on (a rule of the domain, a taken name, an unknown target).
    Invalid,
}

/// Why a sign-in failed. Deliberately coarse: the caller is told less than the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInFailure {
    UnknownUser,
    WrongPassword,
    /// The account is inactive, has no web login, or its tenant is deactivated.
    AccountDisabled,
    /// Too many failures for this account or address in a short time.
    RateLimited,
    /// The device the sign-in came from was revoked.
    DeviceRevoked,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FailedAttemptCommand {
    RecordRefusal { command: String, target: String, kind: RefusalKind, reason: String },
    RecordFailedSignIn { username: String, user_id: Option<Uuid>, failure: SignInFailure },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FailedAttemptEvent {
    /// `command`: e.g. `AssignRole`; `target`: e.g. `User/0192…`.
    CommandRefused {
        command: String,
        target: String,
        kind: RefusalKind,
        reason: String,
    },
    SignInFailed {
        username: String,
        user_id: Option<Uuid>,
        failure: SignInFailure,
    },
}

impl DomainEvent for FailedAttemptEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CommandRefused { .. } => "CommandRefused",
            Self::SignInFailed { .. } => "SignInFailed",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailedAttemptError {
    #[error("this attempt was already recorded")]
    AlreadyRecorded,
}

/// Outside text as the audit trail keeps it: control characters replaced, at most 500 characters.
fn bounded(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_TEXT_CHARS).collect()
}

impl Aggregate for FailedAttempt {
    const TYPE: &'static str = "FailedAttempt";
    type Command = FailedAttemptCommand;
    type Event = FailedAttemptEvent;
    type Error = FailedAttemptError;
    type Services = ();

    async fn decide(
        &self,
        command: FailedAttemptCommand,
        _: &(),
    ) -> Result<Vec<FailedAttemptEvent>, FailedAttemptError> {
        if self.recorded {
            return Err(FailedAttemptError::AlreadyRecorded);
        }
        Ok(vec![match command {
            FailedAttemptCommand::RecordRefusal { command, target, kind, reason } => {
                FailedAttemptEvent::CommandRefused {
                    command: bounded(&command),
                    target: bounded(&target),
                    kind,
                    reason: bounded(&reason),
                }
            }
            FailedAttemptCommand::RecordFailedSignIn { username, user_id, failure } => {
                FailedAttemptEvent::SignInFailed { username: bounded(username.trim()), user_id, failure }
            }
        }])
    }

    fn apply(&mut self, _: FailedAttemptEvent) {
        self.recorded = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::when;

    #[test]
    fn a_refusal_is_recorded_once_with_bounded_texts() {
        let command = FailedAttemptCommand::RecordRefusal {
            command: "AssignRole".into(),
            target: "User/1".into(),
            kind: RefusalKind::Forbidden,
            reason: format!("no\n{}", "x".repeat(600)),
        };
        let events = when::<FailedAttempt>([], command.clone(), &()).expect("recorded");
        let FailedAttemptEvent::CommandRefused { reason, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!(reason.chars().count(), MAX_TEXT_CHARS);
        assert!(reason.starts_with("no "));
        assert_eq!(when::<FailedAttempt>(events, command, &()), Err(FailedAttemptError::AlreadyRecorded));
    }

    #[test]
    fn a_failed_sign_in_keeps_the_username_as_typed_without_control_characters() {
        let command = FailedAttemptCommand::RecordFailedSignIn {
            username: " alice\r\n".into(),
            user_id: None,
            failure: SignInFailure::UnknownUser,
        };
        assert_eq!(
            when::<FailedAttempt>([], command, &()),
            Ok(vec![FailedAttemptEvent::SignInFailed {
                username: "alice".into(),
                user_id: None,
                failure: SignInFailure::UnknownUser
            }])
        );
    }
}
