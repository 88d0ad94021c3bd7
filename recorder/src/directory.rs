//! What the recorder knows of the administration model: the tenants (their trusted recording clients,
//! default rule, file format, storage target and encryption key) and which user each extension belongs
//! to. The binary fills it from the read model and replaces it as the model changes; the recorder reads
//! whatever it holds at the moment a call starts, so a database outage never stops calls from being taken.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use recall_crypto::PublicKey;
use recall_domain::call::CallDirection;
use recall_domain::recording_policy::{decide_recording, AudioFormat, DefaultRecordingRule, RecordingDecision};
use recall_domain::tenant::{tenant_for_source, RecordingClients};
use recall_domain::user::RecordingSettings;
use uuid::Uuid;

use crate::siprec::{aor_user, CallParty};

/// A tenant as the recorder needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantProfile {
    pub tenant_id: Uuid,
    pub name: String,
    pub active: bool,
    pub clients: RecordingClients,
    pub rule: DefaultRecordingRule,
    pub format: AudioFormat,
    /// Where its recordings go; `None`: the installation's recordings directory.
    pub storage_target_id: Option<Uuid>,
    /// Whether its recordings are encrypted on the way to the spool, and with which key.
    pub encryption: Encryption,
}

/// A tenant's file encryption as the recorder applies it to new calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Encryption {
    /// Recordings are kept as plain audio.
    #[default]
    Off,
    /// Recordings are sealed (recall-crypto's file format) with a fresh data key wrapped with this public key.
    On { key_id: Uuid, key: Arc<PublicKey> },
    /// The tenant switched encryption on but no usable active key could be read: its calls are refused
    /// (503), never recorded in plain.
    Unavailable,
}

/// The user an extension belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOwner {
    pub user_id: Uuid,
    pub settings: RecordingSettings,
}

/// The recorded party of a call, as the directory recognises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognised {
    /// Index into the call's parties of the one whose extension is known (the agent), if any.
    pub party: Option<usize>,
    pub extension: Option<String>,
    pub user_id: Option<Uuid>,
    pub direction: CallDirection,
    pub decision: RecordingDecision,
}

/// A snapshot of the directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    tenants: Vec<TenantProfile>,
    extensions: HashMap<(Uuid, String), ExtensionOwner>,
}

impl Directory {
    pub fn new(
        tenants: Vec<TenantProfile>,
        extensions: impl IntoIterator<Item = (Uuid, String, ExtensionOwner)>,
    ) -> Self {
        let extensions =
            extensions.into_iter().map(|(tenant, extension, owner)| ((tenant, extension), owner)).collect();
        Self { tenants, extensions }
    }

    pub fn tenants(&self) -> &[TenantProfile] {
        &self.tenants
    }

    /// The active tenant whose trusted networks hold `source` most narrowly; `None`: nobody trusts it.
    pub fn tenant_for_source(&self, source: IpAddr) -> Option<&TenantProfile> {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        let active = self.tenants.iter().filter(|t| t.active);
        let tenant_id = tenant_for_source(source, active.map(|t| (t.tenant_id, &t.clients)))?;
        self.tenants.iter().find(|t| t.tenant_id == tenant_id)
    }

    pub fn owner(&self, tenant_id: Uuid, extension: &str) -> Option<&ExtensionOwner> {
        self.extensions.get(&(tenant_id, extension.to_owned()))
    }

    /// Whether an AOR's user part is an extension of one of the tenant's users.
    pub fn is_agent(&self, tenant_id: Uuid, aor: &str) -> bool {
        aor_user(aor).is_some_and(|user| self.owner(tenant_id, user).is_some())
    }

    /// Finds the recorded party among `parties` (the first is the caller, the second the callee), the
    /// call's direction seen from it, and whether the call is recorded.
    pub fn recognise(&self, tenant: &TenantProfile, parties: &[CallParty]) -> Recognised {
        let owners: Vec<Option<(usize, String, &ExtensionOwner)>> = parties
            .iter()
            .enumerate()
            .map(|(index, party)| {
                let user = party.aor.as_deref().and_then(aor_user)?;
                self.owner(tenant.tenant_id, user).map(|owner| (index, user.to_owned(), owner))
            })
            .collect();
        let known: Vec<&(usize, String, &ExtensionOwner)> = owners.iter().flatten().collect();
        let direction = match known.as_slice() {
            [] => CallDirection::Unknown,
            [(0, ..)] => CallDirection::Outbound,
            [_] => CallDirection::Inbound,
            _ => CallDirection::Internal,
        };
        match known.first() {
            Some((index, extension, owner)) => Recognised {
                party: Some(*index),
                extension: Some(extension.clone()),
                user_id: Some(owner.user_id),
                direction,
                decision: decide_recording(Some(&owner.settings), &tenant.rule, direction),
            },
            None => Recognised {
                party: None,
                // A call of nobody's extension is known by the first party's number ("not assigned").
                extension: parties.iter().find_map(|p| p.aor.as_deref().and_then(aor_user)).map(str::to_owned),
                user_id: None,
                direction,
                decision: decide_recording(None, &tenant.rule, direction),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recall_domain::recording_policy::{RecordDirection, RecordMode, UnassignedCallRule};

    fn tenant(id: u128, networks: &[&str]) -> TenantProfile {
        TenantProfile {
            tenant_id: Uuid::from_u128(id),
            name: format!("t{id}"),
            active: true,
            clients: RecordingClients {
                networks: networks.iter().map(|n| n.parse().expect("network")).collect(),
                sip_domains: Vec::new(),
            },
            rule: DefaultRecordingRule::default(),
            format: AudioFormat::default(),
            storage_target_id: None,
            encryption: Encryption::Off,
        }
    }

    fn party(aor: &str) -> CallParty {
        CallParty { participant_id: None, aor: Some(aor.to_owned()), display_name: None }
    }

    #[test]
    fn the_narrowest_trusting_active_tenant_owns_a_source_and_mapped_addresses_count_as_ipv4() {
        let mut inactive = tenant(3, &["10.1.1.0/24"]);
        inactive.active = false;
        let directory =
            Directory::new(vec![tenant(1, &["10.0.0.0/8"]), tenant(2, &["10.1.0.0/16"]), inactive], std::iter::empty());
        let owner = |ip: &str| directory.tenant_for_source(ip.parse().expect("ip")).map(|t| t.tenant_id.as_u128());
        assert_eq!(owner("10.1.1.5"), Some(2), "the inactive /24 does not count");
        assert_eq!(owner("10.2.0.1"), Some(1));
        assert_eq!(owner("::ffff:10.2.0.1"), Some(1));
        assert_eq!(owner("192.0.2.1"), None);
    }

    #[test]
    fn the_party_with_a_users_extension_is_recorded_and_its_side_gives_the_direction() {
        let t = tenant(1, &["10.0.0.0/8"]);
        let agent = ExtensionOwner {
            user_id: Uuid::from_u128(9),
            settings: RecordingSettings { record: RecordMode::Always, direction: RecordDirection::Inbound },
        };
        let directory = Directory::new(vec![t.clone()], [(t.tenant_id, "2001".to_owned(), agent)]);
        let inbound = directory.recognise(&t, &[party("sip:+4930111@carrier"), party("sip:2001@pbx")]);
        assert_eq!(inbound.party, Some(1));
        assert_eq!(inbound.direction, CallDirection::Inbound);
        assert_eq!(inbound.decision, RecordingDecision::Record);
        let outbound = directory.recognise(&t, &[party("sip:2001@pbx"), party("tel:+4930111")]);
        assert_eq!((outbound.direction, outbound.decision), (CallDirection::Outbound, RecordingDecision::DoNotRecord));
        let nobody = directory.recognise(&t, &[party("sip:3001@pbx"), party("sip:3002@pbx")]);
        assert_eq!((nobody.user_id, nobody.extension.as_deref()), (None, Some("3001")));
        assert_eq!(nobody.decision, RecordingDecision::Record, "the default rule records unassigned calls");
        let mut strict = t.clone();
        strict.rule.unassigned_calls = UnassignedCallRule::DoNotRecord;
        assert_eq!(directory.recognise(&strict, &[party("sip:3001@pbx")]).decision, RecordingDecision::DoNotRecord);
    }
}
