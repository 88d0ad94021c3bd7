//! What gets recorded and how: a user's record mode and direction, a tenant's defaults and its rule for
//! calls whose extension belongs to no user, and the audio formats a recording can be written in.

use serde::{Deserialize, Serialize};

use crate::call::CallDirection;
use crate::user::RecordingSettings;

/// Whether a user's calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Every call.
    Always,
    /// Only when recording is asked for during the call.
    OnDemand,
    Never,
    /// Whatever the tenant's default says (users only; a tenant default is never itself "tenant default").
    TenantDefault,
}

/// Which of a user's calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordDirection {
    Inbound,
    Outbound,
    Both,
}

/// What happens to a call whose extension belongs to no user of the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnassignedCallRule {
    /// Record it and show it to administrators as "not assigned to users" (the default).
    Record,
    /// Do not record it.
    DoNotRecord,
}

/// A tenant's default recording rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DefaultRecordingRule {
    /// The record mode of users whose own setting is "tenant default". Never `TenantDefault` itself.
    pub record: RecordMode,
    pub direction: RecordDirection,
    pub unassigned_calls: UnassignedCallRule,
}

impl Default for DefaultRecordingRule {
    fn default() -> Self {
        Self {
            record: RecordMode::Always,
            direction: RecordDirection::Both,
            unassigned_calls: UnassignedCallRule::Record,
        }
    }
}

/// The file format recordings are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFormat {
    /// MP3, stereo, 32 kbit/s: about 0.24 MB a minute (the default).
    #[default]
    Mp3Stereo32,
    /// MP3, mono, 16 kbit/s: about 0.12 MB a minute.
    Mp3Mono16,
    /// WAV (16-bit PCM), stereo: about 1.92 MB a minute.
    WavStereo,
    /// WAV (16-bit PCM), mono: about 0.96 MB a minute.
    WavMono,
}

impl AudioFormat {
    /// The file name extension of a recording in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp3Stereo32 | Self::Mp3Mono16 => "mp3",
            Self::WavStereo | Self::WavMono => "wav",
        }
    }
}

/// How a tenant's recordings are stored, as purchased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageOption {
    /// Kept by the provider for 90 days; the customer downloads what it wants to keep.
    #[default]
    NonHosted,
    /// Kept by the provider for as long as purchased.
    ProviderHosted,
    /// Written to the customer's own storage targets.
    BringYourOwn,
}

/// How long a tenant's data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Days a recording is kept after the call; `None` keeps recordings until deleted by hand.
    pub recordings_days: Option<u32>,
    /// Days audit-trail events are kept (at least a year, as PCI DSS 10.7 asks).
    pub audit_days: u32,
}

impl RetentionPolicy {
    pub const MIN_AUDIT_DAYS: u32 = 365;
    /// A hundred years: longer is a typo, not a policy.
    pub const MAX_DAYS: u32 = 36_500;
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { recordings_days: None, audit_days: Self::MIN_AUDIT_DAYS }
    }
}

/// What the recorder does with a call, by the recorded user's settings and the tenant's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingDecision {
    /// Record the call and keep the recording.
    Record,
    /// Record only when recording is asked for during the call.
    OnDemand,
    /// Do not record the call.
    DoNotRecord,
}

/// Decides a call's recording: `user` is the recorded user's settings, `None` for an extension of nobody
/// (then the tenant's rule for unassigned calls applies, and if it records, the tenant's default mode and
/// direction). A user on "tenant default" takes the tenant's mode and direction. Internal calls and calls
/// whose direction is unknown match every direction: nothing is lost for want of knowing which way it went.
pub fn decide_recording(
    user: Option<&RecordingSettings>,
    tenant: &DefaultRecordingRule,
    direction: CallDirection,
) -> RecordingDecision {
    let (mode, wanted) = match user {
        None if tenant.unassigned_calls == UnassignedCallRule::DoNotRecord => return RecordingDecision::DoNotRecord,
        None => (tenant.record, tenant.direction),
        Some(settings) if settings.record == RecordMode::TenantDefault => (tenant.record, tenant.direction),
        Some(settings) => (settings.record, settings.direction),
    };
    let direction_matches = matches!(
        (wanted, direction),
        (RecordDirection::Both, _)
            | (_, CallDirection::Internal | CallDirection::Unknown)
            | (RecordDirection::Inbound, CallDirection::Inbound)
            | (RecordDirection::Outbound, CallDirection::Outbound)
    );
    match mode {
        _ if !direction_matches => RecordingDecision::DoNotRecord,
        RecordMode::Always => RecordingDecision::Record,
        RecordMode::OnDemand => RecordingDecision::OnDemand,
        // A tenant default is never itself "tenant default"; if it were, record rather than lose the call.
        RecordMode::TenantDefault => RecordingDecision::Record,
        RecordMode::Never => RecordingDecision::DoNotRecord,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(record: RecordMode, direction: RecordDirection, unassigned: UnassignedCallRule) -> DefaultRecordingRule {
        DefaultRecordingRule { record, direction, unassigned_calls: unassigned }
    }

    fn user(record: RecordMode, direction: RecordDirection) -> RecordingSettings {
        RecordingSettings { record, direction }
    }

    #[test]
    fn a_users_own_mode_and_direction_decide_unless_they_defer_to_the_tenant() {
        use RecordingDecision::*;
        let tenant = rule(RecordMode::Never, RecordDirection::Both, UnassignedCallRule::Record);
        let inbound_only = user(RecordMode::Always, RecordDirection::Inbound);
        assert_eq!(decide_recording(Some(&inbound_only), &tenant, CallDirection::Inbound), Record);
        assert_eq!(decide_recording(Some(&inbound_only), &tenant, CallDirection::Outbound), DoNotRecord);
        assert_eq!(decide_recording(Some(&inbound_only), &tenant, CallDirection::Internal), Record);
        let on_demand = user(RecordMode::OnDemand, RecordDirection::Both);
        assert_eq!(decide_recording(Some(&on_demand), &tenant, CallDirection::Outbound), OnDemand);
        let deferring = user(RecordMode::TenantDefault, RecordDirection::Inbound);
        assert_eq!(decide_recording(Some(&deferring), &tenant, CallDirection::Inbound), DoNotRecord);
        let always = rule(RecordMode::Always, RecordDirection::Outbound, UnassignedCallRule::Record);
        assert_eq!(decide_recording(Some(&deferring), &always, CallDirection::Outbound), Record);
        assert_eq!(decide_recording(Some(&deferring), &always, CallDirection::Inbound), DoNotRecord);
        let never = user(RecordMode::Never, RecordDirection::Both);
        assert_eq!(decide_recording(Some(&never), &always, CallDirection::Outbound), DoNotRecord);
    }

    #[test]
    fn calls_of_nobodys_extension_follow_the_tenants_rule_for_unassigned_calls() {
        use RecordingDecision::*;
        let records = rule(RecordMode::Always, RecordDirection::Both, UnassignedCallRule::Record);
        assert_eq!(decide_recording(None, &records, CallDirection::Unknown), Record);
        let skips = rule(RecordMode::Always, RecordDirection::Both, UnassignedCallRule::DoNotRecord);
        assert_eq!(decide_recording(None, &skips, CallDirection::Inbound), DoNotRecord);
        let inbound = rule(RecordMode::Always, RecordDirection::Inbound, UnassignedCallRule::Record);
        assert_eq!(decide_recording(None, &inbound, CallDirection::Outbound), DoNotRecord);
    }
}
