//! The GraphQL view of recall's vocabulary: the domain's enums as GraphQL enums, and helpers to read the
//! read model's stored names back into them.

use async_graphql::Enum;
use serde::de::DeserializeOwned;

/// Reads a stored snake_case name back as the domain enum it came from.
pub fn stored<T: DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

macro_rules! remote_enum {
    ($(#[$meta:meta])* $local:ident = $gql:literal => $remote:literal { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
        #[graphql(name = $gql, remote = $remote)]
        pub enum $local { $($variant),+ }
    };
}

remote_enum!(
    /// How far a role's permissions reach.
    ScopeGql = "Scope" => "recall_domain::access::Scope" { ServiceWide, Tenant, ManagedGroups, OwnCalls }
);
remote_enum!(
    /// An operation a role may permit.
    PermissionGql = "Permission" => "recall_domain::access::Permission" {
        ConfigureSystem, ConfigureUsers, ViewCalls, PlaybackCalls, DownloadCalls, DeleteCalls, ExportCalls,
        AssignCalls, ManageStorage, ManageEncryptionKeys, ViewAuditTrail, ManageRetention, Impersonate,
        ManageCustomization, ManageEvaluationForms, ScreenRecordingSettings,
    }
);
remote_enum!(
    /// Whether a user's calls are recorded.
    RecordModeGql = "RecordMode" => "recall_domain::recording_policy::RecordMode" { Always, OnDemand, Never, TenantDefault }
);
remote_enum!(
    /// Which of a user's calls are recorded.
    RecordDirectionGql = "RecordDirection" => "recall_domain::recording_policy::RecordDirection" { Inbound, Outbound, Both }
);
remote_enum!(
    /// What happens to a call whose extension belongs to no user.
    UnassignedCallRuleGql = "UnassignedCallRule" => "recall_domain::recording_policy::UnassignedCallRule" { Record, DoNotRecord }
);
remote_enum!(
    /// The file format of recordings.
    AudioFormatGql = "AudioFormat" => "recall_domain::recording_policy::AudioFormat" { Mp3Stereo32, Mp3Mono16, WavStereo, WavMono }
);
remote_enum!(
    /// How a tenant's recordings are stored, as purchased.
    StorageOptionGql = "StorageOption" => "recall_domain::recording_policy::StorageOption" { NonHosted, ProviderHosted, BringYourOwn }
);
remote_enum!(
    /// Which way a call went.
    CallDirectionGql = "CallDirection" => "recall_domain::call::CallDirection" { Inbound, Outbound, Internal, Unknown }
);
remote_enum!(
    /// Why a call's recording ended.
    CallEndReasonGql = "CallEndReason" => "recall_domain::call::CallEndReason" { Bye, Cancel, RtpTimeout, RecorderShutdown, RecorderRestarted }
);
remote_enum!(
    /// A view whose fields can be shown or hidden.
    LayoutGql = "Layout" => "recall_domain::field_visibility::Layout" { Recordings, CallDetails, Users, AuditTrail }
);

/// Reads a stored name as a GraphQL enum (through its domain enum).
pub fn gql<D: DeserializeOwned, G: From<D>>(name: &str) -> Option<G> {
    stored::<D>(name).map(G::from)
}
