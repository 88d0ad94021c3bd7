//! Playback and download of recordings, for the audit trail: each is a `RecordingAccessed` event of the call,
//! by the viewer. A player asks for many ranges of one file while it plays and seeks, so one session's
//! accesses of one call count once per ten minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recall_domain::call::CallCommand;
pub use recall_domain::call::RecordingAccess;
use uuid::Uuid;

use super::{Admin, AdminError, Caller};

/// Accesses of one call by one session within this window are one event.
const ONE_ACCESS: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Default)]
pub(crate) struct RecentAccesses {
    seen: Mutex<HashMap<(Uuid, Uuid, RecordingAccess), Instant>>,
}

impl RecentAccesses {
    /// Whether this access is new (and notes it).
    fn first(&self, who: Uuid, call_id: Uuid, access: RecordingAccess) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, at| now.duration_since(*at) < ONE_ACCESS);
        }
        match seen.get(&(who, call_id, access)) {
            Some(at) if now.duration_since(*at) < ONE_ACCESS => false,
            _ => {
                seen.insert((who, call_id, access), now);
                true
            }
        }
    }

    fn forget(&self, who: Uuid, call_id: Uuid, access: RecordingAccess) {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.remove(&(who, call_id, access));
    }
}

impl Admin {
    /// Records that `caller` played back or downloaded the call's recording (the caller's rights were
    /// checked by whoever serves the file). Refused, so nothing is served, when it cannot be recorded.
    pub async fn record_recording_access(
        &self,
        caller: &Caller,
        call_id: Uuid,
        access: RecordingAccess,
    ) -> Result<(), AdminError> {
        let who = caller.session_id.or(caller.api_token).unwrap_or(caller.user_id);
        if !self.accesses.first(who, call_id, access) {
            return Ok(());
        }
        let call = self.load(&self.calls, call_id).await?;
        let result =
            self.run(&self.calls, call_id, CallCommand::RecordAccess { access }, caller.meta(call.tenant_id())).await;
        if result.is_err() {
            self.accesses.forget(who, call_id, access);
        }
        result.map(|_| ())
    }
}
