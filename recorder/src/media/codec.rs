//! Audio codecs to 16-bit PCM and the payload-type map of a stream. A payload type the stream did not
//! negotiate is an error, never decoded as noise, and telephone-event is never decoded as audio.
//! G.711 uses the ITU G.191 tables of `audio-codec-algorithms`, G.722 the SpanDSP port in `ezk-g722`.

use std::fmt;

use ezk_g722::libg722::{decoder::Decoder as G722State, Bitrate};

/// An audio codec the recorder decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio, but an 8 kHz RTP clock (RFC 3551 §4.5.2 keeps the erroneous 8000
    /// of the original registration), so one payload byte is one RTP tick and two samples.
    G722,
}

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::G722];

    /// The payload type RFC 3551 assigns statically.
    pub const fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }

    /// The codec an SDP `a=rtpmap` names (`PCMU/8000`, `G722/8000`…), case-insensitively.
    pub fn from_rtpmap(encoding_name: &str, clock_rate: u32) -> Option<Codec> {
        Codec::ALL.into_iter().find(|codec| {
            codec.encoding_name().eq_ignore_ascii_case(encoding_name) && codec.rtp_clock_rate() == clock_rate
        })
    }

    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }

    /// The rate at which RTP timestamps advance.
    pub const fn rtp_clock_rate(self) -> u32 {
        8000
    }

    /// The rate of the decoded audio.
    pub const fn sample_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16000,
        }
    }

    /// How many RTP timestamp units a payload of this length covers.
    pub const fn ticks(self, payload_len: usize) -> u32 {
        // One byte per tick for all three: G.711 has one sample per byte, G.722 two 16 kHz samples per byte
        // at its 8 kHz RTP clock.
        payload_len as u32
    }

    /// Decoded samples per RTP tick.
    pub const fn samples_per_tick(self) -> u32 {
        self.sample_rate() / self.rtp_clock_rate()
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// What a payload type carries on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Audio(Codec),
    /// RFC 4733 events (DTMF), at the given RTP clock rate.
    TelephoneEvent {
        clock_rate: u32,
    },
}

impl PayloadKind {
    pub const fn rtp_clock_rate(self) -> u32 {
        match self {
            PayloadKind::Audio(codec) => codec.rtp_clock_rate(),
            PayloadKind::TelephoneEvent { clock_rate } => clock_rate,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("payload type {0} was not negotiated for this stream")]
    UnknownPayloadType(u8),
}

/// The payload types negotiated for one stream (from its SDP): static ones and `a=rtpmap` bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadTypes {
    kinds: [Option<PayloadKind>; 128],
}

impl Default for PayloadTypes {
    /// The static audio types of RFC 3551 (0 PCMU, 8 PCMA, 9 G.722) and nothing else.
    fn default() -> Self {
        let mut types = Self::empty();
        for codec in Codec::ALL {
            types.bind(codec.static_payload_type(), PayloadKind::Audio(codec));
        }
        types
    }
}

impl PayloadTypes {
    pub fn empty() -> Self {
        Self { kinds: [None; 128] }
    }

    /// Binds a payload type (the top bit is ignored, as in the RTP header).
    pub fn bind(&mut self, payload_type: u8, kind: PayloadKind) -> &mut Self {
        self.kinds[usize::from(payload_type & 0x7f)] = Some(kind);
        self
    }

    pub fn with(mut self, payload_type: u8, kind: PayloadKind) -> Self {
        self.bind(payload_type, kind);
        self
    }

    pub fn get(&self, payload_type: u8) -> Result<PayloadKind, CodecError> {
        self.kinds.get(usize::from(payload_type)).copied().flatten().ok_or(CodecError::UnknownPayloadType(payload_type))
    }

    /// The RTP clock rate shared by the bound types (the first bound one's; 8000 when none is bound).
    pub fn rtp_clock_rate(&self) -> u32 {
        self.kinds.iter().flatten().next().map_or(8000, |kind| kind.rtp_clock_rate())
    }
}

/// A stateful decoder for one stream and one codec. G.722 is adaptive (ADPCM): feed it the stream's packets
/// in order, once each.
pub struct Decoder {
    state: DecoderState,
}

enum DecoderState {
    Pcmu,
    Pcma,
    G722(Box<G722State>),
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").field("codec", &self.codec()).finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Self {
        let state = match codec {
            Codec::Pcmu => DecoderState::Pcmu,
            Codec::Pcma => DecoderState::Pcma,
            Codec::G722 => DecoderState::G722(Box::new(G722State::new(Bitrate::Mode1_64000, false, false))),
        };
        Self { state }
    }

    pub fn codec(&self) -> Codec {
        match self.state {
            DecoderState::Pcmu => Codec::Pcmu,
            DecoderState::Pcma => Codec::Pcma,
            DecoderState::G722(_) => Codec::G722,
        }
    }

    /// Appends the decoded samples of one payload to `out`: `ticks(payload.len()) * samples_per_tick()` of them.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        match &mut self.state {
            DecoderState::Pcmu => out.extend(payload.iter().map(|&byte| audio_codec_algorithms::decode_ulaw(byte))),
            DecoderState::Pcma => out.extend(payload.iter().map(|&byte| audio_codec_algorithms::decode_alaw(byte))),
            DecoderState::G722(state) => out.extend_from_slice(&state.decode(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezk_g722::libg722::encoder::Encoder as G722Encoder;

    fn sine(frequency: f64, rate: u32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| (12000.0 * (2.0 * std::f64::consts::PI * frequency * n as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    /// Normalised cross-correlation of `a` with `b` shifted by `lag`.
    fn correlation(a: &[i16], b: &[i16], lag: usize) -> f64 {
        let pairs = a.iter().zip(&b[lag..]).map(|(&x, &y)| (f64::from(x), f64::from(y)));
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for (x, y) in pairs {
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        xy / (xx * yy).sqrt()
    }

    #[test]
    fn g711_decodes_both_laws_to_the_standard_values() {
        let mut out = Vec::new();
        Decoder::new(Codec::Pcmu).decode(&[0x00, 0x80, 0xff, 0x7f], &mut out);
        assert_eq!(out, vec![-32124, 32124, 0, 0]);
        out.clear();
        Decoder::new(Codec::Pcma).decode(&[0x55, 0xd5, 0x2a, 0xaa], &mut out);
        assert_eq!(out, vec![-8, 8, -32256, 32256]);
    }

    #[test]
    fn g711_round_trips_a_sine_closely() {
        let source = sine(440.0, 8000, 800);
        for (codec, encode) in [
            (Codec::Pcmu, audio_codec_algorithms::encode_ulaw as fn(i16) -> u8),
            (Codec::Pcma, audio_codec_algorithms::encode_alaw),
        ] {
            let payload: Vec<u8> = source.iter().map(|&s| encode(s)).collect();
            let mut decoded = Vec::new();
            Decoder::new(codec).decode(&payload, &mut decoded);
            assert_eq!(decoded.len(), source.len());
            assert!(correlation(&source, &decoded, 0) > 0.999, "{codec}");
        }
    }

    #[test]
    fn g722_decodes_sixteen_khz_audio_at_two_samples_per_rtp_tick() {
        let source = sine(1000.0, 16000, 3200);
        let mut encoder = G722Encoder::new(Bitrate::Mode1_64000, false, false);
        let mut decoder = Decoder::new(Codec::G722);
        let mut decoded = Vec::new();
        for frame in source.chunks(320) {
            let payload = encoder.encode(frame);
            assert_eq!(Codec::G722.ticks(payload.len()), 160, "20 ms is 160 RTP ticks");
            decoder.decode(&payload, &mut decoded);
        }
        assert_eq!(decoded.len(), source.len());
        // The QMF filter pair delays the signal by a few samples.
        let best = (0..40).map(|lag| correlation(&source[..3000], &decoded, lag)).fold(f64::MIN, f64::max);
        assert!(best > 0.98, "correlation {best}");
    }

    #[test]
    fn unknown_payload_types_are_errors_and_telephone_event_is_not_audio() {
        let types = PayloadTypes::default().with(101, PayloadKind::TelephoneEvent { clock_rate: 8000 });
        assert_eq!(types.get(0), Ok(PayloadKind::Audio(Codec::Pcmu)));
        assert_eq!(types.get(9), Ok(PayloadKind::Audio(Codec::G722)));
        assert_eq!(types.get(101), Ok(PayloadKind::TelephoneEvent { clock_rate: 8000 }));
        assert_eq!(types.get(18), Err(CodecError::UnknownPayloadType(18)));
        assert_eq!(types.get(200), Err(CodecError::UnknownPayloadType(200)));
        assert_eq!(types.rtp_clock_rate(), 8000);
    }

    #[test]
    fn rtpmap_names_find_their_codec_and_clock_rates() {
        assert_eq!(Codec::from_rtpmap("g722", 8000), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("PCMA", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("G722", 16000), None);
        assert_eq!(Codec::from_rtpmap("opus", 48000), None);
        assert_eq!((Codec::G722.rtp_clock_rate(), Codec::G722.sample_rate()), (8000, 16000));
        assert_eq!(Codec::Pcmu.samples_per_tick(), 1);
        assert_eq!(Codec::G722.samples_per_tick(), 2);
    }
}
