//! The restore job: reads an archive a backup wrote (on this installation or copied from another) into a
//! tenant. Each archived call is, in the archive's name order:
//!
//! - new here: its file is copied to the tenant's storage (its first active storage target, as the recorder
//!   writes, or the installation's recordings directory), checked against its SHA-256, and the call is added
//!   (`CallRestored`) under the same call id, in this tenant, with the user it was assigned to only if that
//!   user is this tenant's; an encrypted file needs the tenant to hold the same key (found by its public
//!   key's fingerprint): import it first, or run the restore again after importing it;
//! - here with the same recording: skipped, unless the file is missing from its storage, in which case it is
//!   put back where the log says it is (`RecordingPutBack`);
//! - here otherwise (another tenant's, or a different recording): left as it is, with a note.
//!
//! Running a restore twice adds nothing the second time.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use recall_commands::admin::AdminError;
use recall_commands::log::read_aggregate;
use recall_commands::CommandError;
use recall_domain::call::{CallCommand, CallStart, RecordingEncryption, RestoreSource, RestoredCall, StoredRecording};
use uuid::Uuid;

use crate::archive::stored_recording;
use crate::archive::{self, ArchivedCall, CallHistory};
use crate::copy::{size_of, CopyError};
use crate::reader::ArchiveReader;
use crate::{JobRunner, RunCtx, RunError};

pub(crate) async fn run(
    runner: &JobRunner,
    ctx: &mut RunCtx<'_>,
    source_target_id: Uuid,
    root: &str,
) -> Result<(), RunError> {
    let store = runner.admin.recordings_store(ctx.tenant_id, Some(source_target_id), None).await?;
    let archive = ArchiveReader::open(store, root, &runner.options.scratch_dir).await?;
    match archive.info().await? {
        None => return Err(RunError::Fatal(format!("there is no recall backup archive at {root} (no archive.json)"))),
        Some(Ok(info)) if info.format == archive::FORMAT && info.version <= archive::VERSION => {}
        Some(Ok(info)) if info.format == archive::FORMAT => {
            return Err(RunError::Fatal(format!(
                "the archive at {root} is of version {}, newer than this recall reads ({})",
                info.version,
                archive::VERSION
            )))
        }
        _ => return Err(RunError::Fatal(format!("{root}/archive.json is not a recall backup archive"))),
    }
    let names = archive.call_names().await?;
    ctx.progress.total = names.len() as u64;
    let target: Option<Uuid> = sqlx::query_scalar(
        "SELECT target_id FROM rm_directory.storage_targets WHERE tenant_id = $1 AND state = 'active'
          ORDER BY created_at, target_id LIMIT 1",
    )
    .bind(ctx.tenant_id)
    .fetch_optional(&runner.pool)
    .await?;
    let destination =
        match runner.admin.recordings_store(ctx.tenant_id, target, runner.options.recordings_dir.as_deref()).await {
            Ok(store) => store,
            Err(AdminError::Invalid(e)) => {
                return Err(RunError::Fatal(format!(
                    "restored recordings go to the tenant's first storage target, which cannot take them: {e}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
    let into = Destination { store: destination.as_ref(), target };
    for name in names {
        if ctx.after.as_deref().is_some_and(|after| name.as_str() <= after) {
            continue;
        }
        restore_call(runner, ctx, &archive, &name, &into).await?;
        ctx.done(name).await?;
    }
    ctx.save().await
}

/// Where restored files go.
struct Destination<'a> {
    store: &'a dyn ObjectStore,
    target: Option<Uuid>,
}

async fn restore_call(
    runner: &JobRunner,
    ctx: &mut RunCtx<'_>,
    archive: &ArchiveReader,
    name: &str,
    into: &Destination<'_>,
) -> Result<(), RunError> {
    let archived: ArchivedCall = match archive.call(name).await? {
        Some(Ok(call)) => call,
        Some(Err(e)) => return ctx.failed(format!("{name} cannot be read ({e}); not restored")),
        None => return ctx.failed(format!("{name} went missing from the archive; not restored")),
    };
    let call_id = archived.call_id;
    if archive::call_id_of(&Path::from(name)) != Some(call_id) {
        return ctx.failed(format!("{name} describes call {call_id}, not the one its name says; not restored"));
    }
    if !archive::is_entry_of(call_id, &archived.file) {
        return ctx.failed(format!("{name} names a file outside its call's place in the archive; not restored"));
    }
    let file = archived.file.as_str();
    let recording = &archived.recording;
    let local = runner.calls.load(&call_id.to_string()).await?;
    if local.exists() {
        if local.tenant_id() != Some(ctx.tenant_id) {
            return ctx.failed(format!("call {call_id} is another tenant's here; left as it is"));
        }
        let events = read_aggregate(&runner.pool, "Call", &call_id.to_string())
            .await
            .map_err(|e| RunError::Transient(format!("the event log cannot be read: {e}")))?;
        let Some(here) = stored_recording(&events) else {
            ctx.note(format!("call {call_id} is here without a stored recording; left as it is"));
            ctx.progress.skipped += 1;
            return Ok(());
        };
        if here.sha256 != recording.sha256 {
            ctx.note(format!("call {call_id} has a different recording here; left as it is"));
            ctx.progress.skipped += 1;
            return Ok(());
        }
        let store = match runner
            .admin
            .recordings_store(ctx.tenant_id, here.storage_target_id, runner.options.recordings_dir.as_deref())
            .await
        {
            Ok(store) => store,
            Err(e @ (AdminError::Unavailable(_) | AdminError::Internal(_))) => return Err(e.into()),
            Err(e) => return ctx.failed(format!("call {call_id}: its storage cannot be used ({e}); not put back")),
        };
        let location = Path::from(here.location.as_str());
        if size_of(store.as_ref(), &location).await? == Some(here.size_bytes) {
            ctx.progress.skipped += 1;
            return Ok(());
        }
        match archive.copy_file(file, store.as_ref(), &location, &here.sha256, here.size_bytes).await {
            Ok(bytes) => {
                let put_back = CallCommand::RecordRecordingPutBack { job_id: ctx.job_id, run_id: ctx.run_id };
                runner.calls.execute(&call_id.to_string(), put_back, runner.meta(ctx.tenant_id)).await?;
                ctx.progress.copied += 1;
                ctx.progress.bytes += bytes;
                Ok(())
            }
            Err(CopyError::Store(e)) => Err(e.into()),
            Err(e) => ctx.failed(format!("call {call_id}: {e}; not put back")),
        }
    } else {
        restore_new_call(runner, ctx, archive, &archived, file, into).await
    }
}

async fn restore_new_call(
    runner: &JobRunner,
    ctx: &mut RunCtx<'_>,
    archive: &ArchiveReader,
    archived: &ArchivedCall,
    file: &str,
    into: &Destination<'_>,
) -> Result<(), RunError> {
    let call_id = archived.call_id;
    let history = match CallHistory::of(&archived.events) {
        Ok(history) => history,
        Err(e) => return ctx.failed(format!("call {call_id}: {e}; not restored")),
    };
    let encryption = match &archived.recording.encryption {
        None => None,
        Some(encryption) => {
            let fingerprint = archived.key.as_ref().map(|k| k.fingerprint.clone()).unwrap_or_default();
            let local: Option<Uuid> = sqlx::query_scalar(
                "SELECT key_id FROM tenant_keys WHERE tenant_id = $1 AND fingerprint = $2
                  ORDER BY key_id = $3 DESC, created_at LIMIT 1",
            )
            .bind(ctx.tenant_id)
            .bind(&fingerprint)
            .bind(encryption.header_key_id())
            .fetch_optional(&runner.pool)
            .await?;
            let Some(key_id) = local else {
                return ctx.failed(format!(
                    "call {call_id} is encrypted with key {} (fingerprint {fingerprint}), which this tenant does \
                         not have: import that key, then run the restore again",
                    encryption.header_key_id()
                ));
            };
            let header = encryption.header_key_id();
            Some(RecordingEncryption {
                key_id,
                file_key_id: (key_id != header).then_some(header),
                ..encryption.clone()
            })
        }
    };
    let mut start = history.start.clone();
    let origin_tenant_id = start.tenant_id;
    start.tenant_id = ctx.tenant_id;
    if let Some(user_id) = start.user_id {
        let user = runner.users.load(&user_id.to_string()).await?;
        if !(user.exists() && user.tenant_id() == Some(ctx.tenant_id)) {
            // Not this tenant's user: the call is unassigned here, listed by its extension.
            start.user_id = None;
        }
    }
    // The file goes where the recorder would have put it in this tenant, named from trusted facts only (an
    // archive's own location could point into another tenant's files).
    let location = restored_location(ctx.tenant_id, call_id, &start, &archived.recording);
    let path = Path::from(location.as_str());
    let sha256 = &archived.recording.sha256;
    // A run that copied the file and stopped before recording the call left it there; anything else in its
    // place is not overwritten.
    if size_of(into.store, &path).await?.is_some() && !crate::copy::has_sha256(into.store, &path, sha256).await? {
        return ctx.failed(format!("call {call_id}: another file is where it belongs ({location}); not restored"));
    }
    let restored = RestoredCall {
        call_id,
        start,
        end: history.end,
        paused_ms: history.paused_ms,
        recording: StoredRecording {
            storage_target_id: into.target,
            location: location.clone(),
            encryption,
            ..archived.recording.clone()
        },
        source: RestoreSource {
            job_id: ctx.job_id,
            run_id: ctx.run_id,
            origin_site: archived.origin_site.clone(),
            origin_tenant_id,
            archived_events: archived.events.len() as u64,
        },
    };
    // Checked before the file is copied: a call the log would refuse leaves no file behind.
    let restored = match restored.checked() {
        Ok(restored) => restored,
        Err(e) => return ctx.failed(format!("call {call_id} cannot be restored: {e}")),
    };
    let bytes = match archive.copy_file(file, into.store, &path, sha256, archived.recording.size_bytes).await {
        Ok(bytes) => bytes,
        Err(CopyError::Store(e)) => return Err(e.into()),
        Err(e) => return ctx.failed(format!("call {call_id}: {e}; not restored")),
    };
    let restore = CallCommand::RestoreCall(Box::new(restored));
    let outcome = runner.calls.execute(&call_id.to_string(), restore, runner.meta(ctx.tenant_id)).await;
    match outcome {
        Ok(receipt) if !receipt.events.is_empty() => {
            ctx.progress.copied += 1;
            ctx.progress.bytes += bytes;
            Ok(())
        }
        // The call came into being meanwhile (another restore, in this tenant or another): the copy is
        // nobody's.
        Ok(_) => {
            let _ = into.store.delete(&path).await;
            ctx.note(format!("call {call_id} was added here by another run meanwhile; left as it is"));
            ctx.progress.skipped += 1;
            Ok(())
        }
        Err(e @ (CommandError::Refused(_) | CommandError::Taken(_))) => {
            let _ = into.store.delete(&path).await;
            ctx.failed(format!("call {call_id} cannot be restored: {e}"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `<tenant>/<yyyy>/<mm>/<dd>/<call id>.<ext>[.enc]`, as the recorder names a recording.
fn restored_location(tenant_id: Uuid, call_id: Uuid, start: &CallStart, recording: &StoredRecording) -> String {
    let suffix = if recording.encryption.is_some() { ".enc" } else { "" };
    let day = start.started_at.format("%Y/%m/%d");
    format!("{tenant_id}/{day}/{call_id}.{}{suffix}", recording.format.extension())
}
