//! Reading an archive for a restore: a backup's directory on a storage target, or a ZIP file on one (a bulk
//! download has the same layout inside). A ZIP is fetched to a local temporary file first (a ZIP's index is
//! at its end, and an object store is no file), read entry by entry, and removed when the run ends.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::archive::{self, ArchiveInfo, ArchivedCall};
use crate::copy::{copy_verified, read_json, CopyError};
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
            Self::Zip { .. } => Ok(self.zip_entry("archive.json", None).await?.map(|b| serde_json::from_slice(&b))),
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
                Ok(self.zip_entry(name, Some(16 << 20)).await?.map(|bytes| serde_json::from_slice(&bytes)))
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
            Self::Zip { .. } => {
                let bytes = match self.zip_entry(file, Some(size)).await {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return Err(CopyError::Missing(file.to_owned())),
                    Err(e) => return Err(CopyError::Unreadable(e.to_string())),
                };
                let found = hex::encode(Sha256::digest(&bytes));
                if bytes.len() as u64 != size || !found.eq_ignore_ascii_case(sha256) {
                    let what = if bytes.len() as u64 != size {
                        format!("{} bytes, not {size}", bytes.len())
                    } else {
                        "its SHA-256 differs".to_owned()
                    };
                    return Err(CopyError::Mismatch { location: file.to_owned(), what });
                }
                let copied = bytes.len() as u64;
                to.put(dst, bytes.into()).await?;
                Ok(copied)
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
