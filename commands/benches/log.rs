//! Event log benchmarks, side by side against one Postgres so the ratio holds on a noisy machine.
//!
//! 1. Append throughput: recall's full command path (load, decide, envelope, one-statement append, with the
//!    sequencer numbering and chaining concurrently, counted until the last event is sequenced) versus a
//!    plain postgres-es `CqrsFramework` on a plain `events` table, for 1 writer × 1 event per command,
//!    8 writers × 1 event and 8 writers × 10 events.
//! 2. Live-reader lag: events appended at a paced 5,000 events/s; time from the append's acknowledgement
//!    to its delivery by `EventLog::follow`.
//!
//! Run: `cargo bench -p recall-commands --bench log` (DATABASE_URL names the server; it creates and drops
//! the databases `recall_bench_plain` and `recall_bench_recall`). `-- --seconds N` sets each measurement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use recall_commands::{Adapted, CommandService, EventLog, LogConfig, LogMetrics};
use recall_domain::{Aggregate, CommandMeta, DomainEvent};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per throughput measurement (each side runs twice, interleaved).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of paced load for the lag measurement.
    #[arg(long, default_value_t = 10)]
    lag_seconds: u64,
    /// Events per second for the lag measurement.
    #[arg(long, default_value_t = 5000)]
    lag_rate: u64,
    /// Events per command for the lag measurement (1-event commands cannot reach 5,000/s on 2 cores).
    #[arg(long, default_value_t = 10)]
    lag_batch: u32,
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    // cargo bench passes --bench; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tally {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added { value: u64, note: String },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = u32;
    type Event = TallyEvent;
    type Error = Never;
    type Services = ();

    async fn decide(&self, times: u32, _: &()) -> Result<Vec<TallyEvent>, Never> {
        Ok((1..=u64::from(times))
            .map(|i| TallyEvent::Added { value: self.value + i, note: "a call was recorded on extension 2001".into() })
            .collect())
    }

    fn apply(&mut self, event: TallyEvent) {
        let TallyEvent::Added { value, .. } = event;
        self.value = value;
    }
}

const PLAIN_SCHEMA: &str = "
CREATE TABLE events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL, last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";

async fn fresh_database(server: &PgConnectOptions, name: &str) -> PgPool {
    let mut admin = PgConnection::connect_with(server).await.expect("connect to DATABASE_URL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create");
    admin.close().await.expect("close");
    PgPoolOptions::new().max_connections(24).connect_with(server.clone().database(name)).await.expect("pool")
}

/// Each writer works on its own aggregates, ten commands per aggregate, so no command conflicts and loads
/// stay small; the same shape on both sides.
fn aggregate_id(writer: usize, command: u64) -> String {
    format!("w{writer}-{}", command / 10)
}

#[derive(Clone, Copy)]
struct Scenario {
    writers: usize,
    events_per_command: u32,
}

async fn plain_run(pool: &PgPool, scenario: Scenario, seconds: u64, run: usize) -> f64 {
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<Adapted<Tally>>(pool.clone(), vec![], ()));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..scenario.writers {
        let (cqrs, stop, events) = (cqrs.clone(), stop.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("r{run}-{}", aggregate_id(w, c));
                cqrs.execute(&id, scenario.events_per_command).await.expect("plain append");
                events.fetch_add(u64::from(scenario.events_per_command), Ordering::Relaxed);
                c += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    events.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn recall_run(log: &Arc<EventLog>, scenario: Scenario, seconds: u64, run: usize) -> f64 {
    let service = Arc::new(CommandService::<Tally>::new(log.clone(), ()));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let head_before = log.status().await.expect("status").head_position;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..scenario.writers {
        let (service, stop, events) = (service.clone(), stop.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("r{run}-{}", aggregate_id(w, c));
                let receipt = service
                    .execute(&id, scenario.events_per_command, CommandMeta::system("bench"))
                    .await
                    .expect("recall append");
                events.fetch_add(receipt.events.len() as u64, Ordering::Relaxed);
                c += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    // Counted only once the sequencer has numbered and chained every event.
    let appended = events.load(Ordering::Relaxed);
    loop {
        let status = log.status().await.expect("status");
        if status.unsequenced == 0 {
            assert_eq!(status.head_position - head_before, appended, "every append sequenced once");
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    appended as f64 / started.elapsed().as_secs_f64()
}

/// Paced load of `rate` events/s in commands of `batch` events from 8 writers, for `seconds`.
async fn live_lag(log: &Arc<EventLog>, rate: u64, batch: u32, seconds: u64) -> (usize, Vec<Duration>) {
    let service = Arc::new(CommandService::<Tally>::new(log.clone(), ()));
    let acked: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let start_after = log.status().await.expect("status").head_position;
    let follower = {
        let delivered = delivered.clone();
        let mut stream = Box::pin(log.follow(start_after));
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let event = event.expect("follow");
                delivered.lock().expect("lock").insert(event.event.event_id, Instant::now());
            }
        })
    };
    let writers = 8u64;
    let commands_per_second = rate as f64 / f64::from(batch);
    let period = Duration::from_secs_f64(writers as f64 / commands_per_second);
    let total_per_writer = (commands_per_second * seconds as f64 / writers as f64) as u64;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (service, acked) = (service.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for c in 0..total_per_writer {
                tokio::time::sleep_until(started + period.mul_f64(c as f64)).await;
                let id = format!("lag-{}", aggregate_id(w as usize, c));
                let receipt = service.execute(&id, batch, CommandMeta::system("bench")).await.expect("append");
                let now = Instant::now();
                let mut acked = acked.lock().expect("lock");
                for event in receipt.events {
                    acked.insert(event.event_id, now);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let achieved = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.lock().expect("lock").len() < achieved && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    follower.abort();
    let acked = acked.lock().expect("lock");
    let delivered = delivered.lock().expect("lock");
    let lags = acked
        .iter()
        .map(|(id, ack)| delivered.get(id).map_or(Duration::MAX, |d| d.saturating_duration_since(*ack)))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    ((achieved as f64 / elapsed) as usize, lags)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let server: PgConnectOptions = args.database_url.parse().expect("DATABASE_URL");
    let plain = fresh_database(&server, "recall_bench_plain").await;
    sqlx::raw_sql(PLAIN_SCHEMA).execute(&plain).await.expect("plain schema");
    let recall = fresh_database(&server, "recall_bench_recall").await;
    recall_migrations::MIGRATOR.run(&recall).await.expect("migrations");
    let log = EventLog::open(recall.clone(), LogConfig::new("bench", "bench"), LogMetrics::unregistered().expect("m"))
        .await
        .expect("log");
    let shutdown = CancellationToken::new();
    log.spawn(true, shutdown.clone());

    println!("## Append throughput ({} s per run, two interleaved runs per side, events/s)\n", args.seconds);
    println!("| scenario | plain postgres-es | recall (sequenced) | ratio |");
    println!("|---|---:|---:|---:|");
    let scenarios = [
        ("1 writer x 1 event", Scenario { writers: 1, events_per_command: 1 }),
        ("8 writers x 1 event", Scenario { writers: 8, events_per_command: 1 }),
        ("8 writers x 10 events", Scenario { writers: 8, events_per_command: 10 }),
    ];
    let mut run = 0;
    for (name, scenario) in scenarios {
        let (mut plain_total, mut recall_total) = (0.0, 0.0);
        for _ in 0..2 {
            run += 1;
            plain_total += plain_run(&plain, scenario, args.seconds, run).await;
            recall_total += recall_run(&log, scenario, args.seconds, run).await;
        }
        let (p, r) = (plain_total / 2.0, recall_total / 2.0);
        println!("| {name} | {p:.0} | {r:.0} | {:.2} |", r / p);
    }

    let (achieved, mut lags) = live_lag(&log, args.lag_rate, args.lag_batch, args.lag_seconds).await;
    lags.sort();
    println!("\n## Live-reader lag (append acknowledged -> delivered by follow)\n");
    println!("| target rate | events per command | achieved rate | events | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} ev/s | {} | {achieved} ev/s | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        args.lag_rate,
        args.lag_batch,
        lags.len(),
        percentile(&lags, 0.5).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    shutdown.cancel();
}
