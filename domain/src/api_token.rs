//! The API token aggregate (keyed by token id): a bearer credential a program uses instead of a session. It
//! acts with exactly its user's rights, is named (so people know which program holds it), may expire, and is
//! revoked for good. It never holds the token itself, only the id of its digest in the secret store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::names::{display_name, NameError};
use crate::secret::SecretRef;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    user_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    name: String,
    secret: Option<SecretRef>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiTokenCommand {
    IssueApiToken {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        name: String,
        secret: SecretRef,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    RevokeApiToken {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiTokenEvent {
    ApiTokenIssued {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        name: String,
        secret: SecretRef,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    ApiTokenRevoked {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ApiTokenEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::ApiTokenIssued { .. } => "ApiTokenIssued",
            Self::ApiTokenRevoked { .. } => "ApiTokenRevoked",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiTokenError {
    #[error("this API token already exists")]
    AlreadyExists,
    #[error("no such API token")]
    NotFound,
    #[error("this API token is revoked already")]
    AlreadyRevoked,
    #[error("invalid token name: {0}")]
    InvalidName(NameError),
    #[error("an API token must expire after it is issued")]
    InvalidExpiry,
}

impl ApiToken {
    pub fn exists(&self) -> bool {
        self.user_id.is_some()
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn secret(&self) -> Option<SecretRef> {
        self.secret
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Issued, not revoked, not expired at `now`.
    pub fn is_valid(&self, now: DateTime<Utc>) -> bool {
        self.exists() && !self.is_revoked() && self.expires_at.is_none_or(|expiry| now < expiry)
    }
}

impl Aggregate for ApiToken {
    const TYPE: &'static str = "ApiToken";
    type Command = ApiTokenCommand;
    type Event = ApiTokenEvent;
    type Error = ApiTokenError;
    type Services = ();

    async fn decide(&self, command: ApiTokenCommand, _: &()) -> Result<Vec<ApiTokenEvent>, ApiTokenError> {
        match command {
            ApiTokenCommand::IssueApiToken { user_id, tenant_id, name, secret, expires_at, at } => {
                if self.exists() {
                    return Err(ApiTokenError::AlreadyExists);
                }
                if expires_at.is_some_and(|expiry| expiry <= at) {
                    return Err(ApiTokenError::InvalidExpiry);
                }
                let name = display_name(&name).map_err(ApiTokenError::InvalidName)?;
                Ok(vec![ApiTokenEvent::ApiTokenIssued { user_id, tenant_id, name, secret, expires_at, at }])
            }
            ApiTokenCommand::RevokeApiToken { at } => {
                if !self.exists() {
                    return Err(ApiTokenError::NotFound);
                }
                if self.is_revoked() {
                    return Err(ApiTokenError::AlreadyRevoked);
                }
                Ok(vec![ApiTokenEvent::ApiTokenRevoked { at }])
            }
        }
    }

    fn apply(&mut self, event: ApiTokenEvent) {
        match event {
            ApiTokenEvent::ApiTokenIssued { user_id, tenant_id, name, secret, expires_at, .. } => {
                self.user_id = Some(user_id);
                self.tenant_id = tenant_id;
                self.name = name;
                self.secret = Some(secret);
                self.expires_at = expires_at;
            }
            ApiTokenEvent::ApiTokenRevoked { at } => self.revoked_at = Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn issue(name: &str, expires_at: Option<DateTime<Utc>>) -> ApiTokenCommand {
        ApiTokenCommand::IssueApiToken {
            user_id: Uuid::from_u128(1),
            tenant_id: None,
            name: name.into(),
            secret: SecretRef(Uuid::from_u128(9)),
            expires_at,
            at: at(0),
        }
    }

    fn issued(expires_at: Option<DateTime<Utc>>) -> Vec<ApiTokenEvent> {
        vec![ApiTokenEvent::ApiTokenIssued {
            user_id: Uuid::from_u128(1),
            tenant_id: None,
            name: "CRM sync".into(),
            secret: SecretRef(Uuid::from_u128(9)),
            expires_at,
            at: at(0),
        }]
    }

    #[test]
    fn a_token_is_issued_once_with_a_name_and_a_future_expiry() {
        assert_eq!(when::<ApiToken>([], issue(" CRM sync ", Some(at(60))), &()), Ok(issued(Some(at(60)))));
        assert_eq!(when::<ApiToken>(issued(None), issue("x", None), &()), Err(ApiTokenError::AlreadyExists));
        assert_eq!(when::<ApiToken>([], issue("x", Some(at(0))), &()), Err(ApiTokenError::InvalidExpiry));
        assert_eq!(when::<ApiToken>([], issue(" ", None), &()), Err(ApiTokenError::InvalidName(NameError::Empty)));
    }

    #[test]
    fn a_token_is_valid_until_it_expires_or_is_revoked() {
        let token = given::<ApiToken>(issued(Some(at(60))));
        assert!(token.is_valid(at(59)));
        assert!(!token.is_valid(at(60)));
        let revoked = given::<ApiToken>(issued(None).into_iter().chain([ApiTokenEvent::ApiTokenRevoked { at: at(5) }]));
        assert!(!revoked.is_valid(at(6)));
        assert_eq!(
            when::<ApiToken>(
                issued(None).into_iter().chain([ApiTokenEvent::ApiTokenRevoked { at: at(5) }]),
                ApiTokenCommand::RevokeApiToken { at: at(7) },
                &()
            ),
            Err(ApiTokenError::AlreadyRevoked)
        );
        assert_eq!(
            when::<ApiToken>([], ApiTokenCommand::RevokeApiToken { at: at(7) }, &()),
            Err(ApiTokenError::NotFound)
        );
    }
}
