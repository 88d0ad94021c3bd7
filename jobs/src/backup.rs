//! The backup job: a tenant's stored recordings, exactly as stored, with each call's events and the public
//! part of the keys they need, copied to an archive on one of the tenant's storage targets (see
//! [`crate::archive`]). Calls are walked in call-id order from the calls read model; a call whose file and
//! description are in the archive already, unchanged, is skipped, so a repeated or resumed run copies
//! nothing twice and a scheduled run copies what is new (and rewrites the description of a call that
//! changed since, e.g. was assigned).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use object_store::path::Path;
use object_store::ObjectStore;
use recall_commands::admin::AdminError;
use recall_commands::log::read_aggregate;
use uuid::Uuid;

use crate::archive::{self, ArchiveInfo, ArchivedCall, ArchivedKey, RunSummary};
use crate::copy::{copy_verified, read_json, size_of, write_json, CopyError};
use crate::{JobRunner, RunCtx, RunError};

/// Calls read from the read model at a time.
const PAGE: i64 = 200;

pub(crate) async fn run(runner: &JobRunner, ctx: &mut RunCtx<'_>, target_id: Uuid, root: &str) -> Result<(), RunError> {
    let archive = runner.admin.recordings_store(ctx.tenant_id, Some(target_id), None).await?;
    match read_json::<ArchiveInfo>(archive.as_ref(), &archive::info_path(root)).await? {
        None => {
            let info = ArchiveInfo {
                format: archive::FORMAT.to_owned(),
                version: archive::VERSION,
                tenant_id: Some(ctx.tenant_id),
                site: runner.site.clone(),
                created_at: Utc::now(),
            };
            write_json(archive.as_ref(), &archive::info_path(root), &info).await?;
        }
        Some(Ok(info)) if info.format == archive::FORMAT && info.tenant_id == Some(ctx.tenant_id) => {}
        Some(Ok(info)) if info.format == archive::FORMAT => {
            return Err(RunError::Fatal(format!(
                "the archive at {root} holds other recordings (another tenant's, or a bulk download); give this job \
                 a path of its own{}",
                info.tenant_id.map(|t| format!(" (that archive's tenant: {t})")).unwrap_or_default()
            )))
        }
        _ => return Err(RunError::Fatal(format!("{root}/archive.json is there but is not a recall backup archive"))),
    }
    if ctx.progress.total == 0 {
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM rm_calls.calls WHERE tenant_id = $1 AND recording IS NOT NULL")
                .bind(ctx.tenant_id)
                .fetch_one(&runner.pool)
                .await?;
        ctx.progress.total = u64::try_from(total).unwrap_or(0);
    }
    let fingerprints = key_fingerprints(runner, ctx.tenant_id).await?;
    let mut sources = Sources::default();
    loop {
        let after = ctx.after.as_deref().and_then(|a| Uuid::parse_str(a).ok()).unwrap_or(Uuid::nil());
        let page: Vec<Uuid> = sqlx::query_scalar(
            "SELECT call_id FROM rm_calls.calls WHERE tenant_id = $1 AND recording IS NOT NULL AND call_id > $2
              ORDER BY call_id LIMIT $3",
        )
        .bind(ctx.tenant_id)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&runner.pool)
        .await?;
        if page.is_empty() {
            break;
        }
        for call_id in page {
            back_up_call(runner, ctx, archive.as_ref(), root, call_id, &fingerprints, &mut sources).await?;
            ctx.progress.total = ctx.progress.total.max(ctx.progress.done + 1);
            ctx.done(call_id.to_string()).await?;
        }
    }
    write_keys(runner, ctx.tenant_id, archive.as_ref(), root).await?;
    let summary = RunSummary {
        run_id: ctx.run_id,
        job_id: ctx.job_id,
        site: runner.site.clone(),
        finished_at: Utc::now(),
        progress: ctx.progress,
        notes: ctx.notes.clone(),
    };
    write_json(archive.as_ref(), &archive::run_path(root, ctx.run_id), &summary).await?;
    ctx.save().await
}

/// The stores recordings are read from, opened once per run.
#[derive(Default)]
struct Sources(HashMap<Option<Uuid>, Arc<dyn ObjectStore>>);

impl Sources {
    async fn get(
        &mut self,
        runner: &JobRunner,
        tenant_id: Uuid,
        target: Option<Uuid>,
    ) -> Result<Arc<dyn ObjectStore>, AdminError> {
        if let Some(store) = self.0.get(&target) {
            return Ok(store.clone());
        }
        let store = runner.admin.recordings_store(tenant_id, target, runner.options.recordings_dir.as_deref()).await?;
        self.0.insert(target, store.clone());
        Ok(store)
    }
}

async fn back_up_call(
    runner: &JobRunner,
    ctx: &mut RunCtx<'_>,
    archive: &dyn ObjectStore,
    root: &str,
    call_id: Uuid,
    fingerprints: &BTreeMap<Uuid, String>,
    sources: &mut Sources,
) -> Result<(), RunError> {
    let stored = read_aggregate(&runner.pool, "Call", &call_id.to_string())
        .await
        .map_err(|e| RunError::Transient(format!("the event log cannot be read: {e}")))?;
    let site = runner.site.as_str();
    let fingerprint = |key_id: Uuid| fingerprints.get(&key_id).cloned();
    let key_of = archive::stored_recording(&stored).and_then(|r| r.encryption.map(|e| e.key_id));
    let Some(call) = archive::describe(call_id, ctx.tenant_id, site, &stored, key_of.and_then(fingerprint)) else {
        return ctx.failed(format!("call {call_id}: the log holds no stored recording of it; not backed up"));
    };
    let recording = &call.recording;
    let file_path = Path::from(format!("{root}/{}", call.file));
    let description = archive::call_path(root, call_id);
    let described = match read_json::<ArchivedCall>(archive, &description).await? {
        Some(Ok(existing)) => {
            existing.last_sequence == call.last_sequence && existing.recording.sha256 == recording.sha256
        }
        _ => false,
    };
    let in_archive = size_of(archive, &file_path).await? == Some(recording.size_bytes);
    if described && in_archive {
        ctx.progress.skipped += 1;
        return Ok(());
    }
    if !in_archive {
        let source = match sources.get(runner, ctx.tenant_id, recording.storage_target_id).await {
            Ok(source) => source,
            Err(e @ (AdminError::Unavailable(_) | AdminError::Internal(_))) => return Err(e.into()),
            Err(e) => return ctx.failed(format!("call {call_id}: its storage cannot be read ({e}); not backed up")),
        };
        let location = Path::from(recording.location.as_str());
        match copy_verified(source.as_ref(), &location, archive, &file_path, &recording.sha256, recording.size_bytes)
            .await
        {
            Ok(bytes) => {
                ctx.progress.copied += 1;
                ctx.progress.bytes += bytes;
            }
            Err(CopyError::Store(e)) => return Err(e.into()),
            Err(e) => return ctx.failed(format!("call {call_id}: {e}; not backed up")),
        }
    } else {
        ctx.progress.skipped += 1;
    }
    write_json(archive, &description, &call).await?;
    Ok(())
}

/// The tenant's keys' fingerprints, by key id.
async fn key_fingerprints(runner: &JobRunner, tenant_id: Uuid) -> Result<BTreeMap<Uuid, String>, RunError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT key_id, fingerprint FROM tenant_keys WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_all(&runner.pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// `keys.json`: the public part of every key of the tenant that an archived file names, merged with what
/// the archive listed before (a key destroyed here since stays listed: its files are still in the archive).
async fn write_keys(
    runner: &JobRunner,
    tenant_id: Uuid,
    archive: &dyn ObjectStore,
    root: &str,
) -> Result<(), RunError> {
    let path = archive::keys_path(root);
    let mut keys: BTreeMap<Uuid, ArchivedKey> = match read_json::<Vec<ArchivedKey>>(archive, &path).await? {
        Some(Ok(listed)) => listed.into_iter().map(|k| (k.key_id, k)).collect(),
        _ => BTreeMap::new(),
    };
    let used: Vec<Uuid> = sqlx::query_scalar(
        "SELECT k.key_id FROM tenant_keys k
          WHERE k.tenant_id = $1 AND EXISTS (SELECT 1 FROM rm_calls.calls c
                                               WHERE c.tenant_id = $1 AND c.encryption_key_id = k.key_id)",
    )
    .bind(tenant_id)
    .fetch_all(&runner.pool)
    .await?;
    for key in archive::public_keys(&runner.pool, &used).await? {
        keys.insert(key.key_id, key);
    }
    let keys: Vec<ArchivedKey> = keys.into_values().collect();
    write_json(archive, &path, &keys).await?;
    Ok(())
}
