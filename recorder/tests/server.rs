//! The recording server end to end in one process: a SIPREC client of the test's own (UDP SIP, real RTP
//! with a different tone on each stream) against the real driver, the real event log and a local storage
//! target. It checks what the recorder answers (200 with one port per stream, 403 to a stranger, 503 over
//! capacity, 481 outside a dialog), what it records (the stereo file, each tone on its channel, silence
//! while paused) and what it tells the log (start, pause, resume, end, stored file), and that RTP from a
//! foreign port is dropped and a silent call ends after the inactivity timeout with a BYE. For a tenant that
//! encrypts its recordings: the stored file is sealed and opens with the tenant's private key to the same
//! audio, the spool never holds plain audio, a file a crash left is stored up to its last sealed chunk with
//! that count in the log, and without a usable key the call is refused rather than recorded in plain.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fast, TENANT};
use futures::future::BoxFuture;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use recall_commands::testing::running_log;
use recall_commands::{CommandError, CommandService};
use recall_crypto::{decrypt_in_memory, PrivateKey, Termination};
use recall_domain::call::{Call, CallCommand};
use recall_domain::recording_policy::{AudioFormat, DefaultRecordingRule};
use recall_domain::tenant::RecordingClients;
use recall_domain::CommandMeta;
use recall_recorder::directory::{Directory, Encryption, TenantProfile};
use recall_recorder::outbox::{CallLog, DeliveryError};
use recall_recorder::server::{Recorder, RecorderConfig, RecorderMetrics, StorageResolver};
use recall_recorder::sip::{self, Message, Transport};
use serde_json::Value;
use sqlx::{PgPool, Row};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Log(CommandService<Call>);

impl CallLog for Log {
    fn deliver<'a>(
        &'a self,
        call_id: Uuid,
        tenant_id: Uuid,
        command: &'a CallCommand,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let meta = CommandMeta::system("recorder:test").in_tenant(tenant_id);
            match self.0.execute(&call_id.to_string(), command.clone(), meta).await {
                Ok(_) => Ok(()),
                Err(e @ (CommandError::Refused(_) | CommandError::Taken(_))) => {
                    Err(DeliveryError::Refused(e.to_string()))
                }
                Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
            }
        })
    }
}

struct Local(std::path::PathBuf);

impl StorageResolver for Local {
    fn store_for<'a>(&'a self, _: Uuid, _: Option<Uuid>) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>> {
        Box::pin(async move {
            Ok(Arc::new(LocalFileSystem::new_with_prefix(&self.0).map_err(|e| e.to_string())?) as Arc<dyn ObjectStore>)
        })
    }
}

struct Running {
    sip: SocketAddr,
    target: tempfile::TempDir,
    data: tempfile::TempDir,
    metrics: RecorderMetrics,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn tenant(networks: &[&str], format: AudioFormat) -> TenantProfile {
    TenantProfile {
        tenant_id: TENANT,
        name: "test".into(),
        active: true,
        clients: RecordingClients {
            networks: networks.iter().map(|n| n.parse().expect("network")).collect(),
            sip_domains: Vec::new(),
        },
        rule: DefaultRecordingRule::default(),
        format,
        storage_target_id: None,
        encryption: Encryption::Off,
    }
}

async fn start(pool: PgPool, trusted: &[&str], max_calls: usize, rtp_timeout: Duration) -> Running {
    start_in(pool, tempfile::tempdir().expect("data dir"), trusted, max_calls, rtp_timeout).await
}

async fn start_in(
    pool: PgPool,
    data: tempfile::TempDir,
    trusted: &[&str],
    max_calls: usize,
    rtp_timeout: Duration,
) -> Running {
    start_for(pool, data, tenant(trusted, AudioFormat::WavStereo), max_calls, rtp_timeout).await
}

async fn start_for(
    pool: PgPool,
    data: tempfile::TempDir,
    profile: TenantProfile,
    max_calls: usize,
    rtp_timeout: Duration,
) -> Running {
    let (log, _log_shutdown) = running_log(pool).await;
    let target = tempfile::tempdir().expect("target dir");
    let metrics = RecorderMetrics::unregistered().expect("metrics");
    // Ports from a block the system picked as free (even, so the pool's first port is the block's).
    let base = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        let port = probe.local_addr().expect("addr").port();
        (port - port % 2).min(60_000)
    };
    let config = RecorderConfig {
        sip: "127.0.0.1:0".parse().expect("addr"),
        rtp_ports: (base, base + 200),
        media_address: None,
        max_calls,
        rtp_timeout,
        site: "test".into(),
        node: "rec-1".into(),
        spool_dir: data.path().join("spool"),
        outbox_dir: data.path().join("outbox"),
        spool_limit_bytes: 1 << 30,
        sync_every: Duration::from_millis(500),
        backoff: fast(),
    };
    let recorder = Recorder::bind(config, metrics.clone()).await.expect("recorder binds");
    let sip = recorder.local_addr();
    let directory = Directory::new(vec![profile], std::iter::empty());
    let (_tx, directory) = watch::channel(Arc::new(directory));
    std::mem::forget(_tx);
    let shutdown = CancellationToken::new();
    let calls = CommandService::<Call>::new(log, ());
    let tasks =
        recorder.spawn(directory, Arc::new(Log(calls)), Arc::new(Local(target.path().to_owned())), shutdown.clone());
    Running { sip, target, data, metrics, shutdown, tasks }
}

/// A SIPREC client: SIP on one UDP socket, one RTP socket per stream.
struct Client {
    sip: UdpSocket,
    rtp: [UdpSocket; 2],
    recorder: SocketAddr,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    ports: Vec<u16>,
    seq: [u16; 2],
    timestamp: [u32; 2],
    phase: [f64; 2],
}

const TONES: [f64; 2] = [440.0, 1000.0];

fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 { 0x80 } else { 0 };
    if pcm < 0 {
        pcm = -pcm;
    }
    pcm = (pcm + BIAS).min(0x7fff);
    let exponent = (0..8).rev().find(|e| pcm & (0x80 << e) != 0).unwrap_or(0);
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

impl Client {
    async fn new(recorder: SocketAddr) -> Self {
        let bind = || async { UdpSocket::bind("127.0.0.1:0").await.expect("bind") };
        Self {
            sip: bind().await,
            rtp: [bind().await, bind().await],
            recorder,
            call_id: format!("{}@127.0.0.1", Uuid::now_v7()),
            cseq: 1,
            to_tag: None,
            ports: Vec::new(),
            seq: [1000, 5000],
            timestamp: [160_000, 4_000_000_000],
            phase: [0.0, 0.0],
        }
    }

    fn headers(&self, method: &str, branch: &str) -> String {
        let to_tag = self.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:srs@{recorder} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             From: <sip:sbc@127.0.0.1>;tag=sbc1\r\nTo: <sip:srs@{recorder}>{to_tag}\r\nCall-ID: {call}\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:sbc@{me}>;+sip.src\r\n",
            recorder = self.recorder,
            me = self.sip.local_addr().expect("addr"),
            call = self.call_id,
            cseq = self.cseq,
        )
    }

    fn offer(&self, direction: &str) -> String {
        let port = |i: usize| self.rtp[i].local_addr().expect("addr").port();
        let sdp = format!(
            "v=0\r\no=sbc 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na={direction}\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\na={direction}\r\n",
            self.cseq,
            port(0),
            port(1)
        );
        let metadata = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\
             <datamode>complete</datamode><session session_id=\"s1\"/>\
             <participant participant_id=\"p1\"><nameID aor=\"sip:+4930555@carrier.example\"><name>Caller</name></nameID></participant>\
             <participant participant_id=\"p2\"><nameID aor=\"sip:2001@pbx.example\"><name>Agent</name></nameID></participant>\
             <stream stream_id=\"st1\" session_id=\"s1\"><label>1</label></stream>\
             <stream stream_id=\"st2\" session_id=\"s1\"><label>2</label></stream>\
             <participantstreamassoc participant_id=\"p1\"><send>st1</send><recv>st2</recv></participantstreamassoc>\
             <participantstreamassoc participant_id=\"p2\"><send>st2</send><recv>st1</recv></participantstreamassoc>\
             </recording>\r\n";
        format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n\
             Content-Disposition: recording-session\r\n\r\n{metadata}\r\n--b1--\r\n"
        )
    }

    async fn send(&self, text: String) {
        self.sip.send_to(text.as_bytes(), self.recorder).await.expect("sent");
    }

    /// The next final response (provisional ones skipped), within 5 s.
    async fn final_response(&self) -> Message {
        let mut buf = vec![0u8; 65536];
        loop {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), self.sip.recv_from(&mut buf))
                .await
                .expect("a response within 5 s")
                .expect("received");
            let message = sip::parse(&buf[..len], Transport::Datagram).expect("the recorder's message parses");
            if message.status().is_some_and(|s| s >= 200) || message.is_request() {
                return message;
            }
        }
    }

    async fn invite(&mut self, direction: &str) -> Message {
        let body = self.offer(direction);
        let text = format!(
            "{}Require: siprec\r\nContent-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
            self.headers("INVITE", &format!("inv{}", self.cseq)),
            body.len()
        );
        self.send(text).await;
        let response = self.final_response().await;
        if response.status() == Some(200) {
            self.to_tag = response.to().tag().map(str::to_owned);
            let answer = recall_recorder::sdp::parse(response.body()).expect("the answer parses");
            self.ports = answer.media.iter().map(|m| m.port).collect();
            let ack = format!("{}Content-Length: 0\r\n\r\n", self.headers("ACK", &format!("ack{}", self.cseq)));
            self.send(ack).await;
        }
        self.cseq += 1;
        response
    }

    async fn bye(&mut self) -> Message {
        let text = format!("{}Content-Length: 0\r\n\r\n", self.headers("BYE", &format!("bye{}", self.cseq)));
        self.cseq += 1;
        self.send(text).await;
        self.final_response().await
    }

    /// Sends `seconds` of each stream's tone in real time (20 ms packets).
    async fn talk(&mut self, seconds: f64) {
        let packets = (seconds * 50.0).round() as usize;
        let started = Instant::now();
        for n in 0..packets {
            for (stream, tone) in TONES.iter().enumerate() {
                let mut packet = vec![0x80, 0x00];
                packet.extend_from_slice(&self.seq[stream].to_be_bytes());
                packet.extend_from_slice(&self.timestamp[stream].to_be_bytes());
                packet.extend_from_slice(&(0x1000 + stream as u32).to_be_bytes());
                for _ in 0..160 {
                    let sample = (self.phase[stream].sin() * 12_000.0) as i16;
                    self.phase[stream] += 2.0 * std::f64::consts::PI * tone / 8000.0;
                    packet.push(linear_to_ulaw(sample));
                }
                self.seq[stream] = self.seq[stream].wrapping_add(1);
                self.timestamp[stream] = self.timestamp[stream].wrapping_add(160);
                let to = SocketAddr::new(self.recorder.ip(), self.ports[stream]);
                self.rtp[stream].send_to(&packet, to).await.expect("rtp sent");
            }
            let due = started + Duration::from_millis(20 * (n as u64 + 1));
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// An RFC 4733 digit on the first stream: 100 ms of event packets (the end packet sent three times).
    async fn dtmf(&mut self, event: u8) {
        let timestamp = self.timestamp[0];
        for n in 1..=7u16 {
            let duration = (n.min(5)) * 160;
            let end = if n >= 5 { 0x80 } else { 0 };
            let mut packet = vec![0x80, if n == 1 { 0x80 | 101 } else { 101 }];
            packet.extend_from_slice(&self.seq[0].to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&0x1000u32.to_be_bytes());
            packet.extend_from_slice(&[event, end | 10]);
            packet.extend_from_slice(&duration.to_be_bytes());
            self.seq[0] = self.seq[0].wrapping_add(1);
            let to = SocketAddr::new(self.recorder.ip(), self.ports[0]);
            self.rtp[0].send_to(&packet, to).await.expect("rtp sent");
            if n <= 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.timestamp[0] = self.timestamp[0].wrapping_add(800);
        self.timestamp[1] = self.timestamp[1].wrapping_add(800);
        self.seq[1] = self.seq[1].wrapping_add(5);
    }

    /// Silence on the wire: the timestamps move on as if the streams had sent.
    fn skip(&mut self, seconds: f64) {
        let ticks = (seconds * 8000.0) as u32;
        for stream in 0..2 {
            self.timestamp[stream] = self.timestamp[stream].wrapping_add(ticks);
            self.seq[stream] = self.seq[stream].wrapping_add((ticks / 160) as u16);
        }
    }
}

async fn call_events(pool: &PgPool, sip_call_id: &str, until: &str) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = sqlx::query(
            "SELECT event_type, payload FROM events WHERE aggregate_type = 'Call' AND aggregate_id IN
               (SELECT aggregate_id FROM events WHERE event_type = 'CallStarted'
                  AND payload #>> '{CallStarted,start,sip_call_id}' = $1) ORDER BY sequence",
        )
        .bind(sip_call_id)
        .fetch_all(pool)
        .await
        .expect("events");
        let events: Vec<(String, Value)> = rows.iter().map(|r| (r.get("event_type"), r.get("payload"))).collect();
        if events.iter().any(|(t, _)| t == until) {
            return events;
        }
        assert!(Instant::now() < deadline, "no {until} within 20 s: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Power of `frequency` in `samples` (Goertzel), normalised by length.
fn tone_power(samples: &[f64], frequency: f64, rate: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / (samples.len() as f64).powi(2)
}

fn rms(samples: &[f64]) -> f64 {
    (samples.iter().map(|s| s * s).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_siprec_call_is_recorded_in_stereo_paused_resumed_and_stored_with_its_events(pool: PgPool) {
    let running = start(pool.clone(), &["127.0.0.0/8"], 10, Duration::from_secs(30)).await;
    let recorded = record_a_call_and_check_it(&pool, &running, |bytes| bytes.to_vec()).await;
    assert!(recorded.bytes.starts_with(b"RIFF"));
    assert!(recorded.stored.get("encryption").is_none(), "{}", recorded.stored);
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

/// What a recorded call left: its `RecordingStored` event's recording, and the stored file's bytes.
struct Recorded {
    stored: Value,
    bytes: Vec<u8>,
}

/// Records a call (a tone on each stream, a digit, a pause and a resume) and checks what the log says and
/// what the file holds; `open` turns the stored bytes into the WAV file (a plain one is that already).
async fn record_a_call_and_check_it(pool: &PgPool, running: &Running, open: impl Fn(&[u8]) -> Vec<u8>) -> Recorded {
    let mut client = Client::new(running.sip).await;
    let answer = client.invite("sendonly").await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    assert_eq!(client.ports.len(), 2);
    assert!(client.ports.iter().all(|p| *p != 0 && p.is_multiple_of(2)), "{:?}", client.ports);
    assert!(answer.contact().is_some_and(|c| c.param("+sip.srs").is_some()));

    // RTP from a port the offer did not name is dropped, not recorded.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut forged = vec![0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    forged.extend(std::iter::repeat_n(0x00, 160));
    for _ in 0..5 {
        stranger.send_to(&forged, SocketAddr::new(running.sip.ip(), client.ports[0])).await.expect("sent");
    }

    client.talk(1.5).await;
    client.dtmf(7).await;
    client.talk(0.5).await;
    let pause = client.invite("inactive").await;
    assert_eq!(pause.status(), Some(200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.skip(1.5);
    let resume = client.invite("sendonly").await;
    assert_eq!(resume.status(), Some(200));
    client.talk(2.0).await;
    let bye = client.bye().await;
    assert_eq!(bye.status(), Some(200));
    assert_eq!(client.bye().await.status(), Some(481), "the dialog is gone after its BYE");

    let events = call_events(pool, &client.call_id, "RecordingStored").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["CallStarted", "DtmfReceived", "RecordingPaused", "RecordingResumed", "CallEnded", "RecordingStored"]
    );
    let digit = &events[1].1["DtmfReceived"];
    assert_eq!(digit["digit"], "7");
    let offset = digit["offset_ms"].as_u64().expect("offset");
    assert!((1400..1700).contains(&offset), "the digit came 1.5 s in, not at {offset} ms");
    let events = &events[..1].iter().chain(&events[2..]).cloned().collect::<Vec<_>>();
    let start = &events[0].1["CallStarted"]["start"];
    assert_eq!(start["tenant_id"], TENANT.to_string());
    assert_eq!(start["participants"][1]["aor"], "sip:2001@pbx.example");
    assert_eq!(events[3].1["CallEnded"]["reason"], "bye");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("rfc3339");
    let started = time(&start["started_at"]);
    let paused_at = (time(&events[1].1["RecordingPaused"]["at"]) - started).num_milliseconds() as f64 / 1000.0;
    let resumed_at = (time(&events[2].1["RecordingResumed"]["at"]) - started).num_milliseconds() as f64 / 1000.0;
    let duration_ms = events[3].1["CallEnded"]["duration_ms"].as_u64().expect("duration");
    let stored = &events[4].1["RecordingStored"]["recording"];
    assert_eq!(stored["format"], "wav_stereo");
    assert!(running.metrics.rtp_dropped.with_label_values(&["foreign_source"]).get() >= 5);

    let path = running.target.path().join(stored["location"].as_str().expect("location"));
    let bytes = std::fs::read(&path).expect("the stored file");
    assert_eq!(bytes.len() as u64, stored["size_bytes"].as_u64().expect("size"));
    let audio = open(&bytes);
    let data_len = u32::from_le_bytes(audio[40..44].try_into().expect("a WAV header"));
    assert_eq!(u64::from(data_len), audio.len() as u64 - 44, "the WAV header states the real length");
    let (rate, channels) = common::decode::decode(audio, "wav");
    assert_eq!((rate, channels.len()), (8000, 2));
    let seconds = channels[0].len() as f64 / 8000.0;
    assert!((seconds * 1000.0 - duration_ms as f64).abs() < 50.0, "file {seconds} s, call {duration_ms} ms");
    assert!((5.0..7.5).contains(&seconds), "{seconds}");

    // Each tone on its channel while talking; silence while paused.
    let window =
        |from: f64, to: f64, channel: usize| &channels[channel][(from * 8000.0) as usize..(to * 8000.0) as usize];
    for (from, to) in [(0.5, 1.5), (resumed_at + 0.5, resumed_at + 1.5)] {
        let (left, right) = (window(from, to, 0), window(from, to, 1));
        assert!(tone_power(left, 440.0, 8000.0) > 100.0 * tone_power(left, 1000.0, 8000.0), "left at {from}");
        assert!(tone_power(right, 1000.0, 8000.0) > 100.0 * tone_power(right, 440.0, 8000.0), "right at {from}");
    }
    assert!(resumed_at - paused_at > 1.2, "paused {paused_at}..{resumed_at}");
    for channel in 0..2 {
        let quiet = rms(window(paused_at + 0.15, resumed_at - 0.15, channel));
        assert!(quiet < 1e-3, "channel {channel} while paused: rms {quiet}");
    }
    Recorded { stored: stored.clone(), bytes }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn strangers_get_403_calls_over_capacity_503_and_a_silent_call_ends_with_a_bye(pool: PgPool) {
    // Trusted: only 10.0.0.0/8: a call from loopback is refused.
    let running = start(pool.clone(), &["10.0.0.0/8"], 1, Duration::from_secs(2)).await;
    let mut stranger = Client::new(running.sip).await;
    assert_eq!(stranger.invite("sendonly").await.status(), Some(403));
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }

    let running = start(pool.clone(), &["127.0.0.1/32"], 1, Duration::from_secs(2)).await;
    let mut first = Client::new(running.sip).await;
    assert_eq!(first.invite("sendonly").await.status(), Some(200));
    let mut second = Client::new(running.sip).await;
    let busy = second.invite("sendonly").await;
    assert_eq!(busy.status(), Some(503));
    assert!(busy.header("Retry-After").is_some());

    // No RTP on the first call: after 2 s the recorder ends it and says so with a BYE.
    let bye = first.final_response().await;
    assert!(bye.is_request() && bye.method().as_str() == "BYE", "{bye:?}");
    assert_eq!(bye.call_id(), first.call_id);
    let events = call_events(&pool, &first.call_id, "CallEnded").await;
    let ended = events.iter().find(|(t, _)| t == "CallEnded").expect("ended");
    assert_eq!(ended.1["CallEnded"]["reason"], "rtp_timeout");
    assert_eq!(running.metrics.calls_refused.with_label_values(&["capacity"]).get(), 1);
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

/// The start a crashed recorder journaled for `call_id`.
fn crashed_call_start(call_id: Uuid, started_at: chrono::DateTime<chrono::Utc>) -> recall_domain::call::CallStart {
    recall_domain::call::CallStart {
        tenant_id: TENANT,
        sip_call_id: format!("{call_id}@sbc"),
        direction: recall_domain::call::CallDirection::Unknown,
        participants: Vec::new(),
        extension: None,
        user_id: None,
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at,
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_restarted_recorder_finishes_the_calls_a_crash_left_and_stores_their_files(pool: PgPool) {
    use recall_recorder::outbox::Outbox;
    use recall_recorder::spool::{RecordingMeta, Spool};

    // What a crash leaves: a started call in the journal, and its WAV half written (header with the
    // placeholder length, 2 s of audio) with the manifest it was started with.
    let data = tempfile::tempdir().expect("data dir");
    let call_id = Uuid::now_v7();
    let started_at = chrono::Utc::now() - chrono::Duration::seconds(10);
    let start = crashed_call_start(call_id, started_at);
    let outbox = Outbox::open(data.path().join("outbox")).expect("outbox");
    outbox.record(call_id, TENANT, CallCommand::RecordCallStart { call_id, start }, false).expect("journaled");
    let meta = RecordingMeta {
        tenant_id: TENANT,
        storage_target_id: None,
        object_path: format!("{TENANT}/crashed/{call_id}.wav"),
        format: AudioFormat::WavStereo,
        duration_ms: 0,
        sample_rate: Some(8000),
        encryption: None,
    };
    let spool = Spool::open(data.path().join("spool"), 1 << 30).expect("spool");
    let (mut encoder, header) =
        recall_recorder::encode::AudioEncoder::new(AudioFormat::WavStereo, 8000).expect("encoder");
    let mut writer = spool.create_with(call_id, "wav", Duration::from_secs(1), Some(&meta)).expect("spool file");
    writer.write(&header).expect("header");
    let tone: Vec<i16> = (0..16_000 * 2).map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16).collect();
    writer.write(&encoder.encode(&tone).expect("encoded")).expect("audio");
    drop(writer);

    let running = start_in(pool.clone(), data, &["127.0.0.0/8"], 10, Duration::from_secs(30)).await;
    let events = call_events(&pool, &format!("{call_id}@sbc"), "RecordingStored").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["CallStarted", "CallEnded", "RecordingStored"]);
    assert_eq!(events[1].1["CallEnded"]["reason"], "recorder_restarted");
    let stored = &events[2].1["RecordingStored"]["recording"];
    assert_eq!(stored["duration_ms"], 2000, "the duration follows from what was on disk");
    let bytes =
        std::fs::read(running.target.path().join(stored["location"].as_str().expect("location"))).expect("file");
    let (rate, channels) = common::decode::decode(bytes, "wav");
    assert_eq!((rate, channels.len(), channels[0].len()), (8000, 2, 16_000), "the WAV header was repaired");
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

const KEY_ID: Uuid = Uuid::from_u128(0x4e7_4e7);

/// The test tenant, encrypting its recordings with `key`.
fn encrypting(key: &PrivateKey) -> TenantProfile {
    TenantProfile {
        encryption: Encryption::On { key_id: KEY_ID, key: Arc::new(key.public()) },
        ..tenant(&["127.0.0.0/8"], AudioFormat::WavStereo)
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_encrypted_tenants_call_is_stored_sealed_and_opens_with_its_key_to_the_same_audio(pool: PgPool) {
    let key = PrivateKey::generate().expect("a key");
    let data = tempfile::tempdir().expect("data dir");
    let running = start_for(pool.clone(), data, encrypting(&key), 10, Duration::from_secs(30)).await;
    let opened = std::sync::Mutex::new(Vec::new());
    let recorded = record_a_call_and_check_it(&pool, &running, |bytes| {
        let audio = decrypt_in_memory(bytes, &key, None).expect("the stored file opens with the tenant's key");
        opened.lock().expect("lock").clone_from(&audio);
        audio.to_vec()
    })
    .await;
    let (stored, bytes) = (recorded.stored, recorded.bytes);
    let audio = opened.into_inner().expect("lock");

    assert!(bytes.starts_with(b"RCLENC"), "the stored object is a sealed stream");
    assert!(stored["location"].as_str().expect("location").ends_with(".wav.enc"), "{stored}");
    assert_eq!(stored["encryption"]["key_id"], KEY_ID.to_string());
    assert_eq!(stored["encryption"]["format_version"], 1);
    assert!(stored["encryption"].get("unterminated_chunks").is_none(), "a finished file is complete: {stored}");
    // Several chunks (so the chunking is exercised), and no run of the plain audio anywhere in the file.
    assert!(audio.len() > 2 * 65_536, "{} plain bytes", audio.len());
    let sealed: std::collections::HashSet<&[u8]> = bytes.windows(16).collect();
    let leaked = audio.windows(16).step_by(7).filter(|w| sealed.contains(w)).count();
    assert_eq!(leaked, 0, "runs of the plain audio appear in the stored file");
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

/// Files under `dir` that are neither JSON (a manifest) nor a sealed stream (nor a sealed stream's start
/// being written), and the largest sealed file seen.
fn plain_files_under(dir: &std::path::Path) -> (Vec<String>, u64) {
    use std::io::Read;
    let (mut plain, mut largest) = (Vec::new(), 0);
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // A file renamed or removed meanwhile is looked at where it went, at the next scan.
            let Ok(mut file) = std::fs::File::open(&path) else { continue };
            let mut start = Vec::new();
            if file.by_ref().take(6).read_to_end(&mut start).is_err() {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let ok = if name.ends_with(".json") || name.ends_with(".json.tmp") {
                start.is_empty() || start[0] == b'{'
            } else {
                largest = largest.max(file.metadata().map_or(0, |m| m.len()));
                if start.len() < 6 {
                    b"RCLENC".starts_with(&start)
                } else {
                    start == b"RCLENC"
                }
            };
            if !ok {
                plain.push(format!("{} starts with {start:?}", path.display()));
            }
        }
    }
    (plain, largest)
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn while_an_encrypted_call_runs_the_spool_holds_only_manifests_and_sealed_streams(pool: PgPool) {
    let key = PrivateKey::generate().expect("a key");
    let data = tempfile::tempdir().expect("data dir");
    let running = start_for(pool.clone(), data, encrypting(&key), 10, Duration::from_secs(30)).await;
    let spool = running.data.path().join("spool");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanner = {
        let (spool, stop) = (spool.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let (mut found, mut largest, mut scans) = (Vec::new(), 0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (plain, size) = plain_files_under(&spool);
                found.extend(plain);
                largest = largest.max(size);
                scans += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (found, largest, scans)
        })
    };
    let mut client = Client::new(running.sip).await;
    assert_eq!(client.invite("sendonly").await.status(), Some(200));
    client.talk(5.0).await;
    assert_eq!(client.bye().await.status(), Some(200));
    let events = call_events(&pool, &client.call_id, "RecordingStored").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (found, largest, scans) = scanner.await.expect("scanner");
    assert!(found.is_empty(), "plain bytes in the spool: {found:?}");
    // Sealed chunks reached the disk while the call went on (5 s of 8 kHz stereo is 160 kB of plain audio,
    // a chunk is 2 s of it).
    assert!(largest > 65_552, "the largest sealed file seen held {largest} bytes in {scans} scans");
    let stored = &events.last().expect("stored").1["RecordingStored"]["recording"];
    let bytes = std::fs::read(running.target.path().join(stored["location"].as_str().expect("location")))
        .expect("the stored file");
    let audio = decrypt_in_memory(&bytes, &key, None).expect("opens");
    assert!(audio.starts_with(b"RIFF"));
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

/// What a crash leaves of an encrypted call: its start in the journal, its spool file with the draft
/// manifest it was started with, and the sealer that was writing it (the header is on disk).
fn crashed_encrypted_call(
    data: &std::path::Path,
    key: &PrivateKey,
    call_id: Uuid,
) -> (recall_recorder::spool::SpoolWriter, recall_crypto::FileSealer, usize) {
    use recall_domain::call::RecordingEncryption;
    use recall_recorder::outbox::Outbox;
    use recall_recorder::spool::{RecordingMeta, Spool};
    let start = crashed_call_start(call_id, chrono::Utc::now() - chrono::Duration::seconds(10));
    let outbox = Outbox::open(data.join("outbox")).expect("outbox");
    outbox.record(call_id, TENANT, CallCommand::RecordCallStart { call_id, start }, false).expect("journaled");
    let meta = RecordingMeta {
        tenant_id: TENANT,
        storage_target_id: None,
        object_path: format!("{TENANT}/crashed/{call_id}.wav.enc"),
        format: AudioFormat::WavStereo,
        duration_ms: 0,
        sample_rate: Some(8000),
        encryption: Some(RecordingEncryption {
            key_id: KEY_ID,
            format_version: 1,
            unterminated_chunks: None,
            file_key_id: None,
        }),
    };
    let spool = Spool::open(data.join("spool"), 1 << 30).expect("spool");
    let mut writer = spool.create_with(call_id, "wav.enc", Duration::from_secs(1), Some(&meta)).expect("spool file");
    let (sealer, header) = recall_crypto::FileSealer::new(&key.public(), KEY_ID, call_id).expect("a sealer");
    writer.write(&header).expect("header");
    (writer, sealer, header.len())
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_encrypted_file_a_crash_left_is_stored_up_to_its_last_sealed_chunk_with_that_count(pool: PgPool) {
    // Two calls a crash left: one written as the call task writes (header, then what the sealer handed
    // out) with its last chunk torn mid-write; one whose final chunk was written but not handed over.
    let key = PrivateKey::generate().expect("a key");
    let data = tempfile::tempdir().expect("data dir");
    let (mut encoder, mut plain) =
        recall_recorder::encode::AudioEncoder::new(AudioFormat::WavStereo, 8000).expect("encoder");
    let tone: Vec<i16> = (0..50_000 * 2).map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16).collect();
    plain.extend(encoder.encode(&tone).expect("encoded"));
    assert_eq!(plain.len(), 200_044, "three chunks' worth and a bit");

    let torn = Uuid::now_v7();
    let (mut writer, mut sealer, header_len) = crashed_encrypted_call(data.path(), &key, torn);
    let mut sealed = Vec::new();
    sealer.push(&plain[..160_000], &mut sealed).expect("sealed");
    assert_eq!(sealer.sealed_chunks(), 2);
    writer.write(&sealed).expect("two whole chunks");
    let mut third = Vec::new();
    sealer.push(&plain[160_000..], &mut third).expect("sealed");
    assert_eq!(third.len(), 65_552);
    writer.write(&third[..1_000]).expect("a torn chunk");
    drop((writer, sealer));

    let whole = Uuid::now_v7();
    let (mut writer, mut sealer, _) = crashed_encrypted_call(data.path(), &key, whole);
    let mut sealed = Vec::new();
    sealer.push(&plain, &mut sealed).expect("sealed");
    let real_header = recall_recorder::encode::wav_header(8000, true, 200_000);
    sealer.finish(&real_header, &mut sealed).expect("finished");
    writer.write(&sealed).expect("the whole file");
    drop(writer);

    let running = start_in(pool.clone(), data, &["127.0.0.0/8"], 10, Duration::from_secs(30)).await;
    let read = |stored: &Value| {
        std::fs::read(running.target.path().join(stored["location"].as_str().expect("location"))).expect("file")
    };
    let events = call_events(&pool, &format!("{torn}@sbc"), "RecordingStored").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["CallStarted", "CallEnded", "RecordingStored"]);
    let stored = &events[2].1["RecordingStored"]["recording"];
    assert_eq!(stored["encryption"]["key_id"], KEY_ID.to_string());
    assert_eq!(stored["encryption"]["unterminated_chunks"], 2, "{stored}");
    assert_eq!(stored["size_bytes"], header_len as u64 + 2 * 65_552, "cut to its last whole chunk");
    assert_eq!(stored["duration_ms"], (2 * 65_536 - 44) * 1000 / 32_000, "estimated from the plain length");
    let bytes = read(stored);
    let chunks = stored["encryption"]["unterminated_chunks"].as_u64().expect("chunks");
    let audio = decrypt_in_memory(&bytes, &key, Some(Termination::Unterminated { chunks })).expect("reads");
    assert_eq!(*audio, plain[..2 * 65_536], "the plain audio up to the last whole chunk, header not repaired");
    assert!(decrypt_in_memory(&bytes, &key, None).is_err(), "it has no final chunk");

    let events = call_events(&pool, &format!("{whole}@sbc"), "RecordingStored").await;
    let stored = &events.last().expect("stored").1["RecordingStored"]["recording"];
    assert!(stored["encryption"].get("unterminated_chunks").is_none(), "kept whole: {stored}");
    assert_eq!(stored["duration_ms"], 200_000 * 1000 / 32_000);
    let audio = decrypt_in_memory(&read(stored), &key, None).expect("a complete file");
    assert_eq!(audio[..44], real_header, "its final chunk's patch is over the start");
    assert_eq!(audio[44..], plain[44..]);
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_tenant_whose_encryption_key_is_unavailable_gets_503_and_nothing_is_spooled(pool: PgPool) {
    let profile =
        TenantProfile { encryption: Encryption::Unavailable, ..tenant(&["127.0.0.0/8"], AudioFormat::WavStereo) };
    let data = tempfile::tempdir().expect("data dir");
    let running = start_for(pool.clone(), data, profile, 10, Duration::from_secs(30)).await;
    let mut client = Client::new(running.sip).await;
    let refused = client.invite("sendonly").await;
    assert_eq!(refused.status(), Some(503), "{refused:?}");
    assert!(refused.header("Retry-After").is_some());
    assert_eq!(running.metrics.calls_refused.with_label_values(&["no_encryption_key"]).get(), 1);
    assert_eq!(running.metrics.calls.get(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spool = running.data.path().join("spool");
    for dir in ["active", "ready"] {
        let held: Vec<_> = std::fs::read_dir(spool.join(dir)).expect("spool dir").flatten().map(|e| e.path()).collect();
        assert!(held.is_empty(), "{dir}: {held:?}");
    }
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Call'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(started, 0, "a refused call is not logged");
    running.shutdown.cancel();
    for task in running.tasks {
        let _ = task.await;
    }
}
