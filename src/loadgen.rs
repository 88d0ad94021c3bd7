//! `recall loadgen`: a recording client under load. It places concurrent SIPREC calls on a recorder as an SBC
//! would (UDP signalling, two RTP streams per call at 50 packets/s each, each sent from the port its SDP
//! offered) and reports what became of them. A measuring tool: it never answers calls of its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use recall_recorder::multipart;
use recall_recorder::sdp::{self, SessionDescription};
use recall_recorder::sip::{self, Message, Method, ResponseParts, Transport};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// One packet carries 20 ms of 8 kHz G.711: 160 samples, one byte each.
const PTIME: Duration = Duration::from_millis(20);
const SAMPLES_PER_PACKET: usize = 160;
/// The synthetic voices repeat every second (50 packets): their frequencies are whole hertz.
const FRAMES_PER_LOOP: usize = 50;
const TELEPHONE_EVENT: u8 = 101;
/// RFC 3261 §17: T1, T2 and the transaction timeout 64·T1 (timers B and F).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The recorder's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5080")]
    pub target: SocketAddr,
    /// Calls held at once.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// How long each call lasts, in seconds (from its answer to its BYE).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// New calls per second while ramping up.
    #[arg(long, default_value_t = 200.0)]
    pub ramp: f64,
    #[arg(long, value_enum, default_value_t = Codec::Pcmu)]
    pub codec: Codec,
    /// The address calls come from (SIP and RTP). Default: the local address that routes to --target.
    #[arg(long)]
    pub local: Option<IpAddr>,
    /// Even local ports the RTP streams are sent from; outside the recorder's default range (20000-29999), as
    /// both often run on one host.
    #[arg(long, default_value = "40000-49999", value_parser = parse_port_range)]
    pub rtp_ports: PortRange,
    /// Threads sending RTP; one sends 100,000 packets/s on a current core.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// How often a sender wakes to send the packets that are due, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub tick_ms: u64,
    /// Print the report as one JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    fn encoding(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    fn encode(self, sample: i16) -> u8 {
        match self {
            Self::Pcmu => linear_to_ulaw(sample),
            Self::Pcma => linear_to_alaw(sample),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

fn parse_port_range(value: &str) -> Result<PortRange, String> {
    let (first, last) = value.split_once('-').ok_or("expected FIRST-LAST")?;
    let first: u16 = first.trim().parse().map_err(|_| format!("{first:?} is not a port"))?;
    let last: u16 = last.trim().parse().map_err(|_| format!("{last:?} is not a port"))?;
    if first == 0 || last < first.saturating_add(1) {
        return Err("the range needs at least two ports, none of them 0".into());
    }
    Ok(PortRange { first, last })
}

/// What a run did, as `--json` prints it (the recorder's load benchmark reads this).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub calls: usize,
    pub duration_seconds: f64,
    pub ramp_per_second: f64,
    pub codec: String,
    pub attempted: u64,
    pub answered: u64,
    /// Final non-2xx answers to the INVITE, by status.
    pub refused: BTreeMap<u16, u64>,
    /// Calls that got no final answer or could not be set up, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Answered calls the recorder ended with a BYE of its own.
    pub ended_by_recorder: u64,
    /// Our BYEs answered 200.
    pub bye_ok: u64,
    /// Our BYEs answered otherwise or not at all.
    pub bye_failed: u64,
    /// Most calls answered and not yet ended at one moment.
    pub max_concurrent: u64,
    /// INVITE sent to 200 OK received.
    pub setup_ms: Percentiles,
    /// Packets the answered calls' streams were to send (50 per second per stream).
    pub packets_expected: u64,
    pub packets_sent: u64,
    /// Datagrams the kernel refused to send (a full buffer, or a port the recorder had closed).
    pub send_errors: u64,
    /// How late the senders' ticks ran against their schedule.
    pub send_lag_ms: Percentiles,
    pub ticks: u64,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Self { p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

impl Report {
    /// The report for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} calls of {:.0} s to {} ({}), {:.0} new calls/s, {:.1} s in all",
            self.calls, self.duration_seconds, self.target, self.codec, self.ramp_per_second, self.wall_seconds
        );
        let _ = writeln!(
            out,
            "calls: {} attempted, {} answered, {} refused {:?}, {} failed {:?}; at most {} at once",
            self.attempted,
            self.answered,
            self.refused.values().sum::<u64>(),
            self.refused,
            self.failed.values().sum::<u64>(),
            self.failed,
            self.max_concurrent
        );
        let _ = writeln!(
            out,
            "ends: {} BYEs answered 200, {} not; {} calls ended by the recorder",
            self.bye_ok, self.bye_failed, self.ended_by_recorder
        );
        let _ = writeln!(
            out,
            "set-up: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.setup_ms.p50, self.setup_ms.p99, self.setup_ms.max
        );
        let _ = writeln!(
            out,
            "RTP: {} packets sent of {} due, {} send errors; tick lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} ticks",
            self.packets_sent,
            self.packets_expected,
            self.send_errors,
            self.send_lag_ms.p50,
            self.send_lag_ms.p99,
            self.send_lag_ms.max,
            self.ticks
        );
        out
    }
}

/// `recall loadgen`.
pub async fn run(options: Options) -> Result<()> {
    let report = generate(&options).await?;
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(())
}

/// Places the calls, waits until every one has ended, and reports.
pub async fn generate(options: &Options) -> Result<Report> {
    if options.calls == 0 || options.senders == 0 || options.tick_ms == 0 {
        bail!("--calls, --senders and --tick-ms must be at least 1");
    }
    if !(options.duration > 0.0 && options.ramp > 0.0) {
        bail!("--duration and --ramp must be positive");
    }
    let local = match options.local {
        Some(ip) => ip,
        None => local_address_towards(options.target).context("cannot find a local address towards --target")?,
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await.context("cannot bind the SIP socket")?;
    let sip = Arc::new(Sip {
        local: socket.local_addr()?,
        socket,
        target: options.target,
        dialogs: Mutex::new(HashMap::new()),
    });
    let dispatcher = tokio::spawn(dispatch(sip.clone()));

    let voice = Arc::new(Voice::new(options.codec));
    let tick = Duration::from_millis(options.tick_ms);
    let stats = Arc::new(SenderStats::default());
    let mut queues = Vec::with_capacity(options.senders);
    let mut threads = Vec::with_capacity(options.senders);
    for number in 0..options.senders {
        let (queue, streams) = std_mpsc::channel();
        let (voice, stats) = (voice.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("rtp-sender-{number}"))
            .spawn(move || send_rtp(&streams, &voice, tick, &stats))
            .context("cannot start an RTP sender")?;
        queues.push(queue);
        threads.push(thread);
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let context = Arc::new(CallContext {
        sip: sip.clone(),
        codec: options.codec,
        duration: Duration::from_secs_f64(options.duration),
        ports: Mutex::new(PortCursor {
            range: options.rtp_ports,
            next: options.rtp_ports.first + options.rtp_ports.first % 2,
        }),
        queues,
        active: AtomicU64::new(0),
        max_active: AtomicU64::new(0),
        seed,
    });

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..options.calls {
        let at = started + Duration::from_secs_f64(index as f64 / options.ramp);
        tokio::time::sleep_until(at.into()).await;
        calls.spawn(place_call(index, context.clone()));
    }
    let mut report = Report {
        target: options.target.to_string(),
        calls: options.calls,
        duration_seconds: options.duration,
        ramp_per_second: options.ramp,
        codec: options.codec.encoding().to_owned(),
        attempted: options.calls as u64,
        ..Report::default()
    };
    let mut setups = Vec::with_capacity(options.calls);
    while let Some(outcome) = calls.join_next().await {
        match outcome {
            Ok(Outcome::Answered { setup, by_recorder, bye_ok, packets }) => {
                report.answered += 1;
                setups.push(setup.as_micros() as u64);
                report.packets_expected += packets;
                if by_recorder {
                    report.ended_by_recorder += 1;
                } else if bye_ok {
                    report.bye_ok += 1;
                } else {
                    report.bye_failed += 1;
                }
            }
            Ok(Outcome::Refused(status)) => *report.refused.entry(status).or_default() += 1,
            Ok(Outcome::Failed(reason)) => *report.failed.entry(reason).or_default() += 1,
            Err(e) => *report.failed.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    report.max_concurrent = context.max_active.load(Ordering::Relaxed);
    // The senders stop once their queues are gone and their last streams have sent everything.
    drop(context);
    let mut lags = Vec::new();
    for thread in threads {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if let Ok(Ok(mut samples)) = joined {
            lags.append(&mut samples);
        }
    }
    dispatcher.abort();
    report.ticks = lags.len() as u64;
    report.send_lag_ms = Percentiles::of_micros(lags);
    report.setup_ms = Percentiles::of_micros(setups);
    report.packets_sent = stats.packets.load(Ordering::Relaxed);
    report.send_errors = stats.errors.load(Ordering::Relaxed);
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The local address the system would send to `target` from (a connected UDP socket sends nothing).
fn local_address_towards(target: SocketAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = if target.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = StdUdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

// --- Audio -------------------------------------------------------------------------------------------------

/// ITU-T G.711 µ-law of a 16-bit sample (the classic segment search, with the 0x84 bias).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let value = i32::from(sample);
    let sign = if value < 0 { 0x80 } else { 0 };
    let magnitude = value.abs().min(CLIP) + BIAS;
    let exponent = (31 - (magnitude as u32).leading_zeros()).saturating_sub(7).min(7);
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | ((exponent as u8) << 4) | mantissa)
}

/// ITU-T G.711 A-law of a 16-bit sample (13-bit magnitude, even bits inverted).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let value = i32::from(sample) >> 3;
    let (mask, magnitude) = if value >= 0 { (0xD5u8, value) } else { (0x55u8, -value - 1) };
    let segment = (0..8).find(|segment| magnitude <= (0x1F << segment) | ((1 << segment) - 1)).unwrap_or(8);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if segment < 2 { 1 } else { segment };
    (((segment as u8) << 4) | ((magnitude >> shift) & 0x0F) as u8) ^ mask
}

/// A speech-like test signal per channel: a harmonic voice whose loudness rises and falls at syllable rate,
/// different on each side so a recording that swapped or mixed the channels shows it.
pub fn voice_sample(channel: usize, n: usize) -> i16 {
    let t = n as f64 / 8000.0;
    let (fundamental, syllables) = if channel == 0 { (190.0, 4.0) } else { (120.0, 3.0) };
    let tau = 2.0 * std::f64::consts::PI;
    let envelope = 0.2 + 0.8 * (0.5 + 0.5 * (tau * syllables * t).sin());
    let harmonics: f64 = (1..=6).map(|k| (tau * fundamental * f64::from(k) * t).sin() / f64::from(k)).sum();
    (6000.0 * envelope * harmonics) as i16
}

/// One second of each channel's voice, encoded, in packet-sized frames.
#[derive(Debug)]
pub struct Voice {
    frames: [Vec<[u8; SAMPLES_PER_PACKET]>; 2],
}

impl Voice {
    pub fn new(codec: Codec) -> Self {
        let channel = |channel: usize| {
            (0..FRAMES_PER_LOOP)
                .map(|frame| {
                    let mut bytes = [0u8; SAMPLES_PER_PACKET];
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        *byte = codec.encode(voice_sample(channel, frame * SAMPLES_PER_PACKET + i));
                    }
                    bytes
                })
                .collect()
        };
        Self { frames: [channel(0), channel(1)] }
    }

    pub fn frame(&self, channel: usize, packet: u64) -> &[u8; SAMPLES_PER_PACKET] {
        &self.frames[channel % 2][(packet % FRAMES_PER_LOOP as u64) as usize]
    }
}

// --- RTP ---------------------------------------------------------------------------------------------------

/// One RTP stream of a call, as its sender thread keeps it.
#[derive(Debug)]
struct Stream {
    /// Bound to the port our offer named, connected to the port the answer named.
    socket: StdUdpSocket,
    header: RtpHeader,
    channel: usize,
    start: Instant,
    packets: u64,
    sent: u64,
    media: Arc<CallMediaState>,
}

/// What a call and its streams' sender share: the call stops them early (the recorder ended it), the
/// sender counts down what is left to send (the call sends BYE once that is nothing).
#[derive(Debug, Default)]
struct CallMediaState {
    stop: AtomicBool,
    unsent: AtomicU64,
}

/// The fixed part of a stream's packets; sequence number and timestamp start at random values (RFC 3550).
#[derive(Debug, Clone, Copy)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub ssrc: u32,
    pub first_sequence: u16,
    pub first_timestamp: u32,
}

impl RtpHeader {
    /// Writes packet number `index` of the stream (header and payload) into `packet`.
    pub fn write(&self, index: u64, payload: &[u8; SAMPLES_PER_PACKET], packet: &mut [u8; 12 + SAMPLES_PER_PACKET]) {
        let marker = if index == 0 { 0x80 } else { 0 };
        let sequence = self.first_sequence.wrapping_add(index as u16);
        let timestamp = self.first_timestamp.wrapping_add((index as u32).wrapping_mul(SAMPLES_PER_PACKET as u32));
        packet[0] = 0x80;
        packet[1] = marker | self.payload_type;
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        packet[12..].copy_from_slice(payload);
    }
}

#[derive(Debug, Default)]
struct SenderStats {
    packets: AtomicU64,
    errors: AtomicU64,
}

/// A sender thread: every tick, sends each stream the packets due by now (packet k of a stream is due at
/// its start + k·20 ms, so a late tick catches up in a burst, as a loaded SBC would). Returns each tick's
/// lag in microseconds. Ends when its queue is closed and its streams are done.
fn send_rtp(queue: &std_mpsc::Receiver<Stream>, voice: &Voice, tick: Duration, stats: &SenderStats) -> Vec<u64> {
    let mut streams: Vec<Stream> = Vec::new();
    let mut lags = Vec::new();
    let mut packet = [0u8; 12 + SAMPLES_PER_PACKET];
    let mut next_tick = Instant::now();
    let mut closed = false;
    loop {
        loop {
            match queue.try_recv() {
                Ok(stream) => streams.push(stream),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed && streams.is_empty() {
            return lags;
        }
        let now = Instant::now();
        lags.push(now.saturating_duration_since(next_tick).as_micros() as u64);
        let (mut sent, mut errors) = (0, 0);
        streams.retain_mut(|stream| {
            if stream.media.stop.load(Ordering::Relaxed) {
                return false;
            }
            let before = stream.sent;
            let elapsed = now.saturating_duration_since(stream.start).as_nanos();
            let due = ((elapsed / PTIME.as_nanos()) as u64 + 1).min(stream.packets);
            while stream.sent < due {
                stream.header.write(stream.sent, voice.frame(stream.channel, stream.sent), &mut packet);
                match stream.socket.send(&packet) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
                stream.sent += 1;
            }
            stream.media.unsent.fetch_sub(stream.sent - before, Ordering::Relaxed);
            stream.sent < stream.packets
        });
        stats.packets.fetch_add(sent, Ordering::Relaxed);
        stats.errors.fetch_add(errors, Ordering::Relaxed);
        next_tick += tick;
        let after = Instant::now();
        while next_tick <= after {
            next_tick += tick;
        }
        std::thread::sleep(next_tick - after);
    }
}

// --- SIP ---------------------------------------------------------------------------------------------------

/// The signalling socket all calls share (as an SBC's trunk does) and the calls it routes answers to.
#[derive(Debug)]
struct Sip {
    socket: UdpSocket,
    local: SocketAddr,
    target: SocketAddr,
    dialogs: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

impl Sip {
    async fn send(&self, message: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(message, self.target).await.map(|_| ())
    }

    fn route(&self, call_id: &str) -> Option<mpsc::UnboundedSender<Message>> {
        self.dialogs.lock().ok()?.get(call_id).cloned()
    }

    fn open(&self, call_id: &str) -> mpsc::UnboundedReceiver<Message> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut dialogs) = self.dialogs.lock() {
            dialogs.insert(call_id.to_owned(), sender);
        }
        receiver
    }

    fn close(&self, call_id: &str) {
        if let Ok(mut dialogs) = self.dialogs.lock() {
            dialogs.remove(call_id);
        }
    }
}

/// Reads the signalling socket: responses go to their call; requests from the recorder (a BYE of its own,
/// OPTIONS) are answered here, and a BYE is also told to its call.
async fn dispatch(sip: Arc<Sip>) {
    let mut buffer = vec![0u8; sip::MAX_MESSAGE_BYTES];
    loop {
        let Ok((len, from)) = sip.socket.recv_from(&mut buffer).await else {
            continue;
        };
        let Ok(message) = sip::parse(&buffer[..len], Transport::Datagram) else {
            continue;
        };
        let call = sip.route(message.call_id());
        if message.is_request() {
            let (status, reason) = match message.method() {
                Method::Ack => continue,
                Method::Bye if call.is_none() => (481, "Call/Transaction Does Not Exist"),
                Method::Invite => (488, "Not Acceptable Here"),
                _ => (200, "OK"),
            };
            if let Ok(response) = sip::build_response(&message, status, reason, &ResponseParts::default()) {
                let _ = sip.socket.send_to(&response, from).await;
            }
            if !matches!(message.method(), Method::Bye) {
                continue;
            }
        }
        if let Some(call) = call {
            let _ = call.send(message);
        }
    }
}

/// What every call task shares.
#[derive(Debug)]
struct CallContext {
    sip: Arc<Sip>,
    codec: Codec,
    duration: Duration,
    ports: Mutex<PortCursor>,
    queues: Vec<std_mpsc::Sender<Stream>>,
    active: AtomicU64,
    max_active: AtomicU64,
    seed: u64,
}

#[derive(Debug)]
struct PortCursor {
    range: PortRange,
    next: u16,
}

impl CallContext {
    /// A socket on the next free even port of the range (ports in use elsewhere are skipped).
    fn bind_rtp(&self, ip: IpAddr) -> std::io::Result<StdUdpSocket> {
        let mut cursor = self.ports.lock().map_err(|_| std::io::Error::other("port cursor poisoned"))?;
        let span = usize::from(cursor.range.last - cursor.range.first) / 2 + 1;
        for _ in 0..span {
            let port = cursor.next;
            cursor.next = if port.saturating_add(2) > cursor.range.last {
                cursor.range.first + cursor.range.first % 2
            } else {
                port + 2
            };
            match StdUdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(socket) => return Ok(socket),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free RTP port in --rtp-ports"))
    }
}

#[derive(Debug)]
enum Outcome {
    Answered { setup: Duration, by_recorder: bool, bye_ok: bool, packets: u64 },
    Refused(u16),
    Failed(String),
}

/// The identifiers of one call's dialog and its offer.
#[derive(Debug, Clone)]
pub struct CallIdentity {
    pub call_id: String,
    pub from_tag: String,
    pub caller: String,
    pub agent: String,
}

impl CallIdentity {
    fn new(index: usize, local: IpAddr) -> Self {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        Self {
            call_id: format!("{unique}@{local}"),
            from_tag: unique[20..].to_owned(),
            caller: format!("+1555{:07}", index % 10_000_000),
            agent: format!("{}", 7000 + index % 1000),
        }
    }
}

fn branch() -> String {
    format!("z9hG4bK{}", uuid::Uuid::now_v7().simple())
}

fn host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn address_type(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

/// A SIPREC INVITE (RFC 7866) as SBCs send it: `multipart/mixed` with an SDP offer of two labelled send-only
/// audio streams from `rtp_ports`, and RFC 7865 metadata naming the session, both participants and which
/// stream each sends.
pub fn invite(
    identity: &CallIdentity,
    local: SocketAddr,
    target: SocketAddr,
    rtp_ports: [u16; 2],
    codec: Codec,
) -> Vec<u8> {
    let ip = local.ip();
    let session = uuid::Uuid::now_v7().simple().to_string();
    let mut sdp = String::new();
    let _ = write!(
        sdp,
        "v=0\r\no=recall-loadgen {id} {id} IN {at} {ip}\r\ns=-\r\nc=IN {at} {ip}\r\nt=0 0\r\n",
        id = u64::from_str_radix(&session[24..], 16).unwrap_or(1),
        at = address_type(ip),
    );
    for (label, port) in rtp_ports.iter().enumerate() {
        let _ = write!(
            sdp,
            "m=audio {port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:{te} telephone-event/8000\r\n\
             a=fmtp:{te} 0-15\r\na=ptime:20\r\na=sendonly\r\na=label:{label}\r\n",
            pt = codec.payload_type(),
            name = codec.encoding(),
            te = TELEPHONE_EVENT,
            label = label + 1,
        );
    }
    // Identifiers are hex: valid xs:base64Binary, as RFC 7865 asks, without a base64 encoder.
    let id = |n: u8| format!("{}{n:02x}", &session[..30]);
    let metadata = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
         <datamode>complete</datamode>\r\n\
         <group group_id=\"{group}\"></group>\r\n\
         <session session_id=\"{session}\"><group-ref>{group}</group-ref></session>\r\n\
         <participant participant_id=\"{caller_id}\"><nameID aor=\"sip:{caller}@customer.example.com\"><name>Caller {caller}</name></nameID></participant>\r\n\
         <participant participant_id=\"{agent_id}\"><nameID aor=\"sip:{agent}@pbx.example.com\"><name>Agent {agent}</name></nameID></participant>\r\n\
         <stream stream_id=\"{stream1}\" session_id=\"{session}\"><label>1</label></stream>\r\n\
         <stream stream_id=\"{stream2}\" session_id=\"{session}\"><label>2</label></stream>\r\n\
         <participantstreamassoc participant_id=\"{caller_id}\"><send>{stream1}</send><recv>{stream2}</recv></participantstreamassoc>\r\n\
         <participantstreamassoc participant_id=\"{agent_id}\"><send>{stream2}</send><recv>{stream1}</recv></participantstreamassoc>\r\n\
         </recording>\r\n",
        group = id(1),
        session = id(2),
        caller_id = id(3),
        agent_id = id(4),
        stream1 = id(5),
        stream2 = id(6),
        caller = identity.caller,
        agent = identity.agent,
    );
    let boundary = format!("recall-loadgen-{}", &session[..16]);
    let body = format!(
        "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--{boundary}\r\n\
         Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{metadata}\r\n\
         --{boundary}--\r\n"
    );
    let local_host = format!("{}:{}", host(ip), local.port());
    let target_host = format!("{}:{}", host(target.ip()), target.port());
    let mut message = format!(
        "INVITE sip:srs@{target_host} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local_host};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{caller}@{local_ip}>;tag={tag}\r\n\
         To: <sip:srs@{target_host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:loadgen@{local_host}>;+sip.src\r\n\
         Require: siprec\r\n\
         Accept: application/sdp, application/rs-metadata+xml\r\n\
         Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
         User-Agent: recall-loadgen\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed;boundary={boundary}\r\n\
         Content-Length: {length}\r\n\r\n",
        branch = branch(),
        caller = identity.caller,
        local_ip = host(ip),
        tag = identity.from_tag,
        call_id = identity.call_id,
        length = body.len(),
    )
    .into_bytes();
    message.extend_from_slice(body.as_bytes());
    message
}

/// An in-dialog request without a body (ACK or BYE), to the remote target, with a fresh branch.
fn in_dialog_request(
    method: &str,
    cseq: u32,
    request_uri: &str,
    local: SocketAddr,
    from: &str,
    to: &str,
    call_id: &str,
) -> Vec<u8> {
    format!(
        "{method} {request_uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         User-Agent: recall-loadgen\r\n\
         Content-Length: 0\r\n\r\n",
        host = host(local.ip()),
        port = local.port(),
        branch = branch(),
    )
    .into_bytes()
}

/// Where each offered stream is to be sent, from the recorder's SDP answer (None: the stream was refused
/// with port 0). The answer's m-lines are in the offer's order (RFC 3264 §6).
pub fn destinations(answer: &SessionDescription, fallback: IpAddr) -> [Option<SocketAddr>; 2] {
    let mut out = [None, None];
    for (index, slot) in out.iter_mut().enumerate() {
        let Some(media) = answer.media.get(index) else { continue };
        if media.is_disabled() {
            continue;
        }
        let ip = answer
            .connection_of(index)
            .and_then(|connection| connection.address.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(fallback);
        *slot = Some(SocketAddr::new(ip, media.port));
    }
    out
}

/// The SDP of a 2xx answer: an `application/sdp` body, or the SDP part of a multipart one.
fn answer_sdp(response: &Message) -> Option<SessionDescription> {
    let content_type = response.content_type()?;
    if content_type.is("application/sdp") {
        return sdp::parse(response.body()).ok();
    }
    let parts = multipart::split(content_type, response.body()).ok()?;
    sdp::parse(parts.find(&["application/sdp"])?.body).ok()
}

fn mix(seed: u64) -> u64 {
    // splitmix64: distinct, well-spread SSRCs, sequence numbers and timestamps per stream.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One call: INVITE (retransmitted on timer A until a provisional or final answer), ACK, both streams for
/// the call's duration, then BYE (retransmitted on timer E) unless the recorder ended the call first.
async fn place_call(index: usize, context: Arc<CallContext>) -> Outcome {
    let sip = &context.sip;
    let ip = sip.local.ip();
    let sockets = match (context.bind_rtp(ip), context.bind_rtp(ip)) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(format!("RTP port: {e}")),
    };
    let ports = [0, 1].map(|i| sockets[i].local_addr().map_or(0, |a| a.port()));
    let identity = CallIdentity::new(index, ip);
    let request = invite(&identity, sip.local, sip.target, ports, context.codec);
    let mut answers = sip.open(&identity.call_id);
    let outcome = run_dialog(&context, index, &identity, &request, sockets, &mut answers).await;
    sip.close(&identity.call_id);
    outcome
}

async fn run_dialog(
    context: &CallContext,
    index: usize,
    identity: &CallIdentity,
    request: &[u8],
    sockets: [StdUdpSocket; 2],
    answers: &mut mpsc::UnboundedReceiver<Message>,
) -> Outcome {
    let sip = &context.sip;
    let from = format!("<sip:{}@{}>;tag={}", identity.caller, host(sip.local.ip()), identity.from_tag);
    let sent_at = Instant::now();
    if let Err(e) = sip.send(request).await {
        return Outcome::Failed(format!("send INVITE: {e}"));
    }
    // Timer A doubles from T1 until a provisional answer; timer B gives up after 64·T1.
    let mut interval = T1;
    let mut retransmit = Some(sent_at + T1);
    let deadline = sent_at + TRANSACTION_TIMEOUT;
    let ok = loop {
        let wake = retransmit.map_or(deadline, |at| at.min(deadline));
        match tokio::time::timeout_at(wake.into(), answers.recv()).await {
            Ok(Some(message)) => {
                let Some(status) = message.status() else { continue };
                if !matches!(message.method(), Method::Invite) {
                    continue;
                }
                match status {
                    100..=199 => retransmit = None,
                    200..=299 => break message,
                    _ => {
                        // The ACK of a non-2xx final answer belongs to the INVITE transaction (same branch).
                        let to = message.header("To").unwrap_or_default();
                        let via = request_via(request);
                        let ack = format!(
                            "ACK sip:srs@{target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\n\
                             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                            target = format_args!("{}:{}", host(sip.target.ip()), sip.target.port()),
                            call_id = identity.call_id,
                        );
                        let _ = sip.send(ack.as_bytes()).await;
                        return Outcome::Refused(status);
                    }
                }
            }
            Ok(None) => return Outcome::Failed("signalling stopped".into()),
            Err(_) if Instant::now() >= deadline => return Outcome::Failed("no final answer to the INVITE".into()),
            Err(_) => {
                let _ = sip.send(request).await;
                interval *= 2;
                retransmit = Some(Instant::now() + interval);
            }
        }
    };
    let setup = sent_at.elapsed();
    let to = ok.header("To").unwrap_or_default().to_owned();
    let remote_target = ok.contact().map_or_else(
        || format!("sip:srs@{}:{}", host(sip.target.ip()), sip.target.port()),
        |contact| contact.uri.raw.clone(),
    );
    let ack = in_dialog_request("ACK", 1, &remote_target, sip.local, &from, &to, &identity.call_id);
    let _ = sip.send(&ack).await;

    let Some(answer) = answer_sdp(&ok) else {
        bye(sip, answers, &remote_target, &from, &to, &identity.call_id).await;
        return Outcome::Failed("200 OK without a readable SDP answer".into());
    };
    let start = Instant::now();
    let packets_per_stream = (context.duration.as_secs_f64() / PTIME.as_secs_f64()).round() as u64;
    let state = Arc::new(CallMediaState::default());
    let mut packets = 0;
    let queue = &context.queues[index % context.queues.len()];
    for (channel, (socket, destination)) in sockets.into_iter().zip(destinations(&answer, sip.target.ip())).enumerate()
    {
        let Some(destination) = destination else { continue };
        if socket.connect(destination).is_err() || socket.set_nonblocking(true).is_err() {
            continue;
        }
        let random = mix(context.seed ^ ((index as u64) << 1 | channel as u64));
        let header = RtpHeader {
            payload_type: context.codec.payload_type(),
            ssrc: random as u32,
            first_sequence: (random >> 32) as u16,
            first_timestamp: mix(random) as u32,
        };
        let stream =
            Stream { socket, header, channel, start, packets: packets_per_stream, sent: 0, media: state.clone() };
        state.unsent.fetch_add(packets_per_stream, Ordering::Relaxed);
        if queue.send(stream).is_ok() {
            packets += packets_per_stream;
        } else {
            state.unsent.fetch_sub(packets_per_stream, Ordering::Relaxed);
        }
    }
    let now_active = context.active.fetch_add(1, Ordering::Relaxed) + 1;
    context.max_active.fetch_max(now_active, Ordering::Relaxed);

    // The last packet is due at start + duration - 20 ms; the BYE follows a tick after it, once the sender has
    // sent it (a late sender gets up to a second more).
    let end = start + context.duration + PTIME;
    let give_up = end + Duration::from_secs(1);
    let mut by_recorder = false;
    loop {
        let now = Instant::now();
        if now >= end && (state.unsent.load(Ordering::Relaxed) == 0 || now >= give_up) {
            break;
        }
        let wake = if now < end { end } else { now + Duration::from_millis(5) };
        match tokio::time::timeout_at(wake.into(), answers.recv()).await {
            Ok(Some(message)) => match (message.is_request(), message.method()) {
                (true, Method::Bye) => {
                    by_recorder = true;
                    break;
                }
                // A retransmitted 200 OK: our ACK was lost.
                (false, Method::Invite) if message.status().is_some_and(|s| (200..300).contains(&s)) => {
                    let _ = sip.send(&ack).await;
                }
                _ => {}
            },
            Ok(None) => break,
            Err(_) => {}
        }
    }
    state.stop.store(true, Ordering::Relaxed);
    context.active.fetch_sub(1, Ordering::Relaxed);
    let bye_ok =
        if by_recorder { false } else { bye(sip, answers, &remote_target, &from, &to, &identity.call_id).await };
    Outcome::Answered { setup, by_recorder, bye_ok, packets }
}

fn request_via(request: &[u8]) -> String {
    String::from_utf8_lossy(request)
        .lines()
        .find_map(|line| line.strip_prefix("Via: ").map(str::to_owned))
        .unwrap_or_default()
}

/// Sends BYE (timer E: from T1, doubling up to T2; timer F: 64·T1) and waits for its final answer on the
/// dialog's channel; true for a 2xx.
async fn bye(
    sip: &Sip,
    answers: &mut mpsc::UnboundedReceiver<Message>,
    remote_target: &str,
    from: &str,
    to: &str,
    call_id: &str,
) -> bool {
    let request = in_dialog_request("BYE", 2, remote_target, sip.local, from, to, call_id);
    let sent_at = Instant::now();
    let deadline = sent_at + TRANSACTION_TIMEOUT;
    let mut interval = T1;
    let mut retransmit = sent_at + T1;
    if sip.send(&request).await.is_err() {
        return false;
    }
    loop {
        match tokio::time::timeout_at(retransmit.min(deadline).into(), answers.recv()).await {
            Ok(Some(message)) => match (message.status(), message.method()) {
                (Some(status), Method::Bye) if status >= 200 => return (200..300).contains(&status),
                // A provisional answer: keep retransmitting, at T2 (RFC 3261 §17.1.2.2).
                (Some(_), Method::Bye) => interval = T2,
                _ => {}
            },
            Ok(None) => return false,
            Err(_) if Instant::now() >= deadline => return false,
            Err(_) => {
                let _ = sip.send(&request).await;
                interval = (interval * 2).min(T2);
                retransmit = Instant::now() + interval;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Imports live in the tests that use them: the load benchmark includes this file with its tests
    // compiled out.
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:5062".parse().expect("address")
    }

    fn target() -> SocketAddr {
        "127.0.0.1:5080".parse().expect("address")
    }

    #[test]
    fn the_invite_is_a_siprec_offer_of_two_labelled_recordable_streams_with_metadata() {
        use recall_recorder::siprec::{self, OfferKind};
        let identity = CallIdentity::new(42, local().ip());
        let bytes = invite(&identity, local(), target(), [20_000, 20_002], Codec::Pcmu);
        let message = sip::parse(&bytes, Transport::Datagram).expect("our INVITE parses");
        assert!(message.is_request());
        assert_eq!(message.call_id(), identity.call_id);
        let offer = siprec::recording_offer(&message).expect("a recording offer");
        assert_eq!(offer.kind, OfferKind::Siprec);
        assert!(offer.siprec_indicated);
        let recordable: Vec<_> = offer.streams.iter().filter(|s| s.is_recordable()).collect();
        assert_eq!(recordable.len(), 2);
        assert_eq!(recordable.iter().map(|s| s.label.as_deref()).collect::<Vec<_>>(), [Some("1"), Some("2")]);
        assert_eq!(recordable.iter().map(|s| s.port).collect::<Vec<_>>(), [20_000, 20_002]);
        assert!(recordable.iter().all(|s| !s.on_hold && s.direction == sdp::Direction::SendOnly));
        for media in &offer.sdp.media {
            assert_eq!(media.rtpmap(0).map(|m| m.encoding.as_str()), Some("PCMU"));
            assert_eq!(media.rtpmap(TELEPHONE_EVENT).map(|m| m.encoding.as_str()), Some("telephone-event"));
        }
        let metadata = offer.metadata.as_ref().expect("metadata");
        assert_eq!(metadata.participants.len(), 2);
        let aors: Vec<_> = offer.parties.iter().filter_map(|p| p.aor.clone()).collect();
        assert_eq!(aors, ["sip:+15550000042@customer.example.com", "sip:7042@pbx.example.com"]);
        let agent = |aor: &str| siprec::aor_user(aor) == Some("7042");
        let assignment = offer.assign_channels(agent);
        assert_eq!(assignment.streams.len(), 2, "each stream has a channel: {assignment:?}");
        assert_ne!(assignment.streams[0].channel, assignment.streams[1].channel);
    }

    #[test]
    fn the_recorders_answer_names_where_each_stream_goes() {
        use recall_recorder::siprec;
        let identity = CallIdentity::new(1, local().ip());
        let bytes = invite(&identity, local(), target(), [20_000, 20_002], Codec::Pcma);
        let message = sip::parse(&bytes, Transport::Datagram).expect("parses");
        let offer = siprec::recording_offer(&message).expect("offer");
        let address: IpAddr = "198.51.100.7".parse().expect("ip");
        let config = sdp::AnswerConfig { address, session_id: 1, session_version: 1 };
        let written = sdp::answer(&offer.sdp, &config, &[Some(31_000), Some(31_002)]).expect("answer");
        let answer = sdp::parse(written.sdp.as_bytes()).expect("the answer parses");
        let fallback: IpAddr = "192.0.2.1".parse().expect("ip");
        let [left, right] = destinations(&answer, fallback);
        assert_eq!(left, Some(SocketAddr::new(address, 31_000)));
        assert_eq!(right, Some(SocketAddr::new(address, 31_002)));
    }

    #[test]
    fn g711_encodes_what_the_recorders_decoder_reads_back() {
        use recall_recorder::media::{Codec as MediaCodec, Decoder};
        for (codec, media) in [(Codec::Pcmu, MediaCodec::Pcmu), (Codec::Pcma, MediaCodec::Pcma)] {
            let samples: Vec<i16> = (i16::MIN..=i16::MAX).step_by(97).collect();
            let encoded: Vec<u8> = samples.iter().map(|s| codec.encode(*s)).collect();
            let mut decoded = Vec::new();
            Decoder::new(media).decode(&encoded, &mut decoded);
            for (original, back) in samples.iter().zip(&decoded) {
                let error = (i32::from(*original) - i32::from(*back)).abs();
                let allowed = (i32::from(*original).abs() / 16).max(16);
                assert!(error <= allowed, "{codec:?}: {original} came back as {back}");
            }
        }
    }

    #[test]
    fn packets_parse_as_rtp_and_each_channel_carries_its_own_voice() {
        use recall_recorder::media::{Codec as MediaCodec, Decoder, RtpPacket};
        let voice = Voice::new(Codec::Pcmu);
        let header =
            RtpHeader { payload_type: 0, ssrc: 0xdead_beef, first_sequence: 65_535, first_timestamp: u32::MAX - 100 };
        let mut packet = [0u8; 12 + SAMPLES_PER_PACKET];
        let mut energy = [0f64; 2];
        let mut first_samples = [Vec::new(), Vec::new()];
        for channel in 0..2 {
            for index in 0..50u64 {
                header.write(index, voice.frame(channel, index), &mut packet);
                let parsed = RtpPacket::parse(&packet).expect("RTP");
                assert_eq!(parsed.ssrc, 0xdead_beef);
                assert_eq!(parsed.sequence, 65_535u16.wrapping_add(index as u16));
                assert_eq!(parsed.marker, index == 0);
                let mut samples = Vec::new();
                Decoder::new(MediaCodec::Pcmu).decode(&parsed.payload, &mut samples);
                energy[channel] += samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
                if index == 1 {
                    first_samples[channel] = samples;
                }
            }
        }
        let rms = energy.map(|e| (e / 8000.0).sqrt());
        assert!(rms.iter().all(|r| *r > 1000.0), "not silence: {rms:?}");
        assert_ne!(first_samples[0], first_samples[1], "the channels differ");
    }
}
