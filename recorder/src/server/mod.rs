//! The recording server: the tokio driver that ties the recorder's parts to sockets. One signalling task
//! owns the SIP side (UDP datagrams, TCP connections, the server transactions and the dialogs); each
//! accepted call gets a task of its own ([`call`]) with its RTP sockets, media core, encoder and spool file.
//! Facts about calls go to the outbox (delivered to the log when it can take them), finished files to the
//! uploader.
//!
//! What the recorder needs from the rest of recall comes through ports the binary wires: the
//! [`Directory`] (a `watch` channel the binary refreshes), the [`CallLog`] (the `Call` aggregate through
//! the command service) and the [`StorageResolver`] (a tenant's storage target as an object store).

mod call;
mod metrics;
mod ports;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use object_store::ObjectStore;
use recall_domain::call::{CallCommand, CallEndReason, CallStart, Participant};
use recall_domain::recording_policy::RecordingDecision;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use metrics::RecorderMetrics;
pub use ports::PortPool;

use self::call::{CallContext, CallSpec, Control, Notice, StreamSpec};
use crate::directory::{Directory, Encryption};
use crate::media::{self, PayloadKind, PayloadTypes, Route};
use crate::outbox::{CallLog, Outbox};
use crate::sdp::{self, AnswerConfig};
use crate::sip::{self, Message, Method, ResponseParts, Transport};
use crate::siprec::{self, Channel, OfferError, RecordingOffer};
use crate::siprec_metadata::{self, RecordingMetadata};
use crate::spool::{RecordingMeta, Spool, SpooledRecording};
use crate::transaction::{Event, Incoming, ServerTransactions};
use crate::upload::{Backoff, UploadPort, Uploader};

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";
const SERVER: &str = "recall";

/// How the recorder runs.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// SIP on UDP and TCP (port 0: one the system picks, the same for both).
    pub sip: SocketAddr,
    /// RTP ports, inclusive.
    pub rtp_ports: (u16, u16),
    /// The address put in SDP answers; by default the SIP address, or (when that is unspecified) the local
    /// address that routes to the caller.
    pub media_address: Option<IpAddr>,
    /// Calls held at once; more are answered 503.
    pub max_calls: usize,
    /// A call with no RTP for this long (while not paused) ends.
    pub rtp_timeout: Duration,
    pub site: String,
    pub node: String,
    pub spool_dir: PathBuf,
    pub outbox_dir: PathBuf,
    /// New calls are answered 503 while the spool holds this much.
    pub spool_limit_bytes: u64,
    /// How often a recording being written is synced to disk.
    pub sync_every: Duration,
    pub backoff: Backoff,
}

/// A tenant's storage target as an object store (`None`: the installation's recordings directory).
pub trait StorageResolver: Send + Sync {
    fn store_for<'a>(
        &'a self,
        tenant_id: Uuid,
        storage_target_id: Option<Uuid>,
    ) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>>;
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("cannot listen for SIP on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("the RTP port range {0}-{1} holds no even port")]
    NoPorts(u16, u16),
}

/// A recorder whose sockets are bound, not yet running.
pub struct Recorder {
    config: RecorderConfig,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    spool: Spool,
    outbox: Outbox,
    metrics: RecorderMetrics,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("local", &self.local).finish()
    }
}

impl Recorder {
    /// Binds SIP on UDP and TCP, opens the spool and the outbox.
    pub async fn bind(config: RecorderConfig, metrics: RecorderMetrics) -> Result<Self, RecorderError> {
        let listen = |source| RecorderError::Listen { address: config.sip, source };
        let udp = UdpSocket::bind(config.sip).await.map_err(listen)?;
        let local = udp.local_addr().map_err(listen)?;
        let tcp = TcpListener::bind(local).await.map_err(listen)?;
        if PortPool::new(config.rtp_ports.0, config.rtp_ports.1).capacity() == 0 {
            return Err(RecorderError::NoPorts(config.rtp_ports.0, config.rtp_ports.1));
        }
        let spool = Spool::open(&config.spool_dir, config.spool_limit_bytes)?;
        let outbox = Outbox::open(&config.outbox_dir)?;
        Ok(Self { config, udp: Arc::new(udp), tcp, local, spool, outbox, metrics })
    }

    /// The SIP address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Finishes what a stopped recorder left, then runs until `shutdown`: on it, every call is ended
    /// (BYE, reason `recorder_shutdown`) and its file finished, and what the log and the storage target
    /// can still take within a few seconds is delivered; the rest waits on disk for the next start.
    pub fn spawn(
        self,
        directory: watch::Receiver<Arc<Directory>>,
        log: Arc<dyn CallLog>,
        storage: Arc<dyn StorageResolver>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let Recorder { config, udp, tcp, local, spool, outbox, metrics } = self;
        finalise_after_restart(&spool, &outbox);
        let late = CancellationToken::new();
        let port = Arc::new(Reporting { storage, outbox: outbox.clone() });
        let (uploader, uploads) = Uploader::new(spool.clone(), port, config.backoff);
        let mut tasks = vec![
            tokio::spawn(uploader.run(late.clone())),
            tokio::spawn(outbox.clone().deliver(log, config.backoff, late.clone())),
        ];
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        tasks.push(tokio::spawn(accept_tcp(tcp, inbound_tx, writers.clone(), shutdown.clone())));
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let context = CallContext {
            outbox: outbox.clone(),
            spool: spool.clone(),
            uploads,
            metrics: metrics.clone(),
            rtp_timeout: config.rtp_timeout,
            sync_every: config.sync_every,
            notices: notices_tx,
        };
        let signalling = Signalling {
            ports: PortPool::new(config.rtp_ports.0, config.rtp_ports.1),
            config,
            udp,
            local,
            writers,
            transactions: ServerTransactions::new(),
            dialogs: HashMap::new(),
            byes: HashMap::new(),
            tasks: 0,
            directory,
            metrics,
            context,
        };
        tasks.push(tokio::spawn(async move {
            signalling.run(inbound, notices, shutdown).await;
            drain(&outbox, &spool, Duration::from_secs(10)).await;
            late.cancel();
        }));
        tasks
    }
}

/// Waits (up to `limit`) for the outbox and the spool's finished recordings to be delivered.
async fn drain(outbox: &Outbox, spool: &Spool, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let pending = outbox.pending().unwrap_or(0);
        let ready = spool.recover().map(|r| r.ready.len()).unwrap_or(0);
        if pending == 0 && ready == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("stopping with call events or recordings not delivered yet; they are kept for the next start");
}

/// The uploader's port: where a tenant's recordings go (from the binary), and the stored fact journaled
/// in the outbox, after the call's end, so the log receives them in order.
struct Reporting {
    storage: Arc<dyn StorageResolver>,
    outbox: Outbox,
}

impl UploadPort for Reporting {
    fn store_for<'a>(&'a self, recording: &'a SpooledRecording) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>> {
        self.storage.store_for(recording.meta.tenant_id, recording.meta.storage_target_id)
    }

    fn stored<'a>(&'a self, recording: &'a SpooledRecording) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let command = CallCommand::RecordStoredRecording { recording: recording.stored() };
            let (outbox, call_id, tenant_id) = (self.outbox.clone(), recording.call_id, recording.meta.tenant_id);
            tokio::task::spawn_blocking(move || outbox.record(call_id, tenant_id, command, true))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

/// After a crash: every recording that was being written is finished as it is on disk (a plain WAV header
/// gets its real length; an encrypted file is cut to its last whole sealed chunk) and handed to the
/// uploader, and every call journaled as started but not ended is ended with reason `recorder_restarted`.
fn finalise_after_restart(spool: &Spool, outbox: &Outbox) {
    let recovered = match spool.recover() {
        Ok(recovered) => recovered,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the spool; unfinished recordings stay where they are");
            return;
        }
    };
    for (call_id, path) in recovered.unfinished {
        let draft = match spool.draft_of(call_id) {
            Ok(Some(draft)) => draft,
            Ok(None) => {
                tracing::error!(%call_id, path = %path.display(), "an unfinished recording without its manifest is left in the spool");
                continue;
            }
            Err(e) => {
                tracing::error!(%call_id, error = %e, "an unfinished recording's manifest cannot be read");
                continue;
            }
        };
        let ended_at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(chrono::DateTime::<chrono::Utc>::from)
            .unwrap_or_else(|_| chrono::Utc::now());
        let mut meta = draft;
        let measured = match meta.encryption {
            Some(_) => settle_sealed(spool, call_id, &path, &mut meta),
            None => repair_and_measure(&path, meta.format).map_err(|e| e.to_string()),
        };
        meta.duration_ms = match measured {
            Ok(duration_ms) => duration_ms,
            Err(e) => {
                tracing::error!(%call_id, path = %path.display(), error = %e, "an unfinished recording cannot be repaired; it is left in the spool");
                continue;
            }
        };
        let end = CallCommand::EndCall { reason: CallEndReason::RecorderRestarted, at: ended_at };
        if let Err(e) = outbox.record(call_id, meta.tenant_id, end, false) {
            tracing::error!(%call_id, error = %e, "cannot journal the end of a call found unfinished");
            continue;
        }
        match spool.adopt(call_id, &path, meta) {
            Ok(_) => tracing::info!(%call_id, "finished a recording left by a stopped recorder"),
            Err(e) => tracing::error!(%call_id, error = %e, "cannot finish a recording left by a stopped recorder"),
        }
    }
    match outbox.unended() {
        Ok(calls) => {
            for (call_id, tenant_id) in calls {
                let end = CallCommand::EndCall { reason: CallEndReason::RecorderRestarted, at: chrono::Utc::now() };
                if let Err(e) = outbox.record(call_id, tenant_id, end, true) {
                    tracing::error!(%call_id, error = %e, "cannot journal the end of a call found unfinished");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
    }
}

/// A file cut short by a crash: a WAV header gets the length on disk; the duration follows from the size
/// (constant bit rate MP3, PCM WAV).
fn repair_and_measure(
    path: &std::path::Path,
    format: recall_domain::recording_policy::AudioFormat,
) -> std::io::Result<u64> {
    use recall_domain::recording_policy::AudioFormat;
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(match format {
        AudioFormat::Mp3Stereo32 | AudioFormat::Mp3Mono16 => duration_from_len(format, 0, size),
        AudioFormat::WavStereo | AudioFormat::WavMono => {
            let header_len = crate::encode::WAV_HEADER_LEN as u64;
            let mut header = [0u8; crate::encode::WAV_HEADER_LEN];
            if size < header_len {
                return Ok(0);
            }
            file.read_exact_at(&mut header, 0)?;
            let sample_rate = u32::from_le_bytes([header[24], header[25], header[26], header[27]]).max(1);
            let stereo = format == AudioFormat::WavStereo;
            let data = size - header_len;
            file.write_all_at(&crate::encode::wav_header(sample_rate, stereo, data), 0)?;
            file.sync_all()?;
            duration_from_len(format, sample_rate, size)
        }
    })
}

/// The duration of `len` bytes of a file in `format`: constant bit rate MP3, or PCM WAV at `sample_rate`
/// after its 44-byte header.
fn duration_from_len(format: recall_domain::recording_policy::AudioFormat, sample_rate: u32, len: u64) -> u64 {
    use recall_domain::recording_policy::AudioFormat;
    match format {
        AudioFormat::Mp3Stereo32 => len * 8 * 1000 / 32_000,
        AudioFormat::Mp3Mono16 => len * 8 * 1000 / 16_000,
        AudioFormat::WavStereo | AudioFormat::WavMono => {
            let frame = if format == AudioFormat::WavStereo { 4 } else { 2 };
            let data = len.saturating_sub(crate::encode::WAV_HEADER_LEN as u64);
            data * 1000 / (u64::from(sample_rate.max(1)) * frame)
        }
    }
}

/// What AES-GCM adds to each sealed chunk (its tag).
const SEALED_CHUNK_OVERHEAD: u64 = 16;

/// An encrypted file a crash left. Its data key died with the process, by design, so nothing can be sealed
/// onto it and its sealed audio header cannot be repaired. A file whose final chunk and footer are on disk
/// (the crash came after its last write) is kept whole; any other is cut to its last whole sealed chunk
/// (header length + k × sealed chunk) and recorded as unterminated with those k chunks, which is what a
/// reader must be told to open it. Returns the duration, estimated from the plain length as for a plain
/// file from its size (a WAV's own header still states the largest length).
fn settle_sealed(
    spool: &Spool,
    call_id: Uuid,
    path: &std::path::Path,
    meta: &mut RecordingMeta,
) -> Result<u64, String> {
    use recall_domain::recording_policy::AudioFormat;
    use std::os::unix::fs::FileExt;
    let (format, sample_rate) = (meta.format, meta.sample_rate.unwrap_or(8000));
    let encryption = meta.encryption.as_mut().ok_or("not an encrypted recording")?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut start = vec![0u8; size.min(4096) as usize];
    file.read_exact_at(&mut start, 0).map_err(|e| e.to_string())?;
    let header = recall_crypto::FileHeader::parse(&start)
        .map_err(|e| format!("the encrypted file's header is not whole on disk: {e}"))?;
    if header.recording_id() != call_id || header.key_id() != encryption.key_id {
        return Err("the encrypted file's header names another recording or key than its manifest".into());
    }
    let chunk = u64::from(header.chunk_size());
    let sealed_chunk = chunk + SEALED_CHUNK_OVERHEAD;
    let body = size - header.len() as u64;

    // A complete file ends with the sealed length of its final chunk (the footer), after whole chunks.
    if body >= 4 {
        let mut footer = [0u8; 4];
        file.read_exact_at(&mut footer, size - 4).map_err(|e| e.to_string())?;
        let final_len = u64::from(u32::from_be_bytes(footer));
        let largest = chunk + recall_crypto::MAX_PATCH as u64 + 4 + SEALED_CHUNK_OVERHEAD;
        if (4 + SEALED_CHUNK_OVERHEAD..=largest).contains(&final_len)
            && body >= 4 + final_len
            && (body - 4 - final_len).is_multiple_of(sealed_chunk)
        {
            // The final chunk holds the last audio, then the patch over the start (a WAV's 44-byte header;
            // an MP3's Info frame, counted as audio as the plain path counts it) and the patch's length.
            let patch = if matches!(format, AudioFormat::WavStereo | AudioFormat::WavMono) { 44 } else { 0 };
            let tail = (final_len - 4 - SEALED_CHUNK_OVERHEAD).saturating_sub(patch);
            let plain_len = (body - 4 - final_len) / sealed_chunk * chunk + tail;
            encryption.unterminated_chunks = None;
            return Ok(duration_from_len(format, sample_rate, plain_len));
        }
    }
    let chunks = body / sealed_chunk;
    spool.truncate(path, header.len() as u64 + chunks * sealed_chunk).map_err(|e| e.to_string())?;
    encryption.unterminated_chunks = Some(chunks);
    Ok(duration_from_len(format, sample_rate, chunks * chunk))
}

type Writers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>>;

/// Where a message came from and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    Udp(SocketAddr),
    Tcp(u64, SocketAddr),
}

impl Peer {
    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Udp(addr) | Peer::Tcp(_, addr) => *addr,
        }
    }

    fn reliable(&self) -> bool {
        matches!(self, Peer::Tcp(..))
    }
}

#[derive(Debug)]
struct Inbound {
    bytes: Vec<u8>,
    peer: Peer,
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

async fn accept_tcp(
    listener: TcpListener,
    inbound: mpsc::UnboundedSender<Inbound>,
    writers: Writers,
    shutdown: CancellationToken,
) {
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a SIP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(next_id, tx);
        tokio::spawn(serve_tcp(
            stream,
            Peer::Tcp(next_id, addr),
            inbound.clone(),
            rx,
            writers.clone(),
            shutdown.clone(),
        ));
    }
}

/// One SIP connection: frames messages by Content-Length, hands them to the signalling task, and writes
/// what it sends back. A connection that sends what cannot be framed is closed.
async fn serve_tcp(
    stream: TcpStream,
    peer: Peer,
    inbound: mpsc::UnboundedSender<Inbound>,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    writers: Writers,
    shutdown: CancellationToken,
) {
    let Peer::Tcp(id, addr) = peer.clone() else { return };
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            message = outgoing.recv() => match message {
                Some(bytes) => if writer.write_all(&bytes).await.is_err() { break },
                None => break,
            },
            read = reader.read(&mut chunk) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                buffer.extend_from_slice(&chunk[..n]);
                loop {
                    match sip::stream_message_len(&buffer) {
                        Ok(Some(len)) => {
                            let bytes: Vec<u8> = buffer.drain(..len).collect();
                            if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                                continue;
                            }
                            let _ = inbound.send(Inbound { bytes, peer: peer.clone() });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "closing a SIP connection that sent an unframeable message");
                            writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                            return;
                        }
                    }
                }
            }
        }
    }
    writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
}

/// One recorded call as the signalling side knows it (keyed by SIP Call-ID).
struct Dialog {
    call_id: Uuid,
    tenant_id: Uuid,
    peer: Peer,
    local_tag: String,
    /// The INVITE that created it (headers for the BYE we may send).
    invite: Message,
    /// Answered? Until then a CANCEL can still end it.
    pending_invite: Option<Message>,
    confirmed: bool,
    /// RTP port per m-line of the first offer (None: rejected line).
    ports: Vec<Option<u16>>,
    /// The m-line index of each stream the call task has, in its order.
    stream_lines: Vec<usize>,
    session_id: u64,
    session_version: u64,
    media_ip: IpAddr,
    answer: String,
    metadata: Option<RecordingMetadata>,
    participants: Vec<Participant>,
    control: mpsc::UnboundedSender<Control>,
    local_cseq: u32,
}

/// A BYE we sent, retransmitted on UDP until answered (RFC 3261 §17.1.2, timers E and F).
struct PendingBye {
    peer: Peer,
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

struct Signalling {
    config: RecorderConfig,
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    writers: Writers,
    transactions: ServerTransactions<Peer>,
    dialogs: HashMap<String, Dialog>,
    byes: HashMap<String, PendingBye>,
    /// Call tasks running (a call whose dialog ended may still be finishing its file).
    tasks: usize,
    ports: PortPool,
    directory: watch::Receiver<Arc<Directory>>,
    metrics: RecorderMetrics,
    /// What every call task gets (the spool, the outbox, the upload queue, the metrics).
    context: CallContext,
}

fn random_token() -> String {
    // A v7 id ends in 62 random bits (uuid 1.x fills `rand_b` from the system RNG).
    Uuid::now_v7().simple().to_string()[16..].to_owned()
}

impl Signalling {
    async fn run(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        shutdown: CancellationToken,
    ) {
        tracing::info!(sip_address = %self.local, "SIP recording server listening on {} (UDP and TCP)", self.local);
        let mut datagram = vec![0u8; sip::MAX_MESSAGE_BYTES + 1];
        loop {
            let next = [self.transactions.next_timeout(), self.byes.values().map(|b| b.next.min(b.give_up)).min()]
                .into_iter()
                .flatten()
                .min();
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            enum Wake {
                Stop,
                Datagram(std::io::Result<(usize, SocketAddr)>),
                Stream(Option<Inbound>),
                Notice(Option<Notice>),
                Timer,
            }
            let wake = tokio::select! {
                () = shutdown.cancelled() => Wake::Stop,
                notice = notices.recv() => Wake::Notice(notice),
                received = self.udp.recv_from(&mut datagram) => Wake::Datagram(received),
                message = inbound.recv() => Wake::Stream(message),
                () = timer => Wake::Timer,
            };
            match wake {
                Wake::Stop => break,
                Wake::Datagram(Ok((len, from))) => {
                    let bytes = datagram[..len].to_vec();
                    self.on_message(&bytes, Peer::Udp(from)).await;
                }
                Wake::Datagram(Err(e)) => {
                    // ICMP port unreachable from a peer that went away shows up here on some systems.
                    tracing::debug!(error = %e, "SIP socket");
                }
                Wake::Stream(Some(message)) => self.on_message(&message.bytes, message.peer).await,
                Wake::Stream(None) => {}
                Wake::Notice(Some(notice)) => self.on_notice(notice).await,
                Wake::Notice(None) => {}
                Wake::Timer => self.on_timer().await,
            }
        }
        self.stop(&mut notices).await;
    }

    /// Ends every call (BYE to its peer), then waits for the call tasks to finish their files.
    async fn stop(&mut self, notices: &mut mpsc::UnboundedReceiver<Notice>) {
        let now = Instant::now();
        let calls: Vec<String> = self.dialogs.keys().cloned().collect();
        for sip_call_id in calls {
            if let Some(dialog) = self.dialogs.remove(&sip_call_id) {
                let _ = dialog.control.send(Control::End { reason: CallEndReason::RecorderShutdown, at: now });
                if dialog.pending_invite.is_none() {
                    self.send_bye(&sip_call_id, dialog).await;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.tasks > 0 {
            match tokio::time::timeout_at(deadline, notices.recv()).await {
                Ok(Some(Notice::Finished { ports, .. })) => {
                    self.tasks -= 1;
                    for port in ports {
                        self.ports.release(port);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn send(&self, peer: &Peer, bytes: &[u8]) {
        match peer {
            Peer::Udp(addr) => {
                if let Err(e) = self.udp.send_to(bytes, addr).await {
                    tracing::debug!(%addr, error = %e, "cannot send a SIP datagram");
                }
            }
            Peer::Tcp(id, _) => {
                let writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(writer) = writers.get(id) {
                    let _ = writer.send(bytes.to_vec());
                }
            }
        }
    }

    /// Answers `request` (recording the response in its transaction) and sends it.
    async fn respond(&mut self, request: &Message, peer: &Peer, status: u16, reason: &str, parts: ResponseParts<'_>) {
        match sip::build_response(request, status, reason, &parts) {
            Ok(bytes) => {
                self.transactions.respond(request, status, &bytes, Instant::now());
                self.send(peer, &bytes).await;
            }
            Err(e) => tracing::warn!(error = %e, status, "cannot build a SIP response"),
        }
    }

    async fn on_message(&mut self, bytes: &[u8], peer: Peer) {
        self.metrics.sip_messages.inc();
        let transport = if peer.reliable() { Transport::Stream } else { Transport::Datagram };
        let message = match sip::parse(bytes, transport) {
            Ok(message) => message,
            Err(e) => {
                // Without the headers a response needs, nothing can be answered (RFC 3261 §18.3: discard).
                self.metrics.sip_malformed.inc();
                tracing::debug!(peer = %peer.addr(), error = %e, "discarding a malformed SIP message");
                return;
            }
        };
        if !message.is_request() {
            self.on_response(&message);
            return;
        }
        let now = Instant::now();
        match self.transactions.on_request(&message, peer.clone(), peer.reliable(), now) {
            Incoming::New => {}
            Incoming::Retransmission(Some(last)) => return self.send(&peer, &last).await,
            Incoming::Retransmission(None) | Incoming::Absorbed => return,
            Incoming::AckOf2xx => {
                if let Some(dialog) = self.dialogs.get_mut(message.call_id()) {
                    dialog.confirmed = true;
                }
                return;
            }
        }
        let in_dialog = message.to().tag().is_some();
        match message.method().clone() {
            Method::Invite if !in_dialog => self.on_invite(message, peer).await,
            Method::Invite | Method::Update => self.on_reoffer(message, peer).await,
            Method::Bye => self.on_bye(message, peer).await,
            Method::Cancel => self.on_cancel(message, peer).await,
            Method::Options => {
                let tag = random_token();
                let parts = ResponseParts {
                    to_tag: Some(&tag),
                    headers: vec![
                        ("Allow", ALLOW.to_owned()),
                        ("Accept", "application/sdp, multipart/mixed".to_owned()),
                        ("Supported", "siprec".to_owned()),
                        ("Server", SERVER.to_owned()),
                    ],
                    body: None,
                };
                self.respond(&message, &peer, 200, "OK", parts).await;
            }
            Method::Info | Method::Notify if self.dialogs.contains_key(message.call_id()) => {
                self.respond(&message, &peer, 200, "OK", ResponseParts::default()).await;
            }
            Method::Ack => {}
            Method::Other(_) => {
                let parts = ResponseParts { headers: vec![("Allow", ALLOW.to_owned())], ..ResponseParts::default() };
                self.respond(&message, &peer, 501, "Not Implemented", parts).await;
            }
            _ if in_dialog && !self.dialogs.contains_key(message.call_id()) => {
                self.respond(&message, &peer, 481, "Call/Transaction Does Not Exist", ResponseParts::default()).await;
            }
            _ => {
                let parts = ResponseParts { headers: vec![("Allow", ALLOW.to_owned())], ..ResponseParts::default() };
                self.respond(&message, &peer, 405, "Method Not Allowed", parts).await;
            }
        }
    }

    /// Responses to our BYEs stop their retransmission.
    fn on_response(&mut self, response: &Message) {
        if let Some(branch) = response.via_branch() {
            if response.status().is_some_and(|status| status >= 200) {
                self.byes.remove(branch);
            }
        }
    }

    fn media_ip_for(&self, peer: &Peer) -> IpAddr {
        if let Some(ip) = self.config.media_address {
            return ip;
        }
        if !self.local.ip().is_unspecified() {
            return self.local.ip();
        }
        // The local address that routes to the caller (no packet is sent by connect on UDP).
        let any: SocketAddr = if peer.addr().is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        std::net::UdpSocket::bind(any)
            .and_then(|socket| {
                socket.connect(peer.addr())?;
                socket.local_addr()
            })
            .map(|addr| addr.ip())
            .unwrap_or(self.local.ip())
    }

    async fn refuse(&mut self, request: &Message, peer: &Peer, status: u16, reason: &str, metric: &str) {
        self.metrics.calls_refused.with_label_values(&[metric]).inc();
        tracing::info!(peer = %peer.addr(), sip_call_id = request.call_id(), status, reason, "INVITE refused");
        let tag = random_token();
        let mut parts = ResponseParts { to_tag: Some(&tag), ..ResponseParts::default() };
        if status == 503 {
            parts.headers.push(("Retry-After", "5".to_owned()));
        }
        self.respond(request, peer, status, reason, parts).await;
    }

    async fn on_invite(&mut self, invite: Message, peer: Peer) {
        let directory = self.directory.borrow().clone();
        let Some(tenant) = directory.tenant_for_source(peer.addr().ip()).cloned() else {
            return self.refuse(&invite, &peer, 403, "Forbidden (not a trusted recording client)", "untrusted").await;
        };
        let unsupported: Vec<String> = invite
            .headers("Require")
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().to_owned())
            .filter(|tag| !tag.is_empty() && !tag.eq_ignore_ascii_case(siprec::SIPREC_OPTION_TAG))
            .collect();
        if !unsupported.is_empty() {
            self.metrics.calls_refused.with_label_values(&["extension"]).inc();
            let tag = random_token();
            let parts = ResponseParts {
                to_tag: Some(&tag),
                headers: vec![("Unsupported", unsupported.join(", "))],
                body: None,
            };
            return self.respond(&invite, &peer, 420, "Bad Extension", parts).await;
        }
        if self.tasks >= self.config.max_calls {
            return self.refuse(&invite, &peer, 503, "Service Unavailable (at capacity)", "capacity").await;
        }
        if self.context.spool.is_full().unwrap_or(true) {
            return self.refuse(&invite, &peer, 503, "Service Unavailable (spool full)", "spool_full").await;
        }
        let seal_with = match &tenant.encryption {
            Encryption::Off => None,
            Encryption::On { key_id, key } => Some((*key_id, key.clone())),
            Encryption::Unavailable => {
                // Recording it in plain would break the tenant's rule; refusing lets the SBC try another
                // recorder or try again once the key is readable.
                tracing::warn!(
                    tenant = %tenant.name, tenant_id = %tenant.tenant_id, sip_call_id = invite.call_id(),
                    "the tenant encrypts its recordings but no usable encryption key is known; refusing the call"
                );
                let reason = "Service Unavailable (no encryption key)";
                return self.refuse(&invite, &peer, 503, reason, "no_encryption_key").await;
            }
        };
        let offer = match siprec::recording_offer(&invite) {
            Ok(offer) => offer,
            Err(e) => {
                let (status, reason) = match &e {
                    OfferError::UnsupportedBody(_) => (415, "Unsupported Media Type"),
                    OfferError::NoSdp | OfferError::Sdp(_) => (488, "Not Acceptable Here"),
                    _ => (400, "Bad Request"),
                };
                tracing::info!(sip_call_id = invite.call_id(), error = %e, "unusable recording offer");
                return self.refuse(&invite, &peer, status, reason, "offer").await;
            }
        };
        let recognised = directory.recognise(&tenant, &offer.parties);
        let assignment = offer.assign_channels(|aor| directory.is_agent(tenant.tenant_id, aor));
        let media_ip = self.media_ip_for(&peer);
        let bind_ip = if self.local.ip().is_unspecified() { self.local.ip() } else { media_ip };

        // One socket per recordable m-line the assignment placed.
        let mut sockets: HashMap<usize, (std::net::UdpSocket, u16)> = HashMap::new();
        let mut ports: Vec<Option<u16>> = vec![None; offer.sdp.media.len()];
        for stream in &assignment.streams {
            match self.ports.bind(bind_ip) {
                Ok(socket) => {
                    let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
                    ports[stream.index] = Some(port);
                    sockets.insert(stream.index, (socket, port));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no RTP port for a call");
                    for (_, port) in sockets.values() {
                        self.ports.release(*port);
                    }
                    return self.refuse(&invite, &peer, 503, "Service Unavailable (no RTP port)", "ports").await;
                }
            }
        }
        let call_id = Uuid::now_v7();
        let session_id = call_id.as_u64_pair().1 & 0x7fff_ffff_ffff_ffff;
        let config = AnswerConfig { address: media_ip, session_id, session_version: 1 };
        let answer = match sdp::answer(&offer.sdp, &config, &ports) {
            Ok(answer) if answer.streams.iter().any(|s| s.accepted) => answer,
            result => {
                if let Err(e) = result {
                    tracing::info!(error = %e, "cannot answer the offer");
                }
                for (_, port) in sockets.values() {
                    self.ports.release(*port);
                }
                return self.refuse(&invite, &peer, 488, "Not Acceptable Here", "offer").await;
            }
        };

        let mut streams = Vec::new();
        let mut stream_lines = Vec::new();
        let mut codecs = Vec::new();
        let mut all_held = true;
        for answered in &answer.streams {
            let Some((socket, port)) = sockets.remove(&answered.index) else { continue };
            if !answered.accepted {
                self.ports.release(port);
                continue;
            }
            let socket = match UdpSocket::from_std(socket) {
                Ok(socket) => {
                    call::stamp_arrivals(&socket);
                    socket
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register an RTP socket");
                    self.ports.release(port);
                    continue;
                }
            };
            let channel = assignment.streams.iter().find(|s| s.index == answered.index).map(|s| s.channel);
            let route = match channel {
                Some(Channel::Left) => Route::Left,
                Some(Channel::Right) => Route::Right,
                _ => Route::Both,
            };
            let mut payload_types = PayloadTypes::empty();
            for codec in &answered.codecs {
                let codec = media_codec(*codec);
                payload_types.bind(codec.static_payload_type(), PayloadKind::Audio(codec));
                codecs.push(codec);
            }
            if let Some(pt) = answered.telephone_event {
                payload_types.bind(pt, PayloadKind::TelephoneEvent { clock_rate: 8000 });
            }
            let offered = &offer.streams[answered.index];
            all_held &= offered.on_hold;
            streams.push(StreamSpec { socket, port, source: source_of(&offer, answered.index), route, payload_types });
            stream_lines.push(answered.index);
        }
        for (_, port) in sockets.into_values() {
            self.ports.release(port);
        }
        if streams.is_empty() {
            return self.refuse(&invite, &peer, 488, "Not Acceptable Here", "offer").await;
        }

        let participants: Vec<Participant> = offer
            .parties
            .iter()
            .filter_map(|p| p.aor.clone().map(|aor| Participant { name: p.display_name.clone(), aor }))
            .collect();
        let record = match recognised.decision {
            RecordingDecision::Record => {
                Some(call::RecordPlan { format: tenant.format, storage_target_id: tenant.storage_target_id, seal_with })
            }
            // Nothing asks for an on-demand recording yet: such calls are logged, not kept.
            RecordingDecision::OnDemand | RecordingDecision::DoNotRecord => None,
        };
        let start = CallStart {
            tenant_id: tenant.tenant_id,
            sip_call_id: invite.call_id().to_owned(),
            direction: recognised.direction,
            participants: participants.clone(),
            extension: recognised.extension.clone(),
            user_id: recognised.user_id,
            site: self.config.site.clone(),
            recorder_node: self.config.node.clone(),
            started_at: chrono::Utc::now(),
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let spec = CallSpec {
            call_id,
            sip_call_id: invite.call_id().to_owned(),
            start,
            streams,
            paused: all_held,
            record,
            output_rate: media::output_rate_for(codecs),
        };
        tokio::spawn(call::run(spec, control_rx, self.context.clone()));
        self.tasks += 1;
        self.metrics.calls.inc();
        tracing::info!(
            %call_id, sip_call_id = invite.call_id(), tenant = %tenant.name, kind = ?offer.kind,
            decision = ?recognised.decision, extension = ?recognised.extension, "call accepted"
        );
        self.respond(&invite, &peer, 100, "Trying", ResponseParts::default()).await;
        let sip_call_id = invite.call_id().to_owned();
        self.dialogs.insert(
            sip_call_id,
            Dialog {
                call_id,
                tenant_id: tenant.tenant_id,
                peer,
                local_tag: random_token(),
                pending_invite: Some(invite.clone()),
                invite,
                confirmed: false,
                ports,
                stream_lines,
                session_id,
                session_version: 1,
                media_ip,
                answer: answer.sdp,
                metadata: offer.metadata,
                participants,
                control,
                local_cseq: 0,
            },
        );
    }

    fn contact(&self, peer: &Peer, ip: IpAddr) -> String {
        let transport = if peer.reliable() { ";transport=tcp" } else { "" };
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        format!("<sip:recall@{host}:{}{transport}>;+sip.srs", self.local.port())
    }

    async fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Ready { call_id, sip_call_id, result } => {
                let Some(dialog) = self.dialogs.get_mut(&sip_call_id).filter(|d| d.call_id == call_id) else { return };
                let Some(invite) = dialog.pending_invite.take() else { return };
                let (peer, media_ip) = (dialog.peer.clone(), dialog.media_ip);
                match result {
                    Ok(()) => {
                        let (tag, answer) = (dialog.local_tag.clone(), dialog.answer.clone());
                        let contact = self.contact(&peer, media_ip);
                        let parts = ResponseParts {
                            to_tag: Some(&tag),
                            headers: vec![
                                ("Contact", contact),
                                ("Allow", ALLOW.to_owned()),
                                ("Supported", "siprec".to_owned()),
                                ("Server", SERVER.to_owned()),
                            ],
                            body: Some(("application/sdp", answer.as_bytes())),
                        };
                        self.respond(&invite, &peer, 200, "OK", parts).await;
                    }
                    Err(e) => {
                        self.dialogs.remove(&sip_call_id);
                        tracing::error!(%call_id, error = %e, "the call's start could not be journaled; refusing it");
                        self.refuse(&invite, &peer, 503, "Service Unavailable (journal)", "journal").await;
                    }
                }
            }
            Notice::Inactive { call_id, sip_call_id } => {
                if self.dialogs.get(&sip_call_id).is_some_and(|d| d.call_id == call_id) {
                    tracing::info!(%call_id, "no RTP for the inactivity timeout; ending the call");
                    if let Some(dialog) = self.dialogs.remove(&sip_call_id) {
                        self.send_bye(&sip_call_id, dialog).await;
                    }
                }
            }
            Notice::Finished { call_id, sip_call_id, ports } => {
                self.tasks = self.tasks.saturating_sub(1);
                for port in ports {
                    self.ports.release(port);
                }
                if self.dialogs.get(&sip_call_id).is_some_and(|d| d.call_id == call_id) {
                    self.dialogs.remove(&sip_call_id);
                }
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let mut events = Vec::new();
        self.transactions.poll(now, &mut events);
        for event in events {
            match event {
                Event::Send { peer, bytes } => self.send(&peer, &bytes).await,
                Event::AckTimeout { call_id } => {
                    let unconfirmed = self.dialogs.get(&call_id).is_some_and(|d| !d.confirmed);
                    if unconfirmed {
                        tracing::warn!(sip_call_id = call_id, "the 200 OK was never acknowledged; ending the call");
                        if let Some(dialog) = self.dialogs.remove(&call_id) {
                            let _ = dialog.control.send(Control::End { reason: CallEndReason::Cancel, at: now });
                            self.send_bye(&call_id, dialog).await;
                        }
                    }
                }
            }
        }
        let mut resend = Vec::new();
        self.byes.retain(|_, bye| {
            if bye.give_up <= now {
                return false;
            }
            if bye.next <= now {
                resend.push((bye.peer.clone(), bye.bytes.clone()));
                bye.interval = (bye.interval * 2).min(crate::transaction::T2);
                bye.next = now + bye.interval;
            }
            true
        });
        for (peer, bytes) in resend {
            self.send(&peer, &bytes).await;
        }
    }

    async fn on_bye(&mut self, bye: Message, peer: Peer) {
        match self.dialogs.remove(bye.call_id()) {
            Some(dialog) => {
                let _ = dialog.control.send(Control::End { reason: CallEndReason::Bye, at: Instant::now() });
                self.respond(&bye, &peer, 200, "OK", ResponseParts::default()).await;
            }
            None => self.respond(&bye, &peer, 481, "Call/Transaction Does Not Exist", ResponseParts::default()).await,
        }
    }

    async fn on_cancel(&mut self, cancel: Message, peer: Peer) {
        let sip_call_id = cancel.call_id().to_owned();
        if !self.dialogs.contains_key(&sip_call_id) {
            return self
                .respond(&cancel, &peer, 481, "Call/Transaction Does Not Exist", ResponseParts::default())
                .await;
        }
        self.respond(&cancel, &peer, 200, "OK", ResponseParts::default()).await;
        let Some(dialog) = self.dialogs.get_mut(&sip_call_id) else { return };
        if let Some(invite) = dialog.pending_invite.take() {
            let tag = dialog.local_tag.clone();
            if let Some(dialog) = self.dialogs.remove(&sip_call_id) {
                let _ = dialog.control.send(Control::End { reason: CallEndReason::Cancel, at: Instant::now() });
            }
            let parts = ResponseParts { to_tag: Some(&tag), ..ResponseParts::default() };
            self.respond(&invite, &peer, 487, "Request Terminated", parts).await;
        }
        // Answered already: the CANCEL has no effect (RFC 3261 §9.2); the caller ends the call with a BYE.
    }

    /// A re-INVITE or UPDATE in a dialog: a pause (`inactive`, `c=0.0.0.0`), a resume, moved media or
    /// new metadata. The answer keeps every stream on its port.
    async fn on_reoffer(&mut self, request: Message, peer: Peer) {
        let sip_call_id = request.call_id().to_owned();
        let Some(dialog) = self.dialogs.get(&sip_call_id) else {
            return self
                .respond(&request, &peer, 481, "Call/Transaction Does Not Exist", ResponseParts::default())
                .await;
        };
        if dialog.pending_invite.is_some() {
            let parts = ResponseParts { headers: vec![("Retry-After", "1".to_owned())], ..ResponseParts::default() };
            return self.respond(&request, &peer, 491, "Request Pending", parts).await;
        }
        let offer = match siprec::recording_offer(&request) {
            Ok(offer) => Some(offer),
            // A re-INVITE without a body asks for our offer; the current description is it.
            Err(OfferError::NoSdp) => None,
            Err(e) => {
                tracing::info!(%sip_call_id, error = %e, "unusable offer in the dialog");
                let status = if matches!(e, OfferError::UnsupportedBody(_)) { 415 } else { 488 };
                return self.respond(&request, &peer, status, "Not Acceptable Here", ResponseParts::default()).await;
            }
        };
        let directory = self.directory.borrow().clone();
        let now = Instant::now();
        let Some(dialog) = self.dialogs.get_mut(&sip_call_id) else { return };
        if let Some(offer) = offer {
            let mut ports = dialog.ports.clone();
            ports.resize(offer.sdp.media.len(), None);
            let config = AnswerConfig {
                address: dialog.media_ip,
                session_id: dialog.session_id,
                session_version: dialog.session_version + 1,
            };
            match sdp::answer(&offer.sdp, &config, &ports) {
                Ok(answer) => {
                    dialog.session_version += 1;
                    dialog.answer = answer.sdp;
                }
                Err(e) => {
                    tracing::info!(%sip_call_id, error = %e, "cannot answer an offer in the dialog");
                    return self.respond(&request, &peer, 488, "Not Acceptable Here", ResponseParts::default()).await;
                }
            }
            let sources = dialog.stream_lines.iter().map(|index| source_of(&offer, *index)).collect();
            let paused = dialog.stream_lines.iter().all(|index| offer.streams.get(*index).is_none_or(|s| s.on_hold));
            let _ = dialog.control.send(Control::Offer { sources, paused, at: now });
            if let Some(update) = &offer.metadata {
                let merged = match &dialog.metadata {
                    Some(previous) => siprec_metadata::merge_update(previous, update),
                    None => update.clone(),
                };
                let parties: Vec<siprec::CallParty> = merged
                    .participants
                    .iter()
                    .map(|p| siprec::CallParty {
                        participant_id: Some(p.id.clone()),
                        aor: p.aors().next().map(str::to_owned),
                        display_name: p.display_name().map(str::to_owned),
                    })
                    .collect();
                let participants: Vec<Participant> = parties
                    .iter()
                    .filter_map(|p| p.aor.clone().map(|aor| Participant { name: p.display_name.clone(), aor }))
                    .collect();
                if participants != dialog.participants {
                    if let Some(tenant) = directory.tenants().iter().find(|t| t.tenant_id == dialog.tenant_id) {
                        let recognised = directory.recognise(tenant, &parties);
                        let _ = dialog.control.send(Control::Participants {
                            participants: participants.clone(),
                            extension: recognised.extension,
                            user_id: recognised.user_id,
                        });
                    }
                    dialog.participants = participants;
                }
                dialog.metadata = Some(merged);
            }
        }
        let Some(dialog) = self.dialogs.get(&sip_call_id) else { return };
        let (tag, answer) = (dialog.local_tag.clone(), dialog.answer.clone());
        let contact = self.contact(&peer, dialog.media_ip);
        let parts = ResponseParts {
            to_tag: Some(&tag),
            headers: vec![("Contact", contact), ("Allow", ALLOW.to_owned())],
            body: Some(("application/sdp", answer.as_bytes())),
        };
        self.respond(&request, &peer, 200, "OK", parts).await;
    }

    /// Ends a dialog from our side (RFC 3261 §15.1.1): a BYE to the peer, retransmitted on UDP.
    async fn send_bye(&mut self, sip_call_id: &str, mut dialog: Dialog) {
        dialog.local_cseq += 1;
        let invite = &dialog.invite;
        let branch = format!("z9hG4bK{}", random_token());
        let target = invite.contact().map_or_else(|| invite.from().uri.raw.clone(), |c| c.uri.raw.clone());
        let transport = if dialog.peer.reliable() { "TCP" } else { "UDP" };
        let host = match dialog.media_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let mut bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/{transport} {host}:{};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            self.local.port()
        );
        for route in invite.headers("Record-Route") {
            bye.push_str(&format!("Route: {route}\r\n"));
        }
        bye.push_str(&format!(
            "From: {};tag={}\r\nTo: {}\r\nCall-ID: {sip_call_id}\r\nCSeq: {} BYE\r\nUser-Agent: {SERVER}\r\nContent-Length: 0\r\n\r\n",
            invite.header("To").unwrap_or_default(),
            dialog.local_tag,
            invite.header("From").unwrap_or_default(),
            dialog.local_cseq,
        ));
        let bytes = bye.into_bytes();
        self.send(&dialog.peer, &bytes).await;
        if !dialog.peer.reliable() {
            let now = Instant::now();
            self.byes.insert(
                branch,
                PendingBye {
                    peer: dialog.peer.clone(),
                    bytes,
                    next: now + crate::transaction::T1,
                    interval: crate::transaction::T1,
                    give_up: now + crate::transaction::TIMEOUT,
                },
            );
        }
    }
}

/// Where a stream's RTP comes from: the offer's connection address and the m-line's port; `None` while
/// on hold (`c=0.0.0.0`) or with no port.
fn source_of(offer: &RecordingOffer, index: usize) -> Option<SocketAddr> {
    let stream = offer.streams.get(index)?;
    let connection = offer.sdp.connection_of(index)?;
    if stream.port == 0 || connection.is_hold() {
        return None;
    }
    let address: IpAddr = connection.address.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(normalise(SocketAddr::new(address, stream.port)))
}

fn media_codec(codec: sdp::Codec) -> media::Codec {
    match codec {
        sdp::Codec::Pcmu => media::Codec::Pcmu,
        sdp::Codec::Pcma => media::Codec::Pcma,
        sdp::Codec::G722 => media::Codec::G722,
    }
}
