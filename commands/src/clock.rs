//! The site's hybrid logical clock (uhlc): wall-clock time that never runs backwards and moves past every
//! timestamp it has seen from another site. Every event's `hlc` comes from here.

use recall_domain::HlcTimestamp;
use sha2::{Digest, Sha256};

/// Timestamps further than this ahead of our wall clock are refused when observed from another site.
const MAX_DRIFT: std::time::Duration = std::time::Duration::from_secs(500);

pub struct HybridClock {
    hlc: uhlc::HLC,
}

impl std::fmt::Debug for HybridClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridClock").field("node", &self.node_id()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {0} is too far ahead of this site's clock: {1}")]
pub struct ClockDrift(pub HlcTimestamp, pub String);

impl HybridClock {
    /// A clock whose node id is derived from the site and node names, so it is stable across restarts.
    pub fn for_node(site: &str, node: &str) -> Self {
        let digest = Sha256::digest(format!("{site}\u{0}{node}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // uhlc ids must be non-zero.
        let id = u128::from_le_bytes(bytes).max(1);
        let id = uhlc::ID::try_from(id).unwrap_or_else(|_| uhlc::ID::rand());
        Self { hlc: uhlc::HLCBuilder::new().with_id(id).with_max_delta(MAX_DRIFT).build() }
    }

    pub fn node_id(&self) -> u128 {
        u128::from_le_bytes(self.hlc.get_id().to_le_bytes())
    }

    /// A new timestamp, greater than every one this clock issued or observed.
    pub fn now(&self) -> HlcTimestamp {
        let ts = self.hlc.new_timestamp();
        HlcTimestamp::new(ts.get_time().as_u64(), self.node_id())
    }

    /// Move the clock past a timestamp seen from elsewhere (e.g. a replicated event).
    pub fn observe(&self, seen: HlcTimestamp) -> Result<(), ClockDrift> {
        let id = uhlc::ID::try_from(seen.node.max(1)).unwrap_or_else(|_| uhlc::ID::rand());
        let ts = uhlc::Timestamp::new(uhlc::NTP64(seen.time), id);
        self.hlc.update_with_timestamp(&ts).map_err(|reason| ClockDrift(seen, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase() {
        let clock = HybridClock::for_node("paris", "node-1");
        let mut last = clock.now();
        for _ in 0..10_000 {
            let next = clock.now();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let a = HybridClock::for_node("paris", "node-1").node_id();
        assert_eq!(a, HybridClock::for_node("paris", "node-1").node_id());
        assert_ne!(a, HybridClock::for_node("paris", "node-2").node_id());
    }

    #[test]
    fn observing_a_later_timestamp_moves_the_clock_past_it() {
        let clock = HybridClock::for_node("paris", "node-1");
        let ahead = HlcTimestamp::new(clock.now().time + (10u64 << 32), 5);
        clock.observe(ahead).expect("10 s ahead is within the drift limit");
        assert!(clock.now() > ahead);
    }

    #[test]
    fn a_timestamp_from_far_in_the_future_is_refused() {
        let clock = HybridClock::for_node("paris", "node-1");
        let far = HlcTimestamp::new(clock.now().time + (3600u64 << 32), 5);
        assert!(clock.observe(far).is_err());
        assert!(clock.now() < far);
    }
}
