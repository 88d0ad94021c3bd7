//! `recall serve`'s recorder: its command-line options and the ports the recorder crate asks for, wired to
//! the rest of recall: the directory (tenants, extensions, storage targets) read from the read model and
//! refreshed every second, the call log (the `Call` aggregate through the command service, actor
//! `system:recorder:<node>`), and the storage targets as object stores (the installation's
//! `<data-dir>/recordings` for tenants without one). A tenant that encrypts its recordings is given its
//! active public key from `tenant_keys`, parsed once and kept while the key stays active.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use recall_commands::admin::Admin;
use recall_commands::{CommandError, CommandService};
use recall_crypto::PublicKey;
use recall_domain::call::{Call, CallCommand};
use recall_domain::recording_policy::DefaultRecordingRule;
use recall_domain::tenant::RecordingClients;
use recall_domain::user::RecordingSettings;
use recall_domain::CommandMeta;
use recall_recorder::directory::{Directory, Encryption, ExtensionOwner, TenantProfile};
use recall_recorder::outbox::{CallLog, DeliveryError};
use recall_recorder::server::{Recorder, RecorderConfig, RecorderMetrics, StorageResolver};
use recall_recorder::upload::Backoff;
use serde::de::DeserializeOwned;
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct RecorderArgs {
    /// Where the recorder takes SIP and SIPREC calls, on UDP and TCP (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:5080")]
    sip: SocketAddr,
    /// Do not run the recorder (API and projections only).
    #[arg(long)]
    no_sip: bool,
    /// RTP ports the recorder receives media on (even ports; two per stereo call).
    #[arg(long, default_value = "20000-29999", value_parser = parse_port_range)]
    rtp_ports: (u16, u16),
    /// The address SDP answers give for media (default: the SIP address, or the one that routes to the caller).
    #[arg(long)]
    media_address: Option<IpAddr>,
    /// Calls held at once; further INVITEs are answered 503.
    #[arg(long, default_value_t = 1000)]
    max_calls: usize,
    /// Seconds without RTP (while not paused) after which a call ends.
    #[arg(long, default_value_t = 30)]
    rtp_timeout: u64,
    /// New calls are answered 503 while the local spool holds this many MiB.
    #[arg(long, default_value_t = 10_240)]
    spool_limit_mb: u64,
    /// Create the `default` tenant trusting this machine (loopback), as the embedded default always does.
    #[arg(long)]
    default_tenant: bool,
}

impl RecorderArgs {
    pub fn default_tenant(&self) -> bool {
        self.default_tenant
    }

    pub fn enabled(&self) -> bool {
        !self.no_sip
    }
}

fn parse_port_range(value: &str) -> Result<(u16, u16), String> {
    let (low, high) = value.split_once('-').ok_or("expected LOW-HIGH, e.g. 20000-29999")?;
    let low: u16 = low.trim().parse().map_err(|_| format!("{low:?} is not a port"))?;
    let high: u16 = high.trim().parse().map_err(|_| format!("{high:?} is not a port"))?;
    if low == 0 || high < low.saturating_add(1) {
        return Err("the range must hold at least one even port above 0, e.g. 20000-29999".into());
    }
    Ok((low, high))
}

pub struct Wiring<'a> {
    pub args: &'a RecorderArgs,
    pub admin: Arc<Admin>,
    pub data_dir: &'a Path,
    pub site: &'a str,
    pub node: &'a str,
    pub registry: &'a prometheus::Registry,
}

/// Binds the recorder and starts it with its ports; returns its SIP address and tasks.
pub async fn start(wiring: Wiring<'_>, shutdown: CancellationToken) -> Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let Wiring { args, admin, data_dir, site, node, registry } = wiring;
    let metrics = RecorderMetrics::register(registry).context("cannot register the recorder's metrics")?;
    let config = RecorderConfig {
        sip: args.sip,
        rtp_ports: args.rtp_ports,
        media_address: args.media_address,
        max_calls: args.max_calls,
        rtp_timeout: Duration::from_secs(args.rtp_timeout.max(1)),
        site: site.to_owned(),
        node: node.to_owned(),
        spool_dir: data_dir.join("spool"),
        outbox_dir: data_dir.join("outbox"),
        spool_limit_bytes: args.spool_limit_mb.saturating_mul(1024 * 1024),
        sync_every: Duration::from_secs(5),
        backoff: Backoff::default(),
    };
    let recorder = Recorder::bind(config, metrics)
        .await
        .context("cannot start the recorder (pass --sip ADDR:PORT, or --no-sip to run without it)")?;
    let address = recorder.local_addr();

    let pool = admin.log().pool().clone();
    let mut keys = TenantKeys::default();
    let first = match load_directory(&pool, &mut keys).await {
        Ok(directory) => directory,
        Err(e) => {
            tracing::info!(error = %e, "the directory read model cannot be read yet; calls are refused until it can");
            Directory::default()
        }
    };
    let (directory_tx, directory) = watch::channel(Arc::new(first));
    let mut tasks = vec![tokio::spawn(refresh_directory(pool, keys, directory_tx, shutdown.clone()))];

    let recordings = data_dir.join("recordings");
    std::fs::create_dir_all(&recordings)
        .with_context(|| format!("cannot create the recordings directory {}", recordings.display()))?;
    let local: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(&recordings)
            .with_context(|| format!("cannot use the recordings directory {}", recordings.display()))?
            // The spool copy goes once the store has the file: it must be on disk, not in the page cache.
            .with_fsync(true),
    );
    let calls = CommandService::<Call>::new(admin.log().clone(), ());
    let log = Arc::new(RecorderLog { calls, actor: format!("recorder:{node}") });
    let storage = Arc::new(Storage { admin, local });
    tasks.extend(recorder.spawn(directory, log, storage, shutdown));
    Ok((address, tasks))
}

async fn refresh_directory(
    pool: PgPool,
    mut keys: TenantKeys,
    directory: watch::Sender<Arc<Directory>>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match load_directory(&pool, &mut keys).await {
            Ok(loaded) => {
                if failing {
                    tracing::info!("the recorder reads the directory again");
                    failing = false;
                }
                if **directory.borrow() != loaded {
                    tracing::info!(tenants = loaded.tenants().len(), "the recorder's directory changed");
                    directory.send_replace(Arc::new(loaded));
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot refresh the recorder's directory; it uses what it read last");
                    failing = true;
                }
            }
        }
    }
}

fn parse_text<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .with_context(|| format!("unexpected value {text:?} in the directory read model"))
}

/// Tenants' public keys as parsed: the directory is read every second, a key is parsed once and its `Arc`
/// kept for as long as a tenant's active key id stays the same. `None`: the stored key does not parse.
#[derive(Default)]
struct TenantKeys(HashMap<Uuid, Option<Arc<PublicKey>>>);

impl TenantKeys {
    /// A tenant's file encryption from its read-model row: off, on with its active key, or unavailable
    /// (switched on, but the key is missing, destroyed or unreadable).
    fn encryption(&mut self, tenant: &str, enabled: bool, key_id: Option<Uuid>, der: Option<&[u8]>) -> Encryption {
        if !enabled {
            return Encryption::Off;
        }
        let (Some(key_id), Some(der)) = (key_id, der) else { return Encryption::Unavailable };
        let parsed = self.0.entry(key_id).or_insert_with(|| match PublicKey::from_der(der) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                tracing::warn!(tenant, %key_id, error = %e, "a tenant's encryption key cannot be read; its calls are refused");
                None
            }
        });
        match parsed {
            Some(key) => Encryption::On { key_id, key: key.clone() },
            None => Encryption::Unavailable,
        }
    }

    /// Forgets the keys no tenant has active any more.
    fn keep_only(&mut self, active: &HashSet<Uuid>) {
        self.0.retain(|key_id, _| active.contains(key_id));
    }
}

/// Tenants, their first active storage target and encryption key, and users' extensions, from the directory
/// read model (and `tenant_keys`, the public keys, which the read model names by id).
async fn load_directory(pool: &PgPool, keys: &mut TenantKeys) -> Result<Directory> {
    let targets = sqlx::query(
        "SELECT DISTINCT ON (tenant_id) tenant_id, target_id FROM rm_directory.storage_targets
         WHERE state = 'active' ORDER BY tenant_id, created_at, target_id",
    )
    .fetch_all(pool)
    .await
    .context("cannot read storage targets")?;
    let target_of = |tenant: Uuid| {
        targets.iter().find(|row| row.get::<Uuid, _>("tenant_id") == tenant).map(|row| row.get::<Uuid, _>("target_id"))
    };
    let rows = sqlx::query(
        "SELECT t.tenant_id, t.name, t.active, t.default_record, t.default_direction, t.unassigned_calls,
                t.audio_format, t.recording_networks, t.sip_domains, t.file_encryption, t.encryption_key_id,
                k.public_key
           FROM rm_directory.tenants t
           LEFT JOIN tenant_keys k ON k.key_id = t.encryption_key_id AND k.tenant_id = t.tenant_id",
    )
    .fetch_all(pool)
    .await
    .context("cannot read tenants")?;
    let mut tenants = Vec::with_capacity(rows.len());
    let mut active_keys = HashSet::new();
    for row in rows {
        let tenant_id: Uuid = row.get("tenant_id");
        let name: String = row.get("name");
        let networks: Vec<String> = row.get("recording_networks");
        let networks = networks.iter().filter_map(|n| n.parse().ok()).collect();
        let key_id: Option<Uuid> = row.get("encryption_key_id");
        let der: Option<Vec<u8>> = row.get("public_key");
        let encryption = keys.encryption(&name, row.get("file_encryption"), key_id, der.as_deref());
        active_keys.extend(key_id);
        tenants.push(TenantProfile {
            tenant_id,
            name,
            active: row.get("active"),
            clients: RecordingClients { networks, sip_domains: row.get("sip_domains") },
            rule: DefaultRecordingRule {
                record: parse_text(row.get("default_record"))?,
                direction: parse_text(row.get("default_direction"))?,
                unassigned_calls: parse_text(row.get("unassigned_calls"))?,
            },
            format: parse_text(row.get("audio_format"))?,
            storage_target_id: target_of(tenant_id),
            encryption,
        });
    }
    keys.keep_only(&active_keys);
    let rows = sqlx::query(
        "SELECT tenant_id, user_id, record_mode, record_direction, extensions FROM rm_directory.users
         WHERE active AND tenant_id IS NOT NULL AND cardinality(extensions) > 0",
    )
    .fetch_all(pool)
    .await
    .context("cannot read users")?;
    let mut extensions = Vec::new();
    for row in rows {
        let tenant_id: Uuid = row.get("tenant_id");
        let settings = RecordingSettings {
            record: parse_text(row.get("record_mode"))?,
            direction: parse_text(row.get("record_direction"))?,
        };
        let owner = ExtensionOwner { user_id: row.get("user_id"), settings };
        let numbers: Vec<String> = row.get("extensions");
        extensions.extend(numbers.into_iter().map(|number| (tenant_id, number, owner.clone())));
    }
    Ok(Directory::new(tenants, extensions))
}

/// The recorder's facts as `Call` commands.
struct RecorderLog {
    calls: CommandService<Call>,
    actor: String,
}

impl CallLog for RecorderLog {
    fn deliver<'a>(
        &'a self,
        call_id: Uuid,
        tenant_id: Uuid,
        command: &'a CallCommand,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let meta = CommandMeta::system(self.actor.clone()).in_tenant(tenant_id);
            match self.calls.execute(&call_id.to_string(), command.clone(), meta).await {
                Ok(_) => Ok(()),
                Err(CommandError::Refused(e)) => Err(DeliveryError::Refused(e.to_string())),
                Err(CommandError::Taken(key)) => Err(DeliveryError::Refused(format!("{key:?} is taken"))),
                Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
            }
        })
    }
}

/// Storage targets as object stores.
struct Storage {
    admin: Arc<Admin>,
    local: Arc<dyn ObjectStore>,
}

impl StorageResolver for Storage {
    fn store_for<'a>(
        &'a self,
        tenant_id: Uuid,
        storage_target_id: Option<Uuid>,
    ) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>> {
        Box::pin(async move {
            let Some(target_id) = storage_target_id else { return Ok(self.local.clone()) };
            let resolved = self.admin.resolve_storage_target(tenant_id, target_id).await.map_err(|e| e.to_string())?;
            recall_commands::storage_probe::object_store_for(&resolved).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_key_is_parsed_once_and_shared_while_it_stays_active() {
        let key = recall_crypto::PrivateKey::generate().expect("a key").public();
        let (key_id, mut keys) = (Uuid::from_u128(1), TenantKeys::default());
        let Encryption::On { key: first, .. } = keys.encryption("t", true, Some(key_id), Some(key.to_der())) else {
            panic!("a readable key switches encryption on")
        };
        assert_eq!(*first, key);
        // Read again (the next refresh): the same parsed key, whatever bytes come with the row.
        let Encryption::On { key: again, .. } = keys.encryption("t", true, Some(key_id), Some(b"ignored")) else {
            panic!("still on")
        };
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(keys.encryption("t", false, Some(key_id), Some(key.to_der())), Encryption::Off);
        assert_eq!(keys.encryption("t", true, None, None), Encryption::Unavailable, "switched on without a key");
        assert_eq!(keys.encryption("t", true, Some(key_id), None), Encryption::Unavailable, "the key row is gone");
        let other = Uuid::from_u128(2);
        assert_eq!(keys.encryption("t", true, Some(other), Some(b"not DER")), Encryption::Unavailable);
        keys.keep_only(&HashSet::from([other]));
        assert!(!keys.0.contains_key(&key_id), "a key no tenant has active is forgotten");
    }
}
