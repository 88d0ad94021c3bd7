//! Reading an archive for a restore: a backup's directory on a storage target, or a ZIP file on one (a bulk
//! download has the same layout inside). A ZIP is fetched to a local temporary file first (a ZIP's index is
//! at its end, and an object store is no file), read entry by entry, and removed when the run ends.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use crate::archive::{self, ArchiveInfo, ArchivedCall};
use crate::copy::{copy_stream, copy_verified, read_json, CopyError};
use crate::RunError;

/// An archive being read.
pub(crate) enum ArchiveReader {
    Directory { store: Arc<dyn ObjectStore>, root: String },
    Zip { file: TempFile },
}

/// A local file removed when dropped.
pub(crate) struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The largest description (`archive.json`, `calls/<id>.json`) read, in bytes: one call's events fill a
/// few KiB; a larger one is not an archive recall wrote.
const JSON_LIMIT: u64 = crate::copy::JSON_LIMIT;

/// What a ZIP entry read gives: the entry's bytes, or none.
type Entry = Option<Vec<u8>>;

impl ArchiveReader {
    /// Opens the archive at `path` on `store`: a `.zip` file is fetched into `scratch` first.
    pub async fn open(store: Arc<dyn ObjectStore>, path: &str, scratch: &FsPath) -> Result<Self, RunError> {
        if !path.to_ascii_lowercase().ends_with(".zip") {
            return Ok(Self::Directory { store, root: path.to_owned() });
        }
        let mut stream = match store.get(&Path::from(path)).await {
            Ok(result) => result.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RunError::Fatal(format!("there is no file {path} on the storage target")))
            }
            Err(e) => return Err(e.into()),
        };
        std::fs::create_dir_all(scratch)
            .map_err(|e| RunError::Transient(format!("cannot use {}: {e}", scratch.display())))?;
        let file = TempFile(scratch.join(format!("restore-{}.zip", uuid::Uuid::now_v7())));
        let local = |e: std::io::Error| RunError::Transient(format!("cannot write {}: {e}", file.0.display()));
        let mut out = tokio::fs::File::create(&file.0).await.map_err(local)?;
        while let Some(bytes) = stream.next().await {
            out.write_all(&bytes?).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        Ok(Self::Zip { file })
    }

    /// `archive.json`, if there is one.
    pub async fn info(&self) -> Result<Option<Result<ArchiveInfo, serde_json::Error>>, RunError> {
        match self {
            Self::Directory { store, root } => Ok(read_json(store.as_ref(), &archive::info_path(root)).await?),
            Self::Zip { .. } => {
                Ok(self.zip_entry("archive.json", Some(JSON_LIMIT)).await?.map(|b| serde_json::from_slice(&b)))
            }
        }
    }

    /// The names of the calls' descriptions, in order.
    pub async fn call_names(&self) -> Result<Vec<String>, RunError> {
        let mut names = Vec::new();
        match self {
            Self::Directory { store, root } => {
                let mut listing = store.list(Some(&archive::calls_prefix(root)));
                while let Some(meta) = listing.try_next().await? {
                    if archive::call_id_of(&meta.location).is_some() {
                        names.push(meta.location.to_string());
                    }
                }
            }
            Self::Zip { file } => {
                let path = file.0.clone();
                names = blocking(move || {
                    let zip = zip::ZipArchive::new(std::fs::File::open(path)?)?;
                    let mut names = Vec::new();
                    for name in zip.file_names() {
                        let name = name?;
                        if name.starts_with("calls/") && archive::call_id_of(&Path::from(name.as_ref())).is_some() {
                            names.push(name.into_owned());
                        }
                    }
                    Ok(names)
                })
                .await?;
            }
        }
        names.sort();
        Ok(names)
    }

    /// A call's description, if it is there.
    pub async fn call(&self, name: &str) -> Result<Option<Result<ArchivedCall, serde_json::Error>>, RunError> {
        match self {
            Self::Directory { store, .. } => Ok(read_json(store.as_ref(), &Path::from(name)).await?),
            Self::Zip { .. } => {
                Ok(self.zip_entry(name, Some(JSON_LIMIT)).await?.map(|bytes| serde_json::from_slice(&bytes)))
            }
        }
    }

    /// Copies a call's file (`file`, relative to the archive's root) to `to`/`dst`, checked against its
    /// SHA-256 and size.
    pub async fn copy_file(
        &self,
        file: &str,
        to: &dyn ObjectStore,
        dst: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<u64, CopyError> {
        match self {
            Self::Directory { store, root } => {
                copy_verified(store.as_ref(), &Path::from(format!("{root}/{file}")), to, dst, sha256, size).await
            }
            Self::Zip { file: zip } => {
                // Read in the blocking pool a MiB at a time and handed over as it comes: an entry never
                // sits in memory whole, and no more than `size` bytes of it are read.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, CopyError>>(4);
                let (path, name) = (zip.0.clone(), file.to_owned());
                let reader = tokio::task::spawn_blocking(move || {
                    let failed = |e: &dyn std::fmt::Display| {
                        let _ = tx.blocking_send(Err(CopyError::Unreadable(format!("{name} cannot be read: {e}"))));
                    };
                    let mut archive = match std::fs::File::open(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|f| zip::ZipArchive::new(f).map_err(|e| e.to_string()))
                    {
                        Ok(archive) => archive,
                        Err(e) => return failed(&e),
                    };
                    let mut entry = match archive.by_name(&name) {
                        Ok(entry) => entry,
                        Err(zip::result::ZipError::FileNotFound) => {
                            let _ = tx.blocking_send(Err(CopyError::Missing(name.clone())));
                            return;
                        }
                        Err(e) => return failed(&e),
                    };
                    let mut left = size.saturating_add(1);
                    while left > 0 {
                        let mut buffer = vec![0; 1 << 20];
                        let want = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
                        match entry.read(&mut buffer[..want]) {
                            Ok(0) => return,
                            Ok(n) => {
                                buffer.truncate(n);
                                left -= n as u64;
                                if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                                    return;
                                }
                            }
                            Err(e) => return failed(&e),
                        }
                    }
                });
                let copied = copy_stream(stream_of(rx), file, to, dst, sha256, size).await;
                let _ = reader.await;
                copied
            }
        }
    }

    /// A ZIP entry's bytes (at most `limit`, when given), or `None` when there is no such entry.
    async fn zip_entry(&self, name: &str, limit: Option<u64>) -> Result<Entry, RunError> {
        let Self::Zip { file } = self else { return Ok(None) };
        let (path, name) = (file.0.clone(), name.to_owned());
        blocking(move || {
            let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?)?;
            let mut entry = match zip.by_name(&name) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if limit.is_some_and(|limit| entry.size() > limit) {
                return Err(format!("{name} is larger than expected ({} bytes)", entry.size()).into());
            }
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(64 << 20));
            entry.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        })
        .await
    }
}

/// Runs ZIP reading off the async threads; what fails in the ZIP itself (not a ZIP, a damaged entry) is
/// the archive's fault, not a passing one.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RunError::Transient(format!("a ZIP reader stopped: {e}")))?
        .map_err(|e| RunError::Fatal(format!("the ZIP archive cannot be read: {e}")))
}

/// The receiving end of a channel as a stream.
fn stream_of<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
