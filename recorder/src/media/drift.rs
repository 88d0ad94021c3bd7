//! How far a sender's RTP clock has drifted from the recorder's arrival clock, measured from arrival times.
//! It only estimates; the jitter buffer decides when to insert or drop a sample. It never reads a clock.

use std::collections::VecDeque;
use std::time::Duration;

/// The lateness of a stream's packets (arrival time minus the wall-clock time their RTP timestamp maps to),
/// as the least lateness over a few consecutive windows. Network jitter only ever delays a packet, so the
/// least-delayed packets of a window show where the sender's clock stands; a sender whose clock runs slow
/// makes that minimum grow, one that runs fast makes it shrink.
#[derive(Debug, Clone)]
pub(crate) struct DriftEstimator {
    window_ns: i64,
    windows: usize,
    window_start_ns: Option<i64>,
    window_min_ns: Option<i64>,
    closed: VecDeque<i64>,
}

impl DriftEstimator {
    pub(crate) fn new(window: Duration, windows: usize) -> Self {
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX).max(1);
        Self { window_ns, windows: windows.max(1), window_start_ns: None, window_min_ns: None, closed: VecDeque::new() }
    }

    /// Records one packet's arrival (ns since the stream's origin) and lateness (ns). When this closes a
    /// window, returns the estimated lateness: the least over the last `windows` windows, or over those seen
    /// so far at the start of a stream, so that its first packet's own delay is corrected within a second.
    pub(crate) fn observe(&mut self, arrival_ns: i64, lateness_ns: i64) -> Option<i64> {
        let mut estimate = None;
        match self.window_start_ns {
            None => self.window_start_ns = Some(arrival_ns),
            Some(start) if arrival_ns.saturating_sub(start) >= self.window_ns => {
                if let Some(min) = self.window_min_ns.take() {
                    self.closed.push_back(min);
                    if self.closed.len() > self.windows {
                        self.closed.pop_front();
                    }
                }
                self.window_start_ns = Some(arrival_ns);
                estimate = self.closed.iter().min().copied();
            }
            Some(_) => {}
        }
        self.window_min_ns = Some(self.window_min_ns.map_or(lateness_ns, |min| min.min(lateness_ns)));
        estimate
    }

    /// The mapping from RTP time to wall-clock time moved later by `delta_ns`: every recorded lateness
    /// shrinks by as much.
    pub(crate) fn shift(&mut self, delta_ns: i64) {
        if let Some(min) = self.window_min_ns.as_mut() {
            *min -= delta_ns;
        }
        for min in &mut self.closed {
            *min -= delta_ns;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.window_start_ns = None;
        self.window_min_ns = None;
        self.closed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn the_estimate_is_the_least_lateness_once_enough_windows_are_seen() {
        let mut estimator = DriftEstimator::new(Duration::from_secs(1), 2);
        let mut estimates = Vec::new();
        for packet in 0..200 {
            let arrival = packet * 20 * MS;
            // Jitter of 0..30 ms on top of a lateness that grows by 1 ms a second (a slow sender).
            let lateness = arrival / 1000 + (packet * 7919 % 31) * MS;
            estimates.extend(estimator.observe(arrival, lateness));
        }
        assert!(!estimates.is_empty());
        let last = *estimates.last().unwrap();
        // At 3 s the least lateness of the last two windows (1–3 s) is the slow clock's 1 ms/s after 1.24 s.
        assert!((MS..=3 * MS).contains(&last), "{last}");
    }

    #[test]
    fn shifting_the_mapping_moves_every_recorded_lateness() {
        let mut estimator = DriftEstimator::new(Duration::from_millis(100), 2);
        estimator.observe(0, 10 * MS);
        estimator.shift(4 * MS);
        assert_eq!(estimator.observe(100 * MS, 50 * MS), Some(6 * MS), "the first window counts at once");
        assert_eq!(estimator.observe(200 * MS, 0), Some(6 * MS));
        assert_eq!(estimator.observe(300 * MS, 70 * MS), Some(0), "then the last two");
        estimator.reset();
        assert_eq!(estimator.observe(200 * MS, 0), None);
    }
}
