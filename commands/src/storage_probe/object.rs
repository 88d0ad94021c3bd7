//! Local directories and S3 buckets, both through `object_store`: the probe and the recorder build their
//! store with the same function, so a target that passes the test is written to the same way afterwards.
//! Neither the secret access key nor a signed request ever reaches a detail or a log.

use std::io::ErrorKind;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use recall_domain::storage_target::StorageKind;
use secrecy::ExposeSecret;

use super::{error_chain, io_words, probe_contents, probe_file_name, ResolvedStorage, Steps};

/// Why no object store could be built from a target's settings.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreSetupError {
    #[error("FTP and SFTP targets are not object stores")]
    NotAnObjectStore,
    #[error("the secret access key of this target is missing from the secret store; enter it again")]
    MissingSecret,
    #[error("cannot use directory {path}: {reason}")]
    LocalDirectory { path: String, reason: String },
    #[error("the S3 settings are not usable: {0}")]
    S3Settings(String),
}

/// The object store a local-filesystem or S3 target is written through, rooted at the target's directory
/// or at its bucket and key prefix (`calls/` puts `x.wav` at `calls/x.wav`). Requests are retried as
/// `object_store` does by default.
pub fn object_store_for(storage: &ResolvedStorage) -> Result<Arc<dyn ObjectStore>, ObjectStoreSetupError> {
    build(storage, ClientOptions::new(), RetryConfig::default())
}

fn build(
    storage: &ResolvedStorage,
    options: ClientOptions,
    retry: RetryConfig,
) -> Result<Arc<dyn ObjectStore>, ObjectStoreSetupError> {
    match &storage.kind {
        StorageKind::LocalFilesystem { path } => {
            let store = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| ObjectStoreSetupError::LocalDirectory { path: path.clone(), reason: local_words(&e) })?
                // Cleaning up empty directories after a delete could remove the target directory itself.
                .with_automatic_cleanup(false)
                // The recorder removes its spool copy once the target has the file: on disk, not in the cache.
                .with_fsync(true);
            Ok(Arc::new(store))
        }
        StorageKind::S3 { endpoint, region, bucket, prefix, access_key_id, secret_access_key, path_style } => {
            let secret = storage.secret(*secret_access_key).ok_or(ObjectStoreSetupError::MissingSecret)?;
            let mut options = options;
            let mut builder = AmazonS3Builder::new()
                .with_region(region)
                .with_bucket_name(bucket)
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret.expose_secret())
                .with_virtual_hosted_style_request(!path_style)
                .with_retry(retry);
            if let Some(endpoint) = endpoint {
                if endpoint.to_ascii_lowercase().starts_with("http://") {
                    options = options.with_allow_http(true);
                }
                builder = builder.with_endpoint(bucket_endpoint(endpoint, bucket, *path_style));
            }
            let store = builder
                .with_client_options(options)
                .build()
                .map_err(|e| ObjectStoreSetupError::S3Settings(error_chain(&e)))?;
            match prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
                Some(prefix) => Ok(Arc::new(PrefixStore::new(store, prefix))),
                None => Ok(Arc::new(store)),
            }
        }
        StorageKind::Ftp { .. } | StorageKind::Sftp { .. } => Err(ObjectStoreSetupError::NotAnObjectStore),
    }
}

/// `object_store` takes a custom endpoint as the bucket's own address when requests are virtual-hosted:
/// `https://s3.example.com` becomes `https://bucket.s3.example.com`; path style appends the bucket itself.
fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    match (path_style, endpoint.split_once("://")) {
        (false, Some((scheme, rest))) => format!("{scheme}://{bucket}.{rest}"),
        _ => endpoint.to_owned(),
    }
}

pub(super) async fn probe_local(steps: &Steps, storage: &ResolvedStorage, path: &str) -> Result<String, String> {
    // Checked first for a plainer answer than the store gives for a file or a missing directory.
    match tokio::fs::metadata(path).await {
        Ok(meta) if !meta.is_dir() => return Err(format!("{path} is a file, not a directory")),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot use directory {path}: {}", local_io_words(&e))),
    }
    let store = build(storage, ClientOptions::new(), RetryConfig::default()).map_err(|e| e.to_string())?;
    write_read_delete(steps, store.as_ref(), &format!("in {path}"), &Flavour::Local).await
}

pub(super) async fn probe_s3(steps: &Steps, storage: &ResolvedStorage) -> Result<String, String> {
    let StorageKind::S3 { endpoint, bucket, prefix, .. } = &storage.kind else {
        return Err("not an S3 target".into());
    };
    // One try per request, each bounded: a wrong address should say so now, not after minutes of retries.
    let options = ClientOptions::new().with_timeout(steps.timeout).with_connect_timeout(steps.timeout);
    let retry = RetryConfig { max_retries: 0, retry_timeout: steps.timeout, ..RetryConfig::default() };
    let store = build(storage, options, retry).map_err(|e| e.to_string())?;
    let mut place = format!("in bucket {bucket}");
    if let Some(prefix) = prefix.as_deref().filter(|p| !p.trim_matches('/').is_empty()) {
        place.push_str(&format!(" under {prefix}"));
    }
    match endpoint {
        Some(endpoint) => place.push_str(&format!(" at {endpoint}")),
        None => place.push_str(" at AWS"),
    }
    write_read_delete(steps, store.as_ref(), &place, &Flavour::S3).await
}

/// Whose words an error is put in.
enum Flavour {
    Local,
    S3,
}

async fn write_read_delete(
    steps: &Steps,
    store: &dyn ObjectStore,
    place: &str,
    flavour: &Flavour,
) -> Result<String, String> {
    let name = probe_file_name();
    let location = Path::from(name.as_str());
    let contents = probe_contents(&name);
    let describe = |e: &object_store::Error| match flavour {
        Flavour::Local => local_words(e),
        Flavour::S3 => s3_words(e),
    };

    let written = steps
        .bounded(&format!("tried to write {name} {place}"), store.put(&location, PutPayload::from(contents.clone())))
        .await
        .and_then(|r| r.map_err(|e| format!("could not write {name} {place}: {}", describe(&e))));
    if let Err(failure) = written {
        // The write may have got through before it failed or timed out: try to leave nothing behind.
        let _ = steps.quiet(store.delete(&location)).await;
        return Err(failure);
    }

    let read = async {
        let result = store.get(&location).await?;
        result.bytes().await
    };
    let read = steps
        .bounded(&format!("wrote {name} {place} and tried to read it back"), read)
        .await
        .and_then(|r| r.map_err(|e| format!("wrote {name} {place} but could not read it back: {}", describe(&e))))
        .and_then(|bytes| {
            if bytes.as_ref() == contents.as_slice() {
                Ok(())
            } else {
                Err(format!(
                    "wrote {name} {place} but read back {} bytes that differ from the {} written",
                    bytes.len(),
                    contents.len()
                ))
            }
        });

    let deleted = steps
        .quiet(store.delete(&location))
        .await
        .and_then(|r| r.map_err(|e| describe(&e)))
        .map_err(|reason| format!("could not delete {name} {place} ({reason}); delete it by hand"));

    match (read, deleted) {
        (Ok(()), Ok(())) => Ok(format!("wrote, read back and deleted {name} {place}")),
        (Ok(()), Err(failure)) => Err(format!("wrote and read back {name} {place}, but {failure}")),
        (Err(failure), Ok(())) => Err(failure),
        (Err(failure), Err(cleanup)) => Err(format!("{failure}; {cleanup}")),
    }
}

/// A local file system error: the I/O error beneath it, in words.
fn local_words(error: &object_store::Error) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return local_io_words(io);
        }
        current = e.source();
    }
    error_chain(error)
}

fn local_io_words(error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::NotFound => "no such directory".into(),
        ErrorKind::NotADirectory => "a part of the path is a file, not a directory".into(),
        ErrorKind::PermissionDenied => "permission denied (check the directory's owner and mode)".into(),
        ErrorKind::ReadOnlyFilesystem => "the file system is mounted read-only".into(),
        ErrorKind::StorageFull => "the disk is full".into(),
        _ => io_words(error),
    }
}

/// An S3 error as the service put it ("S3 said 403 Forbidden: InvalidAccessKeyId (…)"), or why no answer
/// came.
fn s3_words(error: &object_store::Error) -> String {
    let chain = error_chain(error);
    if let Some(at) = chain.find("status code: ") {
        let rest = &chain[at + "status code: ".len()..];
        let status = rest.split(": ").next().unwrap_or(rest).trim();
        let mut words = format!("S3 said {status}");
        if let Some(code) = xml_element(rest, "Code") {
            words.push_str(&format!(": {code}"));
        }
        if let Some(message) = xml_element(rest, "Message") {
            words.push_str(&format!(" ({message})"));
        }
        return words;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("no answer from S3: {}", io_words(io));
        }
        current = e.source();
    }
    if let Some(http) = find_http_error(error) {
        return match http.kind() {
            object_store::client::HttpErrorKind::Connect => format!("could not connect to S3: {}", error_chain(http)),
            object_store::client::HttpErrorKind::Timeout => "S3 did not answer in time".into(),
            _ => error_chain(http),
        };
    }
    chain
}

fn find_http_error(error: &object_store::Error) -> Option<&object_store::client::HttpError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return Some(http);
        }
        current = e.source();
    }
    None
}

/// The text of the first `<name>…</name>` in `xml`, if any.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim()).filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(bucket_endpoint("https://s3.example.com/", "rec", false), "https://rec.s3.example.com");
        assert_eq!(bucket_endpoint("http://127.0.0.1:9000", "rec", true), "http://127.0.0.1:9000");
    }

    #[test]
    fn s3_error_bodies_give_their_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does \
                    not exist</Message></Error>";
        assert_eq!(xml_element(body, "Code"), Some("NoSuchBucket"));
        assert_eq!(xml_element(body, "Message"), Some("The specified bucket does not exist"));
        assert_eq!(xml_element(body, "Resource"), None);
    }
}
