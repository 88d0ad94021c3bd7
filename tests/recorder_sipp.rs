//! The recorder end to end with a real SIP peer. sipp, as a SIPREC recording client
//! (`tests/sipp/siprec_uac.xml`), offers two labelled PCMU streams of real speech (espeak-ng, two voices,
//! through sox to 8 kHz μ-law, replayed from a pcap this test writes), pauses the recording by re-INVITE,
//! resumes it and ends it by BYE. The test decodes the stored file (MP3 and WAV) and checks it against the
//! sources and the call's events. It never skips: without sipp, espeak-ng or sox it fails and says how to
//! get them (`scripts/test` installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../recorder/tests/common/decode.rs"]
mod shared_decode;

use chrono::{DateTime, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::Digest;

const RATE: usize = 8000;
/// One RTP packet: 20 ms of PCMU.
const PACKET: usize = 160;
/// The pcap's destination ports: the first stream's is the lowest, so sipp sends it to the recorder's
/// first answered port; the second goes to that port + 2 (see the scenario's header).
const PCAP_PORTS: [u16; 2] = [10000, 10002];
/// The second stream starts this much later than the first: the recording must keep that offset.
const SECOND_STREAM_LATE_MS: usize = 300;
/// Longest sentence kept, so that each fits between the scenario's re-INVITEs with silence around it.
const MAX_SENTENCE_MS: usize = 3600;
/// Silence between a sentence (or the audio sent while paused) and the nearest re-INVITE.
const MARGIN_MS: usize = 500;
/// Where the first sentences start in their streams: after the jitter buffer has measured the stream's
/// first packet's own offset (over its first second) and corrected it (within a few hundred ms more). sipp
/// sends its first packets irregularly, so that correction (about 20 ms, spread over the frames that follow)
/// would otherwise fall inside the first sentence and blur its correlation; later speech is unaffected.
const LEAD_IN_MS: usize = 1500;
const SILENT_DBFS: f64 = -60.0;

// --- Tools ----------------------------------------------------------------------------------------

/// Fails, naming the way out, when a program the test drives is missing.
fn require_tools() {
    for (program, probe, package) in
        [("sipp", "-v", "sip-tester"), ("espeak-ng", "--version", "espeak-ng"), ("sox", "--version", "sox")]
    {
        let found = Command::new(program).arg(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        assert!(
            found,
            "`{program}` is not installed: run scripts/test, which installs it (as root: apt-get install {package}), \
             or install the Debian packages sip-tester, sox and espeak-ng yourself"
        );
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// --- The speech -----------------------------------------------------------------------------------

/// A sentence spoken by espeak-ng, as 8 kHz μ-law bytes (sox resamples, normalises to −3 dBFS and encodes),
/// cut at [`MAX_SENTENCE_MS`].
fn speak(dir: &Path, name: &str, voice: &str, pitch: u32, text: &str) -> Vec<u8> {
    let wav = dir.join(format!("{name}.wav"));
    let ulaw = dir.join(format!("{name}.ul"));
    run(Command::new("espeak-ng").args(["-v", voice, "-p", &pitch.to_string(), "-s", "165", "-w"]).arg(&wav).arg(text));
    run(Command::new("sox")
        .arg(&wav)
        .args(["-t", "raw", "-r", "8000", "-c", "1", "-e", "mu-law"])
        .arg(&ulaw)
        .args(["gain", "-n", "-3"]));
    let mut bytes = std::fs::read(&ulaw).expect("sox's output");
    bytes.truncate(MAX_SENTENCE_MS * RATE / 1000);
    assert!(bytes.len() > RATE, "{name}: espeak-ng said less than a second");
    bytes
}

/// G.711 μ-law to linear (ITU-T G.711, as every decoder does it).
fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let magnitude = ((i32::from(u & 0x0f) << 3) + 0x84) << exponent;
    let sample = magnitude - 0x84;
    (if u & 0x80 != 0 { -sample } else { sample }) as i16
}

fn linear(ulaw: &[u8]) -> Vec<f64> {
    ulaw.iter().map(|b| f64::from(ulaw_to_linear(*b)) / 32768.0).collect()
}

/// μ-law's zero.
const ULAW_SILENCE: u8 = 0xff;

/// When the scenario sends its re-INVITEs and BYE, in ms after the ACK that starts the pcap's play: read
/// from its `<pause milliseconds="…"/>` elements, so the scenario alone says it.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    pause_at: usize,
    paused_for: usize,
    until_end: usize,
}

fn schedule(scenario: &str) -> Schedule {
    let pauses: Vec<usize> = scenario
        .split("<pause milliseconds=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().and_then(|n| n.parse().ok()).expect("a pause in milliseconds"))
        .collect();
    let [pause_at, paused_for, until_end] = pauses[..] else { panic!("the scenario has three pauses: {pauses:?}") };
    Schedule { pause_at, paused_for, until_end }
}

/// What one stream sends, on the pcap's clock (ms from its first packet).
#[derive(Debug)]
struct StreamPlan {
    /// When its first packet leaves.
    start_ms: usize,
    /// The sentence before the pause and the one after it: where each starts, and its audio.
    sentences: [(usize, Vec<u8>); 2],
    /// Audio sent while the recording is paused, which must not reach the file.
    while_paused: (usize, Vec<u8>),
    /// Its whole payload from `start_ms` on: 8 kHz μ-law, silence between the parts.
    payload: Vec<u8>,
}

impl StreamPlan {
    fn new(start_ms: usize, end_ms: usize, sentences: [(usize, Vec<u8>); 2], while_paused: (usize, Vec<u8>)) -> Self {
        let samples = (end_ms - start_ms) * RATE / 1000 / PACKET * PACKET;
        let mut payload = vec![ULAW_SILENCE; samples];
        for (at, audio) in sentences.iter().chain([&while_paused]) {
            let from = (at - start_ms) * RATE / 1000;
            assert!(from + audio.len() <= samples, "the audio at {at} ms fits in the stream");
            payload[from..from + audio.len()].copy_from_slice(audio);
        }
        Self { start_ms, sentences, while_paused, payload }
    }
}

/// The two streams: the caller's voice on label 1 and the agent's on label 2, two sentences each around the
/// pause, and (the same for both) a sentence sent while paused.
fn plan_streams(dir: &Path, schedule: Schedule) -> [StreamPlan; 2] {
    let resume_at = schedule.pause_at + schedule.paused_for;
    let end = resume_at + schedule.until_end - MARGIN_MS;
    let late = SECOND_STREAM_LATE_MS;
    let first = [
        speak(dir, "left-1", "en-us", 30, "The quick brown fox jumps over the lazy dog by the river."),
        speak(dir, "left-2", "en-us", 30, "I would like to know where my parcel is, please."),
    ];
    let second = [
        speak(dir, "right-1", "en+f3", 75, "Thank you for calling. How can I help you today?"),
        speak(dir, "right-2", "en+f3", 75, "Of course. One moment while I look that up for you."),
    ];
    let secret = speak(dir, "paused", "en-gb", 50, "My card number is four five six seven, eight nine zero one.");
    let secret_at = schedule.pause_at + MARGIN_MS;
    let secret_room = schedule.paused_for.checked_sub(2 * MARGIN_MS).expect("the pause is long enough");
    let secret = secret[..secret.len().min(secret_room * RATE / 1000)].to_vec();
    for sentence in first.iter().chain(&second) {
        // Each sentence ends, with a margin, before the re-INVITE that follows it.
        let length = sentence.len() * 1000 / RATE;
        assert!(late + LEAD_IN_MS + length + MARGIN_MS <= schedule.pause_at, "a sentence is too long for the pause");
        assert!(late + MARGIN_MS + length + 2 * MARGIN_MS <= schedule.until_end, "a sentence is too long for the end");
    }
    let [first_1, first_2] = first;
    let [second_1, second_2] = second;
    [
        StreamPlan::new(0, end, [(LEAD_IN_MS, first_1), (resume_at + MARGIN_MS, first_2)], (secret_at, secret.clone())),
        StreamPlan::new(
            late,
            end,
            [(late + LEAD_IN_MS, second_1), (resume_at + late + MARGIN_MS, second_2)],
            (secret_at, secret),
        ),
    ]
}

// --- The pcap -------------------------------------------------------------------------------------

/// Writes the streams' RTP (PT 0, 20 ms packets, distinct SSRCs, sequence numbers and timestamps running
/// on through the pause as a real sender's do) as Ethernet/IPv4/UDP records of a classic pcap file, in the
/// order of their times: sipp replays them with the gaps between their times, from the ACK on.
fn write_pcap(path: &Path, streams: &[StreamPlan; 2]) {
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    for (index, stream) in streams.iter().enumerate() {
        let ssrc: u32 = [0x5EC0_0001, 0x5EC0_0002][index];
        let port = PCAP_PORTS[index];
        for (n, payload) in stream.payload.chunks(PACKET).enumerate() {
            let micros = (stream.start_ms as u64 * 1000) + n as u64 * 20_000;
            let mut rtp = Vec::with_capacity(12 + PACKET);
            rtp.push(0x80); // version 2
            rtp.push(if n == 0 { 0x80 } else { 0x00 }); // marker on the first packet, PT 0 (PCMU)
            rtp.extend_from_slice(&(1000 + n as u16).to_be_bytes());
            rtp.extend_from_slice(&(16_000 + (n * PACKET) as u32).to_be_bytes());
            rtp.extend_from_slice(&ssrc.to_be_bytes());
            rtp.extend_from_slice(payload);
            let udp_len = 8 + rtp.len() as u16;
            let mut frame = Vec::with_capacity(14 + 20 + udp_len as usize);
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]); // dst, src, IPv4
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, don't fragment, TTL, UDP, checksum
            ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
            let checksum = !ip.chunks(2).fold(0u32, |sum, word| {
                let sum = sum + u32::from(u16::from_be_bytes([word[0], word[1]]));
                (sum & 0xffff) + (sum >> 16)
            }) as u16;
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&(port - 1000).to_be_bytes());
            frame.extend_from_slice(&port.to_be_bytes());
            frame.extend_from_slice(&udp_len.to_be_bytes());
            frame.extend_from_slice(&[0, 0]); // no UDP checksum: sipp computes its own
            frame.extend_from_slice(&rtp);
            records.push((micros, frame));
        }
    }
    records.sort_by_key(|(micros, _)| *micros);
    // sipp (3.6.1) sends a pcap's first packet at once and every later one a packet time (20 ms) earlier than
    // the capture's times say. A copy of the first packet 20 ms before it takes that: the recorder drops it as
    // a duplicate, and every real packet leaves on time.
    let first = records[0].1.clone();
    for record in &mut records {
        record.0 += 20_000;
    }
    records.insert(0, (0, first));
    let mut file = Vec::new();
    // Classic pcap, microsecond times, snap length 65535, link type 1 (Ethernet).
    for field in [0xa1b2_c3d4u32.to_le_bytes().as_slice(), &2u16.to_le_bytes(), &4u16.to_le_bytes()] {
        file.extend_from_slice(field);
    }
    for field in [0u32, 0, 65_535, 1] {
        file.extend_from_slice(&field.to_le_bytes());
    }
    for (micros, frame) in records {
        let seconds = (micros / 1_000_000) as u32;
        let micros = (micros % 1_000_000) as u32;
        for field in [seconds, micros, frame.len() as u32, frame.len() as u32] {
            file.extend_from_slice(&field.to_le_bytes());
        }
        file.extend_from_slice(&frame);
    }
    std::fs::write(path, file).expect("write the pcap");
}

// --- The database and the server -------------------------------------------------------------------

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// A fresh database on the test server, dropped at the end.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn create() -> Self {
        let server = server_url();
        let name = format!("recall_sipp_{}", uuid::Uuid::now_v7().simple());
        runtime().block_on(async {
            let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await.unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {server} (set DATABASE_URL, or run scripts/test): {e}")
            });
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create the database");
        });
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base).to_owned();
        Self { url: format!("{base}/{name}"), name }
    }

    fn query(&self, sql: &str) -> Vec<sqlx::postgres::PgRow> {
        runtime().block_on(async {
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url)
                .await
                .expect("connect to the test database");
            sqlx::query(sql).fetch_all(&mut connection).await.expect("query")
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (server_url(), self.name.clone());
        runtime().block_on(async {
            if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
            }
        });
    }
}

struct Server {
    child: Child,
    http: String,
    sip: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(db: &Database, data_dir: &Path, rtp_ports: (u16, u16)) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recall"))
            .args(["--log-format", "json", "serve", "--http", "127.0.0.1:0", "--sip", "127.0.0.1:0"])
            .arg("--rtp-ports")
            .arg(format!("{}-{}", rtp_ports.0, rtp_ports.1))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", &db.url, "--site", "sipp", "--node", "n1", "--default-tenant"])
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("recall starts");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (found, addresses) = std::sync::mpsc::channel();
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    for key in ["address", "sip_address"] {
                        if let Some(address) = entry["fields"][key].as_str() {
                            let _ = found.send((key, address.to_owned()));
                        }
                    }
                }
                kept.lock().expect("logs").push(line);
            }
        });
        let mut server = Self { child, http: String::new(), sip: String::new(), logs };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.http.is_empty() || server.sip.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match addresses.recv_timeout(left) {
                Ok(("address", address)) => server.http = address,
                Ok((_, address)) => server.sip = address,
                Err(_) => panic!(
                    "recall did not report both its HTTP address and its SIP address (fields.sip_address) in time:\n{}",
                    server.log_text()
                ),
            }
        }
        server
    }

    fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    fn graphql(&self, token: Option<&str>, query: &str) -> Value {
        let body = serde_json::json!({ "query": query }).to_string();
        let mut stream = TcpStream::connect(&self.http).expect("connect");
        let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            stream,
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            body.len()
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body: Value = serde_json::from_str(body).expect("JSON body");
        assert!(body.get("errors").is_none(), "{query}: {body}");
        body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Signs in as a new root administrator and makes the tenant `default` (which trusts loopback) record in
/// `format` (a GraphQL AudioFormat; None keeps the default, MP3 stereo 32 kbit/s); returns the tenant's id.
fn set_up_tenant(server: &Server, db: &Database, data_dir: &Path, format: Option<&str>) -> String {
    let password = "sipp end to end test";
    let mut create = Command::new(env!("CARGO_BIN_EXE_recall"))
        .args(["admin", "create-root", "--username", "root", "--password-stdin", "--database-url", &db.url])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recall admin create-root runs");
    writeln!(create.stdin.take().expect("stdin"), "{password}").expect("password");
    let made = create.wait_with_output().expect("create-root finishes");
    assert!(made.status.success(), "create-root: {}", String::from_utf8_lossy(&made.stderr));
    let signed_in = server
        .graphql(None, &format!("mutation {{ signIn(username: \"root\", password: \"{password}\") {{ token }} }}"));
    let token = signed_in["data"]["signIn"]["token"].as_str().expect("a token").to_owned();
    let token = Some(token.as_str());

    // --default-tenant makes it at the start; the read model shows it a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let tenant = loop {
        let tenants = server.graphql(token, "{ tenants(first: 100) { edges { node { id name } } } }");
        let found = tenants["data"]["tenants"]["edges"]
            .as_array()
            .expect("tenants")
            .iter()
            .find(|edge| edge["node"]["name"] == "default")
            .map(|edge| edge["node"]["id"].as_str().expect("id").to_owned());
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "no tenant named default: {tenants}");
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(format) = format {
        let set = format!("mutation {{ setAudioFormat(tenantId: \"{tenant}\", format: {format}) {{ id }} }}");
        server.graphql(token, &set);
    }
    // The recorder reads tenants from the read model, again every second: once the read model shows the
    // tenant as wanted, the recorder knows it two seconds later (it gives no other sign).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown =
            server.graphql(token, &format!("{{ tenant(id: \"{tenant}\") {{ audioFormat recordingNetworks }} }}"));
        let shown = &shown["data"]["tenant"];
        let trusted = shown["recordingNetworks"].as_array().is_some_and(|n| n.iter().any(|n| n == "127.0.0.0/8"));
        let formatted = match format {
            Some(format) => shown["audioFormat"] == format,
            None => shown["audioFormat"] == "MP_3_STEREO_32", // async-graphql's name for Mp3Stereo32
        };
        if trusted && formatted {
            break;
        }
        assert!(Instant::now() < deadline, "the tenant is not shown as set up: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    tenant
}

// --- sipp -----------------------------------------------------------------------------------------

/// The first even port P from `from` on with P, P + 2, … (`count` even ports) free for UDP on loopback.
/// The tests look below Linux's ephemeral ports (32768 and up), where other programs' sockets land.
/// sipp binds its media port and that + 2 itself (its RTP echo sockets) and fails rather than moves when
/// one is taken; the recorder takes its RTP ports from the range it is given.
fn free_even_ports(from: u16, count: u16) -> u16 {
    (from..from + 900)
        .step_by(2 * usize::from(count))
        .find(|first| (0..count).all(|k| UdpSocket::bind(("127.0.0.1", first + 2 * k)).is_ok()))
        .expect("free UDP ports on loopback")
}

/// Runs the scenario from `dir` (which holds it and `siprec.pcap`) against the recorder.
fn run_sipp(dir: &Path, sip: &str, transport: &str, media_port: u16) {
    let mut sipp = Command::new("sipp")
        .arg(sip)
        .args(["-sf", "siprec_uac.xml", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-t", transport, "-m", "1"])
        .args(["-mp", &media_port.to_string(), "-key", "label2_port", &(media_port + 2).to_string()])
        .args(["-trace_msg", "-trace_err", "-trace_logs", "-nostdin", "-timeout", "90s", "-timeout_error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = sipp.try_wait().expect("wait for sipp") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sipp.kill();
            break sipp.wait().expect("sipp killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let mut stdout = String::new();
        let mut stderr = String::new();
        let _ = sipp.stdout.take().expect("stdout").read_to_string(&mut stdout);
        let _ = sipp.stderr.take().expect("stderr").read_to_string(&mut stderr);
        panic!(
            "sipp failed ({status}; it needs root for its raw RTP socket):\n{stderr}\n{}\n{}",
            tail(&stdout, 4000),
            sipp_logs(dir)
        );
    }
}

fn tail(text: &str, chars: usize) -> &str {
    let from = text.len().saturating_sub(chars);
    let from = (from..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    &text[from..]
}

/// sipp's message trace, errors and log, for a failure's message.
fn sipp_logs(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|path| path.extension().is_some_and(|e| e == "log"));
    logs.sort();
    logs.iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            format!("--- {} ---\n{}", path.display(), tail(&text, 12_000))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// When sipp first sent the request with this CSeq (e.g. `1 ACK`, `4 BYE`), from its message trace (whose
/// times are local).
fn sent_at(dir: &Path, cseq: &str) -> DateTime<Utc> {
    let trace = std::fs::read_dir(dir)
        .expect("sipp's directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_messages.log"))
        .expect("sipp's message trace");
    let trace = std::fs::read_to_string(trace).expect("sipp's message trace");
    // Each message: "----------------------------------------------- 2026-12-03 13:33:59.151221", then
    // "UDP message sent (2754 bytes):", a blank line and the message.
    for block in trace.split("\n-----").skip(1) {
        let mut lines = block.lines();
        let stamp = lines.next().unwrap_or_default().trim_start_matches('-').trim();
        let sent = lines.next().is_some_and(|l| l.contains("message sent"));
        let mut message = lines.skip_while(|l| l.trim().is_empty());
        let request = message.next().is_some_and(|l| !l.starts_with("SIP/2.0"));
        if sent && request && message.any(|l| l.trim() == format!("CSeq: {cseq}")) {
            let local = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f").expect("sipp's time");
            let local = local.and_local_timezone(chrono::Local).single().expect("an unambiguous local time");
            return local.with_timezone(&Utc);
        }
    }
    panic!("sipp's trace shows no request with CSeq {cseq}")
}

// --- The events -----------------------------------------------------------------------------------

#[derive(Debug)]
struct CallEvents {
    call_id: String,
    /// (event type, payload) in the call's order.
    events: Vec<(String, Value)>,
}

impl CallEvents {
    fn one(&self, event_type: &str) -> &Value {
        let found: Vec<&Value> = self.events.iter().filter(|(t, _)| t == event_type).map(|(_, p)| p).collect();
        assert_eq!(found.len(), 1, "one {event_type} in {:#?}", self.events);
        found[0]
    }

    fn position(&self, event_type: &str) -> usize {
        self.events.iter().position(|(t, _)| t == event_type).expect("present")
    }
}

/// The one call's events once its recording is stored (or failed).
fn wait_for_recording(db: &Database, server: &Server) -> CallEvents {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = db.query(
            "SELECT aggregate_id, event_type, payload FROM events WHERE aggregate_type = 'Call' \
             ORDER BY aggregate_id, sequence",
        );
        let events: Vec<(String, String, Value)> = rows
            .iter()
            .map(|row| {
                use sqlx::Row;
                let event_type: String = row.get("event_type");
                let payload: Value = row.get("payload");
                // cqrs-es stores an event as {"<type>": {…}}.
                let payload = match payload.get(&event_type) {
                    Some(inner) if payload.as_object().is_some_and(|o| o.len() == 1) => inner.clone(),
                    _ => payload,
                };
                (row.get("aggregate_id"), event_type, payload)
            })
            .collect();
        if let Some((_, _, failed)) = events.iter().find(|(_, t, _)| t == "RecordingFailed") {
            panic!("the recorder reports a failed recording: {failed}\nevents: {events:#?}\n{}", server.log_text());
        }
        if events.iter().any(|(_, t, _)| t == "RecordingStored") {
            let call_id = events[0].0.clone();
            assert!(events.iter().all(|(id, _, _)| *id == call_id), "one call only: {events:#?}");
            return CallEvents { call_id, events: events.into_iter().map(|(_, t, p)| (t, p)).collect() };
        }
        assert!(
            Instant::now() < deadline,
            "no RecordingStored 60 s after the call ended; events: {events:#?}\nrecall's log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a time: {value}"))
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

// --- The audio ------------------------------------------------------------------------------------

/// Decodes a stored file (the recorder's tests' decoder, shared by path).
fn decode(path: &Path) -> (u32, Vec<Vec<f64>>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    shared_decode::decode(bytes, extension)
}

/// Normalised cross-correlation of `source` with `recorded` starting at sample `at` (0 where it would run
/// off either end).
fn correlation_at(source: &[f64], recorded: &[f64], at: i64) -> f64 {
    let Ok(at) = usize::try_from(at) else { return 0.0 };
    let Some(window) = recorded.get(at..at + source.len()) else { return 0.0 };
    let dot: f64 = source.iter().zip(window).map(|(a, b)| a * b).sum();
    let energy = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
    dot / (energy(source) * energy(window)).sqrt().max(1e-12)
}

/// Sums of `step` samples: a crude low-pass and decimation for the coarse search.
fn decimate(x: &[f64], step: usize) -> Vec<f64> {
    x.chunks(step).map(|c| c.iter().sum()).collect()
}

/// Where in `recorded` `source` sits best, searched over [`from`, `to`) samples: a coarse search at 1 kHz on
/// the low-passed signals, then every sample within 12 ms of the coarse best (the crude low-pass can put
/// the coarse best a pitch period off, about 4 ms for these voices). Returns (start sample, correlation).
fn locate(source: &[f64], recorded: &[f64], from: i64, to: i64) -> (i64, f64) {
    const STEP: i64 = 8;
    const FINE: i64 = 96;
    let (coarse_source, coarse_recorded) = (decimate(source, STEP as usize), decimate(recorded, STEP as usize));
    let coarse = (from / STEP..to / STEP)
        .map(|at| (at, correlation_at(&coarse_source, &coarse_recorded, at)))
        .fold((0, f64::MIN), |best, next| if next.1 > best.1 { next } else { best });
    (coarse.0 * STEP - FINE..=coarse.0 * STEP + FINE)
        .map(|at| (at, correlation_at(source, recorded, at)))
        .fold((0, f64::MIN), |best, next| if next.1 > best.1 { next } else { best })
}

/// RMS of the loudest 20 ms window of `x`, in dBFS.
fn loudest_window_dbfs(x: &[f64]) -> f64 {
    let loudest =
        x.chunks(RATE / 50).map(|w| (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt()).fold(0.0, f64::max);
    20.0 * loudest.max(1e-10).log10()
}

/// Checks a recording's audio against the streams sent: `pause` is (paused, resumed) in ms from the call's
/// start, as the events say. Returns where the pcap's start is in the file (ms).
fn check_audio(path: &Path, format: &str, streams: &[StreamPlan; 2], pause: (i64, i64), duration_ms: i64) -> i64 {
    let (rate, channels) = decode(path);
    assert_eq!(rate as usize, RATE, "G.711 calls are recorded at 8 kHz");
    assert_eq!(channels.len(), 2, "stereo");
    let file_ms = (channels[0].len() * 1000 / RATE) as i64;
    assert!((file_ms - duration_ms).abs() <= 100, "the file lasts {file_ms} ms, the call {duration_ms} ms");

    // Each channel against its source. Label 1 is left (no user's extension is a participant). The file's
    // clock starts at the call's start; the pcap's (the sources' offsets) at its first packet, so each
    // sentence is found at (where the pcap started in the file) + (its offset in the pcap). Raw waveform
    // correlation, no envelope: μ-law then MP3 at 32 kbit/s keeps speech's waveform well enough for ≥ 0.9.
    let search = (-(RATE as i64) / 2, 3 * RATE as i64);
    let mut pcap_starts = Vec::new();
    for (channel, stream) in streams.iter().enumerate() {
        for (at_ms, audio) in &stream.sentences {
            let offset = (at_ms * RATE / 1000) as i64;
            let source = linear(audio);
            let (found, correlation) = locate(&source, &channels[channel], offset + search.0, offset + search.1);
            let other = locate(&source, &channels[1 - channel], offset + search.0, offset + search.1).1;
            assert!(
                correlation >= 0.9,
                "{format}: channel {channel} holds the sentence at {at_ms} ms with correlation {correlation:.3} only"
            );
            assert!(
                other < 0.5,
                "{format}: the sentence at {at_ms} ms of channel {channel} leaks into the other ({other:.3})"
            );
            pcap_starts.push((found - offset) * 1000 / RATE as i64);
            eprintln!("{format}: channel {channel}, sentence at {at_ms} ms: correlation {correlation:.3} (other channel {other:.3}), at {} ms", found * 1000 / RATE as i64);
        }
    }
    // Alignment: every sentence puts the pcap's start at the same place in the file, whichever stream and
    // whichever side of the pause it is on (the second stream started later; that offset is kept).
    let (earliest, latest) = (pcap_starts.iter().min().expect("some"), pcap_starts.iter().max().expect("some"));
    assert!(latest - earliest <= 20, "{format}: the sentences place the pcap's start at {pcap_starts:?} ms");

    // The pause: from RecordingPaused to RecordingResumed the file is silent, though the client sent speech
    // all through it; and that speech lies inside the pause, so the check is not vacuous.
    let pause_from = pause.0 as usize * RATE / 1000;
    let pause_to = (pause.1 as usize * RATE / 1000).min(channels[0].len());
    let (secret_at, secret) = &streams[0].while_paused;
    let secret_from = usize::try_from(*earliest + *secret_at as i64).unwrap_or(0) * RATE / 1000;
    assert!(
        pause_from < secret_from && secret_from + secret.len() < pause_to,
        "the audio sent while paused ({secret_from}..{}) lies inside the pause ({pause_from}..{pause_to})",
        secret_from + secret.len()
    );
    for (channel, samples) in channels.iter().enumerate() {
        let level = loudest_window_dbfs(&samples[pause_from..pause_to]);
        eprintln!("{format}: channel {channel} while paused: {level:.1} dBFS at most");
        assert!(level < SILENT_DBFS, "{format}: channel {channel} reaches {level:.1} dBFS while paused");
    }
    *earliest
}

// --- The test -------------------------------------------------------------------------------------

/// One recorded call: set up, call, and check everything the issue names.
fn record_a_call(format: Option<&str>, transport: &str, rtp_from: u16) {
    let extension = if format == Some("WAV_STEREO") { "wav" } else { "mp3" };
    require_tools();
    let scenario_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/siprec_uac.xml");
    let scenario = std::fs::read_to_string(&scenario_path).expect("the scenario");
    let schedule = schedule(&scenario);
    let work = tempfile::tempdir().expect("temp dir");
    let streams = plan_streams(work.path(), schedule);
    std::fs::write(work.path().join("siprec_uac.xml"), &scenario).expect("copy the scenario");
    write_pcap(&work.path().join("siprec.pcap"), &streams);

    let db = Database::create();
    let data_dir = work.path().join("recall-data");
    let rtp = free_even_ports(rtp_from, 10);
    let server = Server::start(&db, &data_dir, (rtp, rtp + 19));
    let tenant = set_up_tenant(&server, &db, &data_dir, format);

    run_sipp(work.path(), &server.sip, transport, free_even_ports(rtp_from + 5000, 2));
    let call = wait_for_recording(&db, &server);
    let format = format.unwrap_or("MP3 (the default)");
    let context =
        || format!("{format} over {transport}; events: {:#?}\nsipp:\n{}", call.events, sipp_logs(work.path()));

    // The log: start, pause, resume, end by BYE, stored, in that order and with times that agree.
    let started = call.one("CallStarted");
    let start = &started["start"];
    assert_eq!(start["tenant_id"], tenant.as_str(), "{}", context());
    let started_at = time(&start["started_at"]);
    let paused_at = time(&call.one("RecordingPaused")["at"]);
    let resumed = call.one("RecordingResumed");
    let resumed_at = time(&resumed["at"]);
    let ended = call.one("CallEnded");
    let stored = &call.one("RecordingStored")["recording"];
    assert_eq!(ended["reason"], "bye", "{}", context());
    let order = ["CallStarted", "RecordingPaused", "RecordingResumed", "CallEnded", "RecordingStored"];
    let positions: Vec<usize> = order.iter().map(|t| call.position(t)).collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "events in the order {order:?}: {}", context());
    let ended_at = time(&ended["at"]);
    assert!(started_at < paused_at && paused_at < resumed_at && resumed_at < ended_at, "{}", context());
    let paused_ms = ms_between(paused_at, resumed_at);
    assert!((resumed["paused_ms"].as_i64().expect("paused_ms") - paused_ms).abs() <= 1, "{}", context());
    let duration_ms = ended["duration_ms"].as_i64().expect("duration_ms");
    assert!((duration_ms - ms_between(started_at, ended_at)).abs() <= 1, "{}", context());
    // The scenario paused for paused_for ms between the re-INVITEs; their transactions take a few ms here.
    assert!((paused_ms - schedule.paused_for as i64).abs() < 300, "paused for {paused_ms} ms: {}", context());
    let scenario_ms = (schedule.pause_at + schedule.paused_for + schedule.until_end) as i64;
    assert!(
        duration_ms >= scenario_ms && duration_ms < scenario_ms + 2000,
        "the call lasted {duration_ms} ms, the scenario {scenario_ms} ms: {}",
        context()
    );
    // The events' times are when sipp's requests came (on this machine, within a few ms).
    for (what, at, cseq) in
        [("paused", paused_at, "2 INVITE"), ("resumed", resumed_at, "3 INVITE"), ("ended", ended_at, "4 BYE")]
    {
        let sent = sent_at(work.path(), cseq);
        let late = ms_between(sent, at);
        // sipp stamps its trace when it writes the line, after the send returned: on a loaded machine (CI runs
        // two tests at once on two cores) the recorder can take the request in before sipp gets to its trace,
        // so the event can read a few ms *before* the trace (seen: -2 ms over TCP).
        assert!((-25..100).contains(&late), "{what} at {at}, {late} ms after sipp sent {cseq}: {}", context());
    }
    let mut aors: Vec<String> = call
        .events
        .iter()
        .filter_map(|(t, p)| match t.as_str() {
            "CallStarted" => p["start"]["participants"].as_array(),
            "ParticipantsIdentified" => p["participants"].as_array(),
            _ => None,
        })
        .flatten()
        .filter_map(|p| p["aor"].as_str().map(str::to_owned))
        .collect();
    aors.sort();
    aors.dedup();
    assert_eq!(aors, ["sip:alice@caller.example.com", "sip:bob@agent.example.com"], "{}", context());

    // The file: where the event says, as the event describes it.
    let location = stored["location"].as_str().expect("location");
    let path = [PathBuf::from(location), data_dir.join(location), data_dir.join("recordings").join(location)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no file at {location} (nor under {}): {}", data_dir.display(), context()));
    let day = started_at.format("%Y/%m/%d").to_string();
    let expected_tail = format!("recordings/{tenant}/{day}/{}.{extension}", call.call_id);
    assert!(path.to_string_lossy().ends_with(&expected_tail), "{} is not …/{expected_tail}", path.display());
    let bytes = std::fs::read(&path).expect("the recording");
    assert_eq!(stored["size_bytes"].as_u64(), Some(bytes.len() as u64), "{}", context());
    assert_eq!(stored["sha256"].as_str(), Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str()), "{}", context());

    let stored_ms = stored["duration_ms"].as_i64().expect("duration_ms");
    assert!((stored_ms - duration_ms).abs() <= 100, "stored {stored_ms} ms of a {duration_ms} ms call");
    let pause = (ms_between(started_at, paused_at), ms_between(started_at, resumed_at));
    let pcap_start = check_audio(&path, format, &streams, pause, duration_ms);
    // The file's clock is the events' clock: the pcap started to play when sipp sent the ACK, and a packet's
    // 20 ms of audio end when it leaves (the recorder places them so), so the pcap's audio starts 20 ms before.
    let expected = ms_between(started_at, sent_at(work.path(), "1 ACK")) - 20;
    assert!(
        (pcap_start - expected).abs() <= 30,
        "{format}: the audio starts {pcap_start} ms into the file, but sipp sent it from {expected} ms after the \
         call's start on"
    );
    drop(server);
}

#[test]
fn a_siprec_call_from_sipp_is_recorded_to_mp3_over_udp() {
    record_a_call(None, "u1", 12_000);
}

#[test]
fn a_siprec_call_from_sipp_is_recorded_to_wav_over_udp() {
    record_a_call(Some("WAV_STEREO"), "u1", 13_000);
}

#[test]
fn a_siprec_call_from_sipp_is_recorded_over_tcp() {
    record_a_call(None, "t1", 14_000);
}

/// The measurements themselves, on files the recorder's own encoder wrote from the sources placed where a
/// faultless recorder would put them (the pcap starting 700 ms into the call, the pause silenced): they
/// must pass, and find the pcap's start, so that a failure above is the recorder's and not the test's.
#[test]
fn the_measurements_pass_a_faultless_recording() {
    use recall_domain::recording_policy::AudioFormat;
    use recall_recorder::encode::AudioEncoder;

    require_tools();
    let scenario = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/siprec_uac.xml"))
        .expect("the scenario");
    let schedule = schedule(&scenario);
    let work = tempfile::tempdir().expect("temp dir");
    let streams = plan_streams(work.path(), schedule);
    let pcap_start = 700;
    let pause = (
        (pcap_start + schedule.pause_at + 20) as i64,
        (pcap_start + schedule.pause_at + schedule.paused_for + 30) as i64,
    );
    let duration_ms = (pcap_start + schedule.pause_at + schedule.paused_for + schedule.until_end + 20) as i64;
    let samples = duration_ms as usize * RATE / 1000;
    let mut channels = [vec![0i16; samples], vec![0i16; samples]];
    for (channel, stream) in streams.iter().enumerate() {
        let from = (pcap_start + stream.start_ms) * RATE / 1000;
        for (i, byte) in stream.payload.iter().enumerate() {
            channels[channel][from + i] = ulaw_to_linear(*byte);
        }
        channels[channel][pause.0 as usize * RATE / 1000..pause.1 as usize * RATE / 1000].fill(0);
    }
    for (format, extension) in [(AudioFormat::Mp3Stereo32, "mp3"), (AudioFormat::WavStereo, "wav")] {
        let (mut encoder, mut bytes) = AudioEncoder::new(format, RATE as u32).expect("encoder");
        for (left, right) in channels[0].chunks(PACKET).zip(channels[1].chunks(PACKET)) {
            let interleaved: Vec<i16> = left.iter().zip(right).flat_map(|(l, r)| [*l, *r]).collect();
            bytes.extend(encoder.encode(&interleaved).expect("encoded"));
        }
        let finished = encoder.finish().expect("finished");
        bytes.extend(finished.tail);
        if let Some(header) = finished.header {
            bytes[..header.len()].copy_from_slice(&header);
        }
        let path = work.path().join(format!("faultless.{extension}"));
        std::fs::write(&path, bytes).expect("write");
        let late = check_audio(&path, extension, &streams, pause, duration_ms) - pcap_start as i64;
        // The MP3's LAME Info frame states the encoder's delay and padding, which a gapless decoder trims: it
        // is as exact as WAV, within the resolution of the search.
        let expected = if extension == "mp3" { -5..=5 } else { 0..=0 };
        assert!(expected.contains(&late), "{extension}: the audio comes {late} ms late");
    }
}
