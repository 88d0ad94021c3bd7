//! What the recorder's tests share: waiting for a condition, and a backoff short enough for tests.
#![allow(dead_code)]

use std::time::Duration;

use recall_recorder::upload::Backoff;
use uuid::Uuid;

/// The tenant the tests' calls belong to.
pub const TENANT: Uuid = Uuid::from_u128(0x7e);

/// Waits until `done`, failing the test after `limit`.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries after 50 ms, at most 200 ms apart.
pub fn fast() -> Backoff {
    Backoff { first: Duration::from_millis(50), max: Duration::from_millis(200) }
}
