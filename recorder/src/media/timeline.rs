//! Places a call's streams on one clock and interleaves them into the recording's frames. Each stream's audio
//! sits where its jitter buffer's positions put it: position 0 is the arrival of the stream's first packet,
//! mapped onto the call's start. Whatever a stream does not cover (a late start, a pause, its end) is silence.
//! It never reorders samples, and never lets a paused stream's audio or DTMF through.
//!
//! Output rate: 8 kHz when every stream is narrowband (G.711); 16 kHz as soon as one is G.722
//! ([`output_rate_for`]), the narrowband side upsampled ×2 so the wideband side keeps its quality (MP3 encodes
//! 16 kHz stereo as well as 8). A caller that asks for 8 kHz with a G.722 stream gets it downsampled instead.
//!
//! Alignment over hours: the jitter buffers keep each stream's positions on the wall clock (the sender's
//! clock drift is measured against arrival times and corrected a sample at a time), and the timeline maps
//! positions to frames with exact integer arithmetic from one origin, so it adds no drift of its own.

use std::time::{Duration, Instant};

use super::codec::Codec;
use super::jitter::{signed_nanos, StreamClock, StreamOutput};
use super::resample::Resampler;
use super::rtp::dtmf_digit;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The recording's rate for a call with these codecs.
pub fn output_rate_for(codecs: impl IntoIterator<Item = Codec>) -> u32 {
    if codecs.into_iter().any(|codec| codec.sample_rate() > 8000) {
        16000
    } else {
        8000
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One channel: every stream is mixed into it.
    Mono,
    /// Two channels; each stream goes left, right or (a mixed stream) to both.
    Stereo,
}

impl Layout {
    pub const fn channels(self) -> usize {
        match self {
            Layout::Mono => 1,
            Layout::Stereo => 2,
        }
    }
}

/// Which channel(s) of a stereo recording a stream feeds; ignored in mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Left,
    Right,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(usize);

impl StreamId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// A DTMF key press placed on the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedDtmf {
    pub stream: StreamId,
    /// From the call's start.
    pub offset: Duration,
    pub duration: Duration,
    /// RFC 4733 event code, and the key it names.
    pub event: u8,
    pub digit: Option<char>,
    pub volume: u8,
    pub end_seen: bool,
}

/// Frames and events that became final.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// Interleaved frames (left, right for stereo).
    pub samples: Vec<i16>,
    pub dtmf: Vec<TimedDtmf>,
}

impl Drained {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.dtmf.clear();
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineStats {
    /// Frames drained so far.
    pub frames: u64,
    /// Samples that came after their frame had been drained (dropped).
    pub late_samples: u64,
    /// Samples silenced by a pause.
    pub paused_samples: u64,
    /// DTMF events withheld because their stream was paused.
    pub paused_dtmf: u64,
    /// Samples after the end given to [`Timeline::finish`] (dropped).
    pub trailing_samples: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error("cannot convert {from} Hz to the recording's {to} Hz")]
    UnsupportedRate { from: u32, to: u32 },
}

#[derive(Debug)]
struct PlacedStream {
    route: Route,
    clock: Option<StreamClock>,
    /// Frame index of the stream's position 0.
    base: i64,
    /// The stream position the next output is expected at.
    expected: Option<i64>,
    /// The converter for the current input rate.
    resampler: Option<(u32, Resampler)>,
    /// Samples for frames `drained..drained + buffer.len()`.
    buffer: Vec<i16>,
    /// Paused frames `[from, to)`.
    pauses: Vec<(i64, i64)>,
    scratch: Vec<i16>,
    pending_dtmf: Vec<(i64, TimedDtmf)>,
}

/// The recording of one call being assembled.
#[derive(Debug)]
pub struct Timeline {
    call_start: Instant,
    rate: u32,
    layout: Layout,
    streams: Vec<PlacedStream>,
    /// Frames before this index have been drained.
    drained: i64,
    /// Pauses of the whole call (applied to streams added later too).
    call_pauses: Vec<(i64, i64)>,
    stats: TimelineStats,
}

impl Timeline {
    pub fn new(call_start: Instant, rate: u32, layout: Layout) -> Self {
        Self {
            call_start,
            rate,
            layout,
            streams: Vec::new(),
            drained: 0,
            call_pauses: Vec::new(),
            stats: TimelineStats::default(),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn channels(&self) -> usize {
        self.layout.channels()
    }

    pub fn stats(&self) -> &TimelineStats {
        &self.stats
    }

    /// The wall-clock time of frame `frame`.
    pub fn frame_time(&self, frame: i64) -> Instant {
        let nanos = i128::from(frame) * NANOS_PER_SECOND / i128::from(self.rate);
        super::jitter::offset_instant(self.call_start, i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    pub fn add_stream(&mut self, route: Route) -> StreamId {
        self.streams.push(PlacedStream {
            route,
            clock: None,
            base: 0,
            expected: None,
            resampler: None,
            buffer: Vec::new(),
            pauses: self.call_pauses.clone(),
            scratch: Vec::new(),
            pending_dtmf: Vec::new(),
        });
        StreamId(self.streams.len() - 1)
    }

    /// Places one output of a stream's jitter buffer. `clock` is the buffer's (it never changes for a stream).
    pub fn push(&mut self, stream: StreamId, clock: StreamClock, output: &StreamOutput) -> Result<(), TimelineError> {
        let rate = self.rate;
        let drained = self.drained;
        let call_start = self.call_start;
        let Some(placed) = self.streams.get_mut(stream.0) else { return Ok(()) };
        if placed.clock.is_none() {
            placed.clock = Some(clock);
            placed.base =
                round_div(i128::from(signed_nanos(clock.origin, call_start)) * i128::from(rate), NANOS_PER_SECOND);
        }
        let clock = placed.clock.unwrap_or(clock);
        match output {
            StreamOutput::Audio(chunk) => {
                let per_tick = chunk.codec.samples_per_tick() as usize;
                placed.place(
                    rate,
                    clock,
                    drained,
                    chunk.position,
                    i64::from(chunk.ticks),
                    Some((chunk.codec.sample_rate(), per_tick, chunk.samples.as_slice())),
                    &mut self.stats,
                )?;
            }
            StreamOutput::Silence { position, ticks } => {
                let ticks = i64::try_from(*ticks).unwrap_or(i64::MAX);
                placed.place(rate, clock, drained, *position, ticks, None, &mut self.stats)?;
            }
            StreamOutput::Dtmf(event) => {
                let nanos = signed_nanos(clock.origin, call_start)
                    + i64::try_from(i128::from(event.position) * NANOS_PER_SECOND / i128::from(clock.rate))
                        .unwrap_or(0);
                let frame = placed.base
                    + i64::try_from(i128::from(event.position) * i128::from(rate) / i128::from(clock.rate))
                        .unwrap_or(0);
                let duration_nanos = u64::from(event.duration) * 1_000_000_000 / u64::from(clock.rate.max(1));
                placed.pending_dtmf.push((
                    frame,
                    TimedDtmf {
                        stream,
                        offset: Duration::from_nanos(nanos.max(0).unsigned_abs()),
                        duration: Duration::from_nanos(duration_nanos),
                        event: event.event,
                        digit: dtmf_digit(event.event),
                        volume: event.volume,
                        end_seen: event.end_seen,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Pauses a stream (or, with `None`, the whole call) from `from` on: its audio becomes silence and its
    /// DTMF is withheld, including what was placed but not yet drained.
    pub fn pause(&mut self, stream: Option<StreamId>, from: Instant) {
        let frame = self.frame_at(from);
        if stream.is_none() {
            self.call_pauses.push((frame, i64::MAX));
        }
        let drained = self.drained;
        for (index, placed) in self.streams.iter_mut().enumerate() {
            if stream.is_none_or(|id| id.0 == index) {
                placed.pauses.push((frame, i64::MAX));
                let from = usize::try_from(frame - drained).unwrap_or(0).min(placed.buffer.len());
                self.stats.paused_samples += placed.buffer[from..].iter().filter(|&&s| s != 0).count() as u64;
                placed.buffer[from..].fill(0);
            }
        }
    }

    /// Ends the pause of a stream (or of the whole call) at `at`.
    pub fn resume(&mut self, stream: Option<StreamId>, at: Instant) {
        let frame = self.frame_at(at);
        let close = |pauses: &mut Vec<(i64, i64)>| {
            if let Some(open) = pauses.iter_mut().rev().find(|(_, to)| *to == i64::MAX) {
                open.1 = frame.max(open.0);
            }
        };
        if stream.is_none() {
            close(&mut self.call_pauses);
        }
        for (index, placed) in self.streams.iter_mut().enumerate() {
            if stream.is_none_or(|id| id.0 == index) {
                close(&mut placed.pauses);
            }
        }
    }

    /// Appends to `out` the frames before `at` (and the DTMF events that began before it), which become final:
    /// anything placed there later is dropped. Call it with the play-out clock's lag taken off `now`.
    pub fn drain_until(&mut self, at: Instant, out: &mut Drained) {
        let until = self.frame_at(at);
        self.drain_frames(until, out);
    }

    /// Ends the recording at `end`: lets out what the resamplers hold, drains every frame up to `end` and
    /// drops anything placed after it. The recording is then exactly `end - call_start` long.
    pub fn finish(&mut self, end: Instant, out: &mut Drained) {
        let rate = self.rate;
        let drained = self.drained;
        for placed in &mut self.streams {
            placed.flush(rate, drained, &mut self.stats);
        }
        let until = self.frame_at(end);
        self.drain_frames(until, out);
        for placed in &mut self.streams {
            self.stats.trailing_samples += placed.buffer.len() as u64;
            placed.buffer.clear();
        }
    }

    fn frame_at(&self, at: Instant) -> i64 {
        let nanos = i128::from(signed_nanos(at, self.call_start));
        i64::try_from((nanos * i128::from(self.rate)).div_euclid(NANOS_PER_SECOND)).unwrap_or(i64::MAX)
    }

    fn drain_frames(&mut self, until: i64, out: &mut Drained) {
        let frames = until - self.drained;
        if frames <= 0 {
            return;
        }
        let count = frames.unsigned_abs() as usize;
        let channels = self.layout.channels();
        let first = out.samples.len();
        out.samples.resize(first + count * channels, 0);
        let frames_out = &mut out.samples[first..];
        for placed in &mut self.streams {
            let available = placed.buffer.len().min(count);
            let targets: &[usize] = match (self.layout, placed.route) {
                (Layout::Mono, _) | (Layout::Stereo, Route::Left) => &[0],
                (Layout::Stereo, Route::Right) => &[1],
                (Layout::Stereo, Route::Both) => &[0, 1],
            };
            for &channel in targets {
                for (frame, &sample) in frames_out.chunks_exact_mut(channels).zip(&placed.buffer[..available]) {
                    frame[channel] = frame[channel].saturating_add(sample);
                }
            }
            placed.buffer.drain(..available);
            let mut index = 0;
            while index < placed.pending_dtmf.len() {
                let (frame, dtmf) = placed.pending_dtmf[index];
                if frame < until {
                    placed.pending_dtmf.remove(index);
                    if is_paused(&placed.pauses, frame) {
                        self.stats.paused_dtmf += 1;
                    } else {
                        out.dtmf.push(dtmf);
                    }
                } else {
                    index += 1;
                }
            }
            // Pauses are kept for the whole call: a DTMF event is reported when it ends, and may have begun
            // inside a pause that is long over.
        }
        out.dtmf.sort_by_key(|dtmf| dtmf.offset);
        self.drained = until;
        self.stats.frames += count as u64;
    }
}

impl PlacedStream {
    /// Frame index of stream position `position`.
    fn frame_of(&self, rate: u32, clock: StreamClock, position: i64) -> i64 {
        self.base
            + i64::try_from((i128::from(position) * i128::from(rate)).div_euclid(i128::from(clock.rate))).unwrap_or(0)
    }

    /// Places `ticks` of the stream from `position`: decoded samples at `input_rate` (`per_tick` a tick), or
    /// silence.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        rate: u32,
        clock: StreamClock,
        drained: i64,
        position: i64,
        ticks: i64,
        audio: Option<(u32, usize, &[i16])>,
        stats: &mut TimelineStats,
    ) -> Result<(), TimelineError> {
        let mut position = position;
        let mut ticks = ticks;
        let mut skip_ticks = 0;
        if let Some(expected) = self.expected {
            if position > expected {
                // Not contiguous (the jitter buffer's output always is): the hole is silence.
                self.place(rate, clock, drained, expected, position - expected, None, stats)?;
            } else if position < expected {
                skip_ticks = (expected - position).min(ticks);
                position += skip_ticks;
                ticks -= skip_ticks;
            }
        }
        if ticks <= 0 {
            return Ok(());
        }
        let end = position + ticks;
        match audio {
            None => {
                self.flush(rate, drained, stats);
                self.expected = Some(end);
            }
            Some((input_rate, per_tick, samples)) => {
                if self.resampler.as_ref().is_none_or(|(current, _)| *current != input_rate) {
                    self.flush(rate, drained, stats);
                    let resampler = Resampler::new(input_rate, rate)
                        .ok_or(TimelineError::UnsupportedRate { from: input_rate, to: rate })?;
                    self.resampler = Some((input_rate, resampler));
                }
                let from = (skip_ticks.unsigned_abs() as usize * per_tick).min(samples.len());
                let mut converted = std::mem::take(&mut self.scratch);
                converted.clear();
                let mut pending = 0;
                if let Some((_, resampler)) = self.resampler.as_mut() {
                    resampler.process(&samples[from..], &mut converted);
                    pending = resampler.pending() as i64;
                }
                self.expected = Some(end);
                // What the resampler has let out ends where the stream is, less what it still holds.
                let last = self.frame_of(rate, clock, end) - pending;
                self.write(last - converted.len() as i64, &converted, drained, stats);
                self.scratch = converted;
            }
        }
        Ok(())
    }

    /// Lets out what the resampler holds, ending at the expected position.
    fn flush(&mut self, rate: u32, drained: i64, stats: &mut TimelineStats) {
        let (Some(expected), Some(clock)) = (self.expected, self.clock) else { return };
        let Some((_, resampler)) = self.resampler.as_mut() else { return };
        let mut tail = std::mem::take(&mut self.scratch);
        tail.clear();
        resampler.flush(&mut tail);
        let last = self.frame_of(rate, clock, expected);
        self.write(last - tail.len() as i64, &tail, drained, stats);
        self.scratch = tail;
    }

    fn write(&mut self, start: i64, samples: &[i16], drained: i64, stats: &mut TimelineStats) {
        let mut start = start;
        let mut samples = samples;
        if start < drained {
            let late = (drained - start).unsigned_abs().min(samples.len() as u64) as usize;
            stats.late_samples += late as u64;
            samples = &samples[late..];
            start = drained;
        }
        if samples.is_empty() {
            return;
        }
        let offset = (start - drained).unsigned_abs() as usize;
        if offset == self.buffer.len() {
            self.buffer.extend_from_slice(samples);
        } else {
            let end = offset + samples.len();
            if self.buffer.len() < end {
                self.buffer.resize(end, 0);
            }
            self.buffer[offset..end].copy_from_slice(samples);
        }
        let end = start + samples.len() as i64;
        for &(from, to) in &self.pauses {
            let (from, to) = (from.max(start), to.min(end));
            if from < to {
                let range = (from - drained) as usize..(to - drained) as usize;
                stats.paused_samples += self.buffer[range.clone()].iter().filter(|&&s| s != 0).count() as u64;
                self.buffer[range].fill(0);
            }
        }
    }
}

fn is_paused(pauses: &[(i64, i64)], frame: i64) -> bool {
    pauses.iter().any(|&(from, to)| (from..to).contains(&frame))
}

fn round_div(numerator: i128, denominator: i128) -> i64 {
    i64::try_from((numerator + denominator / 2).div_euclid(denominator)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::jitter::AudioChunk;

    fn chunk(position: i64, codec: Codec, value: i16) -> StreamOutput {
        let per_tick = codec.samples_per_tick() as usize;
        StreamOutput::Audio(AudioChunk { position, ticks: 160, codec, samples: vec![value; 160 * per_tick] })
    }

    #[test]
    fn a_stream_that_starts_late_is_preceded_by_silence() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, 8000, Layout::Stereo);
        let left = timeline.add_stream(Route::Left);
        let right = timeline.add_stream(Route::Right);
        let clock = StreamClock { origin: start + Duration::from_millis(500), rate: 8000 };
        timeline.push(right, clock, &chunk(0, Codec::Pcmu, 1000)).unwrap();
        let mut out = Drained::default();
        timeline.finish(start + Duration::from_secs(1), &mut out);
        assert_eq!(out.samples.len(), 2 * 8000);
        let right_channel: Vec<i16> = out.samples.iter().skip(1).step_by(2).copied().collect();
        assert!(right_channel[..4000].iter().all(|&s| s == 0));
        assert!(right_channel[4000..4160].iter().all(|&s| s == 1000));
        assert!(right_channel[4160..].iter().all(|&s| s == 0));
        assert!(out.samples.iter().step_by(2).all(|&s| s == 0), "nothing on the left");
        let _ = left;
    }

    #[test]
    fn a_mixed_stream_feeds_both_channels_and_mono_mixes_every_stream() {
        let start = Instant::now();
        let clock = StreamClock { origin: start, rate: 8000 };
        let mut stereo = Timeline::new(start, 8000, Layout::Stereo);
        let mixed = stereo.add_stream(Route::Both);
        stereo.push(mixed, clock, &chunk(0, Codec::Pcma, 300)).unwrap();
        let mut out = Drained::default();
        stereo.finish(start + Duration::from_millis(20), &mut out);
        assert_eq!(out.samples, vec![300; 320]);

        let mut mono = Timeline::new(start, 8000, Layout::Mono);
        let (a, b) = (mono.add_stream(Route::Left), mono.add_stream(Route::Right));
        mono.push(a, clock, &chunk(0, Codec::Pcmu, 30000)).unwrap();
        mono.push(b, clock, &chunk(0, Codec::Pcmu, 10000)).unwrap();
        let mut out = Drained::default();
        mono.finish(start + Duration::from_millis(20), &mut out);
        assert_eq!(out.samples, vec![i16::MAX; 160], "mixed, saturating");
    }

    #[test]
    fn a_paused_stream_records_silence_and_no_dtmf() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, 8000, Layout::Mono);
        let stream = timeline.add_stream(Route::Both);
        let clock = StreamClock { origin: start, rate: 8000 };
        timeline.pause(None, start + Duration::from_millis(20));
        timeline.resume(None, start + Duration::from_millis(40));
        for n in 0..4 {
            timeline.push(stream, clock, &chunk(n * 160, Codec::Pcmu, 7)).unwrap();
        }
        let dtmf =
            crate::media::jitter::DtmfEvent { position: 200, duration: 800, event: 1, volume: 10, end_seen: true };
        timeline.push(stream, clock, &StreamOutput::Dtmf(dtmf)).unwrap();
        let mut out = Drained::default();
        timeline.finish(start + Duration::from_millis(80), &mut out);
        assert_eq!(out.samples.len(), 640);
        assert!(out.samples[..160].iter().all(|&s| s == 7));
        assert!(out.samples[160..320].iter().all(|&s| s == 0));
        assert!(out.samples[320..].iter().all(|&s| s == 7));
        assert!(out.dtmf.is_empty());
        assert_eq!(timeline.stats().paused_dtmf, 1);
    }

    #[test]
    fn a_g722_side_makes_a_sixteen_khz_recording_with_the_narrowband_side_upsampled() {
        assert_eq!(output_rate_for([Codec::Pcmu, Codec::G722]), 16000);
        assert_eq!(output_rate_for([Codec::Pcma, Codec::Pcmu]), 8000);
        let start = Instant::now();
        let mut timeline = Timeline::new(start, 16000, Layout::Stereo);
        let narrow = timeline.add_stream(Route::Left);
        let wide = timeline.add_stream(Route::Right);
        let clock = StreamClock { origin: start, rate: 8000 };
        for n in 0..10 {
            timeline.push(narrow, clock, &chunk(n * 160, Codec::Pcmu, 1000)).unwrap();
            timeline.push(wide, clock, &chunk(n * 160, Codec::G722, 2000)).unwrap();
        }
        let mut out = Drained::default();
        timeline.finish(start + Duration::from_millis(200), &mut out);
        assert_eq!(out.samples.len(), 2 * 3200);
        let left: Vec<i16> = out.samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = out.samples.iter().skip(1).step_by(2).copied().collect();
        assert!(right.iter().all(|&s| s == 2000));
        // A constant upsampled is the same constant once the filter is past the edges.
        assert!(left[64..3136].iter().all(|&s| (s - 1000).abs() <= 2), "{:?}", &left[60..70]);
    }

    #[test]
    fn dtmf_events_come_out_with_their_offset_from_the_call_start() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, 8000, Layout::Stereo);
        let stream = timeline.add_stream(Route::Right);
        let clock = StreamClock { origin: start + Duration::from_secs(2), rate: 8000 };
        let dtmf =
            crate::media::jitter::DtmfEvent { position: 4000, duration: 1600, event: 11, volume: 8, end_seen: true };
        timeline.push(stream, clock, &StreamOutput::Dtmf(dtmf)).unwrap();
        let mut out = Drained::default();
        timeline.drain_until(start + Duration::from_millis(2499), &mut out);
        assert!(out.dtmf.is_empty(), "not final before it began");
        timeline.drain_until(start + Duration::from_secs(3), &mut out);
        assert_eq!(out.dtmf.len(), 1);
        let dtmf = out.dtmf[0];
        assert_eq!(
            (dtmf.offset, dtmf.duration, dtmf.digit),
            (Duration::from_millis(2500), Duration::from_millis(200), Some('#'))
        );
    }
}
