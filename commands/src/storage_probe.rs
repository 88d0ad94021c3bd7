//! Testing a storage target's connection: the settings with their secrets in clear go to a probe, which
//! writes, reads back and deletes a small file there and reports what happened in words an administrator
//! can act on. The probe never reports a secret, and never leaves its test file behind when it can help it.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use recall_domain::secret::SecretRef;
use recall_domain::storage_target::StorageKind;
use secrecy::SecretString;

/// A storage target's settings with the secrets they name, in clear (for a test or an upload only).
#[derive(Debug)]
pub struct ResolvedStorage {
    pub kind: StorageKind,
    pub secrets: BTreeMap<SecretRef, SecretString>,
}

impl ResolvedStorage {
    pub fn secret(&self, secret: SecretRef) -> Option<&SecretString> {
        self.secrets.get(&secret)
    }
}

/// The outcome of a connection test, as recorded on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub ok: bool,
    /// What was tried and what happened, e.g. "wrote, read back and deleted recall-probe-….txt in
    /// /var/recordings" or "S3 said: 403 Forbidden (InvalidAccessKeyId)".
    pub detail: String,
}

/// Tests connections to storage targets.
pub trait StorageProbe: Send + Sync + std::fmt::Debug {
    fn probe<'a>(&'a self, storage: &'a ResolvedStorage) -> BoxFuture<'a, ProbeReport>;
}
