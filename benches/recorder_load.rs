//! The recorder under load, end to end on this machine: for each N, `recall serve` on a fresh database and
//! `recall loadgen` holding N concurrent SIPREC calls with real RTP on loopback, with what it cost (loss, CPU,
//! memory, files stored); and beside it the pipeline's ceiling measured in the same run, in-process on one
//! core (media core + MP3 encoding + spool writes per call, and the same with the file sealed as the
//! recorder seals it when encryption is on). Uses the Postgres server DATABASE_URL names.
//!
//! Each N runs with file encryption off and then on (`--encryption off|on|both`, default both), each on a
//! fresh database: for "on", a root administrator switches the default tenant's encryption on through the
//! running server's GraphQL (a generated, activated key) before the calls start, and every stored file is
//! checked to be sealed (`.enc`, starting `RCLENC`); for "off", that none is. Both rows are printed side by
//! side with what encryption cost: recorder CPU per call and calls held at the same loss.
//!
//! `cargo bench -p recall --bench recorder_load [-- --calls 100,250,500,1000 --seconds 30 --ramp 200
//! --encryption both]` (`--only-ceiling` measures the ceiling alone; `--ceiling-seconds`, `--ceiling-repeat`
//! size it).

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
use recall_crypto::{FileSealer, PrivateKey, PublicKey, FORMAT_VERSION};
use recall_domain::call::RecordingEncryption;
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
/// The root administrator the "encryption on" runs create to switch encryption on.
const ROOT_PASSWORD: &str = "recorder load bench root password";
/// Rounds of the ceiling's file stages, with and without sealing, taken in turn (the median is reported):
/// the two differ by less than one run's spread, so they are measured interleaved.
const CEILING_ROUNDS: usize = 5;

struct Options {
    calls: Vec<usize>,
    seconds: f64,
    ramp: f64,
    senders: usize,
    ceiling_seconds: u64,
    ceiling_repeat: u32,
    only_ceiling: bool,
    /// The runs per N: encryption off, on, or both (off first).
    encryption: Vec<bool>,
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
        encryption: vec![false, true],
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
            "--encryption" => {
                options.encryption = match value().as_str() {
                    "off" => vec![false],
                    "on" => vec![true],
                    "both" => vec![false, true],
                    other => {
                        eprintln!("recorder_load: --encryption takes off, on or both, not {other:?}");
                        std::process::exit(2);
                    }
                }
            }
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
    let mut pairs = Vec::new();
    for &calls in &options.calls {
        let first = rows.len();
        for &encrypted in &options.encryption {
            println!();
            println!("--- {calls} calls of {} s, encryption {} ---", options.seconds, on_off(encrypted));
            match run_point(&runtime, &options, calls, encrypted) {
                Ok(row) => {
                    row.print_detail();
                    rows.push(row);
                }
                Err(e) => println!("{calls} calls, encryption {}: failed: {e:#}", on_off(encrypted)),
            }
        }
        let here = &rows[first..];
        if let (Some(off), Some(on)) = (here.iter().position(|r| !r.encrypted), here.iter().position(|r| r.encrypted)) {
            println!();
            print_comparison(&here[off], &here[on]);
            pairs.push((first + off, first + on));
        }
    }
    println!();
    println!(
        "recorder under load: {} s stereo PCMU calls (MP3 stereo 32 kbit/s), {:.0} new calls/s; ceiling {:.0} \
         calls per core, {:.0} on {cores} cores ({:.0} and {:.0} with sealing)",
        options.seconds,
        options.ramp,
        ceiling.full,
        ceiling.full * cores as f64,
        ceiling.sealed,
        ceiling.sealed * cores as f64
    );
    println!();
    println!(
        "| calls | encryption | load before | answered | held at once | packets sent | lost in recorder | of which kernel | \
         recorder CPU | generator CPU | machine CPU | recorder peak RSS | generator peak RSS | files stored (sealed) | \
         RecordingStored | INVITE→200 p99 | send lag p99 / max | % of ceiling |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let ceiling = if row.encrypted { ceiling.sealed } else { ceiling.full };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({:.4} %) | {} | {:.0} % | {:.0} % | {:.0} % | {:.0} MB | {:.0} MB | \
             {} ({}) | {} | {:.0} ms | {:.1} / {:.1} ms | {} |",
            row.calls,
            on_off(row.encrypted),
            row.load_before,
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
            row.sealed_files,
            row.stored_events,
            row.report.setup_ms.p99,
            row.report.send_lag_ms.p99,
            row.report.send_lag_ms.max,
            row.of_ceiling(ceiling * cores as f64),
        );
    }
    if !pairs.is_empty() {
        println!();
        println!("encryption's cost (on − off, same N, each on a fresh database):");
        println!();
        print_cost_table(&rows, &pairs);
    }
    let unchecked: Vec<String> = rows
        .iter()
        .filter_map(|row| row.encryption_check.as_ref().err().map(|e| format!("{} calls: {e}", row.calls)))
        .collect();
    if !unchecked.is_empty() {
        eprintln!("recorder_load: the stored files are not what the run's encryption setting asks: {unchecked:?}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn on_off(encrypted: bool) -> &'static str {
    if encrypted {
        "on"
    } else {
        "off"
    }
}

/// The machine's load averages (1, 5, 15 minutes), as `/proc/loadavg` has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Recorder CPU per call held: milliseconds of CPU per second of call.
fn cpu_ms_per_call_second(row: &Row) -> f64 {
    10.0 * row.recorder_cpu / row.calls.max(1) as f64
}

/// The same N with encryption off and on, side by side, and what encryption cost.
fn print_comparison(off: &Row, on: &Row) {
    println!("encryption off and on at {} calls:", off.calls);
    println!();
    println!(
        "| encryption | held at once | lost in recorder | kernel drops | recorder CPU | CPU ms per call-second | \
         machine CPU | INVITE→200 p99 | recorder peak RSS (before the load) | files (sealed) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in [off, on] {
        println!(
            "| {} | {} | {} | {} | {:.0} % | {:.2} | {:.0} % | {:.0} ms | {:.0} MB ({:.0} MB) | {} ({}) |",
            on_off(row.encrypted),
            row.report.max_concurrent,
            row.lost(),
            row.kernel_drops,
            row.recorder_cpu,
            cpu_ms_per_call_second(row),
            row.machine_cpu,
            row.report.setup_ms.p99,
            row.recorder_rss_mb,
            row.recorder_rss_before_load_mb,
            row.files,
            row.sealed_files,
        );
    }
    println!(
        "| on − off | {:+} | {:+} | {:+} | {:+.0} points | {:+.2} | {:+.0} points | {:+.0} ms | {:+.0} MB | |",
        on.report.max_concurrent as i64 - off.report.max_concurrent as i64,
        on.lost() as i64 - off.lost() as i64,
        on.kernel_drops as i64 - off.kernel_drops as i64,
        on.recorder_cpu - off.recorder_cpu,
        cpu_ms_per_call_second(on) - cpu_ms_per_call_second(off),
        on.machine_cpu - off.machine_cpu,
        on.report.setup_ms.p99 - off.report.setup_ms.p99,
        on.recorder_rss_mb - off.recorder_rss_mb,
    );
    println!();
    let (cost_cpu, cost_held) = encryption_cost(off, on);
    println!("(a) recorder CPU per call: {cost_cpu}");
    println!("(b) calls held at the same loss: {cost_held}");
    for row in [off, on] {
        match &row.encryption_check {
            Ok(what) => println!("files, encryption {}: {what}", on_off(row.encrypted)),
            Err(e) => println!("files, encryption {}: NOT AS ASKED: {e}", on_off(row.encrypted)),
        }
    }
}

/// (a) the change in recorder CPU per call, (b) the change in calls held at the same loss.
fn encryption_cost(off: &Row, on: &Row) -> (String, String) {
    let (per_off, per_on) = (cpu_ms_per_call_second(off), cpu_ms_per_call_second(on));
    let cpu = format!(
        "{per_off:.2} → {per_on:.2} ms per call-second ({:+.1} %)",
        100.0 * (per_on - per_off) / per_off.max(1e-9)
    );
    // The same loss: every call answered in both runs and as many packets lost (0, or a handful).
    let answered = |row: &Row| row.report.answered == row.calls as u64;
    let held = if answered(off) && answered(on) && off.lost() == on.lost() {
        let change = on.report.max_concurrent as i64 - off.report.max_concurrent as i64;
        format!(
            "{} → {} held, both with {} lost ({change:+}, {:+.1} %)",
            off.report.max_concurrent,
            on.report.max_concurrent,
            off.lost(),
            100.0 * change as f64 / off.report.max_concurrent.max(1) as f64
        )
    } else {
        format!(
            "not at the same loss: off {} held, {} lost; on {} held, {} lost",
            off.report.max_concurrent,
            off.lost(),
            on.report.max_concurrent,
            on.lost()
        )
    };
    (cpu, held)
}

/// Every N's pair in one table.
fn print_cost_table(rows: &[Row], pairs: &[(usize, usize)]) {
    println!(
        "| calls | held off / on | lost off / on | recorder CPU off / on | CPU ms per call-second off / on | \
         machine CPU off / on | INVITE→200 p99 off / on | peak RSS off / on | files sealed off / on | \
         (a) CPU per call | (b) calls held at the same loss |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for &(off, on) in pairs {
        let (off, on) = (&rows[off], &rows[on]);
        let cost = encryption_cost(off, on);
        println!(
            "| {} | {} / {} | {} / {} | {:.0} / {:.0} % | {:.2} / {:.2} | {:.0} / {:.0} % | {:.0} / {:.0} ms | \
             {:.0} / {:.0} MB | {} of {} / {} of {} | {} | {} |",
            off.calls,
            off.report.max_concurrent,
            on.report.max_concurrent,
            off.lost(),
            on.lost(),
            off.recorder_cpu,
            on.recorder_cpu,
            cpu_ms_per_call_second(off),
            cpu_ms_per_call_second(on),
            off.machine_cpu,
            on.machine_cpu,
            off.report.setup_ms.p99,
            on.report.setup_ms.p99,
            off.recorder_rss_mb,
            on.recorder_rss_mb,
            off.sealed_files,
            off.files,
            on.sealed_files,
            on.files,
            cost.0,
            cost.1,
        );
    }
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
    /// Media core + encoding + spool writes: the ceiling with encryption off (median of the rounds).
    full: f64,
    /// The same with every file sealed before it is written: the ceiling with encryption on.
    sealed: f64,
    /// Each round's figures, (full, sealed).
    rounds: Vec<(f64, f64)>,
    /// Sealing alone (a fresh data key wrapped with RSA-OAEP, one call's MP3 bytes sealed in the pieces the
    /// encoder hands out): calls per core.
    seal_only: f64,
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
        println!("| + spool file writes and the finished file (the ceiling, encryption off) | {:.0} |", self.full);
        println!(
            "| + sealing before the spool writes (AES-256-GCM STREAM, 64 KiB chunks, RSA-OAEP data key: encryption on) \
             | {:.0} |",
            self.sealed
        );
        println!("| sealing alone | {:.0} |", self.seal_only);
        println!();
        let rounds: Vec<String> = self.rounds.iter().map(|(full, sealed)| format!("{full:.0} / {sealed:.0}")).collect();
        println!(
            "file stages without / with sealing, {CEILING_ROUNDS} rounds in turn (medians above): {}",
            rounds.join(", ")
        );
        println!(
            "sealing: {:+.1} % calls per core on the medians; from sealing alone, {:.2} % of a call's cost at the ceiling",
            100.0 * (self.sealed - self.full) / self.full.max(1e-9),
            100.0 * self.full / self.seal_only.max(1e-9)
        );
        println!("one call's file: {} bytes", self.bytes_per_call);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Media,
    Encode,
    Full,
    /// Full, with the file sealed as the recorder seals it when the tenant's encryption is on.
    Sealed,
}

/// The tenant key the ceiling's sealed files are written under.
struct SealingKey {
    id: uuid::Uuid,
    public: PublicKey,
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
fn run_call(
    datagrams: &[(Duration, usize, Vec<u8>)],
    seconds: u64,
    stage: Stage,
    spool: &Spool,
    key: &SealingKey,
) -> Result<u64> {
    let epoch = Instant::now();
    let mut media = CallMedia::new(epoch, CallMediaConfig { output_rate: 8000, ..CallMediaConfig::default() });
    let streams = [
        media.add_stream(Route::Left, PayloadTypes::default()),
        media.add_stream(Route::Right, PayloadTypes::default()),
    ];
    let mut encoder = None;
    let mut writer = None;
    let mut sealer = None;
    // Sealed chunks waiting to be written (a chunk is 64 KiB of audio: about 16 s of a call).
    let mut sealed = Vec::new();
    if stage != Stage::Media {
        let (new, start) = AudioEncoder::new(AudioFormat::Mp3Stereo32, 8000)?;
        encoder = Some(new);
        let call_id = uuid::Uuid::now_v7();
        if stage == Stage::Full {
            let mut file = spool.create(call_id, "mp3", SYNC_EVERY)?;
            file.write(&start)?;
            writer = Some(file);
        } else if stage == Stage::Sealed {
            // As the recorder opens an encrypted recording: a fresh data key wrapped into the header, the
            // header written and synced at once, the encoder's first bytes into the sealer.
            let (mut new_sealer, header) = FileSealer::new(&key.public, key.id, call_id)?;
            let mut file = spool.create(call_id, "mp3.enc", SYNC_EVERY)?;
            file.write(&header)?;
            file.sync()?;
            new_sealer.push(&start, &mut sealed)?;
            sealer = Some(new_sealer);
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
                match sealer.as_mut() {
                    Some(sealer) => {
                        sealer.push(&bytes, &mut sealed)?;
                        if !sealed.is_empty() {
                            writer.write(&sealed)?;
                            sealed.clear();
                        }
                    }
                    None => writer.write(&bytes)?,
                }
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
            let encryption = match sealer.take() {
                // The Info frame goes into the final chunk, not over the sealed start.
                Some(mut sealer) => {
                    sealer.push(&finished.tail, &mut sealed)?;
                    sealer.finish(finished.header.as_deref().unwrap_or_default(), &mut sealed)?;
                    file.write(&sealed)?;
                    Some(RecordingEncryption {
                        key_id: key.id,
                        format_version: FORMAT_VERSION,
                        unterminated_chunks: None,
                        file_key_id: None,
                    })
                }
                None => {
                    file.write(&finished.tail)?;
                    if let Some(header) = finished.header {
                        file.patch_start(&header)?;
                    }
                    None
                }
            };
            let meta = RecordingMeta {
                tenant_id: uuid::Uuid::nil(),
                storage_target_id: None,
                object_path: if encryption.is_some() { "bench/call.mp3.enc" } else { "bench/call.mp3" }.to_owned(),
                format: AudioFormat::Mp3Stereo32,
                duration_ms: seconds * 1000,
                sample_rate: None,
                encryption,
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
    // Made once, untimed: the tenant's key pair exists long before any call.
    let key = SealingKey { id: uuid::Uuid::now_v7(), public: PrivateKey::generate()?.public() };
    let rate = |stage: Stage| -> Result<(f64, u64)> {
        run_call(&datagrams, seconds, stage, &spool, &key)?; // warm-up
        let before = thread_cpu();
        let mut bytes = 0;
        for _ in 0..repeat {
            bytes = run_call(std::hint::black_box(&datagrams), seconds, stage, &spool, &key)?;
        }
        let cpu = (thread_cpu() - before).as_secs_f64().max(1e-9);
        Ok((seconds as f64 * f64::from(repeat) / cpu, bytes))
    };
    let (media, _) = rate(Stage::Media)?;
    let (encode, _) = rate(Stage::Encode)?;
    let mut rounds = Vec::new();
    let mut bytes_per_call = 0;
    for _ in 0..CEILING_ROUNDS {
        let (full, bytes) = rate(Stage::Full)?;
        let (sealed, _) = rate(Stage::Sealed)?;
        bytes_per_call = bytes;
        rounds.push((full, sealed));
    }
    let median = |pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (full, sealed) = (median(|r| r.0), median(|r| r.1));
    let seal_only = measure_sealing(seconds, bytes_per_call, &key)?;
    Ok(Ceiling { media, encode, full, sealed, rounds, seal_only, bytes_per_call })
}

/// Sealing alone, per core: calls of `bytes_per_call` MP3 bytes, handed to the sealer in the pieces the
/// encoder gives per 50 ms poll, each call with its own data key wrapped with RSA-OAEP.
fn measure_sealing(seconds: u64, bytes_per_call: u64, key: &SealingKey) -> Result<f64> {
    let polls = (seconds * 1000 / RECORDER_TICK.as_millis() as u64).max(1);
    let piece = vec![0x5au8; (bytes_per_call / polls).max(1) as usize];
    let seal_call = || -> Result<()> {
        let (mut sealer, header) = FileSealer::new(&key.public, key.id, uuid::Uuid::now_v7())?;
        let mut out = Vec::new();
        for _ in 0..polls {
            sealer.push(std::hint::black_box(&piece), &mut out)?;
            out.clear();
        }
        // The patch over the start: an Info frame's worth of bytes (a few hundred).
        sealer.finish(&piece[..piece.len().min(300)], &mut out)?;
        std::hint::black_box((&header, &out));
        Ok(())
    };
    seal_call()?; // warm-up
    let calls = 200u32;
    let before = thread_cpu();
    for _ in 0..calls {
        seal_call()?;
    }
    let cpu = (thread_cpu() - before).as_secs_f64().max(1e-9);
    Ok(seconds as f64 * f64::from(calls) / cpu)
}

// --- One load point ----------------------------------------------------------------------------------------

struct Row {
    calls: usize,
    encrypted: bool,
    /// The machine's load average (1, 5, 15 min) just before the run's recorder started.
    load_before: String,
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
    /// The recorder's peak RSS before the load started (after the start, the warm-up call and, with
    /// encryption on, the sign-in and key generation, whose Argon2id hashing takes tens of MB).
    recorder_rss_before_load_mb: f64,
    generator_rss_mb: f64,
    files: u64,
    /// Of `files`, those sealed (named `….enc` and starting `RCLENC`).
    sealed_files: u64,
    /// Whether the stored files are what the run asked for: all sealed with encryption on, none off.
    encryption_check: Result<String, String>,
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
        println!("load average before the run: {}", self.load_before);
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
            "peak RSS: recorder {:.0} MB ({:.0} MB before the load), generator {:.0} MB; stored: {} files ({} sealed), {} RecordingStored events; lost in the recorder: {}",
            self.recorder_rss_mb, self.recorder_rss_before_load_mb, self.generator_rss_mb, self.files, self.sealed_files, self.stored_events, self.lost()
        );
        match &self.encryption_check {
            Ok(what) => println!("encryption {}: {what}", on_off(self.encrypted)),
            Err(e) => println!("encryption {}: NOT AS ASKED: {e}", on_off(self.encrypted)),
        }
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

fn run_point(runtime: &tokio::runtime::Runtime, options: &Options, calls: usize, encrypted: bool) -> Result<Row> {
    let database = format!("recall_bench_load_{calls}");
    let url = database_url(&options.database_url, &database);
    runtime.block_on(recreate_database(&options.database_url, &database, true))?;
    let data = tempfile::tempdir()?;
    let result = measure_point(runtime, options, calls, encrypted, &url, data.path());
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
    encrypted: bool,
    url: &str,
    data: &Path,
) -> Result<Row> {
    let load_before = load_average();
    let (mut recorder, sip, http) = start_recorder(url, data)?;
    let recorder_pid = recorder.0.id();
    if encrypted {
        switch_encryption_on(http, url, data)?;
    }
    warm_up(sip)?;
    // The warm-up's recording stored before the load starts; it is left out of the files checked below, and
    // with encryption on it shows the recorder has taken the switch.
    let recordings = data.join("recordings");
    let warm_up_files = wait_for_stored(runtime, url, &recordings, Duration::from_secs(30))?;
    if encrypted && !warm_up_files.iter().all(|file| is_sealed(file)) {
        bail!("encryption is on but the warm-up call was stored in clear: {warm_up_files:?}");
    }

    let before = Metrics::read(http)?;
    let udp_before = udp_counters()?;
    let recorder_rss_before_load = peak_rss_kb(recorder_pid).unwrap_or(0);
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
    let expected = report.answered + 1;
    let stored_events = || recordings_stored(runtime, url);
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
    let load_files: Vec<PathBuf> =
        list_files(&recordings).into_iter().filter(|file| !warm_up_files.contains(file)).collect();
    let sealed_files = load_files.iter().filter(|file| is_sealed(file)).count() as u64;
    let encryption_check = check_encryption(encrypted, calls as u64, load_files.len() as u64, sealed_files);
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
        encrypted,
        load_before,
        sealed_files,
        encryption_check,
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
        recorder_rss_before_load_mb: recorder_rss_before_load as f64 / 1024.0,
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

/// Switches the default tenant's file encryption on, as an administrator would: a root administrator
/// (`recall admin create-root`), signed in over GraphQL, generates a key for the tenant, activates it and
/// turns encryption on. The recorder re-reads its directory every second: this waits 3 s for it.
fn switch_encryption_on(http: SocketAddr, url: &str, data: &Path) -> Result<()> {
    let mut create = Command::new(RECALL)
        .args(["admin", "create-root", "--database-url", url, "--data-dir"])
        .arg(data)
        .args(["--username", "root", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run recall admin create-root")?;
    create.stdin.take().context("create-root's input")?.write_all(format!("{ROOT_PASSWORD}\n").as_bytes())?;
    let created = create.wait_with_output()?;
    if !created.status.success() {
        bail!("recall admin create-root failed: {}", String::from_utf8_lossy(&created.stderr).trim());
    }
    let signed_in = graphql(
        http,
        None,
        &format!(r#"mutation {{ signIn(username: "root", password: "{ROOT_PASSWORD}") {{ token }} }}"#),
    )?;
    let token = signed_in["signIn"]["token"].as_str().context("signIn gave no token")?.to_owned();
    let tenants = graphql(http, Some(&token), "{ tenants(first: 10) { edges { node { id name } } } }")?;
    let edges = tenants["tenants"]["edges"].as_array().context("no tenants")?;
    let tenant = edges
        .iter()
        .find(|edge| edge["node"]["name"] == "default")
        .or_else(|| edges.first())
        .and_then(|edge| edge["node"]["id"].as_str())
        .context("no default tenant")?
        .to_owned();
    let generated = graphql(
        http,
        Some(&token),
        &format!(r#"mutation {{ generateEncryptionKey(input: {{ tenantId: "{tenant}", name: "bench" }}) {{ id }} }}"#),
    )?;
    let key = generated["generateEncryptionKey"]["id"].as_str().context("generateEncryptionKey gave no id")?.to_owned();
    graphql(http, Some(&token), &format!(r#"mutation {{ activateEncryptionKey(keyId: "{key}") {{ id }} }}"#))?;
    graphql(
        http,
        Some(&token),
        &format!(r#"mutation {{ setFileEncryption(tenantId: "{tenant}", enabled: true) {{ id }} }}"#),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

/// One GraphQL request over the bench's HTTP helper: the `data`, or the errors as the failure.
fn graphql(http: SocketAddr, token: Option<&str>, query: &str) -> Result<serde_json::Value> {
    let body = serde_json::json!({ "query": query }).to_string();
    let (status, text) = http_request(http, "POST", "/graphql", token, Some(&body))?;
    if status != 200 {
        bail!("POST /graphql answered {status}: {text}");
    }
    let answer: serde_json::Value = serde_json::from_str(&text).context("GraphQL's answer is not JSON")?;
    if !answer["errors"].is_null() {
        bail!("GraphQL refused the request: {}", answer["errors"]);
    }
    Ok(answer["data"].clone())
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

/// Every file under `directory`, at any depth.
fn list_files(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else { return Vec::new() };
    let mut files = Vec::new();
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        if path.is_dir() {
            files.extend(list_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The `RecordingStored` events in the log so far.
fn recordings_stored(runtime: &tokio::runtime::Runtime, url: &str) -> Result<i64, sqlx::Error> {
    runtime.block_on(async {
        let mut connection = sqlx::PgConnection::connect(url).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RecordingStored'")
            .fetch_one(&mut connection)
            .await?;
        connection.close().await?;
        Ok(count)
    })
}

/// Waits until a recording is stored (its upload finished and reported, so no staging file is left); returns
/// the files under `directory` then.
fn wait_for_stored(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    directory: &Path,
    limit: Duration,
) -> Result<Vec<PathBuf>> {
    let deadline = Instant::now() + limit;
    loop {
        if recordings_stored(runtime, url)? >= 1 {
            return Ok(list_files(directory));
        }
        if Instant::now() >= deadline {
            bail!("the warm-up call's recording was not stored within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stored recording sealed by the recorder: named `….enc` and starting with recall-crypto's magic.
fn is_sealed(file: &Path) -> bool {
    let named = file.extension().is_some_and(|extension| extension == "enc");
    let mut start = [0u8; 6];
    let begins = std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut start)).is_ok()
        && recall_crypto::FileHeader::is_encrypted(&start);
    named && begins
}

/// With encryption on, every one of the `calls` load calls' files is sealed; with it off, none is.
fn check_encryption(encrypted: bool, calls: u64, files: u64, sealed: u64) -> Result<String, String> {
    match (encrypted, files == calls, sealed) {
        (true, true, sealed) if sealed == files => Ok(format!("all {files} files of the {calls} calls sealed")),
        (true, _, _) => Err(format!("{sealed} of {files} files sealed; {calls} calls, all to be sealed")),
        (false, _, 0) => Ok(format!("none of the {files} files sealed")),
        (false, _, _) => Err(format!("{sealed} of {files} files sealed with encryption off")),
    }
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
