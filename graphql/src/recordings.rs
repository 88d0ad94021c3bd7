//! Recordings over HTTP: `GET /recordings/{call}/audio` streams a call's audio for playback (HTTP Range, so
//! a browser's audio element can seek) and `GET /recordings/{call}/download` the same file as an attachment.
//! Encrypted files are decrypted chunk by chunk with the tenant key opened from the viewer's grant; nothing
//! decrypted is written anywhere, and a chunk that does not authenticate ends the response. Who may hear a
//! call is what the calls query lets them see, plus the playback or download permission.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use recall_commands::admin::{AdminError, RecordingAccess};
use recall_crypto::file::{FileHeader, FileOpener, PlainFile, Termination};
use recall_domain::access::Permission;
use serde::Deserialize;
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::auth::{self, Viewer};
use crate::error::ApiError;
use crate::{scope, ApiState};

/// Bytes read at a file's start: an encrypted file's whole header (at most 4 KiB) or a plain file's magic.
const HEAD_BYTES: u64 = 4096;

/// What the calls read model keeps of a stored recording (the log's `RecordingStored`).
#[derive(Debug, Deserialize)]
struct Stored {
    storage_target_id: Option<Uuid>,
    location: String,
    format: String,
    #[serde(default)]
    encryption: Option<StoredEncryption>,
}

#[derive(Debug, Deserialize)]
struct StoredEncryption {
    key_id: Uuid,
    #[serde(default)]
    unterminated_chunks: Option<u64>,
    /// The id the file's header names when it is not `key_id` (a restored file; see `RecordingEncryption`).
    #[serde(default)]
    file_key_id: Option<Uuid>,
}

/// An answer that is not audio: a status and a sentence.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        let status = match &error {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.message())
    }
}

impl From<AdminError> for Refusal {
    fn from(error: AdminError) -> Self {
        ApiError::from(error).into()
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %error, "{what}");
    Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("{what}; try again later"))
}

fn tampered(call_id: Uuid, error: impl std::fmt::Display) -> Refusal {
    tracing::error!(%call_id, error = %error, "a stored recording does not authenticate");
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the stored recording is damaged or was altered".to_owned())
}

/// Where recordings of tenants without a storage target are (`<data-dir>/recordings`), when this process
/// knows.
#[derive(Debug, Clone, Default)]
pub struct RecordingsDir(pub Option<PathBuf>);

pub(crate) async fn audio(State(state): State<ApiState>, Path(call_id): Path<String>, request: Request) -> Response {
    serve(state, call_id, request, RecordingAccess::Playback).await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn download(State(state): State<ApiState>, Path(call_id): Path<String>, request: Request) -> Response {
    serve(state, call_id, request, RecordingAccess::Download).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: ApiState,
    call_id: String,
    request: Request,
    access: RecordingAccess,
) -> Result<Response, Refusal> {
    let call_id = Uuid::parse_str(&call_id).map_err(|_| Refusal(StatusCode::NOT_FOUND, "no such call".to_owned()))?;
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let headers = request.headers().clone();
    let viewer = signed_in(&state, &headers, source).await?;
    viewer.require(match access {
        RecordingAccess::Playback => Permission::PlaybackCalls,
        RecordingAccess::Download => Permission::DownloadCalls,
    })?;
    let (tenant_id, stored) = visible_recording(&state, &viewer, call_id).await?;
    let store = store_for(&state, tenant_id, stored.storage_target_id).await?;
    let location = ObjectPath::from(stored.location.as_str());
    let size = match store.head(&location).await {
        Ok(meta) => meta.size,
        Err(object_store::Error::NotFound { .. }) => {
            tracing::error!(%call_id, location = %stored.location, "a stored recording is missing from its storage target");
            return Err(Refusal(StatusCode::NOT_FOUND, "the recording file is missing from its storage".to_owned()));
        }
        Err(e) => return Err(unavailable("the recording's storage does not answer", e)),
    };
    let head = read(store.as_ref(), &location, 0..size.min(HEAD_BYTES)).await?;
    let source = if FileHeader::is_encrypted(&head) {
        let plain = open_encrypted(&state, &viewer, call_id, &stored, store.as_ref(), &location, &head, size).await?;
        Source::Encrypted(Arc::new(plain))
    } else if stored.encryption.is_some() {
        return Err(tampered(call_id, "the log says encrypted, the stored file is not"));
    } else {
        Source::Plain(size)
    };
    let len = source.len();
    let asked = match requested_range(&headers, len) {
        Ok(asked) => asked,
        Err(()) => {
            let mut refusal =
                Refusal(StatusCode::RANGE_NOT_SATISFIABLE, format!("the recording has {len} bytes")).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                refusal.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refusal);
        }
    };
    let range = asked.clone().unwrap_or(0..len);
    state.admin.record_recording_access(&viewer.principal.caller, call_id, access).await?;
    let body = match source {
        Source::Plain(_) => plain_body(store, location, range.clone()),
        Source::Encrypted(plain) => encrypted_body(store, location, plain, call_id, range.clone()),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    let content_type = if stored.format.starts_with("wav") { "audio/wav" } else { "audio/mpeg" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
    if access == RecordingAccess::Download {
        let extension = if stored.format.starts_with("wav") { "wav" } else { "mp3" };
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"call-{call_id}.{extension}\"")) {
            h.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    if asked.is_some() {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/{len}", range.start, range.end - 1)) {
            h.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

enum Source {
    Plain(u64),
    Encrypted(Arc<PlainFile>),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Self::Plain(len) => *len,
            Self::Encrypted(plain) => plain.len(),
        }
    }
}

/// The request's signed-in viewer (session cookie or bearer token), who may do more than change their
/// password.
async fn signed_in(state: &ApiState, headers: &HeaderMap, source: Option<IpAddr>) -> Result<Arc<Viewer>, Refusal> {
    let request_auth =
        auth::authenticate(&state.admin, auth::token_from(headers), source, auth::device_from(headers)).await;
    let viewer = match request_auth.viewer {
        Ok(Some(viewer)) => viewer,
        Ok(None) => return Err(ApiError::not_signed_in().into()),
        Err(e) => return Err(e.into()),
    };
    if viewer.principal.must_change_password && viewer.principal.caller.impersonator.is_none() {
        return Err(Refusal(StatusCode::FORBIDDEN, "change your password first".to_owned()));
    }
    Ok(viewer)
}

/// The call's tenant and stored recording, if the viewer may see the call (else "no such recording", so
/// nobody learns what exists outside their scope).
async fn visible_recording(state: &ApiState, viewer: &Viewer, call_id: Uuid) -> Result<(Uuid, Stored), Refusal> {
    let mut qb = QueryBuilder::new("SELECT c.tenant_id, c.recording FROM rm_calls.calls c WHERE c.call_id = ");
    qb.push_bind(call_id);
    scope::calls(&mut qb, viewer, "c", "rm_directory")?;
    let row: Option<(Uuid, Option<serde_json::Value>)> = qb
        .build_query_as()
        .fetch_optional(state.log.pool())
        .await
        .map_err(|e| unavailable("the calls cannot be read", e))?;
    let not_found = || Refusal(StatusCode::NOT_FOUND, "no such recording".to_owned());
    let (tenant_id, recording) = row.ok_or_else(not_found)?;
    let stored: Stored = serde_json::from_value(recording.ok_or_else(not_found)?).map_err(|e| {
        tracing::error!(%call_id, error = %e, "a stored recording in the calls read model cannot be read");
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, "the recording's record cannot be read".to_owned())
    })?;
    Ok((tenant_id, stored))
}

async fn store_for(state: &ApiState, tenant_id: Uuid, target: Option<Uuid>) -> Result<Arc<dyn ObjectStore>, Refusal> {
    let local = state.options.recordings_dir.0.as_deref();
    if target.is_none() && local.is_none() {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "this server does not hold the installation's recordings".to_owned(),
        ));
    }
    match state.admin.recordings_store(tenant_id, target, local).await {
        Ok(store) => Ok(store),
        Err(AdminError::Invalid(e)) if target.is_some() => Err(Refusal(
            StatusCode::NOT_IMPLEMENTED,
            format!("recordings cannot be read back from this storage target: {e}"),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn read(store: &dyn ObjectStore, location: &ObjectPath, range: Range<u64>) -> Result<Bytes, Refusal> {
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    store.get_range(location, range).await.map_err(|e| unavailable("the recording's storage does not answer", e))
}

#[allow(clippy::too_many_arguments)]
async fn open_encrypted(
    state: &ApiState,
    viewer: &Viewer,
    call_id: Uuid,
    stored: &Stored,
    store: &dyn ObjectStore,
    location: &ObjectPath,
    head: &[u8],
    size: u64,
) -> Result<PlainFile, Refusal> {
    let header = FileHeader::parse(head).map_err(|e| tampered(call_id, e))?;
    if header.recording_id() != call_id
        || stored.encryption.as_ref().is_some_and(|e| e.file_key_id.unwrap_or(e.key_id) != header.key_id())
    {
        return Err(tampered(call_id, "the file's header names another recording or key"));
    }
    // The key as this installation knows it (a restored file's key may have been imported under another id).
    let key_id = stored.encryption.as_ref().map_or(header.key_id(), |e| e.key_id);
    let data_key = state
        .admin
        .open_data_key(&viewer.principal.caller, key_id, &header)
        .await?
        .map_err(|e| tampered(call_id, e))?;
    let termination = match stored.encryption.as_ref().and_then(|e| e.unterminated_chunks) {
        Some(chunks) => Termination::Unterminated { chunks },
        None => Termination::from_tail(&read(store, location, size.saturating_sub(4)..size).await?)
            .map_err(|e| tampered(call_id, e))?,
    };
    let opener = FileOpener::new(header, &data_key, size, termination).map_err(|e| tampered(call_id, e))?;
    let last = match opener.final_chunk_range() {
        Some(range) => Some(read(store, location, range).await?),
        None => None,
    };
    opener.open(last.as_deref()).map_err(|e| tampered(call_id, e))
}

/// The one range asked for (`bytes=a-b`, `bytes=a-`, `bytes=-n`), or `None` for the whole file. Several
/// ranges or a malformed header get the whole file (RFC 9110 lets a server ignore Range); a range that
/// starts past the end is `Err` (416).
fn requested_range(headers: &HeaderMap, len: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) =
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
        (Some(a), Some(b)) if a <= b => a..b.saturating_add(1).min(len),
        (Some(a), None) if last.is_empty() => a..len,
        (None, Some(n)) if first.is_empty() && n > 0 => len.saturating_sub(n)..len,
        _ => return Ok(None),
    };
    if range.start >= len {
        return Err(());
    }
    Ok(Some(range))
}

fn plain_body(store: Arc<dyn ObjectStore>, location: ObjectPath, range: Range<u64>) -> Body {
    if range.is_empty() {
        return Body::empty();
    }
    let stream = stream::once(async move {
        let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
        store.get_opts(&location, options).await.map(|result| result.into_stream())
    })
    .try_flatten();
    Body::from_stream(stream)
}

fn encrypted_body(
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    plain: Arc<PlainFile>,
    call_id: Uuid,
    range: Range<u64>,
) -> Body {
    let reads = plain.reads(range);
    let stream = stream::iter(reads).then(move |read| {
        let (store, location, plain) = (store.clone(), location.clone(), plain.clone());
        async move {
            let sealed = match &read.sealed {
                Some(r) => store.get_range(&location, r.clone()).await.map_err(std::io::Error::other)?,
                None => Bytes::new(),
            };
            let bytes = plain.decrypt(&read, &sealed).map_err(|e| {
                tracing::error!(%call_id, chunk = read.index, error = %e, "a recording's chunk does not authenticate");
                std::io::Error::other(e)
            })?;
            Ok::<_, std::io::Error>(Bytes::copy_from_slice(&bytes))
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(requested_range(&HeaderMap::new(), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("bytes=0-99"), 1000), Ok(Some(0..100)));
        assert_eq!(requested_range(&with_range("bytes=0-"), 1000), Ok(Some(0..1000)));
        assert_eq!(requested_range(&with_range("bytes=900-"), 1000), Ok(Some(900..1000)));
        assert_eq!(requested_range(&with_range("bytes=-100"), 1000), Ok(Some(900..1000)));
        assert_eq!(requested_range(&with_range("bytes=-5000"), 1000), Ok(Some(0..1000)));
        assert_eq!(requested_range(&with_range("bytes=990-2000"), 1000), Ok(Some(990..1000)));
        assert_eq!(requested_range(&with_range("bytes=1000-"), 1000), Err(()));
        assert_eq!(requested_range(&with_range("bytes=0-1,5-9"), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("bytes=9-1"), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("items=0-1"), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("bytes=abc"), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("bytes=-0"), 1000), Ok(None));
        assert_eq!(requested_range(&with_range("bytes=18446744073709551615-18446744073709551615"), 10), Err(()));
    }
}

/// The most recordings one bulk download takes.
const BULK_LIMIT: usize = 1000;

/// `POST /recordings/bulk` with `{"calls": [id, …]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct BulkRequest {
    calls: Vec<Uuid>,
}

/// A bulk download: a ZIP of the recordings exactly as stored (encrypted files stay encrypted: they play
/// only where their tenant key is imported), in a backup archive's layout (each call's description with its
/// events, the public keys), so a restore job reads it as it is; and `manifest.json`, which says what each
/// file is, which key it needs (id and fingerprint) and its SHA-256, and which calls were left out and why.
/// Streamed as it is written; each recording counts as a download in the audit trail.
pub(crate) async fn bulk(State(state): State<ApiState>, request: Request) -> Response {
    bulk_download(state, request).await.unwrap_or_else(IntoResponse::into_response)
}

struct BulkEntry {
    call_id: Uuid,
    tenant_id: Uuid,
    started_at: chrono::DateTime<chrono::Utc>,
    recording: serde_json::Value,
    stored: Stored,
    store: Arc<dyn ObjectStore>,
    /// The call as a backup archive describes it (its events, the recording, the key it needs), so the ZIP
    /// can be restored like a backup.
    described: recall_jobs::archive::ArchivedCall,
}

async fn bulk_download(state: ApiState, request: Request) -> Result<Response, Refusal> {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let viewer = signed_in(&state, &request.headers().clone(), source).await?;
    viewer.require(Permission::DownloadCalls)?;
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .map_err(|_| Refusal(StatusCode::PAYLOAD_TOO_LARGE, "the request body is over 1 MiB".to_owned()))?;
    let BulkRequest { calls } = serde_json::from_slice(&body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("expected {{\"calls\": [call ids]}}: {e}")))?;
    if calls.is_empty() || calls.len() > BULK_LIMIT {
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("ask for 1 to {BULK_LIMIT} calls")));
    }
    let mut qb = QueryBuilder::new(
        "SELECT c.call_id, c.tenant_id, c.started_at, c.recording FROM rm_calls.calls c WHERE c.call_id = ANY(",
    );
    qb.push_bind(calls.clone()).push(")");
    scope::calls(&mut qb, &viewer, "c", "rm_directory")?;
    let rows: Vec<BulkRow> = qb
        .build_query_as()
        .fetch_all(state.log.pool())
        .await
        .map_err(|e| unavailable("the calls cannot be read", e))?;
    let fingerprints = key_fingerprints(&state, &rows).await?;
    let mut skipped = Vec::new();
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for call_id in calls {
        if !seen.insert(call_id) {
            continue;
        }
        let Some((_, tenant_id, started_at, recording)) = rows.iter().find(|r| r.0 == call_id).cloned() else {
            skipped.push(serde_json::json!({ "call_id": call_id, "reason": "no such call" }));
            continue;
        };
        let Some(recording) = recording else {
            skipped.push(serde_json::json!({ "call_id": call_id, "reason": "no stored recording" }));
            continue;
        };
        let stored: Stored = match serde_json::from_value(recording.clone()) {
            Ok(stored) => stored,
            Err(_) => {
                skipped.push(serde_json::json!({ "call_id": call_id, "reason": "its record cannot be read" }));
                continue;
            }
        };
        let store = match store_for(&state, tenant_id, stored.storage_target_id).await {
            Ok(store) => store,
            Err(Refusal(_, reason)) => {
                skipped.push(serde_json::json!({ "call_id": call_id, "reason": reason }));
                continue;
            }
        };
        let events = recall_commands::log::read_aggregate(state.log.pool(), "Call", &call_id.to_string())
            .await
            .map_err(|e| unavailable("the call's events cannot be read", e))?;
        let fingerprint = stored.encryption.as_ref().and_then(|e| fingerprints.get(&e.key_id).cloned());
        let site = &state.log.config().site;
        let Some(described) = recall_jobs::archive::describe(call_id, tenant_id, site, &events, fingerprint) else {
            skipped.push(serde_json::json!({ "call_id": call_id, "reason": "the log holds no stored recording" }));
            continue;
        };
        // Who played the call, who acted on it and as whom is for those who may read the audit trail.
        let described =
            if viewer.authority.grants.allows(Permission::ViewAuditTrail) { described } else { described.redacted() };
        state.admin.record_recording_access(&viewer.principal.caller, call_id, RecordingAccess::Download).await?;
        entries.push(BulkEntry { call_id, tenant_id, started_at, recording, stored, store, described });
    }
    let public_keys = public_keys(&state, &fingerprints).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let handle = tokio::runtime::Handle::current();
    let by = viewer.principal.caller.user_id;
    let state_site = state.log.config().site.clone();
    tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        let site = (state_site, public_keys);
        if let Err(e) = write_zip(&handle, ChannelWriter(tx), entries, skipped, fingerprints, by, site) {
            tracing::warn!(error = %e, "a bulk download was cut short");
            let _ = failed.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let mut response = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    let name = format!("attachment; filename=\"recordings-{}.zip\"", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    if let Ok(value) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The calls a bulk download asked for that the viewer may see: id, tenant, start, recording.
type BulkRow = (Uuid, Uuid, chrono::DateTime<chrono::Utc>, Option<serde_json::Value>);

/// The fingerprints of the keys the rows' recordings are encrypted with.
async fn key_fingerprints(
    state: &ApiState,
    rows: &[BulkRow],
) -> Result<std::collections::HashMap<Uuid, String>, Refusal> {
    let keys: Vec<Uuid> = rows
        .iter()
        .filter_map(|r| serde_json::from_value::<Stored>(r.3.clone()?).ok()?.encryption.map(|k| k.key_id))
        .collect();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT key_id, fingerprint FROM rm_directory.encryption_keys WHERE key_id = ANY($1)")
            .bind(keys)
            .fetch_all(state.log.pool())
            .await
            .map_err(|e| unavailable("the encryption keys cannot be read", e))?;
    Ok(rows.into_iter().collect())
}

/// `keys.json` of the archive: the public part of each key named in `fingerprints`.
async fn public_keys(
    state: &ApiState,
    fingerprints: &std::collections::HashMap<Uuid, String>,
) -> Result<Vec<recall_jobs::archive::ArchivedKey>, Refusal> {
    let ids: Vec<Uuid> = fingerprints.keys().copied().collect();
    recall_jobs::archive::public_keys(state.log.pool(), &ids)
        .await
        .map_err(|e| unavailable("the encryption keys cannot be read", e))
}

/// Hands what the ZIP writer writes to the response body.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_zip(
    handle: &tokio::runtime::Handle,
    out: ChannelWriter,
    entries: Vec<BulkEntry>,
    mut skipped: Vec<serde_json::Value>,
    fingerprints: std::collections::HashMap<Uuid, String>,
    by: Uuid,
    (site, keys): (String, Vec<recall_jobs::archive::ArchivedKey>),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use recall_jobs::archive;
    use std::io::Write;
    let mut zip = zip::ZipWriter::new_stream(std::io::BufWriter::with_capacity(256 * 1024, out));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    // The layout of a backup archive (`recall_jobs::archive`), so a restore job reads the ZIP as it is.
    let info = archive::ArchiveInfo {
        format: archive::FORMAT.to_owned(),
        version: archive::VERSION,
        tenant_id: None,
        site,
        created_at: chrono::Utc::now(),
    };
    zip.start_file("archive.json", options)?;
    zip.write_all(&serde_json::to_vec_pretty(&info)?)?;
    let mut files = Vec::new();
    for entry in entries {
        let name = entry.described.file.clone();
        let location = ObjectPath::from(entry.stored.location.as_str());
        let mut stream = match handle.block_on(entry.store.get(&location)) {
            Ok(result) => result.into_stream(),
            Err(e) => {
                skipped.push(
                    serde_json::json!({ "call_id": entry.call_id, "reason": format!("the file cannot be read: {e}") }),
                );
                continue;
            }
        };
        zip.start_file(name.as_str(), options)?;
        while let Some(bytes) = handle.block_on(stream.next()) {
            zip.write_all(&bytes?)?;
        }
        // The description after the file: a listed call is complete in the archive.
        zip.start_file(format!("calls/{}.json", entry.call_id), options)?;
        zip.write_all(&serde_json::to_vec_pretty(&entry.described)?)?;
        let key = entry.stored.encryption.as_ref().map(|k| {
            serde_json::json!({
                "key_id": k.key_id,
                "fingerprint": fingerprints.get(&k.key_id),
                "unterminated_chunks": k.unterminated_chunks,
            })
        });
        files.push(serde_json::json!({
            "call_id": entry.call_id,
            "tenant_id": entry.tenant_id,
            "started_at": entry.started_at,
            "file": name,
            "recording": entry.recording,
            "encryption": key,
        }));
    }
    let manifest = serde_json::json!({
        "format": "recall-bulk-download/1",
        "created_at": chrono::Utc::now(),
        "by": by,
        "recordings": files,
        "skipped": skipped,
    });
    zip.start_file("keys.json", options)?;
    zip.write_all(&serde_json::to_vec_pretty(&keys)?)?;
    zip.start_file("manifest.json", options)?;
    zip.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
    zip.finish()?.into_inner().flush()?;
    Ok(())
}
