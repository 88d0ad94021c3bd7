//! The media of one call, sans-IO: datagrams in with their arrival time, final stereo (or mono) frames and
//! DTMF events out, and the time to be polled next. It is what the tokio driver runs per call: the driver owns
//! the sockets and the clock, this owns none.

use std::time::{Duration, Instant};

use super::codec::PayloadTypes;
use super::jitter::{JitterBuffer, JitterConfig, JitterError, JitterStats, Pushed, StreamOutput};
use super::rtp::{RtpError, RtpPacket};
use super::timeline::{Drained, Layout, Route, StreamId, Timeline, TimelineError, TimelineStats};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMediaConfig {
    /// The recording's rate (see [`super::timeline::output_rate_for`]).
    pub output_rate: u32,
    pub layout: Layout,
    pub jitter: JitterConfig,
    /// How far behind `now` frames become final: the jitter buffers' target delay, plus the longest packet
    /// (silence after a stream's last packet is only certain that much later), plus a margin.
    pub hold_back: Duration,
}

impl Default for CallMediaConfig {
    fn default() -> Self {
        let jitter = JitterConfig::default();
        let hold_back = jitter.target_delay + Duration::from_millis(100);
        Self { output_rate: 8000, layout: Layout::Stereo, jitter, hold_back }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("no such stream")]
    UnknownStream,
    #[error(transparent)]
    Rtp(#[from] RtpError),
    #[error(transparent)]
    Jitter(#[from] JitterError),
    #[error(transparent)]
    Timeline(#[from] TimelineError),
}

#[derive(Debug)]
struct CallStream {
    id: StreamId,
    jitter: JitterBuffer,
}

/// One call's streams, their jitter buffers and the timeline they are placed on.
#[derive(Debug)]
pub struct CallMedia {
    config: CallMediaConfig,
    streams: Vec<CallStream>,
    timeline: Timeline,
    outputs: Vec<StreamOutput>,
}

impl CallMedia {
    pub fn new(call_start: Instant, config: CallMediaConfig) -> Self {
        let timeline = Timeline::new(call_start, config.output_rate, config.layout);
        Self { config, streams: Vec::new(), timeline, outputs: Vec::new() }
    }

    /// Adds a stream (one RTP session) with the payload types its SDP negotiated.
    pub fn add_stream(&mut self, route: Route, payload_types: PayloadTypes) -> StreamId {
        let id = self.timeline.add_stream(route);
        self.streams.push(CallStream { id, jitter: JitterBuffer::new(self.config.jitter.clone(), payload_types) });
        id
    }

    /// Takes one datagram that arrived at `now` on a stream's socket.
    pub fn receive(&mut self, stream: StreamId, datagram: &[u8], now: Instant) -> Result<Pushed, MediaError> {
        let packet = RtpPacket::parse(datagram)?;
        self.receive_packet(stream, packet, now)
    }

    pub fn receive_packet(&mut self, stream: StreamId, packet: RtpPacket, now: Instant) -> Result<Pushed, MediaError> {
        let call_stream = self.streams.get_mut(stream.index()).ok_or(MediaError::UnknownStream)?;
        Ok(call_stream.jitter.push(packet, now)?)
    }

    /// Plays what is due at `now` into the timeline and appends the frames that became final to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Drained) -> Result<(), MediaError> {
        for stream in &mut self.streams {
            stream.jitter.pop_until(now, &mut self.outputs);
            place(&mut self.timeline, stream, &mut self.outputs)?;
        }
        let final_until = now.checked_sub(self.config.hold_back).unwrap_or(now);
        self.timeline.drain_until(final_until, out);
        Ok(())
    }

    /// When a jitter buffer next has something due. Frames also become final as time passes: a driver that
    /// writes the recording as it goes polls at its own pace too (every 20–100 ms).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams.iter().filter_map(|stream| stream.jitter.poll_timeout()).min()
    }

    /// Pauses a stream (or, with `None`, the whole call) from `from`.
    pub fn pause(&mut self, stream: Option<StreamId>, from: Instant) {
        self.timeline.pause(stream, from);
    }

    pub fn resume(&mut self, stream: Option<StreamId>, at: Instant) {
        self.timeline.resume(stream, at);
    }

    /// Ends the call at `end`: plays everything still buffered and appends the rest of the recording, which
    /// is then exactly `end - call_start` long.
    pub fn finish(&mut self, end: Instant, out: &mut Drained) -> Result<(), MediaError> {
        for stream in &mut self.streams {
            stream.jitter.pop_until(end, &mut self.outputs);
            stream.jitter.finish(&mut self.outputs);
            place(&mut self.timeline, stream, &mut self.outputs)?;
        }
        self.timeline.finish(end, out);
        Ok(())
    }

    pub fn stream_stats(&self, stream: StreamId) -> Option<&JitterStats> {
        self.streams.get(stream.index()).map(|stream| stream.jitter.stats())
    }

    pub fn timeline_stats(&self) -> &TimelineStats {
        self.timeline.stats()
    }

    pub fn rate(&self) -> u32 {
        self.timeline.rate()
    }

    pub fn channels(&self) -> usize {
        self.timeline.channels()
    }
}

fn place(timeline: &mut Timeline, stream: &CallStream, outputs: &mut Vec<StreamOutput>) -> Result<(), MediaError> {
    let result = match stream.jitter.clock() {
        Some(clock) => outputs.iter().try_for_each(|output| timeline.push(stream.id, clock, output)),
        None => Ok(()),
    };
    outputs.clear();
    Ok(result?)
}
