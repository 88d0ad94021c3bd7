//! Hybrid-logical-clock timestamps as values: a 64-bit NTP-style time (seconds since the UNIX epoch in the
//! high 32 bits, fraction in the low 32, the lowest bits doubling as a logical counter) and the id of the
//! node that issued it. The clock itself lives in `recall-commands`; this type only orders and encodes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A hybrid-logical-clock timestamp. Ordered by time, then by node id, which gives the deterministic
/// merge order `(hlc, origin site)` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct HlcTimestamp {
    /// NTP64: seconds since 1970-01-01 in the high 32 bits, binary fraction in the low 32.
    pub time: u64,
    /// The issuing clock's node id (0 for rows written by foreign writers through database defaults).
    pub node: u128,
}

impl HlcTimestamp {
    pub const fn new(time: u64, node: u128) -> Self {
        Self { time, node }
    }

    /// The physical part as wall-clock time (the logical counter bits make it at most a few ns late).
    pub fn to_datetime(&self) -> DateTime<Utc> {
        let secs = (self.time >> 32) as i64;
        let nanos = (((self.time & 0xFFFF_FFFF) as u128 * 1_000_000_000) >> 32) as u32;
        DateTime::from_timestamp(secs, nanos).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Text form: 16 lower-case hex digits of `time`, `/`, the node id in hex. Sorting the text byte-wise
/// sorts by time first, which is how the database column orders it.
impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{:x}", self.time, self.node)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a hybrid-logical-clock timestamp (expected 16 hex digits, '/', a hex node id): {0:?}")]
pub struct HlcParseError(pub String);

impl FromStr for HlcTimestamp {
    type Err = HlcParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || HlcParseError(s.to_owned());
        let (time, node) = s.split_once('/').ok_or_else(err)?;
        if time.len() != 16 || node.is_empty() || node.len() > 32 {
            return Err(err());
        }
        Ok(Self {
            time: u64::from_str_radix(time, 16).map_err(|_| err())?,
            node: u128::from_str_radix(node, 16).map_err(|_| err())?,
        })
    }
}

impl From<HlcTimestamp> for String {
    fn from(value: HlcTimestamp) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for HlcTimestamp {
    type Error = HlcParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_sorts_like_the_value() {
        let a = HlcTimestamp::new(0x6b07_2296_ec6e_08f2, 0x33);
        let b = HlcTimestamp::new(0x6b07_2296_ec6e_08f3, 0x1);
        assert_eq!(a.to_string(), "6b072296ec6e08f2/33");
        assert_eq!(a.to_string().parse::<HlcTimestamp>(), Ok(a));
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in ["", "/", "6b072296ec6e08f2", "6b072296ec6e08f2/", "xyz/1", "6b072296ec6e08f/1"] {
            assert!(bad.parse::<HlcTimestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn physical_part_reads_as_wall_clock_time() {
        // 2026-11-25T18:00:00Z and a half second.
        let t = HlcTimestamp::new((1_795_629_600u64 << 32) | 0x8000_0000, 0);
        assert_eq!(t.to_datetime().to_rfc3339(), "2026-11-25T18:00:00.500+00:00");
    }
}
