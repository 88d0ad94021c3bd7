//! Per-stream jitter buffer, sans-IO: [`JitterBuffer::push`] takes a packet with its arrival time,
//! [`JitterBuffer::pop_until`] gives the stream's audio in order on its play-out clock, every gap filled with
//! silence of exactly the missing duration (from RTP timestamps, never from packet counts). It never reads a
//! clock, never sleeps, and never plays a packet twice or out of order.
//!
//! Positions are RTP ticks of the stream's clock since its origin (the arrival of its first packet):
//! position `p` is wall-clock time `origin + p / clock_rate`. A packet is placed so that its *end* falls at
//! its arrival time (it cannot arrive before it was captured), and is played once the play-out clock
//! (`now - target_delay`) has passed its end: a packet up to `target_delay` late, whatever its length, is
//! still played. The sender's clock and ours drift apart; the least lateness of recent packets measures it and
//! the mapping is corrected when it passes `drift_threshold`, so that the stream stays on the wall clock for
//! hours: in the silence before a talk spurt (marker bit) when one comes within a few seconds, otherwise by
//! repeating or dropping ticks spread over the next played frames.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::{Codec, CodecError, Decoder, PayloadKind, PayloadTypes};
use super::drift::DriftEstimator;
use super::rtp::{RtpPacket, TelephoneEvent, TelephoneEventError};

/// RFC 3550 A.1: a sequence number further ahead than this, or further behind than `MAX_MISORDER`, is held
/// aside; if the next packet follows it, the sender restarted its sequence.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 1000;
/// How many recent sequence numbers are remembered to recognise duplicates.
const SEEN_WINDOW: u64 = 1024;
/// Sources (SSRCs or re-anchored timelines) kept for packets that straggle in after a change.
const KEPT_SOURCES: usize = 4;
const NANOS_PER_SECOND: i128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// How late a packet may arrive (after its end on the arrival clock) and still be played; the output
    /// lags arrival by this much.
    pub target_delay: Duration,
    /// How far ahead of the arrival clock a packet may claim to be. Beyond it the sender's timestamps jumped
    /// without notice and the stream is re-anchored at the arrival time; it also bounds what the buffer holds.
    pub max_delay: Duration,
    /// Drift between the sender's clock and ours that is corrected (by repeating or dropping a few ticks of
    /// each played frame until it is gone).
    pub drift_threshold: Duration,
    /// Drift is measured as the least lateness over `drift_windows` windows of `drift_window`.
    pub drift_window: Duration,
    pub drift_windows: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            target_delay: Duration::from_millis(60),
            max_delay: Duration::from_millis(1000),
            drift_threshold: Duration::from_millis(5),
            drift_window: Duration::from_secs(1),
            drift_windows: 5,
        }
    }
}

/// Where a stream's positions are on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    /// Wall-clock time of position 0: the arrival of the stream's first packet.
    pub origin: Instant,
    /// RTP ticks per second.
    pub rate: u32,
}

/// What the buffer plays, in order, each piece starting where the previous one ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutput {
    Audio(AudioChunk),
    /// No audio for `ticks`: concealed loss, silence suppression between talk spurts, a DTMF tone, a change
    /// of source, or no packet at all.
    Silence {
        position: i64,
        ticks: u64,
    },
    /// A telephone-event (DTMF) that ended, or whose end was lost. Its position is where it began, which may
    /// lie before audio already played; its span carries no audio.
    Dtmf(DtmfEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    pub position: i64,
    /// Length in RTP ticks; `samples.len() == ticks * codec.samples_per_tick()`.
    pub ticks: u32,
    pub codec: Codec,
    pub samples: Vec<i16>,
}

impl AudioChunk {
    pub fn end(&self) -> i64 {
        self.position + i64::from(self.ticks)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Where the event began (RTP ticks since the stream's origin).
    pub position: i64,
    /// Duration in RTP ticks.
    pub duration: u32,
    /// RFC 4733 event code; [`super::rtp::dtmf_digit`] names the key.
    pub event: u8,
    pub volume: u8,
    /// False when the end packets were all lost and the event was closed by the next one.
    pub end_seen: bool,
}

/// Counters of one stream, for metrics and for `RecordingFailed`'s account of what was lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed with a negotiated payload type, duplicates and late ones included.
    pub received: u64,
    pub duplicate: u64,
    /// Packets that arrived after their play-out time; dropped, and also counted in `lost`.
    pub late: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Packets missing when their turn came (never arrived, or arrived late).
    pub lost: u64,
    /// Silence played for lost packets, in RTP ticks: exactly their duration.
    pub concealed_ticks: u64,
    /// All silence played, in RTP ticks (concealment included).
    pub silence_ticks: u64,
    /// Audio played, in RTP ticks.
    pub played_ticks: u64,
    /// Packets refused: payload type not negotiated, wrong clock rate, malformed telephone-event.
    pub refused: u64,
    /// Timelines anchored: the first source, then one for each SSRC change, restart or timestamp jump.
    pub sources: u64,
    /// Packets far outside the stream's sequence numbers that no next packet followed (dropped).
    pub stray: u64,
    pub drift_inserted_ticks: u64,
    pub drift_dropped_ticks: u64,
    pub dtmf_events: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitterError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("payload type {payload_type} has a {clock_rate} Hz clock, the stream a {stream_rate} Hz one")]
    ClockRateMismatch { payload_type: u8, clock_rate: u32, stream_rate: u32 },
    #[error(transparent)]
    TelephoneEvent(#[from] TelephoneEventError),
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Buffered,
    /// Buffered as the first packet of a new source (SSRC change, restart, or timestamp jump).
    NewSource,
    Duplicate,
    /// Its play-out time has passed: dropped.
    Late,
    /// Its sequence number is far from the stream's: held aside, and played as the start of a new timeline
    /// if the next packet follows it (a sender that restarted), dropped otherwise.
    Held,
}

/// Packets are played in (source generation, extended sequence number) order.
type Key = (u32, u64);

/// A packet being pushed, its payload already sorted out.
#[derive(Debug)]
struct Incoming {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker: bool,
    content: Content,
    arrival_ns: i64,
}

enum Located {
    /// Source index and extended sequence number.
    Known(usize, u64),
    /// The first packet of a new timeline: a new SSRC, an earlier one back, or timestamps that jumped.
    New,
    /// Far from the current source's sequence numbers.
    Stray,
}

#[derive(Debug)]
struct Buffered {
    timestamp: i64,
    marker: bool,
    content: Content,
}

#[derive(Debug)]
enum Content {
    Audio { codec: Codec, payload: Vec<u8> },
    Event(TelephoneEvent),
}

impl Content {
    /// The audio this packet covers, in RTP ticks: none for a telephone-event.
    fn ticks(&self) -> i64 {
        match self {
            Content::Audio { codec, payload } => i64::from(codec.ticks(payload.len())),
            Content::Event(_) => 0,
        }
    }

    /// How far past its timestamp the packet reports, in RTP ticks: its end for audio, the duration so far
    /// for a telephone-event (whose timestamp is the event's start). A packet is due when the play-out clock
    /// passes that point, so that packets of an event that overtook each other are still taken in order.
    fn reach(&self) -> i64 {
        match self {
            Content::Audio { .. } => self.ticks(),
            Content::Event(event) => i64::from(event.duration),
        }
    }
}

/// One timeline of RTP timestamps: an SSRC, re-anchored when it restarts or jumps.
#[derive(Debug)]
struct Source {
    ssrc: u32,
    generation: u32,
    highest_sequence: u64,
    /// Extended timestamp of the packet with the highest sequence number: the reference for unwrapping.
    highest_timestamp: i64,
    highest_audio_timestamp: Option<i64>,
    /// position = extended timestamp + offset.
    offset: i64,
    /// Where its first packet starts.
    first_position: i64,
    seen: Vec<u64>,
}

impl Source {
    fn new(ssrc: u32, generation: u32, sequence: u16, timestamp: u32, offset: i64) -> Self {
        Self {
            ssrc,
            generation,
            // Extended sequence numbers start high enough never to go below zero.
            highest_sequence: (1 << 32) + u64::from(sequence),
            highest_timestamp: i64::from(timestamp),
            highest_audio_timestamp: None,
            offset,
            first_position: i64::from(timestamp) + offset,
            seen: vec![u64::MAX; SEEN_WINDOW as usize],
        }
    }

    fn extend_sequence(&self, sequence: u16) -> u64 {
        let delta = i64::from(sequence.wrapping_sub(self.highest_sequence as u16) as i16);
        self.highest_sequence.wrapping_add_signed(delta)
    }

    fn extend_timestamp(&self, timestamp: u32) -> i64 {
        self.highest_timestamp + i64::from(timestamp.wrapping_sub(self.highest_timestamp as u32) as i32)
    }

    fn has_seen(&self, sequence: u64) -> bool {
        self.seen[(sequence % SEEN_WINDOW) as usize] == sequence
    }

    fn mark_seen(&mut self, sequence: u64) {
        self.seen[(sequence % SEEN_WINDOW) as usize] = sequence;
    }
}

/// Follows the packets of telephone-events (same timestamp, growing duration, end bit repeated) and reports
/// each event once.
#[derive(Debug, Default)]
struct DtmfTracker {
    current: Option<TrackedEvent>,
}

#[derive(Debug)]
struct TrackedEvent {
    generation: u32,
    timestamp: i64,
    event: DtmfEvent,
    reported: bool,
}

impl DtmfTracker {
    fn on_packet(
        &mut self,
        generation: u32,
        timestamp: i64,
        position: i64,
        packet: TelephoneEvent,
        out: &mut Vec<StreamOutput>,
    ) {
        if let Some(current) = self.current.as_mut().filter(|c| c.generation == generation) {
            if current.timestamp == timestamp {
                if !current.reported {
                    current.event.duration = current.event.duration.max(u32::from(packet.duration));
                    current.event.volume = packet.volume;
                    if packet.end {
                        current.event.end_seen = true;
                        current.reported = true;
                        out.push(StreamOutput::Dtmf(current.event));
                    }
                }
                return;
            }
            if timestamp < current.timestamp {
                return; // a straggler of an event already followed
            }
        }
        self.flush(out);
        let event = DtmfEvent {
            position,
            duration: u32::from(packet.duration),
            event: packet.event,
            volume: packet.volume,
            end_seen: packet.end,
        };
        if packet.end {
            out.push(StreamOutput::Dtmf(event));
        }
        self.current = Some(TrackedEvent { generation, timestamp, event, reported: packet.end });
    }

    /// Reports an event whose end packets never came.
    fn flush(&mut self, out: &mut Vec<StreamOutput>) {
        if let Some(current) = self.current.as_mut().filter(|c| !c.reported) {
            current.reported = true;
            out.push(StreamOutput::Dtmf(current.event));
        }
    }
}

/// The jitter buffer of one RTP stream.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    payload_types: PayloadTypes,
    rate: u32,
    origin: Option<Instant>,
    sources: Vec<Source>,
    buffer: BTreeMap<Key, Buffered>,
    /// Where the next output starts; `None` until the first packet is played.
    next_position: Option<i64>,
    last_played: Option<Key>,
    last_frame_ticks: i64,
    /// Silence played since the last audio packet, and sequence numbers missing in it.
    open_gap_ticks: u64,
    open_gap_missing: u64,
    decoders: Vec<Decoder>,
    dtmf: DtmfTracker,
    drift: DriftEstimator,
    /// Ticks still to insert (> 0) or drop (< 0) on the current source.
    correction: i64,
    /// Until which position the correction waits for a talk spurt to be made in silence, before it stretches
    /// the audio; `None` for a source's first correction (its first packet's own delay), made at once.
    stretch_after: Option<i64>,
    corrected_once: bool,
    /// A packet far from the current sequence, until the next one tells what it was.
    held: Option<Incoming>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for a stream with these negotiated payload types; the stream's clock is theirs (8 kHz for
    /// every codec the recorder decodes, G.722 included).
    pub fn new(config: JitterConfig, payload_types: PayloadTypes) -> Self {
        let rate = payload_types.rtp_clock_rate();
        let drift = DriftEstimator::new(config.drift_window, config.drift_windows);
        Self {
            config,
            payload_types,
            rate,
            origin: None,
            sources: Vec::new(),
            buffer: BTreeMap::new(),
            next_position: None,
            last_played: None,
            last_frame_ticks: 0,
            open_gap_ticks: 0,
            open_gap_missing: 0,
            decoders: Vec::new(),
            dtmf: DtmfTracker::default(),
            drift,
            correction: 0,
            stretch_after: None,
            corrected_once: false,
            held: None,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Where positions are on the wall clock; `None` before the first packet.
    pub fn clock(&self) -> Option<StreamClock> {
        self.origin.map(|origin| StreamClock { origin, rate: self.rate })
    }

    /// Where the next output will start (`None` before anything was played).
    pub fn next_position(&self) -> Option<i64> {
        self.next_position
    }

    /// Takes one packet that arrived at `now`.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Result<Pushed, JitterError> {
        let content = match self.content_of(packet.payload_type, packet.payload) {
            Ok(content) => content,
            Err(error) => {
                self.stats.refused += 1;
                return Err(error);
            }
        };
        self.stats.received += 1;
        let origin = *self.origin.get_or_insert(now);
        let incoming = Incoming {
            ssrc: packet.ssrc,
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
            content,
            arrival_ns: signed_nanos(now, origin),
        };
        Ok(self.accept(incoming))
    }

    fn accept(&mut self, incoming: Incoming) -> Pushed {
        match self.locate(&incoming) {
            Located::Known(index, sequence) => {
                self.drop_held();
                self.insert(index, sequence, incoming, Pushed::Buffered)
            }
            Located::New => {
                self.drop_held();
                self.anchor_source(&incoming);
                let index = self.sources.len() - 1;
                let sequence = self.sources[index].highest_sequence;
                self.insert(index, sequence, incoming, Pushed::NewSource)
            }
            Located::Stray => match self.held.take() {
                Some(held) if held.ssrc == incoming.ssrc && held.sequence.wrapping_add(1) == incoming.sequence => {
                    // The packet held aside has a follower: the sender restarted its sequence numbers. A new
                    // timeline starts with the held packet.
                    self.anchor_source(&held);
                    let index = self.sources.len() - 1;
                    let sequence = self.sources[index].highest_sequence;
                    self.insert(index, sequence, held, Pushed::NewSource);
                    self.accept(incoming);
                    Pushed::NewSource
                }
                held => {
                    if held.is_some() {
                        self.stats.stray += 1;
                    }
                    self.held = Some(incoming);
                    Pushed::Held
                }
            },
        }
    }

    fn drop_held(&mut self) {
        if self.held.take().is_some() {
            self.stats.stray += 1;
        }
    }

    fn insert(&mut self, index: usize, sequence: u64, incoming: Incoming, pushed: Pushed) -> Pushed {
        let is_current = index + 1 == self.sources.len();
        let ticks = incoming.content.ticks();
        let is_audio = matches!(incoming.content, Content::Audio { .. });
        let source = &mut self.sources[index];
        let timestamp = source.extend_timestamp(incoming.timestamp);
        let key = (source.generation, sequence);
        let start = timestamp + source.offset;
        if source.has_seen(sequence) {
            self.stats.duplicate += 1;
            return Pushed::Duplicate;
        }
        source.mark_seen(sequence);
        if sequence < source.highest_sequence {
            self.stats.reordered += 1;
        }
        let too_old = source.highest_sequence.saturating_sub(sequence) >= SEEN_WINDOW;
        let played_already = self.last_played.is_some_and(|last| key <= last);
        let span_played = is_audio && ticks > 0 && self.next_position.is_some_and(|next| start + ticks <= next);
        if too_old || played_already || span_played {
            self.stats.late += 1;
            return Pushed::Late;
        }
        if sequence > source.highest_sequence {
            source.highest_sequence = sequence;
            source.highest_timestamp = timestamp;
        }
        if is_audio {
            source.highest_audio_timestamp =
                Some(source.highest_audio_timestamp.map_or(timestamp, |t| t.max(timestamp)));
            if is_current {
                let lateness_ns = incoming.arrival_ns - self.nanos_of(start + ticks);
                self.observe_drift(incoming.arrival_ns, lateness_ns);
            }
        }
        self.buffer.insert(key, Buffered { timestamp, marker: incoming.marker, content: incoming.content });
        pushed
    }

    /// Plays everything whose play-out time has come by `now`, appending to `out`.
    pub fn pop_until(&mut self, now: Instant, out: &mut Vec<StreamOutput>) {
        let Some(origin) = self.origin else { return };
        let target = i64::try_from(self.config.target_delay.as_nanos()).unwrap_or(i64::MAX);
        let frontier = self.position_of_nanos(signed_nanos(now, origin).saturating_sub(target));
        self.play_until(frontier, true, out);
    }

    /// Plays everything still buffered, at the end of the stream: gaps between buffered packets are concealed,
    /// nothing is added after the last one, and a DTMF event whose end was lost is reported.
    pub fn finish(&mut self, out: &mut Vec<StreamOutput>) {
        self.play_until(i64::MAX, false, out);
        let before = out.len();
        self.dtmf.flush(out);
        self.stats.dtmf_events += (out.len() - before) as u64;
    }

    /// When the next buffered packet (or the gap before it) becomes due; `None` when nothing is buffered.
    /// Silence after the last packet is played at whatever pace the caller polls.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let origin = self.origin?;
        let (key, head) = self.buffer.first_key_value()?;
        let start = self.position(key.0, head.timestamp);
        let due = match self.next_position {
            Some(next) if start > next => start,
            _ => start + head.content.reach(),
        };
        let nanos = self.nanos_of_ceil(due).saturating_add(i64::try_from(self.config.target_delay.as_nanos()).ok()?);
        Some(offset_instant(origin, nanos))
    }

    fn content_of(&self, payload_type: u8, payload: Vec<u8>) -> Result<Content, JitterError> {
        let kind = self.payload_types.get(payload_type)?;
        if kind.rtp_clock_rate() != self.rate {
            return Err(JitterError::ClockRateMismatch {
                payload_type,
                clock_rate: kind.rtp_clock_rate(),
                stream_rate: self.rate,
            });
        }
        Ok(match kind {
            PayloadKind::Audio(codec) => Content::Audio { codec, payload },
            PayloadKind::TelephoneEvent { .. } => Content::Event(TelephoneEvent::parse(&payload)?),
        })
    }

    /// Which timeline a packet belongs to.
    fn locate(&self, incoming: &Incoming) -> Located {
        let Some(index) = self.sources.iter().rposition(|source| source.ssrc == incoming.ssrc) else {
            return Located::New;
        };
        let source = &self.sources[index];
        let extended = source.extend_sequence(incoming.sequence);
        let delta = extended as i64 - source.highest_sequence as i64;
        let is_current = index + 1 == self.sources.len();
        if is_current && !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            // RFC 3550 A.1: held aside until the next packet tells whether the sender restarted.
            return Located::Stray;
        }
        if delta <= 0 {
            return Located::Known(index, extended); // reordered, duplicate or late: never re-anchors
        }
        let timestamp = source.extend_timestamp(incoming.timestamp);
        if !is_current {
            // Overtaken by the next source's first packets if it ends before that source begins; otherwise an
            // earlier source came back.
            let end = timestamp + source.offset + incoming.content.reach();
            let next_begins = self.sources[index + 1].first_position;
            return if end <= next_begins { Located::Known(index, extended) } else { Located::New };
        }
        let is_audio = matches!(incoming.content, Content::Audio { .. });
        let went_back = is_audio && source.highest_audio_timestamp.is_some_and(|highest| timestamp < highest);
        let max_early = i64::try_from(self.config.max_delay.as_nanos()).unwrap_or(i64::MAX);
        let end = timestamp + source.offset + incoming.content.reach();
        let too_early = self.nanos_of(end) - incoming.arrival_ns > max_early;
        if went_back || too_early {
            return Located::New; // the timestamps jumped without notice
        }
        Located::Known(index, extended)
    }

    /// Starts a new timeline whose first packet ends at its arrival time, or right after everything already
    /// played or buffered if that is later: a new source never overlaps the old one, and the gap between
    /// them is the real pause, not the difference of two unrelated timestamp bases.
    fn anchor_source(&mut self, incoming: &Incoming) {
        let reach = incoming.content.reach();
        let mut end = self.position_of_nanos(incoming.arrival_ns);
        if let Some(next) = self.next_position {
            end = end.max(next + reach);
        }
        for (key, buffered) in &self.buffer {
            if let Content::Audio { .. } = buffered.content {
                end = end.max(self.position(key.0, buffered.timestamp) + buffered.content.ticks() + reach);
            }
        }
        let generation = self.sources.last().map_or(0, |source| source.generation + 1);
        let offset = end - reach - i64::from(incoming.timestamp);
        self.sources.push(Source::new(incoming.ssrc, generation, incoming.sequence, incoming.timestamp, offset));
        self.stats.sources += 1;
        self.correction = 0;
        self.stretch_after = None;
        self.corrected_once = false;
        self.drift.reset();
        while self.sources.len() > KEPT_SOURCES {
            let oldest = self.sources[0].generation;
            if self.buffer.keys().next().is_some_and(|key| key.0 == oldest) {
                break;
            }
            self.sources.remove(0);
        }
    }

    fn observe_drift(&mut self, arrival_ns: i64, lateness_ns: i64) {
        let Some(estimate) = self.drift.observe(arrival_ns, lateness_ns) else { return };
        let threshold = i64::try_from(self.config.drift_threshold.as_nanos()).unwrap_or(i64::MAX);
        if self.correction == 0 && estimate.abs() > threshold {
            // Late packets (a slow sender) move the mapping later: ticks are inserted; early ones, dropped.
            self.correction = self.position_of_nanos_rounded(estimate);
            let patience =
                self.config.drift_window.saturating_mul(u32::try_from(self.config.drift_windows).unwrap_or(1));
            let patience = i64::try_from(patience.as_nanos()).unwrap_or(i64::MAX);
            self.stretch_after =
                self.corrected_once.then(|| self.position_of_nanos(arrival_ns.saturating_add(patience)));
            self.corrected_once = true;
        }
    }

    fn play_until(&mut self, frontier: i64, fill_tail: bool, out: &mut Vec<StreamOutput>) {
        loop {
            let Some((&key, head)) = self.buffer.first_key_value() else {
                // Nothing buffered: silence is certain up to where a packet that could still come would start.
                if let Some(next) = self.next_position.filter(|_| fill_tail) {
                    let certain = frontier.saturating_sub(self.last_frame_ticks);
                    if certain > next {
                        self.play_silence(next, certain - next, out);
                    }
                }
                return;
            };
            let mut start = self.position(key.0, head.timestamp);
            let reach = head.content.reach();
            let next = self.next_position.unwrap_or(start);
            let talk_spurt = head.marker && matches!(head.content, Content::Audio { .. });
            if talk_spurt && start > next && self.correction != 0 && self.is_current(key.0) {
                // A talk spurt after silence suppression: correct the drift in the silence, not in the audio.
                start += self.shift_current(self.correction.max(next - start));
            }
            if start > next {
                if start > frontier {
                    // The gap's extent is known but a packet for it may still come: play only what is certain.
                    let certain = frontier.saturating_sub(self.last_frame_ticks).min(start);
                    if certain > next {
                        self.play_silence(next, certain - next, out);
                    }
                    return;
                }
                self.play_silence(next, start - next, out);
            }
            if start + reach > frontier {
                return;
            }
            let Some((key, packet)) = self.buffer.pop_first() else { return };
            match packet.content {
                Content::Event(event) => {
                    self.note_played(key, false);
                    let before = out.len();
                    self.dtmf.on_packet(key.0, packet.timestamp, start, event, out);
                    self.stats.dtmf_events += (out.len() - before) as u64;
                }
                Content::Audio { codec, payload } => self.play_audio(key, start, codec, &payload, out),
            }
        }
    }

    fn play_silence(&mut self, position: i64, ticks: i64, out: &mut Vec<StreamOutput>) {
        let ticks = ticks.unsigned_abs();
        self.stats.silence_ticks += ticks;
        self.open_gap_ticks += ticks;
        self.next_position = Some(position.saturating_add_unsigned(ticks));
        out.push(StreamOutput::Silence { position, ticks });
    }

    /// Counts the sequence numbers skipped before `key`; when an audio packet closes a gap of silence, tells
    /// how much of it was loss: the missing packets' length (each as long as the last one played), at most the
    /// gap. The rest was silence suppression (no packet is missing when a talk spurt starts after it), a DTMF
    /// tone, or a change of source.
    fn note_played(&mut self, key: Key, closes_gap: bool) {
        let missing = match self.last_played {
            Some((generation, sequence)) if generation == key.0 => key.1.saturating_sub(sequence + 1),
            _ => 0,
        };
        self.stats.lost += missing;
        self.open_gap_missing += missing;
        self.last_played = Some(key);
        if closes_gap {
            let lost = self.open_gap_ticks.min(self.open_gap_missing * self.last_frame_ticks.unsigned_abs());
            self.stats.concealed_ticks += lost;
            self.open_gap_ticks = 0;
            self.open_gap_missing = 0;
        }
    }

    fn play_audio(&mut self, key: Key, start: i64, codec: Codec, payload: &[u8], out: &mut Vec<StreamOutput>) {
        let frame_ticks = i64::from(codec.ticks(payload.len()));
        let next = self.next_position.unwrap_or(start);
        if frame_ticks == 0 {
            self.note_played(key, false); // an empty payload (a keep-alive) holds no audio
            return;
        }
        if start + frame_ticks <= next {
            // Its span was played already (timestamps overlapping the previous packet's).
            self.note_played(key, false);
            self.stats.late += 1;
            return;
        }
        self.note_played(key, true);
        let per_tick = codec.samples_per_tick() as usize;
        let mut samples = Vec::with_capacity((payload.len() + 1) * per_tick);
        self.decoder(codec).decode(payload, &mut samples);
        samples.resize(frame_ticks as usize * per_tick, 0);
        let (mut position, mut ticks) = (start, frame_ticks);
        if start < next {
            let cut = next - start;
            samples.drain(..cut as usize * per_tick);
            position = next;
            ticks -= cut;
        }
        let patient = self.stretch_after.is_some_and(|after| position < after);
        if self.correction != 0 && self.is_current(key.0) && !patient {
            // An eighth of what is left, at least one tick and at most a sixteenth of the frame: a large error
            // (the first packet's own delay) goes in under a second, the slow drift of a clock one tick at a time.
            let step = (self.correction / 8).clamp(-ticks / 16, ticks / 16);
            let step = if step == 0 { self.correction.signum() } else { step };
            if ticks + step >= 1 {
                samples = stretch(&samples, per_tick, step);
                ticks += self.shift_current(step);
            }
        }
        self.last_frame_ticks = frame_ticks;
        self.next_position = Some(position + ticks);
        self.stats.played_ticks += ticks.unsigned_abs();
        out.push(StreamOutput::Audio(AudioChunk { position, ticks: ticks as u32, codec, samples }));
    }

    fn is_current(&self, generation: u32) -> bool {
        self.sources.last().is_some_and(|source| source.generation == generation)
    }

    /// Moves the current source's positions by `step` ticks (later when positive) as part of the drift
    /// correction; returns `step`.
    fn shift_current(&mut self, step: i64) -> i64 {
        self.correction -= step;
        if step > 0 {
            self.stats.drift_inserted_ticks += step.unsigned_abs();
        } else {
            self.stats.drift_dropped_ticks += step.unsigned_abs();
        }
        if let Some(source) = self.sources.last_mut() {
            source.offset += step;
        }
        self.drift.shift(self.nanos_of(step));
        step
    }

    fn decoder(&mut self, codec: Codec) -> &mut Decoder {
        match self.decoders.iter().position(|decoder| decoder.codec() == codec) {
            Some(index) => &mut self.decoders[index],
            None => {
                self.decoders.push(Decoder::new(codec));
                let last = self.decoders.len() - 1;
                &mut self.decoders[last]
            }
        }
    }

    fn position(&self, generation: u32, timestamp: i64) -> i64 {
        let offset = self.sources.iter().rev().find(|source| source.generation == generation).map_or(0, |s| s.offset);
        timestamp + offset
    }

    /// The position at `nanos` after the origin (rounded down).
    fn position_of_nanos(&self, nanos: i64) -> i64 {
        (i128::from(nanos) * i128::from(self.rate)).div_euclid(NANOS_PER_SECOND) as i64
    }

    fn position_of_nanos_rounded(&self, nanos: i64) -> i64 {
        let scaled = i128::from(nanos) * i128::from(self.rate);
        (scaled + NANOS_PER_SECOND / 2).div_euclid(NANOS_PER_SECOND) as i64
    }

    /// Nanoseconds after the origin of a position (rounded down).
    fn nanos_of(&self, position: i64) -> i64 {
        (i128::from(position) * NANOS_PER_SECOND).div_euclid(i128::from(self.rate)) as i64
    }

    fn nanos_of_ceil(&self, position: i64) -> i64 {
        let scaled = i128::from(position) * NANOS_PER_SECOND;
        let rate = i128::from(self.rate);
        (scaled + rate - 1).div_euclid(rate) as i64
    }
}

/// Repeats (`step > 0`) or drops (`step < 0`) `|step|` ticks spread evenly over a frame of samples.
fn stretch(samples: &[i16], per_tick: usize, step: i64) -> Vec<i16> {
    let ticks = samples.len() / per_tick.max(1);
    let count = step.unsigned_abs() as usize;
    let mut out = Vec::with_capacity(samples.len() + count * per_tick);
    let mut chosen = 1;
    for (index, tick) in samples.chunks(per_tick.max(1)).enumerate() {
        let is_chosen = chosen <= count && index == chosen * ticks / (count + 1);
        if is_chosen {
            chosen += 1;
        }
        if !is_chosen || step > 0 {
            out.extend_from_slice(tick);
        }
        if is_chosen && step > 0 {
            out.extend_from_slice(tick);
        }
    }
    out
}

/// `at - origin` in nanoseconds, negative when `at` is earlier.
pub(crate) fn signed_nanos(at: Instant, origin: Instant) -> i64 {
    match at.checked_duration_since(origin) {
        Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        None => -i64::try_from(origin.duration_since(at).as_nanos()).unwrap_or(i64::MAX),
    }
}

/// `origin + nanos`, saturating at what `Instant` can hold.
pub(crate) fn offset_instant(origin: Instant, nanos: i64) -> Instant {
    let magnitude = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        origin.checked_add(magnitude).unwrap_or(origin)
    } else {
        origin.checked_sub(magnitude).unwrap_or(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcmu(sequence: u16, timestamp: u32, len: usize) -> RtpPacket {
        RtpPacket { payload_type: 0, sequence, timestamp, ssrc: 7, marker: false, payload: vec![0x80; len] }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sequence_numbers_and_timestamps_extend_across_wrap_around() {
        let mut source = Source::new(1, 0, 65535, u32::MAX - 100, 0);
        let base = source.highest_sequence;
        assert_eq!(source.extend_sequence(0), base + 1);
        assert_eq!(source.extend_sequence(65534), base - 1);
        assert_eq!(source.extend_timestamp(59), i64::from(u32::MAX) + 60);
        source.highest_sequence = base + 1;
        source.highest_timestamp = i64::from(u32::MAX) + 60;
        assert_eq!(source.extend_sequence(65535), base);
        assert_eq!(source.extend_timestamp(u32::MAX - 100), i64::from(u32::MAX) - 100);
    }

    #[test]
    fn a_packet_is_played_once_the_play_out_clock_passes_its_end() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default(), PayloadTypes::default());
        assert_eq!(buffer.push(pcmu(1, 1000, 160), start), Ok(Pushed::NewSource));
        let mut out = Vec::new();
        buffer.pop_until(start + ms(59), &mut out);
        assert!(out.is_empty());
        assert_eq!(buffer.poll_timeout(), Some(start + ms(60)));
        buffer.pop_until(start + ms(60), &mut out);
        assert!(matches!(&out[..], [StreamOutput::Audio(AudioChunk { position: -160, ticks: 160, .. })]));
    }

    #[test]
    fn a_telephone_event_payload_type_is_never_played_as_audio() {
        let start = Instant::now();
        let types = PayloadTypes::default().with(101, PayloadKind::TelephoneEvent { clock_rate: 8000 });
        let mut buffer = JitterBuffer::new(JitterConfig::default(), types);
        let event = TelephoneEvent { event: 5, end: true, volume: 10, duration: 800 };
        let packet = RtpPacket {
            payload_type: 101,
            sequence: 1,
            timestamp: 0,
            ssrc: 7,
            marker: true,
            payload: event.to_bytes().to_vec(),
        };
        buffer.push(packet, start).unwrap();
        let mut out = Vec::new();
        buffer.finish(&mut out);
        assert_eq!(
            out,
            vec![StreamOutput::Dtmf(DtmfEvent { position: -800, duration: 800, event: 5, volume: 10, end_seen: true })]
        );
        assert_eq!(buffer.stats().played_ticks, 0);
    }

    #[test]
    fn stretching_repeats_or_drops_ticks_spread_over_the_frame() {
        let frame: Vec<i16> = (0..16).collect();
        assert_eq!(stretch(&frame, 1, 1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(stretch(&frame, 1, -3), [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15]);
        assert_eq!(stretch(&frame, 2, -1), [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]);
    }

    /// Pushes `count` packets of 20 ms of one source, one every 20 ms from `at`.
    fn feed(
        buffer: &mut JitterBuffer,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        count: u16,
        at: Instant,
    ) -> Vec<Pushed> {
        (0..count)
            .map(|n| {
                let packet = RtpPacket {
                    ssrc,
                    sequence: sequence.wrapping_add(n),
                    timestamp: timestamp.wrapping_add(u32::from(n) * 160),
                    ..pcmu(0, 0, 160)
                };
                buffer.push(packet, at + ms(20 * u64::from(n))).unwrap()
            })
            .collect()
    }

    fn silence(out: &[StreamOutput]) -> u64 {
        out.iter().map(|output| if let StreamOutput::Silence { ticks, .. } = output { *ticks } else { 0 }).sum()
    }

    #[test]
    fn timestamps_that_jump_without_notice_start_a_new_timeline_where_the_old_one_ended() {
        for jump in [8000 * 3600, 8000u32.wrapping_neg()] {
            let start = Instant::now();
            let mut buffer = JitterBuffer::new(JitterConfig::default(), PayloadTypes::default());
            feed(&mut buffer, 7, 100, 1_000_000, 50, start);
            // Same SSRC, sequence numbers going on, timestamps an hour ahead or a second back.
            let pushed = feed(&mut buffer, 7, 150, 1_000_000u32.wrapping_add(jump), 50, start + ms(1000));
            assert_eq!(pushed[0], Pushed::NewSource);
            assert!(pushed[1..].iter().all(|p| *p == Pushed::Buffered));
            let mut out = Vec::new();
            buffer.finish(&mut out);
            let stats = buffer.stats();
            assert_eq!((stats.sources, stats.played_ticks, stats.lost), (2, 100 * 160, 0));
            assert_eq!(silence(&out), 0, "not an hour of silence, and no overlap");
        }
    }

    #[test]
    fn a_sender_that_restarts_its_sequence_numbers_goes_on_from_its_first_packet() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default(), PayloadTypes::default());
        feed(&mut buffer, 7, 100, 0, 50, start);
        let pushed = feed(&mut buffer, 7, 40_000, 8000, 50, start + ms(1000));
        assert_eq!(pushed[..3], [Pushed::Held, Pushed::NewSource, Pushed::Buffered]);
        // A stray packet that nothing follows is dropped.
        let stray = RtpPacket { sequence: 10, timestamp: 16_000, ..pcmu(0, 0, 160) };
        assert_eq!(buffer.push(stray, start + ms(2000)), Ok(Pushed::Held));
        feed(&mut buffer, 7, 40_050, 16_000, 10, start + ms(2000));
        let mut out = Vec::new();
        buffer.finish(&mut out);
        let stats = buffer.stats();
        assert_eq!((stats.sources, stats.played_ticks, stats.stray, stats.lost), (2, 110 * 160, 1, 0));
        assert_eq!(silence(&out), 0);
    }

    #[test]
    fn a_straggler_of_the_previous_source_is_still_played_in_its_place() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default(), PayloadTypes::default());
        feed(&mut buffer, 7, 100, 0, 49, start);
        feed(&mut buffer, 8, 5000, 777, 50, start + ms(1000));
        // The old source's last packet overtaken by the new source's first.
        let straggler = RtpPacket { sequence: 149, timestamp: 49 * 160, ..pcmu(0, 0, 160) };
        assert_eq!(buffer.push(straggler, start + ms(1010)), Ok(Pushed::Buffered));
        let mut out = Vec::new();
        buffer.finish(&mut out);
        let stats = buffer.stats();
        assert_eq!((stats.sources, stats.played_ticks, stats.lost, stats.late), (2, 100 * 160, 0, 0));
        assert_eq!(silence(&out), 0);
    }

    #[test]
    fn unknown_payload_types_are_refused_and_counted() {
        let mut buffer = JitterBuffer::new(JitterConfig::default(), PayloadTypes::default());
        let mut packet = pcmu(1, 0, 160);
        packet.payload_type = 96;
        assert_eq!(buffer.push(packet, Instant::now()), Err(JitterError::Codec(CodecError::UnknownPayloadType(96))));
        assert_eq!(buffer.stats().refused, 1);
        assert_eq!(buffer.stats().received, 0);
        assert_eq!(buffer.clock(), None);
    }
}
