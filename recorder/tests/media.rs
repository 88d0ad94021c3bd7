//! The media core on a virtual clock (layer 5 of our tests): seeded senders and networks with loss,
//! duplication, reordering, jitter, wrap-around, SSRC changes, talk spurts, DTMF and drifting clocks, driven
//! through the jitter buffer and the call's timeline as the tokio driver would, but hours in seconds.

mod sim;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use recall_recorder::media::{
    AudioChunk, CallMedia, CallMediaConfig, Codec, Drained, JitterBuffer, JitterConfig, JitterError, JitterStats,
    MediaError, PayloadKind, PayloadTypes, Route, RtpPacket, StreamId, StreamOutput,
};
use sim::{Delivery, Dtmf, Fate, Network, NewSource, Sender, Signal, Simulation, TELEPHONE_EVENT};

const POLL: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn payload_types() -> PayloadTypes {
    PayloadTypes::default().with(TELEPHONE_EVENT, PayloadKind::TelephoneEvent { clock_rate: 8000 })
}

fn jittery(seed: u64, jitter_ms: u64) -> Network {
    Network { jitter: ms(jitter_ms), seed, ..Network::perfect(ms(30)) }
}

// ---------------------------------------------------------------------------------------------------------
// One stream through its jitter buffer

struct JitterRun {
    outputs: Vec<StreamOutput>,
    stats: JitterStats,
    fates: Vec<Fate>,
    frame_ticks: u32,
}

/// Drives one jitter buffer on a virtual clock: polled every 10 ms, packets pushed at their arrival time.
fn run_jitter(sender: Sender, network: Network) -> JitterRun {
    let frame_ticks = sender.frame_ticks();
    let mut buffer = JitterBuffer::new(JitterConfig::default(), payload_types());
    let epoch = Instant::now();
    let mut simulation = Simulation::new(vec![sender], network).keeping_fates();
    let mut outputs = Vec::new();
    let mut clock = Duration::ZERO;
    let mut last = Duration::ZERO;
    for Delivery { at, bytes, .. } in simulation.by_ref() {
        while clock + POLL <= at {
            clock += POLL;
            buffer.pop_until(epoch + clock, &mut outputs);
        }
        let packet = RtpPacket::parse(&bytes).expect("the simulator sends valid RTP");
        buffer.push(packet, epoch + at).expect("every payload type is negotiated");
        last = at;
    }
    while clock < last + Duration::from_secs(1) {
        clock += POLL;
        buffer.pop_until(epoch + clock, &mut outputs);
    }
    buffer.finish(&mut outputs);
    JitterRun { outputs, stats: *buffer.stats(), fates: simulation.fates.take().unwrap_or_default(), frame_ticks }
}

fn audio_chunks(run: &JitterRun) -> impl Iterator<Item = &AudioChunk> {
    run.outputs.iter().filter_map(|output| match output {
        StreamOutput::Audio(chunk) => Some(chunk),
        _ => None,
    })
}

fn decode_ulaw(payload: &[u8]) -> Vec<i16> {
    payload.iter().map(|&byte| audio_codec_algorithms::decode_ulaw(byte)).collect()
}

/// The sent frame each played chunk came from, recognised by its samples (the noise signal makes every
/// packet unique). Also checks that a chunk holds exactly its packet's audio, save the ticks that drift
/// correction repeated or dropped.
fn played_frames(run: &JitterRun) -> Vec<(u64, &AudioChunk)> {
    let by_samples: HashMap<Vec<i16>, &Fate> = run
        .fates
        .iter()
        .filter(|fate| fate.sent.is_audio)
        .map(|fate| (decode_ulaw(&fate.sent.packet.payload[..8]), fate))
        .collect();
    audio_chunks(run)
        .map(|chunk| {
            let fate = by_samples.get(&chunk.samples[..8]).expect("every played chunk is a sent packet");
            let sent = decode_ulaw(&fate.sent.packet.payload);
            if chunk.ticks == fate.sent.ticks {
                assert_eq!(chunk.samples, sent, "frame {} is played as it was sent", fate.sent.frame);
            } else {
                assert!(chunk.ticks.abs_diff(fate.sent.ticks) <= fate.sent.ticks / 16, "drift correction stays small");
            }
            (fate.sent.frame, chunk)
        })
        .collect()
}

/// Every output starts where the previous one ended, and packets are played in the order they were sent,
/// each at most once.
fn assert_in_order_and_contiguous(run: &JitterRun) {
    let mut end = None;
    for output in &run.outputs {
        let (position, ticks) = match output {
            StreamOutput::Audio(chunk) => (chunk.position, i64::from(chunk.ticks)),
            StreamOutput::Silence { position, ticks } => (*position, *ticks as i64),
            StreamOutput::Dtmf(_) => continue,
        };
        if let Some(end) = end {
            assert_eq!(position, end, "no gap and no overlap between outputs");
        }
        end = Some(position + ticks);
    }
    let frames: Vec<u64> = played_frames(run).into_iter().map(|(frame, _)| frame).collect();
    assert!(frames.windows(2).all(|pair| pair[0] < pair[1]), "no packet played twice or out of order");
}

/// Ticks of silence played between two audio chunks (from the end of `after` to the start of `before`).
fn silence_between(after: &AudioChunk, before: &AudioChunk) -> i64 {
    before.position - after.end()
}

/// Frames sent between the first and the last played one that were not played.
fn missing_frames(run: &JitterRun) -> Vec<u64> {
    let played: HashSet<u64> = played_frames(run).into_iter().map(|(frame, _)| frame).collect();
    let (first, last) = (played.iter().min().copied().unwrap_or(0), played.iter().max().copied().unwrap_or(0));
    let mut missing: Vec<u64> = run
        .fates
        .iter()
        .filter(|fate| {
            fate.sent.is_audio && (first..=last).contains(&fate.sent.frame) && !played.contains(&fate.sent.frame)
        })
        .map(|fate| fate.sent.frame)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

#[test]
fn lost_packets_become_silence_of_the_same_length() {
    for (seed, ptime_ms) in [(10, 10), (20, 20), (30, 30), (40, 40)] {
        let sender =
            Sender { signal: Signal::Noise { seed }, ..Sender::new(Codec::Pcmu, ptime_ms, Duration::from_secs(60)) };
        let network = Network { loss: 0.05, ..jittery(seed, 20) };
        let run = run_jitter(sender, network);
        assert_in_order_and_contiguous(&run);

        let missing = missing_frames(&run);
        let lost_on_the_way: HashSet<u64> = run.fates.iter().filter(|f| f.lost).map(|f| f.sent.frame).collect();
        assert!(missing.len() > 50, "ptime {ptime_ms}: the network lost packets ({})", missing.len());
        assert!(missing.iter().all(|frame| lost_on_the_way.contains(frame)), "only lost packets are missing");
        assert_eq!(run.stats.lost, missing.len() as u64, "ptime {ptime_ms}");
        assert_eq!(run.stats.concealed_ticks, missing.len() as u64 * u64::from(run.frame_ticks), "ptime {ptime_ms}");

        // Each gap is exactly as long as the packets missing in it.
        let played = played_frames(&run);
        for pair in played.windows(2) {
            let ((a, after), (b, before)) = (pair[0], pair[1]);
            assert_eq!(silence_between(after, before), (b - a - 1) as i64 * i64::from(run.frame_ticks));
        }
        assert_eq!(run.stats.late + run.stats.duplicate, 0);
    }
}

#[test]
fn duplicated_packets_are_played_once() {
    let sender = Sender::new(Codec::Pcmu, 20, Duration::from_secs(60));
    let network = Network { duplicate: 0.2, ..jittery(2, 20) };
    let run = run_jitter(sender, network);
    assert_in_order_and_contiguous(&run);
    let copies: usize = run.fates.iter().map(|fate| fate.arrivals.len().saturating_sub(1)).sum();
    assert!(copies > 400);
    assert_eq!(run.stats.duplicate, copies as u64);
    assert_eq!((run.stats.lost, run.stats.concealed_ticks), (0, 0));
    assert_eq!(played_frames(&run).len(), run.fates.len());
}

#[test]
fn reordered_packets_within_the_target_delay_are_played_in_order() {
    let sender = Sender::new(Codec::Pcmu, 20, Duration::from_secs(60));
    let run = run_jitter(sender, jittery(3, 50));
    assert_in_order_and_contiguous(&run);
    assert!(run.stats.reordered > 300, "the jitter reorders ({} reordered)", run.stats.reordered);
    assert_eq!((run.stats.lost, run.stats.late, run.stats.concealed_ticks), (0, 0, 0));
    assert_eq!(played_frames(&run).len(), run.fates.len(), "every packet is played");
}

#[test]
fn packets_later_than_the_target_delay_are_dropped_and_concealed() {
    let sender = Sender::new(Codec::Pcmu, 20, Duration::from_secs(60));
    let network = Network { late: 0.03, late_by: ms(300), loss: 0.01, ..jittery(4, 20) };
    let run = run_jitter(sender, network);
    assert_in_order_and_contiguous(&run);
    let held_back =
        run.fates.iter().filter(|fate| fate.arrivals.iter().any(|&at| at > fate.sent.sent_at + ms(300))).count();
    assert!(held_back > 50);
    assert_eq!(run.stats.late, held_back as u64, "every held-back packet is late");
    let missing = missing_frames(&run);
    let expected: HashSet<u64> = run
        .fates
        .iter()
        .filter(|f| f.lost || f.arrivals.iter().all(|&at| at > f.sent.sent_at + ms(300)))
        .map(|f| f.sent.frame)
        .collect();
    assert!(missing.iter().all(|frame| expected.contains(frame)));
    assert_eq!(run.stats.concealed_ticks, missing.len() as u64 * 160, "late packets are concealed like lost ones");
    assert_eq!(run.stats.lost, missing.len() as u64);
}

#[test]
fn sequence_numbers_and_timestamps_wrap_around_without_a_glitch() {
    let sender = Sender {
        first_sequence: 65_000,
        first_timestamp: u32::MAX - 80_000,
        ..Sender::new(Codec::Pcmu, 20, Duration::from_secs(60))
    };
    let run = run_jitter(sender, jittery(5, 20));
    assert_in_order_and_contiguous(&run);
    assert_eq!(played_frames(&run).len(), run.fates.len(), "every packet is played");
    assert_eq!((run.stats.sources, run.stats.lost, run.stats.concealed_ticks), (1, 0, 0));
    let chunks: Vec<&AudioChunk> = audio_chunks(&run).collect();
    assert!(chunks.windows(2).all(|pair| pair[1].position == pair[0].end()), "no silence between packets");
}

#[test]
fn an_ssrc_change_is_re_anchored_at_its_arrival_time() {
    let change = NewSource { at: Duration::from_secs(10), ssrc: 0xabcd, sequence: 7, timestamp: 3_000_000_000 };
    let sender = Sender { new_source: Some(change), ..Sender::new(Codec::Pcmu, 20, Duration::from_secs(30)) };
    let run = run_jitter(sender, jittery(6, 20));
    assert_in_order_and_contiguous(&run);
    assert_eq!(run.stats.sources, 2);
    assert_eq!((run.stats.lost, run.stats.concealed_ticks), (0, 0));
    let played = played_frames(&run);
    assert_eq!(played.len(), run.fates.len(), "every packet of both sources is played");
    let switch = played.iter().position(|(frame, _)| *frame == 500).expect("the new source's first frame (10 s)");
    let (after, before) = (played[switch - 1].1, played[switch].1);
    let gap = silence_between(after, before);
    // The new source starts where its first packet arrived: at most the jitter (20 ms) after the old one ended.
    assert!((0..=160).contains(&gap), "gap of {gap} ticks between the sources");
    // And the whole stream lasts what it lasted on the wall clock, within the jitter.
    let first = played[0].1.position;
    let last = played[played.len() - 1].1.end();
    assert!((last - first - 30 * 8000).abs() <= 160, "{} ticks", last - first);
}

#[test]
fn a_talk_spurt_after_silence_suppression_is_silence_not_loss() {
    let sender = Sender {
        talk_spurts: Some((Duration::from_secs(2), ms(1300))),
        ..Sender::new(Codec::Pcmu, 20, Duration::from_secs(30))
    };
    let run = run_jitter(sender, jittery(7, 20));
    assert_in_order_and_contiguous(&run);
    assert_eq!((run.stats.lost, run.stats.concealed_ticks), (0, 0));
    assert_eq!(played_frames(&run).len(), run.fates.len());
    let markers: HashSet<u64> = run.fates.iter().filter(|f| f.sent.packet.marker).map(|f| f.sent.frame).collect();
    assert_eq!(markers.len(), 9, "each talk spurt after the first starts with the marker bit");
    let played = played_frames(&run);
    for pair in played.windows(2) {
        let ((a, after), (b, before)) = (pair[0], pair[1]);
        let expected = (b - a - 1) as i64 * 160;
        assert_eq!(silence_between(after, before), expected, "the pause lasts what the timestamps say");
        assert_eq!(expected > 0, markers.contains(&b));
    }
}

#[test]
fn drift_is_corrected_in_the_silence_before_a_talk_spurt_not_in_the_audio() {
    let sender = Sender {
        skew_ppm: 200.0,
        talk_spurts: Some((Duration::from_secs(2), ms(600))),
        ..Sender::new(Codec::Pcmu, 20, Duration::from_secs(120))
    };
    let run = run_jitter(sender, jittery(8, 20));
    assert_in_order_and_contiguous(&run);
    // 200 ppm of 120 s is 24 ms, 192 ticks, all taken out of the pauses.
    assert!(run.stats.drift_dropped_ticks >= 150, "{:?}", run.stats);
    let played = played_frames(&run);
    let settled = played.iter().skip_while(|(frame, _)| *frame < 250);
    assert!(settled.clone().all(|(_, chunk)| chunk.ticks == 160), "after the first correction, no audio is stretched");
    assert_eq!((run.stats.lost, run.stats.concealed_ticks), (0, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Whole calls: two streams, the timeline, the recording

/// Runs a call through `CallMedia` on a virtual clock, handing every drained piece to `consume`.
fn run_call(
    senders: Vec<(Sender, Route)>,
    network: Network,
    config: CallMediaConfig,
    end: Duration,
    mut consume: impl FnMut(&Drained),
) -> (CallMedia, Vec<StreamId>) {
    let epoch = Instant::now();
    let mut call = CallMedia::new(epoch, config);
    let streams: Vec<_> = senders.iter().map(|(_, route)| call.add_stream(*route, payload_types())).collect();
    let simulation = Simulation::new(senders.into_iter().map(|(sender, _)| sender).collect(), network);
    let mut drained = Drained::default();
    let mut clock = Duration::ZERO;
    for Delivery { at, stream, bytes } in simulation {
        while clock + POLL <= at {
            clock += POLL;
            call.poll(epoch + clock, &mut drained).expect("rates are supported");
            consume(&drained);
            drained.clear();
        }
        call.receive(streams[stream], &bytes, epoch + at).expect("valid, negotiated packets");
    }
    while clock + POLL <= end {
        clock += POLL;
        call.poll(epoch + clock, &mut drained).expect("rates are supported");
        consume(&drained);
        drained.clear();
    }
    call.finish(epoch + end, &mut drained).expect("rates are supported");
    consume(&drained);
    (call, streams)
}

/// Finds the onsets of the simulator's pulses in one channel of a recording, fed piece by piece. Only whole
/// pulses count: one cut by a lost packet would seem to start late.
struct PulseFinder {
    channel: usize,
    channels: usize,
    frame: u64,
    quiet: u64,
    loud_since: Option<u64>,
    onsets: Vec<u64>,
}

impl PulseFinder {
    fn new(channel: usize, channels: usize) -> Self {
        Self { channel, channels, frame: 0, quiet: 0, loud_since: None, onsets: Vec::new() }
    }

    fn feed(&mut self, samples: &[i16], rate: u32) {
        let whole = u64::from(rate) * 4 / 1000; // the pulses last 5 ms
        for frame in samples.chunks_exact(self.channels) {
            if frame[self.channel].unsigned_abs() > 3000 {
                if self.quiet >= u64::from(rate) / 10 {
                    self.loud_since = Some(self.frame);
                }
                self.quiet = 0;
            } else {
                if self.quiet == 0 {
                    if let Some(onset) = self.loud_since.take().filter(|&onset| self.frame - onset >= whole) {
                        self.onsets.push(onset);
                    }
                }
                self.quiet += 1;
            }
            self.frame += 1;
        }
    }

    /// Each pulse's distance from where it belongs (whole second `k` of the call plus `delay`), by second.
    fn errors(&self, rate: u32, delay: Duration) -> BTreeMap<u64, f64> {
        self.onsets
            .iter()
            .map(|&frame| {
                let at = frame as f64 / f64::from(rate) - delay.as_secs_f64();
                (at.round() as u64, at - at.round())
            })
            .collect()
    }
}

/// Checks that both channels' pulses are where they belong and together, within `tolerance` seconds, from
/// second `from` on; returns the largest distance between the channels.
fn assert_aligned(
    left: &BTreeMap<u64, f64>,
    right: &BTreeMap<u64, f64>,
    seconds: u64,
    from: u64,
    tolerance: f64,
) -> f64 {
    let mut worst = 0.0f64;
    for (channel, errors) in [("left", left), ("right", right)] {
        let (min, max) = errors.range(from..).fold((f64::MAX, f64::MIN), |(lo, hi), (_, &e)| (lo.min(e), hi.max(e)));
        println!("{channel}: pulses {:.1} to {:.1} ms from where they belong", min * 1000.0, max * 1000.0);
        assert!(errors.len() as f64 >= 0.97 * seconds as f64, "{channel}: {} of {seconds} pulses found", errors.len());
        for (&second, &error) in errors.range(from..) {
            assert!(error.abs() <= tolerance, "{channel} pulse {second} is {:.1} ms off", error * 1000.0);
        }
    }
    for (second, l) in left.range(from..) {
        if let Some(r) = right.get(second) {
            worst = worst.max((l - r).abs());
        }
    }
    assert!(worst <= tolerance, "channels {:.1} ms apart", worst * 1000.0);
    worst
}

fn pulses(start: Duration, duration: Duration, skew_ppm: f64, ssrc: u32) -> Sender {
    Sender { signal: Signal::Pulses, start, skew_ppm, ssrc, ..Sender::new(Codec::Pcmu, 20, duration) }
}

#[test]
fn two_channels_stay_aligned_within_20_ms_over_three_hours() {
    let hours = Duration::from_secs(3 * 3600);
    // Cheap crystals: one sender 80 ppm fast, the other 120 ppm slow (0.86 s and 1.3 s off after 3 hours).
    let senders = vec![
        (pulses(Duration::ZERO, hours, 80.0, 1), Route::Left),
        (pulses(Duration::ZERO, hours, -120.0, 2), Route::Right),
    ];
    let network = Network { loss: 0.005, ..jittery(10, 30) };
    let (mut left, mut right) = (PulseFinder::new(0, 2), PulseFinder::new(1, 2));
    let mut frames = 0u64;
    let (call, streams) = run_call(senders, network, CallMediaConfig::default(), hours, |drained| {
        left.feed(&drained.samples, 8000);
        right.feed(&drained.samples, 8000);
        frames += drained.samples.len() as u64 / 2;
    });
    assert_eq!(frames, 3 * 3600 * 8000, "the recording is as long as the call");
    assert_eq!(call.timeline_stats().late_samples, 0, "the timeline never had to drop a sample");
    // The first pulse (at 1 s) may still carry the first packet's own network delay, which the jitter buffer
    // measures over its first second; from 2 s on, both channels are where the network put them.
    let seconds = 3 * 3600 - 1;
    let worst = assert_aligned(&left.errors(8000, ms(30)), &right.errors(8000, ms(30)), seconds, 2, 0.020);
    for stream in streams {
        let stats = call.stream_stats(stream).unwrap();
        assert!(stats.drift_dropped_ticks + stats.drift_inserted_ticks > 6000, "drift was corrected: {stats:?}");
        println!("{stream:?}: {stats:?}");
    }
    println!("channels at most {:.1} ms apart", worst * 1000.0);
}

#[test]
fn output_duration_equals_the_wall_clock_duration() {
    let end = Duration::from_millis(62_345);
    let senders = vec![
        (pulses(ms(800), Duration::from_secs(60), 0.0, 1), Route::Left),
        (pulses(ms(1100), Duration::from_millis(61_000), 0.0, 2), Route::Right),
    ];
    let network = Network { loss: 0.01, duplicate: 0.01, ..jittery(11, 30) };
    let (mut left, mut right) = (PulseFinder::new(0, 2), PulseFinder::new(1, 2));
    let mut frames = 0u64;
    let (call, _) = run_call(senders, network, CallMediaConfig::default(), end, |drained| {
        left.feed(&drained.samples, 8000);
        right.feed(&drained.samples, 8000);
        frames += drained.samples.len() as u64 / 2;
    });
    assert_eq!(frames, 62_345 * 8, "as many frames as the call lasted");
    assert_eq!(call.timeline_stats().late_samples, 0);
    let (left, right) = (left.errors(8000, ms(30)), right.errors(8000, ms(30)));
    // Pulses every second from 1 s to the end of each sender: late starts are silence, not a shift.
    assert_eq!(left.keys().next(), Some(&1));
    assert_eq!(right.keys().next(), Some(&2));
    assert!(left.keys().last() == Some(&60) && right.keys().last() == Some(&62), "{left:?} {right:?}");
    // Each stream is on the wall clock once its first second is measured.
    assert_aligned(&left, &right, 58, 3, 0.020);
}

#[test]
fn telephone_events_become_dtmf_events_and_no_audio_noise() {
    let dtmf = vec![
        Dtmf { at: Duration::from_secs(3), length: ms(200), event: 5 },
        Dtmf { at: ms(5500), length: ms(120), event: 11 },
    ];
    let sender = Sender { dtmf, ..Sender::new(Codec::Pcmu, 20, Duration::from_secs(8)) };
    let mut recording = Vec::new();
    let mut events = Vec::new();
    let (call, streams) = run_call(
        vec![(sender, Route::Right)],
        jittery(12, 20),
        CallMediaConfig::default(),
        Duration::from_secs(9),
        |d| {
            recording.extend(d.samples.iter().skip(1).step_by(2).copied());
            events.extend(d.dtmf.iter().copied());
        },
    );
    let digits: Vec<Option<char>> = events.iter().map(|event| event.digit).collect();
    assert_eq!(digits, vec![Some('5'), Some('#')]);
    for (event, (at, length)) in events.iter().zip([(3000, 200), (5500, 120)]) {
        assert_eq!(event.duration, ms(length));
        assert!(event.end_seen);
        // Where the tone began on the sender's clock, plus the network's delay (30 ms), within the jitter.
        let offset = event.offset.as_secs_f64() * 1000.0;
        assert!((offset - (at + 30) as f64).abs() <= 20.0, "DTMF at {offset} ms");
        let first = (offset * 8.0).round() as usize;
        let span = &recording[first..first + length as usize * 8];
        assert!(span.iter().all(|&sample| sample == 0), "no audio noise while the key is pressed");
        let before = &recording[first - 160..first];
        assert!(before.iter().filter(|&&s| s != 0).count() > 100, "audio right before it");
    }
    let stats = call.stream_stats(streams[0]).unwrap();
    assert_eq!((stats.lost, stats.concealed_ticks, stats.dtmf_events), (0, 0, 2));
}

#[test]
fn a_wideband_and_a_narrowband_side_record_at_sixteen_khz_in_step() {
    let seconds = Duration::from_secs(30);
    let wide = Sender { codec: Codec::G722, ..pulses(Duration::ZERO, seconds, 40.0, 2) };
    let senders = vec![(pulses(Duration::ZERO, seconds, -40.0, 1), Route::Left), (wide, Route::Right)];
    let config = CallMediaConfig {
        output_rate: recall_recorder::media::output_rate_for([Codec::Pcmu, Codec::G722]),
        ..CallMediaConfig::default()
    };
    assert_eq!(config.output_rate, 16000);
    let (mut left, mut right) = (PulseFinder::new(0, 2), PulseFinder::new(1, 2));
    let mut frames = 0u64;
    run_call(senders, jittery(13, 20), config, seconds, |drained| {
        left.feed(&drained.samples, 16000);
        right.feed(&drained.samples, 16000);
        frames += drained.samples.len() as u64 / 2;
    });
    assert_eq!(frames, 30 * 16000);
    let worst = assert_aligned(&left.errors(16000, ms(30)), &right.errors(16000, ms(30)), 29, 2, 0.020);
    assert!(worst < 0.005, "G.722 and upsampled G.711 pulses {:.1} ms apart", worst * 1000.0);
}

#[test]
fn an_unknown_payload_type_is_refused_and_the_stream_goes_on() {
    let epoch = Instant::now();
    let mut call = CallMedia::new(epoch, CallMediaConfig::default());
    let stream = call.add_stream(Route::Left, payload_types());
    let packet = |payload_type, sequence: u16| RtpPacket {
        payload_type,
        sequence,
        timestamp: u32::from(sequence) * 160,
        ssrc: 9,
        marker: false,
        payload: vec![0x10; 160],
    };
    call.receive(stream, &packet(0, 1).to_bytes(), epoch + ms(20)).unwrap();
    let refused = call.receive(stream, &packet(96, 2).to_bytes(), epoch + ms(40));
    assert!(matches!(refused, Err(MediaError::Jitter(JitterError::Codec(_)))), "{refused:?}");
    call.receive(stream, &packet(0, 3).to_bytes(), epoch + ms(60)).unwrap();
    let mut drained = Drained::default();
    call.finish(epoch + ms(100), &mut drained).unwrap();
    let stats = call.stream_stats(stream).unwrap();
    assert_eq!((stats.refused, stats.received, stats.lost), (1, 2, 1), "the refused packet's slot is concealed");
    let left: Vec<i16> = drained.samples.iter().step_by(2).copied().collect();
    assert_eq!(left.len(), 800);
    let loud = left.iter().filter(|&&s| s != 0).count();
    assert_eq!(loud, 320, "two packets of audio, and silence where the refused one was");
    assert!(left[160..320].iter().all(|&s| s == 0));
}
