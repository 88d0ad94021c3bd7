//! Uploads finished recordings from the spool to their tenant's storage target, retrying with backoff for
//! as long as it takes (across restarts: attempts are kept in the manifest). A spool copy is removed only
//! after the target confirmed the object (its size read back) and the `RecordingStored` fact was reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::spool::{Spool, SpoolError, SpooledRecording};

/// What the uploader needs from the rest of recall: where a tenant's recordings go, and a way to report
/// that one is stored (in recall: the `Call` aggregate's `RecordingStored` through the command service).
pub trait UploadPort: Send + Sync {
    /// The object store of the recording's storage target.
    fn store_for<'a>(&'a self, recording: &'a SpooledRecording) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>>;
    /// Reports the stored recording; `Ok` only once the report is durable (the event is in the log).
    fn stored<'a>(&'a self, recording: &'a SpooledRecording) -> BoxFuture<'a, Result<(), String>>;
}

/// How often to try again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { first: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The wait after `attempts` failures: doubling from `first`, at most `max`.
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.first.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("no storage for this recording: {0}")]
    Target(String),
    #[error("the storage target refused the upload: {0}")]
    Store(#[from] object_store::Error),
    #[error("the storage target holds {found} bytes where {expected} were uploaded")]
    SizeMismatch { expected: u64, found: u64 },
    #[error("the spooled file cannot be read: {0}")]
    Read(#[from] std::io::Error),
    #[error("the stored recording could not be reported: {0}")]
    Report(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Hands finished recordings to the uploader.
#[derive(Debug, Clone)]
pub struct UploadQueue(mpsc::UnboundedSender<SpooledRecording>);

impl UploadQueue {
    pub fn push(&self, recording: SpooledRecording) {
        // A closed queue means the uploader stopped: the manifest on disk brings it back at the next start.
        let _ = self.0.send(recording);
    }
}

/// The upload worker of one recorder.
pub struct Uploader {
    spool: Spool,
    port: Arc<dyn UploadPort>,
    backoff: Backoff,
    incoming: mpsc::UnboundedReceiver<SpooledRecording>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader").field("spool", &self.spool.root()).finish()
    }
}

impl Uploader {
    pub fn new(spool: Spool, port: Arc<dyn UploadPort>, backoff: Backoff) -> (Self, UploadQueue) {
        let (tx, incoming) = mpsc::unbounded_channel();
        (Self { spool, port, backoff, incoming }, UploadQueue(tx))
    }

    /// Uploads what the spool holds and what arrives, until `shutdown`; what is left stays in the spool.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pending: HashMap<Uuid, (SpooledRecording, Instant)> = HashMap::new();
        match self.spool.recover() {
            Ok(recovered) => {
                for recording in recovered.ready {
                    pending.insert(recording.call_id, (recording, Instant::now()));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the spool; uploads wait for new recordings"),
        }
        loop {
            let now = Instant::now();
            let due: Vec<Uuid> = pending.iter().filter(|(_, (_, at))| *at <= now).map(|(id, _)| *id).collect();
            for call_id in due {
                let Some((mut recording, _)) = pending.remove(&call_id) else { continue };
                if !self.spool.holds(&recording) {
                    // Delivered already through another copy (the queue and the start-up recovery can both
                    // hand over the same recording).
                    continue;
                }
                match self.deliver(&mut recording).await {
                    Ok(()) => tracing::info!(%call_id, "recording stored and reported; spool copy removed"),
                    Err(e) => {
                        recording.attempts = recording.attempts.saturating_add(1);
                        let wait = self.backoff.after(recording.attempts);
                        tracing::warn!(
                            %call_id, attempts = recording.attempts, retry_in_ms = wait.as_millis() as u64,
                            error = %e, "recording not stored yet; it stays in the spool"
                        );
                        if let Err(e) = self.spool.save(&recording) {
                            tracing::error!(%call_id, error = %e, "cannot update the spool manifest");
                        }
                        pending.insert(call_id, (recording, Instant::now() + wait));
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            let next = pending.values().map(|(_, at)| *at).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep => {}
                received = self.incoming.recv() => match received {
                    Some(recording) => {
                        pending.insert(recording.call_id, (recording, Instant::now()));
                    }
                    None => {
                        if pending.is_empty() {
                            shutdown.cancelled().await;
                            return;
                        }
                    }
                },
            }
        }
    }

    /// Uploads (unless done before), confirms, reports, removes.
    async fn deliver(&self, recording: &mut SpooledRecording) -> Result<(), UploadError> {
        if !recording.uploaded {
            let store = self.port.store_for(recording).await.map_err(UploadError::Target)?;
            let location = ObjectPath::from(recording.meta.object_path.as_str());
            upload(store.as_ref(), &location, &self.spool.file_of(recording)).await?;
            let found = store.head(&location).await?.size;
            if found != recording.size_bytes {
                return Err(UploadError::SizeMismatch { expected: recording.size_bytes, found });
            }
            recording.uploaded = true;
            self.spool.save(recording)?;
        }
        self.port.stored(recording).await.map_err(UploadError::Report)?;
        self.spool.remove(recording)?;
        Ok(())
    }
}

/// Streams a file to the store in parts (a long WAV recording need not fit in memory).
async fn upload(store: &dyn ObjectStore, location: &ObjectPath, file: &std::path::Path) -> Result<(), UploadError> {
    let mut source = tokio::fs::File::open(file).await?;
    let mut writer = WriteMultipart::new(store.put_multipart(location).await?);
    let mut buffer = vec![0; 1024 * 1024];
    loop {
        let n = match source.read(&mut buffer).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e.into());
            }
        };
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n]);
    }
    // A failed upload is retried from the start; what the failed one left (the parts uploaded so far) is
    // released by `finish` itself (object_store aborts a multipart upload whose completion fails).
    writer.finish().await?;
    Ok(())
}
