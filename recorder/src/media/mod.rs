//! The recorder's media core: RTP in, aligned PCM out, sans-IO. Datagrams and their arrival times go in;
//! ordered, concealed, clock-aligned frames and DTMF events come out, with the time to be polled next. Nothing
//! here opens a socket, reads a clock or spawns a task: the tokio driver does.
//!
//! [`rtp`] parses packets, [`codec`] decodes them, [`jitter`] orders and conceals one stream on its play-out
//! clock, [`timeline`] places a call's streams on one clock, and [`call`] ties them together for a call.

pub mod call;
pub mod codec;
mod drift;
pub mod jitter;
mod resample;
pub mod rtp;
pub mod timeline;

pub use call::{CallMedia, CallMediaConfig, MediaError};
pub use codec::{Codec, CodecError, Decoder, PayloadKind, PayloadTypes};
pub use jitter::{
    AudioChunk, DtmfEvent, JitterBuffer, JitterConfig, JitterError, JitterStats, Pushed, StreamClock, StreamOutput,
};
pub use rtp::{RtpError, RtpPacket, TelephoneEvent};
pub use timeline::{output_rate_for, Drained, Layout, Route, StreamId, TimedDtmf, Timeline, TimelineStats};
