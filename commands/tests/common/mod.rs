//! What the log tests share: a small counter aggregate (the log is generic; this gives it real events),
//! and helpers to open a log on a test database and wait for the sequencer.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use recall_commands::testing as world;

use std::sync::Arc;
use std::time::Duration;

use recall_commands::{EventLog, LogConfig, LogMetrics, LoggedEvent};
use recall_domain::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counter {
    pub value: u64,
    pub events: u64,
}

#[derive(Debug)]
pub enum CounterCommand {
    /// Adds 1 `times` times: `times` events.
    Add {
        times: u32,
    },
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { by: u64, value: u64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("refused")]
pub struct Refused;

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = Refused;
    type Services = ();

    async fn decide(&self, command: CounterCommand, _: &()) -> Result<Vec<CounterEvent>, Refused> {
        match command {
            CounterCommand::Add { times } => {
                Ok((1..=u64::from(times)).map(|i| CounterEvent::Added { by: 1, value: self.value + i }).collect())
            }
            CounterCommand::Fail => Err(Refused),
        }
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Added { by, .. } = event;
        self.value += by;
        self.events += 1;
    }
}

pub fn config(site: &str) -> LogConfig {
    let mut config = LogConfig::new(site, "test-node");
    config.follow_poll = Duration::from_millis(100);
    config
}

pub async fn open_log(pool: PgPool, site: &str) -> Arc<EventLog> {
    EventLog::open(pool, config(site), LogMetrics::unregistered().expect("metrics")).await.expect("the log opens")
}

#[allow(unused_imports)]
pub use recall_commands::testing::{running_log, wait_until_sequenced};

/// The whole log, in order.
pub async fn read_all(log: &EventLog) -> Vec<LoggedEvent> {
    let mut all: Vec<LoggedEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.position);
        let batch = log.read_batch(after, 1000).await.expect("read");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Asserts positions 1..=N, no event twice, the hash chain intact, and each aggregate in sequence order.
pub fn assert_well_formed(events: &[LoggedEvent]) {
    use std::collections::{HashMap, HashSet};
    let mut seen = HashSet::new();
    let mut last_sequence: HashMap<(String, String), i64> = HashMap::new();
    let mut hash = recall_commands::log::chain::GENESIS;
    for (i, logged) in events.iter().enumerate() {
        assert_eq!(logged.position, i as u64 + 1, "positions must be dense from 1");
        assert!(seen.insert(logged.event.event_id), "event {} appears twice", logged.event.event_id);
        hash = recall_commands::log::chain::link(&hash, logged.position, &logged.event);
        assert_eq!(hash, logged.hash, "chain broken at position {}", logged.position);
        let key = (logged.event.aggregate_type.clone(), logged.event.aggregate_id.clone());
        let previous = last_sequence.insert(key.clone(), logged.event.sequence);
        assert!(
            previous.is_none_or(|p| p + 1 == logged.event.sequence),
            "{key:?}: sequence {} follows {previous:?}",
            logged.event.sequence
        );
    }
}
