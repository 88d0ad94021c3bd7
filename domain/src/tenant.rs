//! The tenant aggregate (keyed by tenant id): one customer organisation of the service. Created by the
//! service provider; holds the tenant's name, default time zone, default recording rule, storage option,
//! file-encryption switch and the active encryption key new recordings are encrypted with, audio format,
//! retention policy and whether impersonation needs a verification code. Names are unique service-wide
//! (case-insensitive), kept by the write side's index.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::names::{display_name, timezone, NameError};
use crate::recording_policy::{AudioFormat, DefaultRecordingRule, RecordMode, RetentionPolicy, StorageOption};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    state: TenantState,
    name: String,
    timezone: String,
    default_rule: DefaultRecordingRule,
    storage: StorageOption,
    file_encryption: bool,
    audio_format: AudioFormat,
    retention: RetentionPolicy,
    impersonation_verification: bool,
    #[serde(default)]
    recording_clients: RecordingClients,
    #[serde(default)]
    active_encryption_key: Option<Uuid>,
}

/// Where a tenant's calls come from: the networks of its recording clients (SBCs, PBXs) and the SIP
/// domains it owns. A call's tenant is decided from these, never from what the caller says.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingClients {
    /// Addresses or networks (a single address is a /32 or /128).
    pub networks: Vec<ipnet::IpNet>,
    /// Lower-case domain names.
    pub sip_domains: Vec<String>,
}

/// A tenant may trust this many networks and own this many SIP domains at most.
pub const MAX_RECORDING_NETWORKS: usize = 256;
pub const MAX_SIP_DOMAINS: usize = 64;

/// The tenant whose recording clients include `source`: the one trusting the narrowest network that
/// contains it (two tenants never trust the same network).
pub fn tenant_for_source<'a>(
    source: std::net::IpAddr,
    tenants: impl IntoIterator<Item = (uuid::Uuid, &'a RecordingClients)>,
) -> Option<uuid::Uuid> {
    tenants
        .into_iter()
        .flat_map(|(tenant, clients)| clients.networks.iter().map(move |net| (tenant, net)))
        .filter(|(_, net)| net.contains(&source))
        .max_by_key(|(_, net)| net.prefix_len())
        .map(|(tenant, _)| tenant)
}

fn valid_clients(clients: RecordingClients) -> Result<RecordingClients, TenantError> {
    let mut networks: Vec<ipnet::IpNet> = clients.networks.iter().map(ipnet::IpNet::trunc).collect();
    networks.sort();
    networks.dedup();
    let mut domains = Vec::with_capacity(clients.sip_domains.len());
    for domain in clients.sip_domains {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(TenantError::InvalidSipDomain(domain));
        }
        domains.push(domain);
    }
    domains.sort();
    domains.dedup();
    if networks.len() > MAX_RECORDING_NETWORKS || domains.len() > MAX_SIP_DOMAINS {
        return Err(TenantError::TooManyRecordingClients);
    }
    Ok(RecordingClients { networks, sip_domains: domains })
}

fn client_keys(clients: &RecordingClients) -> Vec<IndexKey> {
    let networks = clients.networks.iter().map(|n| IndexKey::new(Namespace::RecordingNetwork, n.to_string()));
    let domains = clients.sip_domains.iter().map(|d| IndexKey::new(Namespace::SipDomain, d.clone()));
    networks.chain(domains).collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum TenantState {
    #[default]
    New,
    Active,
    Deactivated,
}

/// The settings a tenant starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    pub name: String,
    pub timezone: String,
    pub default_rule: DefaultRecordingRule,
    pub storage: StorageOption,
    pub file_encryption: bool,
    pub audio_format: AudioFormat,
}

impl TenantSettings {
    /// A tenant with the defaults: UTC, record everything (unassigned calls too), non-hosted storage,
    /// no file encryption, MP3 stereo 32 kbit/s.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            timezone: "UTC".to_owned(),
            default_rule: DefaultRecordingRule::default(),
            storage: StorageOption::default(),
            file_encryption: false,
            audio_format: AudioFormat::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    CreateTenant(TenantSettings),
    RenameTenant {
        name: String,
    },
    SetTenantTimezone {
        timezone: String,
    },
    SetDefaultRecordingRule {
        rule: DefaultRecordingRule,
    },
    SetStorageOption {
        option: StorageOption,
    },
    /// Switches file encryption of new recordings on or off; on needs an active encryption key.
    SetFileEncryption {
        enabled: bool,
    },
    SetAudioFormat {
        format: AudioFormat,
    },
    SetRetentionPolicy {
        policy: RetentionPolicy,
    },
    /// Whether an administrator must enter a verification code before impersonating a user.
    SetImpersonationVerification {
        required: bool,
    },
    /// The networks the tenant's recording clients call from and the SIP domains it owns (replacing both).
    SetRecordingClients(RecordingClients),
    /// Makes `key_id` the key new recordings are encrypted with (rotation: files keep the key they were
    /// encrypted with). `tenant_id` is this tenant's own id, which its state does not hold; `key_tenant`
    /// and `key_destroyed` are what the write side found for the key.
    UseEncryptionKey {
        tenant_id: Uuid,
        key_id: Uuid,
        key_tenant: Uuid,
        key_destroyed: bool,
    },
    /// The write side is about to destroy `key_id`: if it is the active key, the tenant has none after.
    /// Refused while file encryption is on (switch it off or activate another key first).
    ForgetEncryptionKey {
        key_id: Uuid,
    },
    /// The tenant's users can no longer sign in and its calls are no longer recorded; nothing is deleted.
    DeactivateTenant,
    ReactivateTenant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    TenantCreated(TenantSettings),
    TenantRenamed { name: String },
    TenantTimezoneChanged { timezone: String },
    DefaultRecordingRuleChanged { rule: DefaultRecordingRule },
    StorageOptionChanged { option: StorageOption },
    FileEncryptionSwitched { enabled: bool },
    AudioFormatChanged { format: AudioFormat },
    RetentionPolicySet { policy: RetentionPolicy },
    ImpersonationVerificationSet { required: bool },
    RecordingClientsSet(RecordingClients),
    EncryptionKeyActivated { key_id: Uuid },
    EncryptionKeyDeactivated { key_id: Uuid },
    TenantDeactivated,
    TenantReactivated,
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::TenantCreated(_) => "TenantCreated",
            Self::TenantRenamed { .. } => "TenantRenamed",
            Self::TenantTimezoneChanged { .. } => "TenantTimezoneChanged",
            Self::DefaultRecordingRuleChanged { .. } => "DefaultRecordingRuleChanged",
            Self::StorageOptionChanged { .. } => "StorageOptionChanged",
            Self::FileEncryptionSwitched { .. } => "FileEncryptionSwitched",
            Self::AudioFormatChanged { .. } => "AudioFormatChanged",
            Self::RetentionPolicySet { .. } => "RetentionPolicySet",
            Self::ImpersonationVerificationSet { .. } => "ImpersonationVerificationSet",
            Self::RecordingClientsSet(_) => "RecordingClientsSet",
            Self::EncryptionKeyActivated { .. } => "EncryptionKeyActivated",
            Self::EncryptionKeyDeactivated { .. } => "EncryptionKeyDeactivated",
            Self::TenantDeactivated => "TenantDeactivated",
            Self::TenantReactivated => "TenantReactivated",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("this tenant already exists")]
    AlreadyExists,
    #[error("no such tenant")]
    NotFound,
    #[error("invalid tenant name: {0}")]
    InvalidName(NameError),
    #[error("{0}")]
    InvalidTimezone(NameError),
    #[error("a tenant's default record mode must be always, on demand or never")]
    InvalidDefaultRule,
    #[error("audit-trail retention must be {min} to {max} days", min = RetentionPolicy::MIN_AUDIT_DAYS, max = RetentionPolicy::MAX_DAYS)]
    AuditRetentionOutOfRange,
    #[error("recording retention must be 1 to {max} days, or none to keep recordings", max = RetentionPolicy::MAX_DAYS)]
    RecordingRetentionOutOfRange,
    #[error("the tenant is already deactivated")]
    AlreadyDeactivated,
    #[error("the tenant is active")]
    NotDeactivated,
    #[error("not a SIP domain name: {0:?}")]
    InvalidSipDomain(String),
    #[error("a tenant trusts at most 256 networks and owns at most 64 SIP domains")]
    TooManyRecordingClients,
    #[error("activate an encryption key for this tenant before switching file encryption on")]
    NoEncryptionKey,
    #[error("this encryption key belongs to another tenant")]
    EncryptionKeyOfAnotherTenant,
    #[error("this encryption key was destroyed")]
    EncryptionKeyDestroyed,
    #[error("new recordings are encrypted with this key: switch file encryption off or activate another key first")]
    EncryptionKeyInUse,
}

impl Tenant {
    pub fn exists(&self) -> bool {
        self.state != TenantState::New
    }

    pub fn is_active(&self) -> bool {
        self.state == TenantState::Active
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    pub fn default_rule(&self) -> DefaultRecordingRule {
        self.default_rule
    }

    pub fn storage(&self) -> StorageOption {
        self.storage
    }

    pub fn file_encryption(&self) -> bool {
        self.file_encryption
    }

    pub fn audio_format(&self) -> AudioFormat {
        self.audio_format
    }

    pub fn retention(&self) -> RetentionPolicy {
        self.retention
    }

    pub fn impersonation_verification(&self) -> bool {
        self.impersonation_verification
    }

    pub fn recording_clients(&self) -> &RecordingClients {
        &self.recording_clients
    }

    /// The key new recordings are encrypted with (when file encryption is on).
    pub fn active_encryption_key(&self) -> Option<Uuid> {
        self.active_encryption_key
    }

    fn existing(&self) -> Result<(), TenantError> {
        if self.exists() {
            Ok(())
        } else {
            Err(TenantError::NotFound)
        }
    }

    /// `event` when `changed`, nothing otherwise: setting what is already set is no event.
    fn when_changed(&self, changed: bool, event: TenantEvent) -> Result<Vec<TenantEvent>, TenantError> {
        self.existing()?;
        Ok(if changed { vec![event] } else { vec![] })
    }
}

fn valid_rule(rule: DefaultRecordingRule) -> Result<DefaultRecordingRule, TenantError> {
    if rule.record == RecordMode::TenantDefault {
        Err(TenantError::InvalidDefaultRule)
    } else {
        Ok(rule)
    }
}

fn valid_retention(policy: RetentionPolicy) -> Result<RetentionPolicy, TenantError> {
    if !(RetentionPolicy::MIN_AUDIT_DAYS..=RetentionPolicy::MAX_DAYS).contains(&policy.audit_days) {
        return Err(TenantError::AuditRetentionOutOfRange);
    }
    if policy.recordings_days.is_some_and(|days| !(1..=RetentionPolicy::MAX_DAYS).contains(&days)) {
        return Err(TenantError::RecordingRetentionOutOfRange);
    }
    Ok(policy)
}

fn tenant_name_key(name: &str) -> IndexKey {
    IndexKey::name(Namespace::TenantName, name)
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "Tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn decide(&self, command: TenantCommand, _: &()) -> Result<Vec<TenantEvent>, TenantError> {
        use TenantCommand as C;
        use TenantEvent as E;
        match command {
            C::CreateTenant(settings) => {
                if self.exists() {
                    return Err(TenantError::AlreadyExists);
                }
                // A new tenant has no key yet.
                if settings.file_encryption {
                    return Err(TenantError::NoEncryptionKey);
                }
                let settings = TenantSettings {
                    name: display_name(&settings.name).map_err(TenantError::InvalidName)?,
                    timezone: timezone(&settings.timezone).map_err(TenantError::InvalidTimezone)?,
                    default_rule: valid_rule(settings.default_rule)?,
                    ..settings
                };
                Ok(vec![E::TenantCreated(settings)])
            }
            C::RenameTenant { name } => {
                let name = display_name(&name).map_err(TenantError::InvalidName)?;
                self.when_changed(name != self.name, E::TenantRenamed { name })
            }
            C::SetTenantTimezone { timezone: tz } => {
                let timezone = timezone(&tz).map_err(TenantError::InvalidTimezone)?;
                self.when_changed(timezone != self.timezone, E::TenantTimezoneChanged { timezone })
            }
            C::SetDefaultRecordingRule { rule } => {
                let rule = valid_rule(rule)?;
                self.when_changed(rule != self.default_rule, E::DefaultRecordingRuleChanged { rule })
            }
            C::SetStorageOption { option } => {
                self.when_changed(option != self.storage, E::StorageOptionChanged { option })
            }
            C::SetFileEncryption { enabled } => {
                self.existing()?;
                if enabled && self.active_encryption_key.is_none() {
                    return Err(TenantError::NoEncryptionKey);
                }
                self.when_changed(enabled != self.file_encryption, E::FileEncryptionSwitched { enabled })
            }
            C::SetAudioFormat { format } => {
                self.when_changed(format != self.audio_format, E::AudioFormatChanged { format })
            }
            C::SetRetentionPolicy { policy } => {
                let policy = valid_retention(policy)?;
                self.when_changed(policy != self.retention, E::RetentionPolicySet { policy })
            }
            C::SetImpersonationVerification { required } => self.when_changed(
                required != self.impersonation_verification,
                E::ImpersonationVerificationSet { required },
            ),
            C::SetRecordingClients(clients) => {
                let clients = valid_clients(clients)?;
                self.when_changed(clients != self.recording_clients, E::RecordingClientsSet(clients))
            }
            C::UseEncryptionKey { tenant_id, key_id, key_tenant, key_destroyed } => {
                self.existing()?;
                if key_tenant != tenant_id {
                    return Err(TenantError::EncryptionKeyOfAnotherTenant);
                }
                if key_destroyed {
                    return Err(TenantError::EncryptionKeyDestroyed);
                }
                self.when_changed(self.active_encryption_key != Some(key_id), E::EncryptionKeyActivated { key_id })
            }
            C::ForgetEncryptionKey { key_id } => {
                let active = self.active_encryption_key == Some(key_id);
                if active && self.file_encryption {
                    return Err(TenantError::EncryptionKeyInUse);
                }
                self.when_changed(active, E::EncryptionKeyDeactivated { key_id })
            }
            C::DeactivateTenant => {
                self.existing()?;
                if self.state == TenantState::Deactivated {
                    return Err(TenantError::AlreadyDeactivated);
                }
                Ok(vec![E::TenantDeactivated])
            }
            C::ReactivateTenant => {
                self.existing()?;
                if self.state == TenantState::Active {
                    return Err(TenantError::NotDeactivated);
                }
                Ok(vec![E::TenantReactivated])
            }
        }
    }

    fn apply(&mut self, event: TenantEvent) {
        use TenantEvent as E;
        match event {
            E::TenantCreated(settings) => {
                self.state = TenantState::Active;
                self.name = settings.name;
                self.timezone = settings.timezone;
                self.default_rule = settings.default_rule;
                self.storage = settings.storage;
                self.file_encryption = settings.file_encryption;
                self.audio_format = settings.audio_format;
            }
            E::TenantRenamed { name } => self.name = name,
            E::TenantTimezoneChanged { timezone } => self.timezone = timezone,
            E::DefaultRecordingRuleChanged { rule } => self.default_rule = rule,
            E::StorageOptionChanged { option } => self.storage = option,
            E::FileEncryptionSwitched { enabled } => self.file_encryption = enabled,
            E::AudioFormatChanged { format } => self.audio_format = format,
            E::RetentionPolicySet { policy } => self.retention = policy,
            E::ImpersonationVerificationSet { required } => self.impersonation_verification = required,
            E::RecordingClientsSet(clients) => self.recording_clients = clients,
            E::EncryptionKeyActivated { key_id } => self.active_encryption_key = Some(key_id),
            E::EncryptionKeyDeactivated { .. } => self.active_encryption_key = None,
            E::TenantDeactivated => self.state = TenantState::Deactivated,
            E::TenantReactivated => self.state = TenantState::Active,
        }
    }

    fn index_changes(&self, event: &TenantEvent) -> Vec<IndexChange> {
        match event {
            TenantEvent::TenantCreated(settings) => vec![IndexChange::Claim(tenant_name_key(&settings.name))],
            TenantEvent::TenantRenamed { name } => moves(&[tenant_name_key(&self.name)], &[tenant_name_key(name)]),
            TenantEvent::RecordingClientsSet(clients) => {
                moves(&client_keys(&self.recording_clients), &client_keys(clients))
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording_policy::{RecordDirection, UnassignedCallRule};
    use crate::testing::{given, run, when};

    const ACME: Uuid = Uuid::from_u128(7);
    const OTHER_TENANT: Uuid = Uuid::from_u128(8);
    const KEY: Uuid = Uuid::from_u128(70);
    const NEW_KEY: Uuid = Uuid::from_u128(71);

    fn created() -> Vec<TenantEvent> {
        vec![TenantEvent::TenantCreated(TenantSettings::named("Acme"))]
    }

    fn with_key() -> Vec<TenantEvent> {
        let mut events = created();
        events.push(TenantEvent::EncryptionKeyActivated { key_id: KEY });
        events
    }

    fn encrypting() -> Vec<TenantEvent> {
        let mut events = with_key();
        events.push(TenantEvent::FileEncryptionSwitched { enabled: true });
        events
    }

    /// Activates a key of Acme that is not destroyed.
    fn use_key(key_id: Uuid) -> TenantCommand {
        TenantCommand::UseEncryptionKey { tenant_id: ACME, key_id, key_tenant: ACME, key_destroyed: false }
    }

    #[test]
    fn a_tenant_is_created_with_a_trimmed_name_and_a_canonical_timezone() {
        let mut settings = TenantSettings::named("  Acme  ");
        settings.timezone = " Europe/Paris ".into();
        let events = when::<Tenant>([], TenantCommand::CreateTenant(settings), &());
        let mut expected = TenantSettings::named("Acme");
        expected.timezone = "Europe/Paris".into();
        assert_eq!(events, Ok(vec![TenantEvent::TenantCreated(expected)]));
    }

    #[test]
    fn a_tenant_cannot_be_created_twice_or_with_invalid_settings() {
        let create = |settings| TenantCommand::CreateTenant(settings);
        assert_eq!(when::<Tenant>(created(), create(TenantSettings::named("B")), &()), Err(TenantError::AlreadyExists));
        assert_eq!(
            when::<Tenant>([], create(TenantSettings::named(" ")), &()),
            Err(TenantError::InvalidName(NameError::Empty))
        );
        let mut bad_tz = TenantSettings::named("B");
        bad_tz.timezone = "Moon/Base".into();
        assert!(matches!(when::<Tenant>([], create(bad_tz), &()), Err(TenantError::InvalidTimezone(_))));
        let mut bad_rule = TenantSettings::named("B");
        bad_rule.default_rule.record = RecordMode::TenantDefault;
        assert_eq!(when::<Tenant>([], create(bad_rule), &()), Err(TenantError::InvalidDefaultRule));
    }

    #[test]
    fn changes_to_an_unknown_tenant_are_refused() {
        assert_eq!(
            when::<Tenant>([], TenantCommand::RenameTenant { name: "x".into() }, &()),
            Err(TenantError::NotFound)
        );
        assert_eq!(when::<Tenant>([], TenantCommand::DeactivateTenant, &()), Err(TenantError::NotFound));
        assert_eq!(
            when::<Tenant>([], TenantCommand::SetFileEncryption { enabled: true }, &()),
            Err(TenantError::NotFound)
        );
        assert_eq!(when::<Tenant>([], use_key(KEY), &()), Err(TenantError::NotFound));
        assert_eq!(
            when::<Tenant>([], TenantCommand::ForgetEncryptionKey { key_id: KEY }, &()),
            Err(TenantError::NotFound)
        );
    }

    #[test]
    fn file_encryption_is_switched_on_only_with_an_active_key() {
        let switch = |enabled| TenantCommand::SetFileEncryption { enabled };
        assert_eq!(when::<Tenant>(created(), switch(true), &()), Err(TenantError::NoEncryptionKey));
        assert_eq!(
            when::<Tenant>(with_key(), switch(true), &()),
            Ok(vec![TenantEvent::FileEncryptionSwitched { enabled: true }])
        );
        assert_eq!(when::<Tenant>(encrypting(), switch(true), &()), Ok(vec![]));
        assert_eq!(
            when::<Tenant>(encrypting(), switch(false), &()),
            Ok(vec![TenantEvent::FileEncryptionSwitched { enabled: false }])
        );
        assert_eq!(when::<Tenant>(created(), switch(false), &()), Ok(vec![]));
        assert!(given::<Tenant>(encrypting()).file_encryption());
    }

    #[test]
    fn a_new_tenant_cannot_start_with_file_encryption_on() {
        let mut settings = TenantSettings::named("Acme");
        settings.file_encryption = true;
        assert_eq!(when::<Tenant>([], TenantCommand::CreateTenant(settings), &()), Err(TenantError::NoEncryptionKey));
    }

    #[test]
    fn a_tenant_activates_one_of_its_own_keys_that_is_not_destroyed() {
        assert_eq!(
            when::<Tenant>(created(), use_key(KEY), &()),
            Ok(vec![TenantEvent::EncryptionKeyActivated { key_id: KEY }])
        );
        assert_eq!(when::<Tenant>(with_key(), use_key(KEY), &()), Ok(vec![]));
        let foreign = TenantCommand::UseEncryptionKey {
            tenant_id: ACME,
            key_id: KEY,
            key_tenant: OTHER_TENANT,
            key_destroyed: false,
        };
        assert_eq!(when::<Tenant>(created(), foreign, &()), Err(TenantError::EncryptionKeyOfAnotherTenant));
        let destroyed =
            TenantCommand::UseEncryptionKey { tenant_id: ACME, key_id: KEY, key_tenant: ACME, key_destroyed: true };
        assert_eq!(when::<Tenant>(created(), destroyed, &()), Err(TenantError::EncryptionKeyDestroyed));
        assert_eq!(given::<Tenant>(created()).active_encryption_key(), None);
        assert_eq!(given::<Tenant>(with_key()).active_encryption_key(), Some(KEY));
    }

    #[test]
    fn rotating_the_key_activates_another_while_encryption_stays_on() {
        assert_eq!(
            when::<Tenant>(encrypting(), use_key(NEW_KEY), &()),
            Ok(vec![TenantEvent::EncryptionKeyActivated { key_id: NEW_KEY }])
        );
        let mut rotated = encrypting();
        rotated.push(TenantEvent::EncryptionKeyActivated { key_id: NEW_KEY });
        let tenant = given::<Tenant>(rotated.clone());
        assert_eq!((tenant.active_encryption_key(), tenant.file_encryption()), (Some(NEW_KEY), true));
        assert_eq!(
            when::<Tenant>(rotated, TenantCommand::ForgetEncryptionKey { key_id: KEY }, &()),
            Ok(vec![]),
            "the old key is no longer active"
        );
    }

    #[test]
    fn a_tenant_forgets_its_active_key_only_while_file_encryption_is_off() {
        let forget = |key_id| TenantCommand::ForgetEncryptionKey { key_id };
        assert_eq!(
            when::<Tenant>(with_key(), forget(KEY), &()),
            Ok(vec![TenantEvent::EncryptionKeyDeactivated { key_id: KEY }])
        );
        assert_eq!(when::<Tenant>(encrypting(), forget(KEY), &()), Err(TenantError::EncryptionKeyInUse));
        assert_eq!(when::<Tenant>(encrypting(), forget(NEW_KEY), &()), Ok(vec![]));
        assert_eq!(when::<Tenant>(created(), forget(KEY), &()), Ok(vec![]));
        let mut forgotten = with_key();
        forgotten.push(TenantEvent::EncryptionKeyDeactivated { key_id: KEY });
        assert_eq!(given::<Tenant>(forgotten.clone()).active_encryption_key(), None);
        assert_eq!(
            when::<Tenant>(forgotten, TenantCommand::SetFileEncryption { enabled: true }, &()),
            Err(TenantError::NoEncryptionKey)
        );
    }

    #[test]
    fn each_setting_changes_with_one_event_and_an_unchanged_setting_with_none() {
        let rule = DefaultRecordingRule {
            record: RecordMode::OnDemand,
            direction: RecordDirection::Inbound,
            unassigned_calls: UnassignedCallRule::DoNotRecord,
        };
        let cases = [
            (
                TenantCommand::RenameTenant { name: "Acme Corp".into() },
                TenantEvent::TenantRenamed { name: "Acme Corp".into() },
            ),
            (
                TenantCommand::SetTenantTimezone { timezone: "America/New_York".into() },
                TenantEvent::TenantTimezoneChanged { timezone: "America/New_York".into() },
            ),
            (TenantCommand::SetDefaultRecordingRule { rule }, TenantEvent::DefaultRecordingRuleChanged { rule }),
            (
                TenantCommand::SetStorageOption { option: StorageOption::BringYourOwn },
                TenantEvent::StorageOptionChanged { option: StorageOption::BringYourOwn },
            ),
            (
                TenantCommand::SetAudioFormat { format: AudioFormat::WavStereo },
                TenantEvent::AudioFormatChanged { format: AudioFormat::WavStereo },
            ),
            (
                TenantCommand::SetImpersonationVerification { required: true },
                TenantEvent::ImpersonationVerificationSet { required: true },
            ),
        ];
        for (command, event) in cases {
            assert_eq!(when::<Tenant>(created(), command.clone(), &()), Ok(vec![event.clone()]), "{command:?}");
            let mut after = created();
            after.push(event);
            assert_eq!(when::<Tenant>(after, command.clone(), &()), Ok(vec![]), "{command:?} again");
        }
    }

    #[test]
    fn audit_retention_is_at_least_a_year_and_recording_retention_positive() {
        let set = |recordings_days, audit_days| TenantCommand::SetRetentionPolicy {
            policy: RetentionPolicy { recordings_days, audit_days },
        };
        assert_eq!(when::<Tenant>(created(), set(None, 364), &()), Err(TenantError::AuditRetentionOutOfRange));
        assert_eq!(when::<Tenant>(created(), set(None, 40_000), &()), Err(TenantError::AuditRetentionOutOfRange));
        assert_eq!(when::<Tenant>(created(), set(Some(0), 365), &()), Err(TenantError::RecordingRetentionOutOfRange));
        let policy = RetentionPolicy { recordings_days: Some(90), audit_days: 730 };
        assert_eq!(
            when::<Tenant>(created(), set(Some(90), 730), &()),
            Ok(vec![TenantEvent::RetentionPolicySet { policy }])
        );
    }

    #[test]
    fn a_tenant_is_deactivated_and_reactivated_once_each() {
        let mut deactivated = created();
        deactivated.push(TenantEvent::TenantDeactivated);
        assert_eq!(
            when::<Tenant>(created(), TenantCommand::DeactivateTenant, &()),
            Ok(vec![TenantEvent::TenantDeactivated])
        );
        assert_eq!(
            when::<Tenant>(deactivated.clone(), TenantCommand::DeactivateTenant, &()),
            Err(TenantError::AlreadyDeactivated)
        );
        assert_eq!(when::<Tenant>(created(), TenantCommand::ReactivateTenant, &()), Err(TenantError::NotDeactivated));
        assert_eq!(
            when::<Tenant>(deactivated.clone(), TenantCommand::ReactivateTenant, &()),
            Ok(vec![TenantEvent::TenantReactivated])
        );
        assert!(!given::<Tenant>(deactivated).is_active());
    }

    #[test]
    fn the_name_is_claimed_on_creation_and_moved_on_rename() {
        let tenant = given::<Tenant>(created());
        let claim = Tenant::default().index_changes(&created()[0]);
        assert_eq!(claim, vec![IndexChange::Claim(IndexKey::name(Namespace::TenantName, "acme"))]);
        let renamed = tenant.index_changes(&TenantEvent::TenantRenamed { name: "Other".into() });
        assert_eq!(
            renamed,
            vec![
                IndexChange::Release(IndexKey::name(Namespace::TenantName, "Acme")),
                IndexChange::Claim(IndexKey::name(Namespace::TenantName, "Other")),
            ]
        );
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_tenant() {
        let (state, events) = run::<Tenant>(
            [
                TenantCommand::CreateTenant(TenantSettings::named("Acme")),
                TenantCommand::SetTenantTimezone { timezone: "Europe/Berlin".into() },
                use_key(KEY),
                TenantCommand::SetFileEncryption { enabled: true },
                use_key(NEW_KEY),
                TenantCommand::SetRetentionPolicy {
                    policy: RetentionPolicy { recordings_days: Some(30), audit_days: 400 },
                },
                TenantCommand::DeactivateTenant,
            ],
            &(),
        );
        assert_eq!(given::<Tenant>(events), state);
        assert_eq!(state.timezone(), "Europe/Berlin");
        assert_eq!((state.file_encryption(), state.active_encryption_key()), (true, Some(NEW_KEY)));
        assert!(!state.is_active());
    }

    #[test]
    fn recording_clients_are_normalised_and_claimed_once_and_the_narrowest_network_decides() {
        let net = |n: &str| n.parse::<ipnet::IpNet>().expect("network");
        let clients = RecordingClients {
            networks: vec![net("10.1.2.3/16"), net("10.1.0.0/16"), net("192.0.2.7/32")],
            sip_domains: vec![" Acme.Example. ".into(), "acme.example".into()],
        };
        let events = when::<Tenant>(created(), TenantCommand::SetRecordingClients(clients.clone()), &());
        let normal = RecordingClients {
            networks: vec![net("10.1.0.0/16"), net("192.0.2.7/32")],
            sip_domains: vec!["acme.example".into()],
        };
        assert_eq!(events, Ok(vec![TenantEvent::RecordingClientsSet(normal.clone())]));
        let tenant = given::<Tenant>(created());
        let claims = tenant.index_changes(&TenantEvent::RecordingClientsSet(normal.clone()));
        assert_eq!(claims.len(), 3, "{claims:?}");
        let mut set = created();
        set.push(TenantEvent::RecordingClientsSet(normal.clone()));
        assert_eq!(when::<Tenant>(set, TenantCommand::SetRecordingClients(clients), &()), Ok(vec![]), "no change");
        let bad = RecordingClients { networks: vec![], sip_domains: vec!["exa mple.com".into()] };
        assert!(matches!(
            when::<Tenant>(created(), TenantCommand::SetRecordingClients(bad), &()),
            Err(TenantError::InvalidSipDomain(_))
        ));

        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let wide = RecordingClients { networks: vec![net("10.0.0.0/8")], sip_domains: vec![] };
        let tenants = [(a, &normal), (b, &wide)];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
        assert_eq!(tenant_for_source(ip("10.1.9.9"), tenants), Some(a));
        assert_eq!(tenant_for_source(ip("10.2.0.1"), tenants), Some(b));
        assert_eq!(tenant_for_source(ip("192.0.2.7"), tenants), Some(a));
        assert_eq!(tenant_for_source(ip("192.0.2.8"), tenants), None);
    }
}
