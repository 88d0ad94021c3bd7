//! References to secrets. Passwords (as Argon2id hashes), reset and session tokens (as digests),
//! verification codes and storage credentials (encrypted) never enter the event log: the write side keeps
//! them in its secret store, and events name them by id. A secret can so be destroyed although the log is
//! immutable, and nobody who reads the audit trail can attack a hash.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a secret in the write side's secret store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(pub Uuid);
