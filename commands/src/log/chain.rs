//! The log's hash chain: `hash(N) = SHA-256(hash(N-1) || canonical(N, event))`, with `hash(0)` all zeros.
//! The canonical encoding is versioned and byte-exact over the stored columns; changing it is a new
//! version, never an edit, or every existing chain stops verifying.

use sha2::{Digest, Sha256};

use super::event::StoredEvent;

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

const ENCODING_VERSION: u8 = 1;

/// The hash of position `position` holding `event`, chained to `previous`.
pub fn link(previous: &[u8; 32], position: u64, event: &StoredEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical(position, event));
    hasher.finalize().into()
}

/// The canonical encoding: a version byte, then every field in a fixed order; strings and optional values
/// are length- or presence-prefixed so no two events encode alike.
pub fn canonical(position: u64, e: &StoredEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + e.payload.len() + e.metadata.len());
    out.push(ENCODING_VERSION);
    out.extend_from_slice(&position.to_be_bytes());
    out.extend_from_slice(e.event_id.as_bytes());
    text(&mut out, &e.aggregate_type);
    text(&mut out, &e.aggregate_id);
    out.extend_from_slice(&e.sequence.to_be_bytes());
    text(&mut out, &e.event_type);
    text(&mut out, &e.event_version);
    text(&mut out, &e.payload);
    text(&mut out, &e.metadata);
    optional(&mut out, e.tenant_id.as_ref().map(|id| id.as_bytes().as_slice()));
    text(&mut out, &e.actor);
    optional(&mut out, e.impersonator.as_deref().map(str::as_bytes));
    optional(&mut out, e.session_id.as_ref().map(|id| id.as_bytes().as_slice()));
    optional(&mut out, e.device_id.as_ref().map(|id| id.as_bytes().as_slice()));
    optional(&mut out, e.source_addr.as_deref().map(str::as_bytes));
    optional(&mut out, e.correlation_id.as_ref().map(|id| id.as_bytes().as_slice()));
    optional(&mut out, e.causation_id.as_ref().map(|id| id.as_bytes().as_slice()));
    text(&mut out, &e.origin_site);
    optional(&mut out, e.origin_pos.map(i64::to_be_bytes).as_ref().map(|b| b.as_slice()));
    text(&mut out, &e.hlc);
    out.extend_from_slice(&e.recorded_at.timestamp_micros().to_be_bytes());
    out
}

fn text(out: &mut Vec<u8>, value: &str) {
    bytes(out, value.as_bytes());
}

fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    // Columns are bounded far below 4 GiB by Postgres (1 GB per value).
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

fn optional(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            bytes(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    fn event() -> StoredEvent {
        StoredEvent {
            aggregate_type: "Site".into(),
            aggregate_id: "paris".into(),
            sequence: 1,
            event_type: "NodeStarted".into(),
            event_version: "1".into(),
            payload: r#"{"NodeStarted":{"node":"a"}}"#.into(),
            metadata: "{}".into(),
            event_id: Uuid::from_u128(1),
            tenant_id: None,
            actor: "system:test".into(),
            impersonator: None,
            session_id: None,
            device_id: None,
            source_addr: None,
            correlation_id: None,
            causation_id: None,
            origin_site: "paris".into(),
            origin_pos: None,
            hlc: "0000000000000001/1".into(),
            recorded_at: DateTime::from_timestamp(1_795_629_600, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = link(&GENESIS, 1, &event());
        let variants: Vec<fn(&mut StoredEvent)> = vec![
            |e| e.aggregate_type.push('x'),
            |e| e.aggregate_id.push('x'),
            |e| e.sequence += 1,
            |e| e.event_type.push('x'),
            |e| e.event_version.push('x'),
            |e| e.payload.push(' '),
            |e| e.metadata.push(' '),
            |e| e.event_id = Uuid::from_u128(2),
            |e| e.tenant_id = Some(Uuid::nil()),
            |e| e.actor.push('x'),
            |e| e.impersonator = Some(String::new()),
            |e| e.session_id = Some(Uuid::nil()),
            |e| e.device_id = Some(Uuid::nil()),
            |e| e.source_addr = Some("127.0.0.1".into()),
            |e| e.correlation_id = Some(Uuid::nil()),
            |e| e.causation_id = Some(Uuid::nil()),
            |e| e.origin_site.push('x'),
            |e| e.origin_pos = Some(0),
            |e| e.hlc.push('0'),
            |e| e.recorded_at += chrono::Duration::microseconds(1),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut e = event();
            change(&mut e);
            assert_ne!(link(&GENESIS, 1, &e), base, "change {i} left the hash unchanged");
        }
        assert_ne!(link(&GENESIS, 2, &event()), base, "the position is part of the hash");
        assert_ne!(link(&[1; 32], 1, &event()), base, "the previous hash is part of the hash");
    }

    #[test]
    fn moving_bytes_between_adjacent_fields_changes_the_hash() {
        let mut a = event();
        a.aggregate_type = "ab".into();
        a.aggregate_id = "c".into();
        let mut b = event();
        b.aggregate_type = "a".into();
        b.aggregate_id = "bc".into();
        assert_ne!(link(&GENESIS, 1, &a), link(&GENESIS, 1, &b));
    }
}
