//! One call's task: its RTP sockets, its media core, its encoder and its spool file. It journals the start
//! before the call is answered, writes the recording as the call goes (handing the blocking file work to
//! tokio's blocking pool), and at the end journals the end, finishes the file and hands it to the uploader.
//! A tenant's file encryption is applied here, as the encoder's bytes come out: an encrypted recording's
//! plain audio never leaves this task, only sealed chunks go to the spool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use recall_crypto::{FileSealer, PublicKey};
use recall_domain::call::{CallCommand, CallEndReason, CallStart, Participant, RecordingEncryption};
use recall_domain::recording_policy::AudioFormat;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::metrics::RecorderMetrics;
use super::normalise;
use crate::encode::AudioEncoder;
use crate::media::{
    CallMedia, CallMediaConfig, Drained, JitterConfig, MediaError, PayloadTypes, Pushed, Route, StreamId,
};
use crate::outbox::Outbox;
use crate::spool::{RecordingMeta, Spool, SpoolWriter};
use crate::upload::UploadQueue;

/// How often a call's sockets are read, the media core polled and final frames encoded. A call task
/// wakes on this tick, not on every datagram: with a thousand calls that is 50,000 wake-ups a second
/// instead of 100,000, and the kernel holds a tick's packets (two or three per stream) meanwhile. The
/// arrival times the jitter buffers see are the read times, at most a tick late: well inside their 300 ms.
const TICK: Duration = Duration::from_millis(20);
/// Every how many ticks the media core plays what is due and the final frames are encoded (100 ms: a
/// fifth of the calls into the jitter buffers, the timeline and LAME that a poll per tick would make).
const PLAY_EVERY: u32 = 5;
/// How often encoded bytes go to the spool file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Datagrams read from one socket in one go (a stalled task catching up reads the rest at the next tick).
const RECV_BUDGET: usize = 256;

pub(super) struct StreamSpec {
    pub socket: UdpSocket,
    pub port: u16,
    /// Where its RTP must come from (the offer's address and port); `None`: nothing is accepted.
    pub source: Option<SocketAddr>,
    pub route: Route,
    pub payload_types: PayloadTypes,
}

pub(super) struct CallSpec {
    pub call_id: Uuid,
    pub sip_call_id: String,
    pub start: CallStart,
    pub streams: Vec<StreamSpec>,
    /// Held at the start (an `inactive` offer): the call starts paused.
    pub paused: bool,
    /// The file to keep; `None` when the recording rule keeps nothing.
    pub record: Option<RecordPlan>,
    pub output_rate: u32,
}

/// What file a recorded call keeps, as its tenant's profile said at the INVITE.
pub(super) struct RecordPlan {
    pub format: AudioFormat,
    pub storage_target_id: Option<Uuid>,
    /// The tenant key to seal the file with; `None`: plain audio.
    pub seal_with: Option<(Uuid, Arc<PublicKey>)>,
}

#[derive(Debug)]
pub(super) enum Control {
    /// A new offer in the dialog: where each stream now comes from, and whether the call is on hold.
    Offer {
        sources: Vec<Option<SocketAddr>>,
        paused: bool,
        at: Instant,
    },
    Participants {
        participants: Vec<Participant>,
        extension: Option<String>,
        user_id: Option<Uuid>,
    },
    End {
        reason: CallEndReason,
        at: Instant,
    },
}

#[derive(Debug)]
pub(super) enum Notice {
    /// The start is journaled (answer the INVITE) or could not be (refuse it).
    Ready { call_id: Uuid, sip_call_id: String, result: Result<(), String> },
    /// No RTP for the configured time: the call ended; the dialog should be ended with a BYE.
    Inactive { call_id: Uuid, sip_call_id: String },
    /// The task is done; its ports are free.
    Finished { call_id: Uuid, sip_call_id: String, ports: Vec<u16> },
}

#[derive(Clone)]
pub(super) struct CallContext {
    pub outbox: Outbox,
    pub spool: Spool,
    pub uploads: UploadQueue,
    pub metrics: RecorderMetrics,
    pub rtp_timeout: Duration,
    pub sync_every: Duration,
    pub notices: mpsc::UnboundedSender<Notice>,
}

/// A recorder has no listener waiting: its jitter buffers hold 300 ms (not a phone's 60 ms), so a packet
/// the task reads late, because the machine was busy with other calls for a moment, is still placed by its
/// timestamp and not dropped as late. The recording is written that much later; nothing else changes.
fn media_config(output_rate: u32) -> CallMediaConfig {
    let jitter = JitterConfig {
        target_delay: Duration::from_millis(300),
        max_delay: Duration::from_secs(2),
        ..JitterConfig::default()
    };
    let hold_back = jitter.target_delay + Duration::from_millis(100);
    CallMediaConfig { output_rate, jitter, hold_back, ..CallMediaConfig::default() }
}

/// The object's path within the storage target: `<tenant>/<yyyy>/<mm>/<dd>/<call id>.<ext>`.
pub(super) fn object_path(tenant_id: Uuid, call_id: Uuid, started_at: DateTime<Utc>, format: AudioFormat) -> String {
    format!("{tenant_id}/{}/{call_id}.{}", started_at.format("%Y/%m/%d"), extension(format))
}

/// What is appended to an encrypted recording's object path and spool file name, so that a file browsed in
/// a bucket or the spool is not taken for playable audio.
pub(super) const ENCRYPTED_SUFFIX: &str = ".enc";

pub(super) fn extension(format: AudioFormat) -> &'static str {
    format.extension()
}

/// What a write in the blocking pool gives back: the writer, the buffer, and how it went.
type Written = (SpoolWriter, Vec<u8>, Result<(), crate::spool::SpoolError>);

struct Recording {
    /// The spool file, while no write is under way.
    writer: Option<SpoolWriter>,
    /// The write under way (in tokio's blocking pool): the call task never waits for the disk.
    in_flight: Option<tokio::task::JoinHandle<Written>>,
    encoder: AudioEncoder,
    /// Seals the encoder's bytes when the tenant encrypts its recordings: `pending` then holds only sealed
    /// chunks. The data key lives inside it and dies with it.
    sealer: Option<FileSealer>,
    /// Bytes for the spool file, not handed to the blocking pool yet.
    pending: Vec<u8>,
    last_flush: Instant,
    meta: RecordingMeta,
}

impl Recording {
    /// Takes the encoder's bytes: sealed into `pending` for an encrypted file, as they are otherwise.
    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.sealer {
            Some(sealer) => sealer.push(bytes, &mut self.pending).map_err(|e| e.to_string()),
            None => {
                self.pending.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

struct Clock {
    start: Instant,
    started_at: DateTime<Utc>,
}

impl Clock {
    fn wall(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.start);
        self.started_at + chrono::Duration::from_std(since).unwrap_or_default()
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("a blocking task failed: {e}"))
}

/// Journals a command for the call; a failure is logged (the journal is on the local disk: if it cannot
/// be written, nothing else about the call can be kept either).
async fn journal(ctx: &CallContext, call_id: Uuid, tenant_id: Uuid, command: CallCommand, closes: bool) -> bool {
    let outbox = ctx.outbox.clone();
    match blocking(move || outbox.record(call_id, tenant_id, command, closes)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(%call_id, error = %e, "cannot journal a call event");
            false
        }
        Err(e) => {
            tracing::error!(%call_id, error = %e, "cannot journal a call event");
            false
        }
    }
}

pub(super) async fn run(spec: CallSpec, mut control: mpsc::UnboundedReceiver<Control>, ctx: CallContext) {
    let CallSpec { call_id, sip_call_id, mut start, streams, paused, record, output_rate } = spec;
    let tenant_id = start.tenant_id;
    let ports: Vec<u16> = streams.iter().map(|s| s.port).collect();
    let clock = Clock { start: Instant::now(), started_at: Utc::now() };
    start.started_at = clock.started_at;

    let command = CallCommand::RecordCallStart { call_id, start };
    if !journal(&ctx, call_id, tenant_id, command, false).await {
        let _ = ctx.notices.send(Notice::Ready {
            call_id,
            sip_call_id: sip_call_id.clone(),
            result: Err("journal".into()),
        });
        let _ = ctx.notices.send(Notice::Finished { call_id, sip_call_id, ports });
        return;
    }

    let mut recording = match record {
        Some(plan) => match open_recording(&ctx, call_id, tenant_id, &clock, plan, output_rate).await {
            Ok(recording) => Some(recording),
            Err(e) => {
                ctx.metrics.recording_failures.inc();
                tracing::error!(%call_id, error = %e, "the recording cannot be started; the call is taken without it");
                let failure = CallCommand::RecordFailure { lost: "the whole recording".into(), reason: e };
                journal(&ctx, call_id, tenant_id, failure, false).await;
                None
            }
        },
        None => None,
    };
    let _ = ctx.notices.send(Notice::Ready { call_id, sip_call_id: sip_call_id.clone(), result: Ok(()) });
    ctx.metrics.calls_active.inc();

    let mut media = CallMedia::new(clock.start, media_config(output_rate));
    let mut ids: Vec<StreamId> = Vec::with_capacity(streams.len());
    let mut sources: Vec<Option<SocketAddr>> = Vec::with_capacity(streams.len());
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(streams.len());
    for stream in streams {
        ids.push(media.add_stream(stream.route, stream.payload_types));
        sources.push(stream.source.map(normalise));
        sockets.push(stream.socket);
    }
    let mut paused = paused;
    if paused {
        media.pause(None, clock.start);
        journal(&ctx, call_id, tenant_id, CallCommand::PauseRecording { at: clock.started_at }, false).await;
    }

    let mut drained = Drained::default();
    let mut buf = vec![0u8; 2048];
    let mut last_rtp = clock.start;
    let mut ticks = 0u32;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (reason, end) = loop {
        enum Wake {
            Control(Option<Control>),
            Tick,
        }
        let wake = tokio::select! {
            biased;
            message = control.recv() => Wake::Control(message),
            _ = tick.tick() => Wake::Tick,
        };
        // What arrived before a signal counts before it (a pause, the end).
        let now = Instant::now();
        if read_sockets(&sockets, &mut buf, &mut media, &ctx.metrics, &ids, &sources, now) {
            last_rtp = now;
        }
        match wake {
            Wake::Control(None) => break (CallEndReason::RecorderShutdown, now),
            Wake::Control(Some(Control::End { reason, at })) => break (reason, at),
            Wake::Control(Some(Control::Offer { sources: offered, paused: hold, at })) => {
                for (source, offered) in sources.iter_mut().zip(offered) {
                    *source = offered.map(normalise);
                }
                if hold && !paused {
                    media.pause(None, at);
                    paused = true;
                    journal(&ctx, call_id, tenant_id, CallCommand::PauseRecording { at: clock.wall(at) }, false).await;
                } else if !hold && paused {
                    media.resume(None, at);
                    paused = false;
                    last_rtp = at;
                    journal(&ctx, call_id, tenant_id, CallCommand::ResumeRecording { at: clock.wall(at) }, false).await;
                }
            }
            Wake::Control(Some(Control::Participants { participants, extension, user_id })) => {
                let command = CallCommand::IdentifyParticipants { participants, extension, user_id };
                journal(&ctx, call_id, tenant_id, command, false).await;
            }
            Wake::Tick => {
                ticks = ticks.wrapping_add(1);
                if !ticks.is_multiple_of(PLAY_EVERY) {
                    continue;
                }
                if let Err(e) = media.poll(now, &mut drained) {
                    tracing::warn!(%call_id, error = %e, "media");
                }
                take_drained(&ctx, call_id, tenant_id, &clock, &mut drained, recording.as_mut()).await;
                if let Some(rec) = recording.as_mut() {
                    if rec.last_flush.elapsed() >= FLUSH_EVERY {
                        if let Err(e) = flush(rec).await {
                            fail_recording(&ctx, call_id, tenant_id, &mut recording, e).await;
                        }
                    }
                }
                if !paused && now.saturating_duration_since(last_rtp) >= ctx.rtp_timeout {
                    let _ = ctx.notices.send(Notice::Inactive { call_id, sip_call_id: sip_call_id.clone() });
                    break (CallEndReason::RtpTimeout, now);
                }
            }
        }
    };
    drop(sockets);

    if let Err(e) = media.finish(end, &mut drained) {
        tracing::warn!(%call_id, error = %e, "media at the end of the call");
    }
    take_drained(&ctx, call_id, tenant_id, &clock, &mut drained, recording.as_mut()).await;
    let ended = CallCommand::EndCall { reason, at: clock.wall(end) };
    journal(&ctx, call_id, tenant_id, ended, recording.is_none()).await;
    if let Some(rec) = recording {
        let duration_ms = u64::try_from(end.saturating_duration_since(clock.start).as_millis()).unwrap_or(u64::MAX);
        match finish_recording(rec, duration_ms).await {
            Ok(spooled) => {
                ctx.metrics.recordings_spooled.inc();
                ctx.uploads.push(spooled);
            }
            Err(e) => {
                ctx.metrics.recording_failures.inc();
                tracing::error!(%call_id, error = %e, "the recording could not be finished");
                let failure = CallCommand::RecordFailure { lost: "the whole recording".into(), reason: e };
                journal(&ctx, call_id, tenant_id, failure, true).await;
            }
        }
    }
    ctx.metrics.calls_active.dec();
    tracing::info!(%call_id, sip_call_id, ?reason, "call ended");
    let _ = ctx.notices.send(Notice::Finished { call_id, sip_call_id, ports });
}

/// Reads what each socket holds (up to [`RECV_BUDGET`] datagrams each) into the media core, each datagram
/// with the time the kernel received it (`SO_TIMESTAMPNS`), so reading on a tick does not move packets in
/// time; true when something counted as the call's RTP.
fn read_sockets(
    sockets: &[UdpSocket],
    buf: &mut [u8],
    media: &mut CallMedia,
    metrics: &RecorderMetrics,
    ids: &[StreamId],
    sources: &[Option<SocketAddr>],
    now: Instant,
) -> bool {
    let wall = SystemTime::now();
    let mut heard = false;
    for (index, socket) in sockets.iter().enumerate() {
        for _ in 0..RECV_BUDGET {
            match recv_stamped(socket, buf, now, wall) {
                Ok((len, from, arrived)) => {
                    heard |= accept(media, metrics, ids[index], sources[index], from, &buf[..len], arrived);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on some systems; the socket itself stays usable.
                    tracing::debug!(error = %e, "an RTP socket reported an error");
                    break;
                }
            }
        }
    }
    heard
}

/// Asks the kernel to stamp each datagram with its arrival time.
pub(super) fn stamp_arrivals(socket: &UdpSocket) {
    if let Err(e) = nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true) {
        tracing::warn!(error = %e, "no arrival timestamps on an RTP socket; read times are used");
    }
}

/// One datagram, its sender, and when it arrived: the kernel's receive time turned into an `Instant` (by
/// how long before `wall` it was), or `now` when there is none or the system clock stepped meanwhile.
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
    now: Instant,
    wall: SystemTime,
) -> std::io::Result<(usize, SocketAddr, Instant)> {
    use nix::sys::socket::{
        recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    socket.try_io(tokio::io::Interest::READABLE, || {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let message = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        let from = message.address.and_then(|address| match address.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => {
                address.as_sockaddr_in().map(|a: &SockaddrIn| SocketAddr::V4((*a).into()))
            }
            Some(nix::sys::socket::AddressFamily::Inet6) => {
                address.as_sockaddr_in6().map(|a: &SockaddrIn6| SocketAddr::V6((*a).into()))
            }
            _ => None,
        });
        let from = from.ok_or_else(|| std::io::Error::other("a datagram without a sender address"))?;
        let mut arrived = now;
        for control in message.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(stamp) = control {
                let (secs, nanos) =
                    (u64::try_from(stamp.tv_sec()).unwrap_or(0), u32::try_from(stamp.tv_nsec()).unwrap_or(0));
                let received = UNIX_EPOCH + Duration::new(secs, nanos);
                if let Ok(ago) = wall.duration_since(received) {
                    if ago < Duration::from_secs(5) {
                        arrived = now.checked_sub(ago).unwrap_or(now);
                    }
                }
            }
        }
        Ok((message.bytes, from, arrived))
    })
}

/// Hands one datagram to the media core if it came from where the offer said; true when it counted as
/// RTP of the call (for the inactivity timeout).
fn accept(
    media: &mut CallMedia,
    metrics: &RecorderMetrics,
    stream: StreamId,
    source: Option<SocketAddr>,
    from: SocketAddr,
    datagram: &[u8],
    now: Instant,
) -> bool {
    metrics.rtp_packets.inc();
    if source != Some(normalise(from)) {
        metrics.rtp_dropped.with_label_values(&["foreign_source"]).inc();
        return false;
    }
    match media.receive(stream, datagram, now) {
        Ok(Pushed::Buffered | Pushed::NewSource | Pushed::Held) => true,
        Ok(Pushed::Late) => {
            metrics.rtp_dropped.with_label_values(&["late"]).inc();
            true
        }
        Ok(Pushed::Duplicate) => {
            metrics.rtp_dropped.with_label_values(&["duplicate"]).inc();
            true
        }
        Err(MediaError::Rtp(_)) => {
            metrics.rtp_dropped.with_label_values(&["malformed"]).inc();
            false
        }
        Err(_) => {
            metrics.rtp_dropped.with_label_values(&["refused"]).inc();
            true
        }
    }
}

/// Opens the encoder and the spool file (with its draft manifest). An encrypted file's clear header (the
/// wrapped data key) is written at once, so the file on disk starts as a sealed stream from its first byte.
async fn open_recording(
    ctx: &CallContext,
    call_id: Uuid,
    tenant_id: Uuid,
    clock: &Clock,
    plan: RecordPlan,
    output_rate: u32,
) -> Result<Recording, String> {
    let RecordPlan { format, storage_target_id, seal_with } = plan;
    let (encoder, start) = AudioEncoder::new(format, output_rate).map_err(|e| e.to_string())?;
    let mut object_path = object_path(tenant_id, call_id, clock.started_at, format);
    let mut file_extension = extension(format).to_owned();
    let mut pending = Vec::new();
    let (sealer, header, encryption) = match seal_with {
        Some((key_id, key)) => {
            let (mut sealer, header) =
                FileSealer::new(&key, key_id, call_id).map_err(|e| format!("cannot start the encrypted file: {e}"))?;
            sealer.push(&start, &mut pending).map_err(|e| format!("cannot seal the file's start: {e}"))?;
            object_path.push_str(ENCRYPTED_SUFFIX);
            file_extension.push_str(ENCRYPTED_SUFFIX);
            let encryption = RecordingEncryption {
                key_id,
                format_version: recall_crypto::FORMAT_VERSION,
                unterminated_chunks: None,
                file_key_id: None,
            };
            (Some(sealer), header, Some(encryption))
        }
        None => {
            pending = start;
            (None, Vec::new(), None)
        }
    };
    let meta = RecordingMeta {
        tenant_id,
        storage_target_id,
        object_path,
        format,
        duration_ms: 0,
        sample_rate: Some(output_rate),
        encryption,
    };
    let spool = ctx.spool.clone();
    let (draft, sync_every) = (meta.clone(), ctx.sync_every);
    let writer = blocking(move || {
        let mut writer = spool.create_with(call_id, &file_extension, sync_every, Some(&draft))?;
        if !header.is_empty() {
            // Synced at once: the wrapped data key is what a restart needs to keep any of the file.
            writer.write(&header)?;
            writer.sync()?;
        }
        Ok::<_, crate::spool::SpoolError>(writer)
    })
    .await?
    .map_err(|e| e.to_string())?;
    Ok(Recording { writer: Some(writer), in_flight: None, encoder, sealer, pending, last_flush: Instant::now(), meta })
}

/// Encodes the final frames and journals the digits that came with them.
async fn take_drained(
    ctx: &CallContext,
    call_id: Uuid,
    tenant_id: Uuid,
    clock: &Clock,
    drained: &mut Drained,
    recording: Option<&mut Recording>,
) {
    if let Some(rec) = recording {
        if !drained.samples.is_empty() {
            match rec.encoder.encode(&drained.samples).map_err(|e| e.to_string()).and_then(|b| rec.append(&b)) {
                Ok(()) => {}
                Err(e) => tracing::error!(%call_id, error = %e, "encoding failed; these frames are lost"),
            }
        }
    }
    for dtmf in std::mem::take(&mut drained.dtmf) {
        let Some(digit) = dtmf.digit else { continue };
        let at = clock.started_at + chrono::Duration::from_std(dtmf.offset).unwrap_or_default();
        let duration_ms = u32::try_from(dtmf.duration.as_millis()).unwrap_or(u32::MAX);
        journal(ctx, call_id, tenant_id, CallCommand::RecordDtmf { digit, at, duration_ms }, false).await;
    }
    drained.clear();
}

/// Hands the pending bytes to tokio's blocking pool to be written to the spool file (the write may sync),
/// without waiting for it: while a write is still under way (a slow disk), the bytes wait for the next
/// flush and the call task goes on reading its RTP.
async fn flush(rec: &mut Recording) -> Result<(), String> {
    rec.last_flush = Instant::now();
    if rec.in_flight.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
        settle(rec).await?;
    }
    if rec.in_flight.is_some() || rec.pending.is_empty() {
        return Ok(());
    }
    let Some(mut writer) = rec.writer.take() else { return Err("the spool file is gone".into()) };
    let bytes = std::mem::take(&mut rec.pending);
    rec.in_flight = Some(tokio::task::spawn_blocking(move || {
        let result = writer.write(&bytes);
        (writer, bytes, result)
    }));
    Ok(())
}

/// Waits for the write under way, if any, and takes the writer back.
async fn settle(rec: &mut Recording) -> Result<(), String> {
    let Some(write) = rec.in_flight.take() else { return Ok(()) };
    let (writer, _, result) = write.await.map_err(|e| format!("a blocking task failed: {e}"))?;
    rec.writer = Some(writer);
    result.map_err(|e| e.to_string())
}

async fn fail_recording(
    ctx: &CallContext,
    call_id: Uuid,
    tenant_id: Uuid,
    recording: &mut Option<Recording>,
    reason: String,
) {
    ctx.metrics.recording_failures.inc();
    tracing::error!(%call_id, error = %reason, "the spool file cannot be written; the rest of the recording is lost");
    let failure = CallCommand::RecordFailure { lost: "the recording from this point on".into(), reason };
    journal(ctx, call_id, tenant_id, failure, false).await;
    // What was written so far stays in the spool's active directory; a restart finishes and uploads it.
    *recording = None;
}

/// Writes the encoder's last bytes and what belongs over the file's start (the WAV header with its real
/// length, the MP3's LAME Info frame): written over the start of a plain file, sealed into the final chunk
/// of an encrypted one (a sealed chunk is never written twice).
async fn finish_recording(mut rec: Recording, duration_ms: u64) -> Result<crate::spool::SpooledRecording, String> {
    settle(&mut rec).await?;
    let finished = rec.encoder.finish().map_err(|e| e.to_string())?;
    let patch = match rec.sealer.take() {
        Some(mut sealer) => {
            let sealed = |e: recall_crypto::CryptoError| format!("cannot seal the end of the file: {e}");
            sealer.push(&finished.tail, &mut rec.pending).map_err(sealed)?;
            sealer.finish(finished.header.as_deref().unwrap_or_default(), &mut rec.pending).map_err(sealed)?;
            None
        }
        None => {
            rec.pending.extend_from_slice(&finished.tail);
            finished.header
        }
    };
    let Some(mut writer) = rec.writer.take() else { return Err("the spool file is gone".into()) };
    let mut meta = rec.meta;
    meta.duration_ms = duration_ms;
    let pending = rec.pending;
    blocking(move || {
        writer.write(&pending)?;
        if let Some(patch) = patch {
            writer.patch_start(&patch)?;
        }
        writer.finish(meta)
    })
    .await?
    .map_err(|e| e.to_string())
}
