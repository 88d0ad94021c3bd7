//! Kill the writing process (SIGKILL) in the middle of appends and sequencing; after a restart the log has
//! no gap, no duplicate, and holds every append that was acknowledged. The writer is this test binary
//! itself, re-run as a child with `crash_child_appends_until_killed`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_well_formed, read_all, running_log, wait_until_sequenced, Counter, CounterCommand};
use recall_commands::CommandService;
use recall_domain::CommandMeta;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

const CHILD_ENV: &str = "RECALL_CRASH_CHILD_DATABASE";

/// In the child: append from four tasks, print `ack <event id>` once each append is committed, until killed.
#[test]
fn crash_child_appends_until_killed() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return; // An ordinary test run: nothing to do.
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.expect("child connects");
        let (log, _shutdown) = running_log(pool).await;
        let service = std::sync::Arc::new(CommandService::<Counter>::new(log, ()));
        let mut tasks = Vec::new();
        for w in 0..4u32 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                for c in 0u32.. {
                    let command = CounterCommand::Add { times: 1 + c % 3 };
                    let receipt = service
                        .execute(&format!("crash-{w}"), command, CommandMeta::system("crash-child"))
                        .await
                        .expect("append");
                    let acks: String = receipt.events.iter().map(|e| format!("ack {}\n", e.event_id)).collect();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(acks.as_bytes()).expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

fn url(connect: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        connect.get_username(),
        connect.get_host(),
        connect.get_port(),
        connect.get_database().expect("a test database")
    )
}

/// Runs the child until it has acknowledged `acks` events, then kills it with SIGKILL.
fn run_and_kill(url: &str, acks: usize) -> Vec<Uuid> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child_appends_until_killed", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(id) = line.strip_prefix("ack ") {
            acknowledged.push(Uuid::parse_str(id).expect("event id"));
            if acknowledged.len() >= acks {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(acknowledged.len() >= acks, "the child stopped before it was killed");
    acknowledged
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_killed_writer_leaves_no_gap_no_duplicate_and_loses_no_acknowledged_append(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let url = url(&connect);
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let child_url = url.clone();
        let acks =
            tokio::task::spawn_blocking(move || run_and_kill(&child_url, 300 + round * 97)).await.expect("child run");
        acknowledged.extend(acks);
    }

    let pool = options.max_connections(10).connect_lazy_with(connect);
    let (log, shutdown) = running_log(pool.clone()).await;
    wait_until_sequenced(&log, Duration::from_secs(30)).await;
    let events = read_all(&log).await;
    shutdown.cancel();

    assert_well_formed(&events);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.expect("count");
    assert_eq!(events.len() as i64, stored, "every stored event has exactly one position");
    let logged: HashSet<Uuid> = events.iter().map(|e| e.event.event_id).collect();
    let missing: Vec<_> = acknowledged.iter().filter(|id| !logged.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
