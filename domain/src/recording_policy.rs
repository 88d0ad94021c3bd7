//! What gets recorded and how: a user's record mode and direction, a tenant's defaults and its rule for
//! calls whose extension belongs to no user, and the audio formats a recording can be written in.

use serde::{Deserialize, Serialize};

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
