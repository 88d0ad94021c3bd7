//! `recall generate`: a synthetic population through the real command path, with progress on standard
//! error and a summary on standard output.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use recall_commands::synthetic::{self, Phase, SyntheticSpec};
use recall_commands::{EventLog, LogConfig, LogMetrics};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{admin_service, host_name, migrate, wait_sequenced, Database, GenerateArgs};

pub(crate) async fn run(
    pool: PgPool,
    database: &Database,
    args: GenerateArgs,
    password: Option<SecretString>,
) -> Result<()> {
    migrate(&pool).await?;
    let site =
        EventLog::database_site(&pool).await.context("cannot read the site")?.unwrap_or_else(|| "local".to_owned());
    let log =
        EventLog::open(pool, LogConfig::new(site, format!("generate-{}", host_name())), LogMetrics::unregistered()?)
            .await
            .context("cannot open the event log")?;
    let shutdown = CancellationToken::new();
    // Sequences here unless a running `recall serve` holds the site's sequencer.
    let tasks = log.spawn(true, shutdown.clone());
    let admin = Arc::new(admin_service(&log, database)?);
    let spec = SyntheticSpec {
        tenants: args.tenants,
        groups_per_tenant: args.groups_per_tenant,
        agents_per_group: args.agents_per_group,
        calls: args.calls,
        audit_events: args.audit_events,
        days: args.days,
        unassigned_share: args.unassigned_share,
        writers: args.writers,
        password,
        seed: args.seed,
    };
    let started = Instant::now();
    let last = Mutex::new((Instant::now(), None::<Phase>));
    let result = synthetic::generate(&admin, &spec, |phase, done, total| {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if done == total || last.1 != Some(phase) || last.0.elapsed() >= Duration::from_secs(1) {
            *last = (Instant::now(), Some(phase));
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!("{phase}: {done} of {total} ({rate:.0}/s since the start)");
        }
    })
    .await;
    if result.is_ok() {
        eprintln!("waiting for the sequencer to number everything");
        wait_sequenced(&log).await;
    }
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let report = result.context("the generation stopped")?;
    println!(
        "generated run syn{}: {} tenants, {} administrative events, {} calls from {} to {} in {:.0} s",
        report.tag,
        report.tenants.len(),
        report.admin_events,
        report.calls,
        report.from.format("%Y-%m-%d"),
        report.to.format("%Y-%m-%d"),
        started.elapsed().as_secs_f64()
    );
    for tenant in &report.tenants {
        println!("  tenant {} ({}): administrator {}", tenant.name, tenant.tenant_id, tenant.administrator.username);
    }
    Ok(())
}
