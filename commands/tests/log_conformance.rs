//! The event log's conformance suite, against a real Postgres: concurrent writers (ours and foreign ones,
//! with delays and aborts inside their transactions, and one transaction held open for seconds) while a
//! reader follows the log live; optimistic concurrency; the envelope; append-only; snapshots.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_well_formed, read_all, running_log, wait_until_sequenced, Counter, CounterCommand};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, EventStore};
use futures::StreamExt;
use rand::Rng;
use recall_commands::{Adapted, CommandError, CommandService, LoggedEvent};
use recall_domain::{Actor, CommandMeta};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

fn pool(options: PgPoolOptions, connect: PgConnectOptions, size: u32) -> PgPool {
    options.max_connections(size).connect_lazy_with(connect)
}

/// A writer outside recall: plain SQL in its own transactions, with a pause between its two events, and
/// every fifth transaction rolled back.
async fn foreign_writer(pool: PgPool, writer: usize, transactions: usize) -> usize {
    let mut committed = 0;
    for t in 0..transactions {
        let (pause, abort) = {
            let mut rng = rand::rng();
            (rng.random_range(0..15u64), t % 5 == 4)
        };
        let mut tx = pool.begin().await.expect("begin");
        let id = format!("foreign-{writer}-{t}");
        for sequence in 1..=2i64 {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Foreign', $1, $2, 'Happened', '1', '{\"n\": 1}', '{}')",
            )
            .bind(&id)
            .bind(sequence)
            .execute(&mut *tx)
            .await
            .expect("insert");
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if abort {
            tx.rollback().await.expect("rollback");
        } else {
            tx.commit().await.expect("commit");
            committed += 2;
        }
    }
    committed
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn concurrent_writers_are_seen_live_exactly_once_in_order_without_gaps(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = pool(options, connect, 20);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = Arc::new(CommandService::<Counter>::new(log.clone(), ()));

    let delivered: Arc<Mutex<Vec<LoggedEvent>>> = Arc::default();
    let follower = {
        let delivered = delivered.clone();
        let mut stream = Box::pin(log.follow(0));
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                delivered.lock().expect("lock").push(event.expect("the follower reads without error"));
            }
        })
    };

    // One transaction held open for 3 s from the start: everything committed meanwhile must wait for it.
    let held_open = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Foreign', 'held-open', 1, 'Happened', '1', '{}', '{}')",
            )
            .execute(&mut *tx)
            .await
            .expect("insert");
            tokio::time::sleep(Duration::from_secs(3)).await;
            tx.commit().await.expect("commit");
            1
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut writers = Vec::new();
    // Sixteen writers: ten foreign ones pausing inside their transactions, six through the command service.
    for w in 0..10 {
        let pool = pool.clone();
        writers.push(tokio::spawn(foreign_writer(pool, w, 25)));
    }
    for w in 0..6 {
        let service = service.clone();
        writers.push(tokio::spawn(async move {
            let mut appended = 0;
            for c in 0..30 {
                let aggregate = format!("counter-{w}-{}", c % 3);
                let times = 1 + (c % 3) as u32;
                let receipt = service
                    .execute(&aggregate, CounterCommand::Add { times }, CommandMeta::system("test"))
                    .await
                    .expect("each writer owns its aggregates, so no conflict");
                appended += receipt.events.len();
            }
            appended
        }));
    }
    let mut expected = held_open.await.expect("held-open transaction");
    for writer in writers {
        expected += writer.await.expect("writer");
    }
    wait_until_sequenced(&log, Duration::from_secs(30)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while delivered.lock().expect("lock").len() < expected {
        assert!(tokio::time::Instant::now() < deadline, "the follower fell behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    follower.abort();
    shutdown.cancel();

    let delivered = delivered.lock().expect("lock").clone();
    assert_eq!(delivered.len(), expected, "every committed event delivered once, nothing rolled back");
    assert_well_formed(&delivered);
    assert_eq!(delivered, read_all(&log).await, "live delivery and a later read agree");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.expect("count");
    assert_eq!(stored as usize, expected);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn two_writers_at_the_same_sequence_exactly_one_wins(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let store = PersistedEventStore::<_, Adapted<Counter>>::new_event_store(log.repository());
    let events = || vec![recall_commands::EventOf(common::CounterEvent::Added { by: 1, value: 1 })];
    let meta = || {
        let meta = serde_json::to_string(&CommandMeta::system("test")).expect("meta");
        std::collections::HashMap::from([("recall.meta".to_owned(), meta)])
    };
    let first = store.load_aggregate("contested").await.expect("load");
    let second = store.load_aggregate("contested").await.expect("load");
    let (a, b) = tokio::join!(store.commit(events(), first, meta()), store.commit(events(), second, meta()));
    let conflicts = [&a, &b].iter().filter(|r| matches!(r, Err(AggregateError::AggregateConflict))).count();
    let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!((wins, conflicts), (1, 1), "{a:?} / {b:?}");
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn racing_commands_on_one_aggregate_either_append_or_report_a_conflict(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = pool(options, connect, 20);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = Arc::new(CommandService::<Counter>::new(log.clone(), ()));
    let mut racers = Vec::new();
    for _ in 0..16 {
        let service = service.clone();
        racers.push(tokio::spawn(async move {
            service.execute("hot", CounterCommand::Add { times: 1 }, CommandMeta::system("test")).await
        }));
    }
    let mut won = 0;
    let mut conflicts = 0;
    for racer in racers {
        match racer.await.expect("racer") {
            Ok(receipt) => {
                assert_eq!(receipt.events.len(), 1);
                won += 1;
            }
            Err(CommandError::Conflict { aggregate_id, .. }) => {
                assert_eq!(aggregate_id, "hot");
                conflicts += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won + conflicts, 16);
    assert!(won >= 1);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'hot'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, won, "exactly the winners were written");
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_refused_command_writes_nothing(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = CommandService::<Counter>::new(log.clone(), ());
    let refused = service.execute("c", CounterCommand::Fail, CommandMeta::system("test")).await;
    assert!(matches!(refused, Err(CommandError::Refused(common::Refused))));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 0);
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn every_envelope_field_written_is_read_back(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = CommandService::<Counter>::new(log.clone(), ());
    let meta = CommandMeta {
        tenant_id: Some(Uuid::now_v7()),
        actor: Actor::User(Uuid::now_v7()),
        impersonator: Some(Actor::User(Uuid::now_v7())),
        session_id: Some(Uuid::now_v7()),
        device_id: Some(Uuid::now_v7()),
        source_addr: Some("2001:db8::7".parse().expect("address")),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
    };
    let before = chrono::Utc::now();
    let receipt = service.execute("enveloped", CounterCommand::Add { times: 2 }, meta.clone()).await.expect("append");
    assert_eq!(receipt.events.len(), 2);
    assert_ne!(receipt.events[0].event_id, receipt.events[1].event_id, "each event has its own id");
    let position = log
        .wait_for_position(receipt.events[1].event_id, Duration::from_secs(10))
        .await
        .expect("position")
        .expect("sequenced in time");
    assert_eq!(position, 2);

    let events = read_all(&log).await;
    assert_eq!(events.len(), 2);
    for (logged, appended) in events.iter().zip(&receipt.events) {
        let envelope = logged.event.envelope().expect("the envelope reads back");
        assert_eq!(envelope.event_id, appended.event_id);
        assert_eq!(envelope.meta, meta);
        assert_eq!(envelope.origin_site, "test");
        assert_eq!(envelope.origin_pos, None);
        assert!(envelope.recorded_at >= before - chrono::Duration::seconds(1));
        assert!((envelope.hlc.to_datetime() - envelope.recorded_at).num_seconds().abs() < 5);
        // The metadata column carries the same envelope, as the string map postgres-es readers expect.
        let metadata: std::collections::HashMap<String, String> =
            serde_json::from_str(&logged.event.metadata).expect("metadata is a map of strings");
        assert_eq!(metadata["event_id"], envelope.event_id.to_string());
        assert_eq!(metadata["impersonator"], meta.impersonator.as_ref().expect("set").to_string());
        assert_eq!(metadata["source_addr"], "2001:db8::7");
        assert_eq!(metadata["hlc"], envelope.hlc.to_string());
        assert_eq!(metadata.len(), 12, "every field but origin_pos: {metadata:?}");
    }
    let first = events[0].event.envelope().expect("envelope");
    let second = events[1].event.envelope().expect("envelope");
    assert!(first.hlc < second.hlc, "HLC orders the events of one command");
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_plain_postgres_es_writer_is_sequenced_with_default_envelope(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let plain = postgres_es::postgres_cqrs(pool.clone(), vec![], ());
    let _: &cqrs_es::CqrsFramework<Adapted<Counter>, _> = &plain;
    plain.execute("plain", CounterCommand::Add { times: 3 }).await.expect("plain postgres-es append");
    wait_until_sequenced(&log, Duration::from_secs(10)).await;
    let events = read_all(&log).await;
    assert_eq!(events.len(), 3);
    assert_well_formed(&events);
    for logged in &events {
        let envelope = logged.event.envelope().expect("defaults make a valid envelope");
        assert!(matches!(envelope.meta.actor, Actor::Database(_)), "{:?}", envelope.meta.actor);
        assert_eq!(envelope.origin_site, "test");
    }
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn the_log_refuses_updates_deletes_and_truncation(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = CommandService::<Counter>::new(log.clone(), ());
    service.execute("c", CounterCommand::Add { times: 1 }, CommandMeta::system("test")).await.expect("append");
    wait_until_sequenced(&log, Duration::from_secs(10)).await;
    for statement in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
        "UPDATE event_log SET hash = hash",
        "DELETE FROM event_log",
    ] {
        let err = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(read_all(&log).await.len(), 1);
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_database_of_one_site_refuses_another_site(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect, 5);
    common::open_log(pool.clone(), "paris").await;
    let err = recall_commands::EventLog::open(
        pool.clone(),
        common::config("london"),
        recall_commands::LogMetrics::unregistered().expect("metrics"),
    )
    .await
    .expect_err("a second site name is refused");
    assert!(err.to_string().contains("paris"), "{err}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn long_lived_aggregates_load_from_snapshots(options: PgPoolOptions, connect: PgConnectOptions) {
    use recall_domain::site::{Site, SiteCommand};
    let pool = pool(options, connect, 10);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = CommandService::<Site>::with_snapshots(log.clone(), (), 5);
    for _ in 0..12 {
        let start = SiteCommand::RecordNodeStart { node: "n1".into(), version: "1".into() };
        service.execute("test", start, CommandMeta::system("test")).await.expect("start");
    }
    let (last_sequence, snapshot): (i64, String) = sqlx::query_as(
        "SELECT last_sequence, payload::text FROM snapshots WHERE aggregate_type = 'Site' AND aggregate_id = 'test'",
    )
    .fetch_one(&pool)
    .await
    .expect("a snapshot was taken");
    assert_eq!(last_sequence, 10);
    let site: Site = serde_json::from_str(&snapshot).expect("snapshot payload is the aggregate");
    assert_eq!(site.starts(), 10);
    // The 13th start is decided on the snapshot plus two events: the node is still marked running.
    let receipt = service
        .execute(
            "test",
            SiteCommand::RecordNodeStart { node: "n1".into(), version: "1".into() },
            CommandMeta::system("t"),
        )
        .await
        .expect("start");
    assert_eq!(receipt.events[0].sequence, 13);
    wait_until_sequenced(&log, Duration::from_secs(10)).await;
    let last = read_all(&log).await.pop().expect("events");
    assert!(last.event.payload.contains("\"previous_run_unclean\":true"), "{}", last.event.payload);
    shutdown.cancel();
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn appends_survive_a_lost_database_connection_as_clear_errors(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = pool(options, connect.clone(), 5);
    let (log, shutdown) = running_log(pool.clone()).await;
    let service = CommandService::<Counter>::new(log.clone(), ());
    pool.close().await;
    let err = service
        .execute("c", CounterCommand::Add { times: 1 }, CommandMeta::system("test"))
        .await
        .expect_err("a closed pool cannot append");
    assert!(matches!(err, CommandError::Unavailable(_)), "{err:?}");
    shutdown.cancel();
    // Nothing was written.
    let mut conn = sqlx::PgConnection::connect_with(&connect).await.expect("connect");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut conn).await.expect("count");
    assert_eq!(stored, 0);
}
