//! recall's write side: the command service that turns commands into events with their envelope, and the
//! Postgres event log those events land in (append, sequence, chain, read, follow).
//! Nothing here decides what a command means: that is `recall-domain`'s job.

pub mod adapter;
pub mod admin;
pub mod clock;
pub mod credentials;
pub mod delivery;
pub mod key_store;
pub mod log;
pub mod metrics;
pub mod secrets;
pub mod service;
pub mod storage_probe;
pub mod synthetic;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod write_index;

pub use adapter::{Adapted, EventOf};
pub use clock::HybridClock;
pub use log::{EventLog, LogConfig, LogError, LoggedEvent, StoredEvent};
pub use metrics::LogMetrics;
pub use service::{AppendedEvent, CommandError, CommandService, Receipt};
