//! The one error type of the API edge. It tells the client what was wrong in its terms — with a machine
//! code in `extensions.code` (and the input `field` where one is to blame) — logs the cause chain, and
//! never sends internals (SQL, paths, stack traces) to the client.

use async_graphql::ErrorExtensions;
use recall_commands::admin::{AdminError, AuthError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    Invalid {
        message: String,
        field: Option<String>,
    },
    /// A name or number that is taken, or a change that lost a race.
    Conflict(String),
    /// The database or another service did not answer; the request may be retried.
    Unavailable,
    /// Something that should not happen; logged on the server.
    Internal,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid { message: message.into(), field: None }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid { message: message.into(), field: Some(field.to_owned()) }
    }

    pub fn not_signed_in() -> Self {
        Self::Unauthenticated("sign in first".to_owned())
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Invalid { .. } => "INVALID_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) | Self::NotFound(m) | Self::Conflict(m) => m.clone(),
            Self::Invalid { message, .. } => message.clone(),
            Self::Unavailable => "the service is unavailable for a moment; try again".to_owned(),
            Self::Internal => "something went wrong on the server; it was logged".to_owned(),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let field = match &error {
            ApiError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        async_graphql::Error::new(error.message()).extend_with(|_, e| {
            e.set("code", code);
            if let Some(field) = &field {
                e.set("field", field.as_str());
            }
        })
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // The read model's tables do not exist yet (the projections are being created at start).
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("42P01") => {
                tracing::warn!(error = %error, "the read model is not built yet");
                Self::Unavailable
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %error, "the read model's database is unavailable");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, "a read-model query failed");
                Self::Internal
            }
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::Unauthenticated(m) => Self::Unauthenticated(m),
            AdminError::Forbidden(m) => Self::Forbidden(m),
            AdminError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            AdminError::Invalid(m) => Self::invalid(m),
            AdminError::Taken(key) => Self::Conflict(format!("the {key} is already taken")),
            AdminError::Conflict(m) => Self::Conflict(m),
            AdminError::Unavailable(cause) => {
                tracing::warn!(cause, "a command could not reach the database");
                Self::Unavailable
            }
            AdminError::Internal(cause) => {
                tracing::error!(cause, "a command failed");
                Self::Internal
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unavailable(cause) => {
                tracing::warn!(cause, "authentication could not reach the database");
                Self::Unavailable
            }
            other => Self::Unauthenticated(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
