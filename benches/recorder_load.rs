//! The recorder under load, end to end on this machine: for each N, `recall serve` on a fresh database and
//! `recall loadgen` holding N concurrent SIPREC calls with real RTP on loopback, with what it cost (loss, CPU,
//! memory, files stored); and beside it the pipeline's ceiling measured in the same run, in-process on one
//! core (media core + MP3 encoding + spool writes per call). Uses the Postgres server DATABASE_URL names.
//!
//! `cargo bench -p recall --bench recorder_load [-- --calls 100,250,500,1000 --seconds 30 --ramp 200]`
//! (`--only-ceiling` measures the ceiling alone; `--ceiling-seconds`, `--ceiling-repeat` size it).

#[path = "../src/loadgen.rs"]
#[allow(dead_code)]
mod loadgen;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use loadgen::{Codec, Report, RtpHeader, Voice};
use recall_domain::recording_policy::AudioFormat;
use recall_recorder::encode::AudioEncoder;
use recall_recorder::media::{CallMedia, CallMediaConfig, Drained, PayloadTypes, Route};
use recall_recorder::spool::{RecordingMeta, Spool};
use sqlx::Connection;

const RECALL: &str = env!("CARGO_BIN_EXE_recall");
/// Linux reports process CPU times in USER_HZ ticks, 100 a second on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;
/// How often the recorder's call tasks poll their media core (the driver's tick), and how often it syncs a
/// recording being written (what `recall serve` configures).
const RECORDER_TICK: Duration = Duration::from_millis(50);
const SYNC_EVERY: Duration = Duration::from_secs(5);

struct Options {
    calls: Vec<usize>,
    seconds: f64,
    ramp: f64,
    senders: usize,
    ceiling_seconds: u64,
    ceiling_repeat: u32,
    only_ceiling: bool,
    database_url: String,
}

fn options() -> Options {
    let mut options = Options {
        calls: vec![100, 250, 500, 1000],
        seconds: 30.0,
        ramp: 200.0,
        senders: 1,
        ceiling_seconds: 60,
        ceiling_repeat: 10,
        only_ceiling: false,
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--calls" => options.calls = value().split(',').filter_map(|n| n.trim().parse().ok()).collect(),
            "--seconds" => options.seconds = value().parse().unwrap_or(options.seconds),
            "--ramp" => options.ramp = value().parse().unwrap_or(options.ramp),
            "--senders" => options.senders = value().parse().unwrap_or(options.senders),
            "--ceiling-seconds" => options.ceiling_seconds = value().parse().unwrap_or(options.ceiling_seconds),
            "--ceiling-repeat" => options.ceiling_repeat = value().parse().unwrap_or(options.ceiling_repeat),
            "--only-ceiling" => options.only_ceiling = true,
            _ => {} // cargo passes --bench
        }
    }
    options
}

fn main() -> std::process::ExitCode {
    let options = options();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {}, {cores} cores available", cpu_model());
    println!();
    let ceiling = match measure_ceiling(options.ceiling_seconds, options.ceiling_repeat) {
        Ok(ceiling) => ceiling,
        Err(e) => {
            eprintln!("recorder_load: the ceiling could not be measured: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    ceiling.print(options.ceiling_seconds, options.ceiling_repeat);
    if options.only_ceiling {
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("recorder_load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for &calls in &options.calls {
        println!();
        println!("--- {calls} calls of {} s ---", options.seconds);
        match run_point(&runtime, &options, calls) {
            Ok(row) => {
                row.print_detail();
                rows.push(row);
            }
            Err(e) => println!("{calls} calls: failed: {e:#}"),
        }
    }
    println!();
    println!(
        "recorder under load: {} s stereo PCMU calls (MP3 stereo 32 kbit/s), {:.0} new calls/s; ceiling {:.0} \
         calls per core, {:.0} on {cores} cores",
        options.seconds,
        options.ramp,
        ceiling.full,
        ceiling.full * cores as f64
    );
    println!();
    println!(
        "| calls | answered | held at once | packets sent | lost in recorder | of which kernel | recorder CPU | \
         generator CPU | machine CPU | recorder peak RSS | generator peak RSS | files stored | RecordingStored | \
         send lag p99 / max | % of ceiling |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} ({:.4} %) | {} | {:.0} % | {:.0} % | {:.0} % | {:.0} MB | {:.0} MB | {} | {} | \
             {:.1} / {:.1} ms | {} |",
            row.calls,
            row.report.answered,
            row.report.max_concurrent,
            row.report.packets_sent,
            row.lost(),
            100.0 * row.lost() as f64 / row.report.packets_sent.max(1) as f64,
            row.kernel_drops,
            row.recorder_cpu,
            row.generator_cpu,
            row.machine_cpu,
            row.recorder_rss_mb,
            row.generator_rss_mb,
            row.files,
            row.stored_events,
            row.report.send_lag_ms.p99,
            row.report.send_lag_ms.max,
            row.of_ceiling(ceiling.full * cores as f64),
        );
    }
    std::process::ExitCode::SUCCESS
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

// --- The ceiling -------------------------------------------------------------------------------------------

/// Concurrent calls one core sustains (audio seconds processed per CPU second), per stage of the pipeline.
struct Ceiling {
    media: f64,
    encode: f64,
    full: f64,
    bytes_per_call: u64,
}

impl Ceiling {
    fn print(&self, seconds: u64, repeat: u32) {
        println!("pipeline ceiling, one core: {repeat} calls of {seconds} s, two PCMU streams, 50 ms polls");
        println!();
        println!("| stage | calls per core |");
        println!("|---|---:|");
        println!("| media core (RTP in, aligned stereo PCM out) | {:.0} |", self.media);
        println!("| + MP3 stereo 32 kbit/s encoding | {:.0} |", self.encode);
        println!("| + spool file writes and the finished file (the ceiling) | {:.0} |", self.full);
        println!();
        println!("one call's file: {} bytes", self.bytes_per_call);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Media,
    Encode,
    Full,
}

/// CPU time this thread has used (the scheduler's nanosecond count).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Both streams of a call as they arrive: packet k of each at k·20 ms, the right one 7 ms after the left.
fn call_datagrams(seconds: u64) -> Vec<(Duration, usize, Vec<u8>)> {
    let voice = Voice::new(Codec::Pcmu);
    let headers = [
        RtpHeader { payload_type: 0, ssrc: 0x1111_1111, first_sequence: 65_000, first_timestamp: 4_000_000_000 },
        RtpHeader { payload_type: 0, ssrc: 0x2222_2222, first_sequence: 12, first_timestamp: 77 },
    ];
    let mut datagrams = Vec::new();
    let mut packet = [0u8; 172];
    for index in 0..seconds * 50 {
        for (stream, header) in headers.iter().enumerate() {
            header.write(index, voice.frame(stream, index), &mut packet);
            let at = Duration::from_millis(index * 20 + 7 * stream as u64 + 1);
            datagrams.push((at, stream, packet.to_vec()));
        }
    }
    datagrams
}

/// One call through the stage's part of the pipeline, as a call task of the recorder runs it; returns the
/// bytes written.
fn run_call(datagrams: &[(Duration, usize, Vec<u8>)], seconds: u64, stage: Stage, spool: &Spool) -> Result<u64> {
    let epoch = Instant::now();
    let mut media = CallMedia::new(epoch, CallMediaConfig { output_rate: 8000, ..CallMediaConfig::default() });
    let streams = [
        media.add_stream(Route::Left, PayloadTypes::default()),
        media.add_stream(Route::Right, PayloadTypes::default()),
    ];
    let mut encoder = None;
    let mut writer = None;
    if stage != Stage::Media {
        let (new, start) = AudioEncoder::new(AudioFormat::Mp3Stereo32, 8000)?;
        encoder = Some(new);
        if stage == Stage::Full {
            let mut file = spool.create(uuid::Uuid::now_v7(), "mp3", SYNC_EVERY)?;
            file.write(&start)?;
            writer = Some(file);
        }
    }
    let mut drained = Drained::default();
    let mut written = 0u64;
    let mut take = |drained: &mut Drained| -> Result<()> {
        if let Some(encoder) = encoder.as_mut() {
            let bytes = encoder.encode(&drained.samples)?;
            written += bytes.len() as u64;
            if let Some(writer) = writer.as_mut() {
                writer.write(&bytes)?;
            }
        }
        std::hint::black_box(&drained.samples);
        drained.clear();
        Ok(())
    };
    let mut clock = Duration::ZERO;
    for (at, stream, datagram) in datagrams {
        while clock + RECORDER_TICK <= *at {
            clock += RECORDER_TICK;
            media.poll(epoch + clock, &mut drained)?;
            take(&mut drained)?;
        }
        let _ = media.receive(streams[*stream], datagram, epoch + *at);
    }
    media.finish(epoch + Duration::from_secs(seconds), &mut drained)?;
    take(&mut drained)?;
    if let Some(encoder) = encoder.take() {
        let finished = encoder.finish()?;
        written += finished.tail.len() as u64;
        if let Some(mut file) = writer.take() {
            file.write(&finished.tail)?;
            if let Some(header) = finished.header {
                file.patch_start(&header)?;
            }
            let meta = RecordingMeta {
                tenant_id: uuid::Uuid::nil(),
                storage_target_id: None,
                object_path: "bench/call.mp3".to_owned(),
                format: AudioFormat::Mp3Stereo32,
                duration_ms: seconds * 1000,
                sample_rate: None,
                encryption: None,
            };
            let spooled = file.finish(meta)?;
            spool.remove(&spooled)?;
        }
    }
    Ok(written)
}

fn measure_ceiling(seconds: u64, repeat: u32) -> Result<Ceiling> {
    let directory = tempfile::tempdir()?;
    let spool = Spool::open(directory.path(), 1 << 34)?;
    let datagrams = call_datagrams(seconds);
    let rate = |stage: Stage| -> Result<(f64, u64)> {
        run_call(&datagrams, seconds, stage, &spool)?; // warm-up
        let before = thread_cpu();
        let mut bytes = 0;
        for _ in 0..repeat {
            bytes = run_call(std::hint::black_box(&datagrams), seconds, stage, &spool)?;
        }
        let cpu = (thread_cpu() - before).as_secs_f64().max(1e-9);
        Ok((seconds as f64 * f64::from(repeat) / cpu, bytes))
    };
    let (media, _) = rate(Stage::Media)?;
    let (encode, _) = rate(Stage::Encode)?;
    let (full, bytes_per_call) = rate(Stage::Full)?;
    Ok(Ceiling { media, encode, full, bytes_per_call })
}

// --- One load point ----------------------------------------------------------------------------------------

struct Row {
    calls: usize,
    report: Report,
    received: u64,
    dropped: BTreeMap<String, u64>,
    kernel_drops: u64,
    no_ports: u64,
    recorder_cpu: f64,
    generator_cpu: f64,
    machine_cpu: f64,
    window_seconds: f64,
    active_in_window: (u64, u64),
    recorder_rss_mb: f64,
    generator_rss_mb: f64,
    files: u64,
    stored_events: i64,
    refused_by_recorder: BTreeMap<String, u64>,
}

impl Row {
    /// Packets sent that the recorder never read, plus those it read and dropped.
    fn lost(&self) -> u64 {
        self.report.packets_sent.saturating_sub(self.received) + self.dropped.values().sum::<u64>()
    }

    /// Calls held without loss as a share of what the pipeline's ceiling allows on every core; a run that
    /// lost packets held nothing.
    fn of_ceiling(&self, ceiling: f64) -> String {
        if self.lost() == 0 && self.report.answered == self.calls as u64 {
            format!("{:.0} %", 100.0 * self.report.max_concurrent as f64 / ceiling)
        } else {
            "– (loss)".to_owned()
        }
    }

    fn print_detail(&self) {
        print!("{}", self.report.summary());
        println!(
            "recorder: {} packets read, dropped {:?}; kernel UDP receive-buffer drops {}, datagrams to closed ports {}; \
             refused {:?}",
            self.received, self.dropped, self.kernel_drops, self.no_ports, self.refused_by_recorder
        );
        println!(
            "steady window {:.1} s with {} → {} calls active: recorder {:.0} % of a core, generator {:.0} %, machine {:.0} % of all cores",
            self.window_seconds, self.active_in_window.0, self.active_in_window.1, self.recorder_cpu, self.generator_cpu, self.machine_cpu
        );
        println!(
            "peak RSS: recorder {:.0} MB, generator {:.0} MB; stored: {} files, {} RecordingStored events; lost in the recorder: {}",
            self.recorder_rss_mb, self.generator_rss_mb, self.files, self.stored_events, self.lost()
        );
    }
}

/// Kills the child on every way out.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_point(runtime: &tokio::runtime::Runtime, options: &Options, calls: usize) -> Result<Row> {
    let database = format!("recall_bench_load_{calls}");
    let url = database_url(&options.database_url, &database);
    runtime.block_on(recreate_database(&options.database_url, &database, true))?;
    let data = tempfile::tempdir()?;
    let result = measure_point(runtime, options, calls, &url, data.path());
    runtime.block_on(recreate_database(&options.database_url, &database, false))?;
    result
}

fn database_url(base: &str, database: &str) -> String {
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => format!("{base}/{database}"),
    }
}

async fn recreate_database(base: &str, database: &str, create: bool) -> Result<()> {
    let mut admin = sqlx::PgConnection::connect(base).await.context("cannot reach the Postgres server")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&mut admin).await?;
    if create {
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await?;
    }
    admin.close().await?;
    Ok(())
}

fn measure_point(
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    calls: usize,
    url: &str,
    data: &Path,
) -> Result<Row> {
    let (mut recorder, sip, http) = start_recorder(url, data)?;
    let recorder_pid = recorder.0.id();
    warm_up(sip)?;

    let before = Metrics::read(http)?;
    let udp_before = udp_counters()?;
    let window = {
        let ramp = calls as f64 / options.ramp;
        let start = ramp + 1.5;
        let end = (options.seconds - 0.5).max(start + 1.0);
        (Duration::from_secs_f64(start), Duration::from_secs_f64(end))
    };
    let mut generator = Process(
        Command::new(RECALL)
            .args(["loadgen", "--json", "--target", &sip.to_string(), "--calls", &calls.to_string()])
            .args(["--duration", &options.seconds.to_string(), "--ramp", &options.ramp.to_string()])
            .args(["--senders", &options.senders.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start recall loadgen")?,
    );
    let generator_pid = generator.0.id();
    let started = Instant::now();
    let mut stdout = generator.0.stdout.take().context("loadgen's output")?;
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });

    let mut generator_rss = 0u64;
    let mut window_start = None;
    let mut window_end = None;
    let mut active = (0, 0);
    loop {
        if let Some(status) = generator.0.try_wait()? {
            if !status.success() {
                bail!("recall loadgen failed: {status}");
            }
            break;
        }
        generator_rss = generator_rss.max(peak_rss_kb(generator_pid).unwrap_or(0));
        let elapsed = started.elapsed();
        if window_start.is_none() && elapsed >= window.0 {
            window_start = Some(CpuSample::take(recorder_pid, generator_pid));
            active.0 = Metrics::read(http).map(|m| m.sum("recall_recorder_calls_active")).unwrap_or(0);
        }
        if window_end.is_none() && elapsed >= window.1 {
            window_end = Some(CpuSample::take(recorder_pid, generator_pid));
            active.1 = Metrics::read(http).map(|m| m.sum("recall_recorder_calls_active")).unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report: Report =
        serde_json::from_str(output.join().unwrap_or_default().trim()).context("cannot read loadgen's report")?;

    // Every answered call's recording stored: the file, then its RecordingStored event (or no progress for
    // 30 s). The warm-up call's recording is counted and taken off below.
    let recordings = data.join("recordings");
    let expected = report.answered + 1;
    let stored_events = || {
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(url).await?;
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RecordingStored'")
                .fetch_one(&mut connection)
                .await?;
            connection.close().await?;
            Ok::<_, sqlx::Error>(count)
        })
    };
    let mut stored = (count_files(&recordings), stored_events()?);
    let mut last_change = Instant::now();
    while (stored.0 < expected || stored.1 < expected as i64) && last_change.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        let now = (count_files(&recordings), stored_events()?);
        if now != stored {
            stored = now;
            last_change = Instant::now();
        }
    }
    let (files, stored_events) = stored;
    let after = Metrics::read(http)?;
    let udp_after = udp_counters()?;
    let recorder_rss = peak_rss_kb(recorder_pid).unwrap_or(0);
    stop(&mut recorder);

    let (cpu, window_seconds) = match (window_start, window_end) {
        (Some(start), Some(end)) => (start.usage(&end), end.at.duration_since(start.at).as_secs_f64()),
        _ => ((0.0, 0.0, 0.0), 0.0),
    };
    let diff = |name: &str| after.sum(name).saturating_sub(before.sum(name));
    let by_label = |name: &str| {
        let mut out = BTreeMap::new();
        for (label, value) in after.by_label(name, "reason") {
            let delta = value.saturating_sub(before.by_label(name, "reason").get(&label).copied().unwrap_or(0));
            if delta > 0 {
                out.insert(label, delta);
            }
        }
        out
    };
    Ok(Row {
        calls,
        received: diff("recall_recorder_rtp_packets_total"),
        dropped: by_label("recall_recorder_rtp_dropped_total"),
        refused_by_recorder: by_label("recall_recorder_calls_refused_total"),
        kernel_drops: udp_after.rcvbuf_errors.saturating_sub(udp_before.rcvbuf_errors),
        no_ports: udp_after.no_ports.saturating_sub(udp_before.no_ports),
        recorder_cpu: cpu.0,
        generator_cpu: cpu.1,
        machine_cpu: cpu.2,
        window_seconds,
        active_in_window: active,
        recorder_rss_mb: recorder_rss as f64 / 1024.0,
        generator_rss_mb: generator_rss as f64 / 1024.0,
        files: files.saturating_sub(1),
        stored_events: stored_events - 1,
        report,
    })
}

/// Starts `recall serve` and waits for the addresses it logs: (process, SIP, HTTP).
fn start_recorder(url: &str, data: &Path) -> Result<(Process, SocketAddr, SocketAddr)> {
    let mut child = Process(
        Command::new(RECALL)
            .args(["--log-format", "json", "serve", "--database-url", url, "--data-dir"])
            .arg(data)
            .args(["--http", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--rtp-ports", "30000-39999"])
            .args(["--max-calls", "1500", "--rtp-timeout", "30", "--site", "bench", "--node", "bench"])
            // The tenant `default`, trusting loopback, records the calls.
            .arg("--default-tenant")
            .env("RUST_LOG", "warn,recall=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start recall serve")?,
    );
    let stderr = child.0.stderr.take().context("serve's log")?;
    let (found, addresses) = mpsc::channel();
    // Reads the log to its end (so the recorder never blocks on a full pipe) and passes on the addresses.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            for key in ["sip_address", "address"] {
                if let Some(address) = value["fields"][key].as_str().and_then(|a| a.parse::<SocketAddr>().ok()) {
                    let _ = found.send((key, address));
                }
            }
            if value["level"].as_str().is_some_and(|level| level == "ERROR" || level == "WARN") {
                eprintln!("recall serve: {}", value["fields"]["message"].as_str().unwrap_or(&line));
            }
        }
    });
    let (mut sip, mut http) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(90);
    while sip.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match addresses.recv_timeout(left) {
            Ok(("sip_address", address)) => sip = Some(address),
            Ok((_, address)) => http = Some(address),
            Err(_) => bail!("recall serve did not log its SIP and HTTP addresses (sip {sip:?}, http {http:?})"),
        }
    }
    Ok((child, sip.context("SIP address")?, http.context("HTTP address")?))
}

fn stop(recorder: &mut Process) {
    let pid = nix::unistd::Pid::from_raw(recorder.0.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = recorder.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One call until the recorder has answered and ended one (it may take a moment to read its tenants).
fn warm_up(sip: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(RECALL)
            .args(["loadgen", "--json", "--calls", "1", "--duration", "1", "--target", &sip.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run recall loadgen")?;
        let report: Report = serde_json::from_slice(&output.stdout).context("cannot read loadgen's report")?;
        if report.answered == 1 && report.bye_ok == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the warm-up call was not recorded: refused {:?}, failed {:?}", report.refused, report.failed);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

// --- Measuring ---------------------------------------------------------------------------------------------

/// CPU ticks (user + system) of a process so far.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total ticks of the whole machine, all cores.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

struct CpuSample {
    at: Instant,
    recorder: u64,
    generator: u64,
    machine: (u64, u64),
}

impl CpuSample {
    fn take(recorder: u32, generator: u32) -> Self {
        Self {
            at: Instant::now(),
            recorder: process_ticks(recorder).unwrap_or(0),
            generator: process_ticks(generator).unwrap_or(0),
            machine: machine_ticks().unwrap_or((0, 1)),
        }
    }

    /// Recorder and generator as % of one core, the machine as % of all its cores.
    fn usage(&self, later: &Self) -> (f64, f64, f64) {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let percent = |a: u64, b: u64| 100.0 * (b.saturating_sub(a)) as f64 / TICKS_PER_SECOND / seconds;
        let busy = later.machine.0.saturating_sub(self.machine.0) as f64;
        let total = later.machine.1.saturating_sub(self.machine.1).max(1) as f64;
        (percent(self.recorder, later.recorder), percent(self.generator, later.generator), 100.0 * busy / total)
    }
}

/// VmHWM: the process's peak resident set, in KiB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

struct UdpCounters {
    rcvbuf_errors: u64,
    no_ports: u64,
}

/// The kernel's UDP counters (`/proc/net/snmp`): datagrams dropped for a full receive buffer, and sent to
/// ports nobody listens on.
fn udp_counters() -> Result<UdpCounters> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (names, values) = (lines.next().context("no Udp line")?, lines.next().context("no Udp values")?);
    let field = |name: &str| {
        let index = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(index)?.parse().ok()
    };
    Ok(UdpCounters { rcvbuf_errors: field("RcvbufErrors").unwrap_or(0), no_ports: field("NoPorts").unwrap_or(0) })
}

fn count_files(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Prometheus text: every sample as (name, labels, value).
struct Metrics(Vec<(String, String, u64)>);

impl Metrics {
    fn read(http: SocketAddr) -> Result<Self> {
        let (status, body) = http_request(http, "GET", "/metrics", None, None)?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value = value.parse::<f64>().ok()? as u64;
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Ok(Self(samples))
    }

    fn sum(&self, name: &str) -> u64 {
        self.0.iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| v).sum()
    }

    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let key = format!("{label}=\"");
        let mut out = BTreeMap::new();
        for (_, labels, value) in self.0.iter().filter(|(n, _, _)| n == name) {
            let value_of = labels.split_once(&key).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v);
            *out.entry(value_of.unwrap_or("").to_owned()).or_default() += value;
        }
        out
    }
}

/// A minimal HTTP/1.1 exchange (one request per connection): (status, body).
fn http_request(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&http, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").context("no end of the HTTP head")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(rest) } else { rest.to_owned() }))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
