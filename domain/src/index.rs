//! The write side's index: keys that at most one aggregate may hold at a time (a username, an extension
//! within a tenant, a group name within a tenant) and memberships the write side must count or look up
//! (who holds a role, who is in a group). Aggregates say which keys their events claim and release
//! (`Aggregate::index_changes`); the command service keeps the index in the same transaction as the log,
//! so two commands racing for one key cannot both win. The index can always be rebuilt from the log.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A family of keys. Its text form is stored; the names are frozen once shipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Namespace {
    /// Sign-in names, unique service-wide (case-insensitive).
    Username,
    /// Tenant names, unique service-wide (case-insensitive).
    TenantName,
    /// Group names within a tenant (case-insensitive).
    GroupName(Uuid),
    /// Telephone extensions within a tenant: each belongs to at most one user.
    Extension(Uuid),
    /// Storage target names within a tenant (case-insensitive).
    StorageTargetName(Uuid),
    /// Custom field names within a tenant (case-insensitive).
    CustomFieldName(Uuid),
    /// Encryption key names within a tenant (case-insensitive).
    EncryptionKeyName(Uuid),
    /// Evaluation form names within a tenant (case-insensitive).
    EvaluationFormName(Uuid),
    /// Job names (backups, restores) within a tenant (case-insensitive).
    JobName(Uuid),
    /// Users holding a role; the key is the user id.
    RoleHolders(Uuid),
    /// Members of a group; the key is the user id.
    GroupMembers(Uuid),
    /// Calls of a tenant not assigned to any user, by extension; the key is `<extension>/<call id>`.
    UnassignedCalls(Uuid),
    /// Networks recording clients call from, service-wide: each is trusted by one tenant at most.
    RecordingNetwork,
    /// SIP domains, service-wide: each belongs to one tenant at most.
    SipDomain,
}

impl Namespace {
    /// What a key of this namespace is, for messages: "username", "extension", …
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::TenantName => "tenant name",
            Self::GroupName(_) => "group name",
            Self::Extension(_) => "extension",
            Self::StorageTargetName(_) => "storage target name",
            Self::CustomFieldName(_) => "custom field name",
            Self::EncryptionKeyName(_) => "encryption key name",
            Self::EvaluationFormName(_) => "evaluation form name",
            Self::JobName(_) => "job name",
            Self::RoleHolders(_) => "role holder",
            Self::GroupMembers(_) => "group member",
            Self::UnassignedCalls(_) => "unassigned call",
            Self::RecordingNetwork => "trusted recording network",
            Self::SipDomain => "SIP domain",
        }
    }
}

/// Stored text form: `username`, `extension/<tenant>`, … (what the index table's `namespace` column holds).
impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Username => f.write_str("username"),
            Self::TenantName => f.write_str("tenant_name"),
            Self::GroupName(t) => write!(f, "group_name/{t}"),
            Self::Extension(t) => write!(f, "extension/{t}"),
            Self::StorageTargetName(t) => write!(f, "storage_target_name/{t}"),
            Self::CustomFieldName(t) => write!(f, "custom_field_name/{t}"),
            Self::EncryptionKeyName(t) => write!(f, "encryption_key_name/{t}"),
            Self::EvaluationFormName(t) => write!(f, "evaluation_form_name/{t}"),
            Self::JobName(t) => write!(f, "job_name/{t}"),
            Self::RoleHolders(r) => write!(f, "role_holders/{r}"),
            Self::GroupMembers(g) => write!(f, "group_members/{g}"),
            Self::UnassignedCalls(t) => write!(f, "unassigned_calls/{t}"),
            Self::RecordingNetwork => f.write_str("recording_network"),
            Self::SipDomain => f.write_str("sip_domain"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an index namespace: {0:?}")]
pub struct UnknownNamespace(pub String);

impl std::str::FromStr for Namespace {
    type Err = UnknownNamespace;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnknownNamespace(s.to_owned());
        match s {
            "username" => return Ok(Self::Username),
            "tenant_name" => return Ok(Self::TenantName),
            "recording_network" => return Ok(Self::RecordingNetwork),
            "sip_domain" => return Ok(Self::SipDomain),
            _ => {}
        }
        let (kind, id) = s.split_once('/').ok_or_else(err)?;
        let id = Uuid::parse_str(id).map_err(|_| err())?;
        Ok(match kind {
            "group_name" => Self::GroupName(id),
            "extension" => Self::Extension(id),
            "storage_target_name" => Self::StorageTargetName(id),
            "custom_field_name" => Self::CustomFieldName(id),
            "encryption_key_name" => Self::EncryptionKeyName(id),
            "evaluation_form_name" => Self::EvaluationFormName(id),
            "job_name" => Self::JobName(id),
            "role_holders" => Self::RoleHolders(id),
            "group_members" => Self::GroupMembers(id),
            "unassigned_calls" => Self::UnassignedCalls(id),
            _ => return Err(err()),
        })
    }
}

/// One key of the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexKey {
    pub namespace: Namespace,
    pub key: String,
}

impl IndexKey {
    pub fn new(namespace: Namespace, key: impl Into<String>) -> Self {
        Self { namespace, key: key.into() }
    }

    /// A case-insensitive name key: what two names that differ only in case have in common.
    pub fn name(namespace: Namespace, name: &str) -> Self {
        Self::new(namespace, crate::names::unique_key(name))
    }
}

/// "username \"alice\"", "extension \"2001\"": what a message about the key says.
impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.namespace.describe(), self.key)
    }
}

/// A change an event makes to the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexChange {
    /// The aggregate takes the key; refused if another aggregate holds it. Holding it already is fine.
    Claim(IndexKey),
    /// The aggregate gives the key up (if it holds it).
    Release(IndexKey),
}

/// Claims and releases that move an aggregate from the keys `before` to the keys `after`: releases of
/// what it no longer holds first, then claims of what it newly holds.
pub fn moves<'a>(
    before: impl IntoIterator<Item = &'a IndexKey>,
    after: impl IntoIterator<Item = &'a IndexKey>,
) -> Vec<IndexChange> {
    let before: std::collections::BTreeSet<&IndexKey> = before.into_iter().collect();
    let after: std::collections::BTreeSet<&IndexKey> = after.into_iter().collect();
    let released = before.difference(&after).map(|k| IndexChange::Release((*k).clone()));
    let claimed = after.difference(&before).map(|k| IndexChange::Claim((*k).clone()));
    released.chain(claimed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_round_trip_through_their_stored_form() {
        let id = Uuid::from_u128(42);
        for namespace in [
            Namespace::Username,
            Namespace::TenantName,
            Namespace::GroupName(id),
            Namespace::Extension(id),
            Namespace::StorageTargetName(id),
            Namespace::CustomFieldName(id),
            Namespace::EncryptionKeyName(id),
            Namespace::EvaluationFormName(id),
            Namespace::JobName(id),
            Namespace::RoleHolders(id),
            Namespace::GroupMembers(id),
            Namespace::UnassignedCalls(id),
            Namespace::RecordingNetwork,
            Namespace::SipDomain,
        ] {
            assert_eq!(namespace.to_string().parse::<Namespace>(), Ok(namespace));
        }
        for bad in ["", "extension", "extension/x", "nope/00000000-0000-0000-0000-00000000002a", "Username"] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn name_keys_ignore_case_and_surrounding_space() {
        assert_eq!(IndexKey::name(Namespace::Username, " Alice "), IndexKey::name(Namespace::Username, "aLICE"));
    }

    #[test]
    fn moves_release_what_is_gone_and_claim_what_is_new() {
        let key = |k: &str| IndexKey::new(Namespace::Extension(Uuid::nil()), k);
        let (a, b, c) = (key("100"), key("200"), key("300"));
        assert_eq!(moves([&a, &b], [&b, &c]), vec![IndexChange::Release(a.clone()), IndexChange::Claim(c.clone())]);
        assert!(moves([&a], [&a]).is_empty());
    }
}
