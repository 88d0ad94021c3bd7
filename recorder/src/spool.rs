//! The recorder's local spool: a recording is written here while the call goes on (synced to disk on a
//! schedule), then marked ready for upload; only an upload the storage target confirmed, and reported,
//! removes it. It must never lose a file it took: every rename is synced, and a restart finds it all again.
//!
//! Layout: `active/<call id>.<ext>` while being written; `ready/<call id>.<ext>` and its manifest
//! `ready/<call id>.json` once finished (the manifest is written last: a ready file without one is
//! unfinished). A recording may leave its intended manifest beside it while it is written
//! (`active/<call id>.json`, [`Spool::create_with`]), so that a restarted recorder knows where it goes. Writes are plain blocking file I/O: call them from a blocking context.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use recall_domain::call::RecordingEncryption;
use recall_domain::recording_policy::AudioFormat;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::durable;

const ACTIVE: &str = "active";
const READY: &str = "ready";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool holds {used} bytes, at or over its limit of {limit}: no new recording is taken")]
    Full { used: u64, limit: u64 },
    #[error("a recording of call {0} is being spooled already")]
    Exists(Uuid),
    #[error("the spool at {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the manifest {path} cannot be read: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// Where a finished recording goes and what it is, as the recorder knows it at the end of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub tenant_id: Uuid,
    /// The tenant's storage target; `None` for the installation's own recordings directory.
    pub storage_target_id: Option<Uuid>,
    /// The object's path within the target, e.g. `<tenant>/2026/12/03/<call id>.mp3`.
    pub object_path: String,
    pub format: AudioFormat,
    pub duration_ms: u64,
    /// The PCM rate the audio was encoded at: a restart estimates an encrypted WAV's duration from it (the
    /// file's own header is sealed). `None` in manifests written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// The file is recall-crypto's sealed stream under this tenant key; `None`: plain audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<RecordingEncryption>,
}

/// A finished recording waiting in the spool for its upload (its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledRecording {
    pub call_id: Uuid,
    pub meta: RecordingMeta,
    /// The file's name in `ready/`.
    pub file_name: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub spooled_at: DateTime<Utc>,
    /// Failed upload attempts so far (kept across restarts, for the backoff).
    pub attempts: u32,
    /// The storage target confirmed the upload; what is left is reporting it.
    pub uploaded: bool,
}

impl SpooledRecording {
    /// The `Call` aggregate's fact for this recording once its target has it.
    pub fn stored(&self) -> recall_domain::call::StoredRecording {
        recall_domain::call::StoredRecording {
            storage_target_id: self.meta.storage_target_id,
            location: self.meta.object_path.clone(),
            format: self.meta.format,
            size_bytes: self.size_bytes,
            duration_ms: self.meta.duration_ms,
            sha256: self.sha256.clone(),
            encryption: self.meta.encryption.clone(),
        }
    }
}

/// What a restarted recorder finds in its spool.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Recordings that were being written when the recorder stopped: finish them (`Spool::adopt`).
    pub unfinished: Vec<(Uuid, PathBuf)>,
    /// Finished recordings not uploaded and reported yet.
    pub ready: Vec<SpooledRecording>,
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    limit_bytes: u64,
    /// Bytes held: counted once at open, then kept up to date by writes and removals.
    used: Arc<AtomicU64>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root`, refusing new recordings once it holds `limit_bytes`.
    pub fn open(root: impl Into<PathBuf>, limit_bytes: u64) -> Result<Self, SpoolError> {
        let root = root.into();
        for dir in [root.join(ACTIVE), root.join(READY)] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let mut used = 0;
        for dir in [root.join(ACTIVE), root.join(READY)] {
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let path = entry.map_err(io(&dir))?.path();
                // Recordings count; their small manifests (and temp files) do not.
                if call_id_of(&path).is_some() && path.extension().is_some_and(|e| e != "json" && e != "tmp") {
                    used += fs::metadata(&path).map_err(io(&path))?.len();
                }
            }
        }
        Ok(Self { root, limit_bytes, used: Arc::new(AtomicU64::new(used)) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn active(&self) -> PathBuf {
        self.root.join(ACTIVE)
    }

    fn ready(&self) -> PathBuf {
        self.root.join(READY)
    }

    /// Bytes held by the spool (active and ready files, as counted at open and kept since).
    pub fn used_bytes(&self) -> Result<u64, SpoolError> {
        Ok(self.used.load(Ordering::Relaxed))
    }

    /// Whether a new recording would be refused (the recorder answers new calls 503 then).
    pub fn is_full(&self) -> Result<bool, SpoolError> {
        Ok(self.used_bytes()? >= self.limit_bytes)
    }

    /// Starts spooling the recording of `call_id` (file extension `extension`), synced every `sync_every`.
    pub fn create(&self, call_id: Uuid, extension: &str, sync_every: Duration) -> Result<SpoolWriter, SpoolError> {
        self.create_with(call_id, extension, sync_every, None)
    }

    /// [`Spool::create`], leaving `draft` (the manifest as known at the start) beside the file until it is
    /// finished: [`Spool::draft_of`] reads it back after a crash.
    pub fn create_with(
        &self,
        call_id: Uuid,
        extension: &str,
        sync_every: Duration,
        draft: Option<&RecordingMeta>,
    ) -> Result<SpoolWriter, SpoolError> {
        let used = self.used_bytes()?;
        if used >= self.limit_bytes {
            return Err(SpoolError::Full { used, limit: self.limit_bytes });
        }
        if let Some(draft) = draft {
            let path = self.draft_path(call_id);
            let text = serde_json::to_vec(draft)
                .map_err(|e| SpoolError::Manifest { path: path.clone(), reason: e.to_string() })?;
            let mut file = File::create(&path).map_err(io(&path))?;
            file.write_all(&text).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let path = self.active().join(format!("{call_id}.{extension}"));
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SpoolError::Exists(call_id)
            } else {
                SpoolError::Io { path: path.clone(), source: e }
            }
        })?;
        sync_dir(&self.active())?;
        Ok(SpoolWriter {
            spool: self.clone(),
            call_id,
            path,
            file,
            hasher: Sha256::new(),
            size: 0,
            sync_every,
            last_sync: Instant::now(),
            patched: false,
        })
    }

    fn draft_path(&self, call_id: Uuid) -> PathBuf {
        self.active().join(format!("{call_id}.json"))
    }

    /// The manifest an unfinished recording was started with, if it left one.
    pub fn draft_of(&self, call_id: Uuid) -> Result<Option<RecordingMeta>, SpoolError> {
        let path = self.draft_path(call_id);
        match fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text)
                .map(Some)
                .map_err(|e| SpoolError::Manifest { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SpoolError::Io { path, source: e }),
        }
    }

    /// What the spool holds after a restart.
    pub fn recover(&self) -> Result<Recovered, SpoolError> {
        let mut recovered = Recovered::default();
        let active = self.active();
        for entry in fs::read_dir(&active).map_err(io(&active))? {
            let path = entry.map_err(io(&active))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                continue;
            }
            if let Some(call_id) = call_id_of(&path) {
                recovered.unfinished.push((call_id, path));
            }
        }
        let ready = self.ready();
        let mut manifests = Vec::new();
        for entry in fs::read_dir(&ready).map_err(io(&ready))? {
            let path = entry.map_err(io(&ready))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                manifests.push(path);
            }
        }
        manifests.sort();
        for path in manifests {
            recovered.ready.push(read_manifest(&path)?);
        }
        // A ready file without a manifest was being handed over when the recorder stopped: unfinished.
        for entry in fs::read_dir(&ready).map_err(io(&ready))? {
            let path = entry.map_err(io(&ready))?.path();
            let Some(call_id) = call_id_of(&path) else { continue };
            if path.extension().is_some_and(|e| e != "json") && !recovered.ready.iter().any(|r| r.call_id == call_id) {
                recovered.unfinished.push((call_id, path));
            }
        }
        recovered.unfinished.sort();
        Ok(recovered)
    }

    /// Finishes a recording a stopped recorder left unfinished (its file as it is on disk; the caller has
    /// repaired what the format needs, e.g. a WAV header).
    pub fn adopt(&self, call_id: Uuid, path: &Path, meta: RecordingMeta) -> Result<SpooledRecording, SpoolError> {
        let mut file = File::open(path).map_err(io(path))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer).map_err(io(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        self.hand_over(call_id, path, meta, size, hex::encode(hasher.finalize()))
    }

    /// Cuts an unfinished recording to `len` bytes (an encrypted file to its last whole sealed chunk), synced.
    pub fn truncate(&self, path: &Path, len: u64) -> Result<(), SpoolError> {
        let file = OpenOptions::new().write(true).open(path).map_err(io(path))?;
        let before = file.metadata().map_err(io(path))?.len();
        if len >= before {
            return Ok(());
        }
        file.set_len(len).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        let cut = before - len;
        self.used.fetch_sub(cut.min(self.used.load(Ordering::Relaxed)), Ordering::Relaxed);
        Ok(())
    }

    /// Moves a finished file into `ready/` and writes its manifest last.
    fn hand_over(
        &self,
        call_id: Uuid,
        path: &Path,
        meta: RecordingMeta,
        size_bytes: u64,
        sha256: String,
    ) -> Result<SpooledRecording, SpoolError> {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.ready().join(&file_name);
        if path != target {
            fs::rename(path, &target).map_err(io(path))?;
            sync_dir(&self.active())?;
        }
        let recording = SpooledRecording {
            call_id,
            meta,
            file_name,
            size_bytes,
            sha256,
            spooled_at: Utc::now(),
            attempts: 0,
            uploaded: false,
        };
        self.save(&recording)?;
        let draft = self.draft_path(call_id);
        durable::remove_if_present(&draft).map_err(io(&draft))?;
        Ok(recording)
    }

    /// Writes a ready recording's manifest (atomically: temp file, sync, rename, sync directory).
    pub fn save(&self, recording: &SpooledRecording) -> Result<(), SpoolError> {
        let path = self.ready().join(format!("{}.json", recording.call_id));
        let temp = self.ready().join(format!("{}.json.tmp", recording.call_id));
        let text = serde_json::to_vec_pretty(recording)
            .map_err(|e| SpoolError::Manifest { path: path.clone(), reason: e.to_string() })?;
        let mut file = File::create(&temp).map_err(io(&temp))?;
        file.write_all(&text).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        fs::rename(&temp, &path).map_err(io(&temp))?;
        sync_dir(&self.ready())
    }

    /// Whether a recording is still waiting in the spool (its manifest is there): a copy of a recording that
    /// was uploaded and removed meanwhile (handed over twice, say by the queue and by a restart's recovery)
    /// is not.
    pub fn holds(&self, recording: &SpooledRecording) -> bool {
        self.ready().join(format!("{}.json", recording.call_id)).is_file()
    }

    /// The path of a ready recording's file.
    pub fn file_of(&self, recording: &SpooledRecording) -> PathBuf {
        self.ready().join(&recording.file_name)
    }

    /// Removes a recording whose upload was confirmed and reported: the file first, the manifest last.
    pub fn remove(&self, recording: &SpooledRecording) -> Result<(), SpoolError> {
        let file = self.file_of(recording);
        let size = fs::metadata(&file).map_or(0, |m| m.len());
        durable::remove_if_present(&file).map_err(io(&file))?;
        self.used.fetch_sub(size.min(self.used.load(Ordering::Relaxed)), Ordering::Relaxed);
        let manifest = self.ready().join(format!("{}.json", recording.call_id));
        durable::remove_if_present(&manifest).map_err(io(&manifest))?;
        sync_dir(&self.ready())
    }
}

/// One recording being written to the spool.
#[derive(Debug)]
pub struct SpoolWriter {
    spool: Spool,
    call_id: Uuid,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
    sync_every: Duration,
    last_sync: Instant,
    /// The start was written over: the digest is taken from the file at the end.
    patched: bool,
}

impl SpoolWriter {
    /// Appends bytes; syncs them to disk when the last sync is `sync_every` old.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.file.write_all(bytes).map_err(io(&self.path))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.spool.used.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if self.last_sync.elapsed() >= self.sync_every {
            self.file.sync_data().map_err(io(&self.path))?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Syncs what was written so far now, whatever the schedule.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.file.sync_data().map_err(io(&self.path))?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes `bytes` over the start of the file (a WAV header once the length is known).
    pub fn patch_start(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        use std::os::unix::fs::FileExt;
        if bytes.len() as u64 > self.size {
            return Err(SpoolError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "a patch longer than the file"),
            });
        }
        self.file.write_all_at(bytes, 0).map_err(io(&self.path))?;
        self.patched = true;
        Ok(())
    }

    /// Syncs the file and hands it over for upload.
    pub fn finish(self, meta: RecordingMeta) -> Result<SpooledRecording, SpoolError> {
        self.file.sync_all().map_err(io(&self.path))?;
        if self.patched {
            return self.spool.adopt(self.call_id, &self.path, meta);
        }
        let sha256 = hex::encode(self.hasher.finalize());
        self.spool.hand_over(self.call_id, &self.path, meta, self.size, sha256)
    }
}

fn call_id_of(path: &Path) -> Option<Uuid> {
    let stem = path.file_name()?.to_str()?.split('.').next()?;
    Uuid::parse_str(stem).ok()
}

fn read_manifest(path: &Path) -> Result<SpooledRecording, SpoolError> {
    let text = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|e| SpoolError::Manifest { path: path.to_owned(), reason: e.to_string() })
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    durable::sync_dir(dir).map_err(io(dir))
}
