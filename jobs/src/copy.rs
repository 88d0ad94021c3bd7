//! Copying a recording between object stores as it streams, checked against the SHA-256 and size the log
//! says it has: a file that does not match is never completed at the destination.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source has no such object.
    #[error("the file is missing at {0}")]
    Missing(String),
    /// The source's bytes are not the recording the log describes.
    #[error("the file at {location} is not the recording the log describes ({what})")]
    Mismatch { location: String, what: String },
    /// The archive holding the file cannot be read (a damaged ZIP).
    #[error("{0}")]
    Unreadable(String),
    /// A store failed (down, refused, full): worth trying again later.
    #[error("{0}")]
    Store(#[from] object_store::Error),
}

/// Streams `from/src` to `to/dst`, hashing on the way; completes the destination only when the bytes have
/// `sha256` (hex) and `size`. Returns the bytes copied.
pub async fn copy_verified(
    from: &dyn ObjectStore,
    src: &Path,
    to: &dyn ObjectStore,
    dst: &Path,
    sha256: &str,
    size: u64,
) -> Result<u64, CopyError> {
    let stream = match from.get(src).await {
        Ok(result) => result.into_stream().map(|chunk| chunk.map_err(CopyError::from)),
        Err(object_store::Error::NotFound { .. }) => return Err(CopyError::Missing(src.to_string())),
        Err(e) => return Err(e.into()),
    };
    copy_stream(stream, src.as_ref(), to, dst, sha256, size).await
}

/// Writes what `source` yields (the file at `label`) to `to/dst`, hashing on the way; completes the
/// destination only when the bytes have `sha256` (hex) and `size`, and stops reading as soon as there are
/// more than `size`. Returns the bytes copied.
pub async fn copy_stream(
    source: impl Stream<Item = Result<Bytes, CopyError>>,
    label: &str,
    to: &dyn ObjectStore,
    dst: &Path,
    sha256: &str,
    size: u64,
) -> Result<u64, CopyError> {
    let mut source = std::pin::pin!(source);
    let mut writer = WriteMultipart::new(to.put_multipart(dst).await?);
    let (mut hash, mut copied) = (Sha256::new(), 0u64);
    while let Some(chunk) = source.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        hash.update(&chunk);
        copied += chunk.len() as u64;
        if copied > size {
            let _ = writer.abort().await;
            return Err(CopyError::Mismatch { location: label.to_owned(), what: format!("longer than {size} bytes") });
        }
        writer.write(&chunk);
    }
    let found = hex::encode(hash.finalize());
    if copied != size || !found.eq_ignore_ascii_case(sha256) {
        let _ = writer.abort().await;
        let what =
            if copied != size { format!("{copied} bytes, not {size}") } else { "its SHA-256 differs".to_owned() };
        return Err(CopyError::Mismatch { location: label.to_owned(), what });
    }
    writer.finish().await?;
    Ok(copied)
}

/// The size of an object, or `None` when there is none.
pub async fn size_of(store: &dyn ObjectStore, location: &Path) -> Result<Option<u64>, object_store::Error> {
    match store.head(location).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The largest JSON object read from an archive, in bytes.
pub const JSON_LIMIT: u64 = 16 << 20;

/// A small JSON object (at most [`JSON_LIMIT`] bytes), or `None` when there is none.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    location: &Path,
) -> Result<Option<Result<T, serde_json::Error>>, object_store::Error> {
    match store.get(location).await {
        Ok(result) if result.meta.size > JSON_LIMIT => Ok(Some(Err(serde::de::Error::custom(format!(
            "{location} is {} bytes, more than a description of recall's can be",
            result.meta.size
        ))))),
        Ok(result) => Ok(Some(serde_json::from_slice(&result.bytes().await?))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a small JSON object whole.
pub async fn write_json<T: serde::Serialize>(
    store: &dyn ObjectStore,
    location: &Path,
    value: &T,
) -> Result<(), object_store::Error> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| object_store::Error::Generic { store: "archive", source: Box::new(e) })?;
    store.put(location, bytes.into()).await?;
    Ok(())
}

/// Whether the object at `location` has the SHA-256 `sha256` (hex).
pub async fn has_sha256(store: &dyn ObjectStore, location: &Path, sha256: &str) -> Result<bool, object_store::Error> {
    let mut stream = store.get(location).await?.into_stream();
    let mut hash = Sha256::new();
    while let Some(chunk) = stream.next().await {
        hash.update(&chunk?);
    }
    Ok(hex::encode(hash.finalize()).eq_ignore_ascii_case(sha256))
}
