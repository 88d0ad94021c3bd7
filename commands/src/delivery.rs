//! Sending short-lived codes to people (the verification code an administrator enters before impersonating
//! a user). recall has no mail or SMS gateway of its own yet: a deployment plugs one in through this port,
//! and without one, asking for a code is refused with a message that says so.

use futures::future::BoxFuture;
use secrecy::SecretString;
use uuid::Uuid;

/// Who a code goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: Uuid,
    pub username: String,
    pub email: Option<String>,
}

pub trait CodeDelivery: Send + Sync + std::fmt::Debug {
    /// Whether codes can be sent at all (a channel is configured).
    fn available(&self) -> bool;
    /// Sends `code` to `to`; the error says why it could not, in words for an administrator.
    fn deliver<'a>(&'a self, to: &'a Recipient, code: &'a SecretString) -> BoxFuture<'a, Result<(), String>>;
}

/// No channel configured: codes cannot be sent.
#[derive(Debug, Default)]
pub struct NoDelivery;

impl CodeDelivery for NoDelivery {
    fn available(&self) -> bool {
        false
    }

    fn deliver<'a>(&'a self, _: &'a Recipient, _: &'a SecretString) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("no e-mail or SMS delivery is configured for verification codes".to_owned()) })
    }
}
