//! RTP packets as the recorder sees them: parsed by `rtp-rs`, copied into our own [`RtpPacket`], and refused
//! with a typed [`RtpError`] when malformed. It never repairs a packet and never panics on any input; RFC 4733
//! telephone-event payloads are parsed here too, so they are never mistaken for audio.

use rtp_rs::{RtpReader, RtpReaderError};

/// One RTP packet: the header fields the media path uses and its payload (padding, CSRCs and the header
/// extension already removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("{len} bytes is too short for an RTP header (12 at least)")]
    TooShort { len: usize },
    #[error("RTP version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    #[error("the header announces {count} CSRC identifiers, which do not fit in {len} bytes")]
    CsrcOverrun { count: u8, len: usize },
    #[error("the header extension needs {needed} bytes but the packet has {len}")]
    ExtensionOverrun { needed: usize, len: usize },
    #[error("the padding length {padding} does not fit the packet")]
    InvalidPadding { padding: u8 },
    #[error("an RTCP packet (type {packet_type}) multiplexed on the RTP port")]
    Rtcp { packet_type: u8 },
}

const HEADER_LEN: usize = 12;

impl RtpPacket {
    /// Parses one datagram. RTCP multiplexed on the same port (RFC 5761: second octet 192–223) is reported as
    /// [`RtpError::Rtcp`] so the caller can route it instead of counting it as garbage.
    pub fn parse(datagram: &[u8]) -> Result<Self, RtpError> {
        if let [first, second, ..] = datagram {
            let version = first >> 6;
            if version != 2 {
                return Err(RtpError::UnsupportedVersion(version));
            }
            if (192..=223).contains(second) {
                return Err(RtpError::Rtcp { packet_type: *second });
            }
        }
        let reader = RtpReader::new(datagram).map_err(|error| classify(error, datagram))?;
        Ok(Self {
            payload_type: reader.payload_type(),
            sequence: reader.sequence_number().into(),
            timestamp: reader.timestamp(),
            ssrc: reader.ssrc(),
            marker: reader.mark(),
            payload: reader.payload().to_vec(),
        })
    }

    /// The packet as bytes (version 2, no padding, no CSRC, no extension): for simulators and tests.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.payload.len());
        bytes.push(0x80);
        bytes.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        bytes.extend_from_slice(&self.timestamp.to_be_bytes());
        bytes.extend_from_slice(&self.ssrc.to_be_bytes());
        bytes.extend_from_slice(&self.payload);
        bytes
    }
}

/// rtp-rs reports every overrun as `HeadersTruncated`; tell the caller which part of the header overran.
fn classify(error: RtpReaderError, datagram: &[u8]) -> RtpError {
    let len = datagram.len();
    match error {
        RtpReaderError::BufferTooShort(len) => RtpError::TooShort { len },
        RtpReaderError::UnsupportedVersion(version) => RtpError::UnsupportedVersion(version),
        RtpReaderError::PaddingLengthInvalid(padding) => RtpError::InvalidPadding { padding },
        RtpReaderError::HeadersTruncated { header_len, .. } => {
            let count = datagram.first().map_or(0, |b| b & 0x0f);
            if HEADER_LEN + 4 * usize::from(count) > len {
                RtpError::CsrcOverrun { count, len }
            } else if header_len > len {
                RtpError::ExtensionOverrun { needed: header_len, len }
            } else {
                // The padding bit is set but no byte is left to hold the padding length.
                RtpError::InvalidPadding { padding: 0 }
            }
        }
    }
}

/// One RFC 4733 telephone-event payload block: a DTMF digit or another tone, as the sender reports it in
/// every packet of the event (same RTP timestamp, growing duration, end bit on the last ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D, 16 flash; other codes are other tones.
    pub event: u8,
    /// The event has ended (the sender repeats the final packet, usually three times).
    pub end: bool,
    /// Power level in −dBm0 (0–63), meaningful for DTMF digits.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, counted from the packet's timestamp.
    pub duration: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelephoneEventError {
    #[error("a telephone-event payload has 4 bytes at least, this one has {len}")]
    TooShort { len: usize },
}

impl TelephoneEvent {
    /// Parses the first event block of a payload. Further blocks (RFC 4733 §2.5.1.5, rarely sent) and RFC
    /// 2198 redundancy are not read: the repeated packets of an event carry the same information.
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        match payload {
            [event, flags, high, low, ..] => Ok(Self {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*high, *low]),
            }),
            _ => Err(TelephoneEventError::TooShort { len: payload.len() }),
        }
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let [high, low] = self.duration.to_be_bytes();
        [self.event, (u8::from(self.end) << 7) | (self.volume & 0x3f), high, low]
    }

    /// The DTMF key this event stands for, if it is one.
    pub fn digit(self) -> Option<char> {
        dtmf_digit(self.event)
    }
}

/// The DTMF key of an RFC 4733 event code (0–15), `None` for other tones.
pub fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn packet() -> RtpPacket {
        RtpPacket {
            payload_type: 0,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 42,
            marker: true,
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_packet_survives_a_round_trip_through_bytes() {
        assert_eq!(RtpPacket::parse(&packet().to_bytes()), Ok(packet()));
    }

    #[test]
    fn csrcs_extension_and_padding_are_not_part_of_the_payload() {
        let mut bytes = vec![0x80 | 0x20 | 0x10 | 2, 8, 0, 7, 0, 0, 0, 160, 0, 0, 0, 9];
        bytes.extend_from_slice(&[0; 8]); // two CSRCs
        bytes.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
        bytes.extend_from_slice(&[5, 6, 7]); // payload
        bytes.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let packet = RtpPacket::parse(&bytes).unwrap();
        assert_eq!((packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc), (8, 7, 160, 9));
        assert_eq!(packet.payload, vec![5, 6, 7]);
    }

    #[test]
    fn malformed_packets_are_refused_with_the_reason() {
        let header = packet().to_bytes();
        assert_eq!(RtpPacket::parse(&header[..11]), Err(RtpError::TooShort { len: 11 }));
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort { len: 0 }));

        let mut v1 = header.clone();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::UnsupportedVersion(1)));

        let mut csrc = header[..12].to_vec();
        csrc[0] |= 3;
        csrc.extend_from_slice(&[0; 8]);
        assert_eq!(RtpPacket::parse(&csrc), Err(RtpError::CsrcOverrun { count: 3, len: 20 }));

        let mut extension = header[..12].to_vec();
        extension[0] |= 0x10;
        extension.extend_from_slice(&[0xbe, 0xde, 0, 2, 0, 0, 0, 0]);
        assert_eq!(RtpPacket::parse(&extension), Err(RtpError::ExtensionOverrun { needed: 24, len: 20 }));
        assert_eq!(RtpPacket::parse(&extension[..14]), Err(RtpError::ExtensionOverrun { needed: 16, len: 14 }));

        let mut padding = header.clone();
        padding[0] |= 0x20;
        *padding.last_mut().unwrap() = 9; // more padding than the 3-byte payload
        assert_eq!(RtpPacket::parse(&padding), Err(RtpError::InvalidPadding { padding: 9 }));
        *padding.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&padding), Err(RtpError::InvalidPadding { padding: 0 }));
        let mut empty_padding = header[..12].to_vec();
        empty_padding[0] |= 0x20;
        assert_eq!(RtpPacket::parse(&empty_padding), Err(RtpError::InvalidPadding { padding: 0 }));
    }

    #[test]
    fn rtcp_on_the_rtp_port_is_recognised_as_rtcp() {
        let sender_report = [0x80, 200, 0, 6, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(RtpPacket::parse(&sender_report), Err(RtpError::Rtcp { packet_type: 200 }));
    }

    #[test]
    fn random_bytes_never_panic_the_parser() {
        let mut rng = StdRng::seed_from_u64(4733);
        for _ in 0..100_000 {
            let len = rng.random_range(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(first) = bytes.first_mut() {
                *first = (*first & 0x3f) | 0x80;
            }
            if let Ok(packet) = RtpPacket::parse(&bytes) {
                assert!(packet.payload.len() + HEADER_LEN <= bytes.len());
            }
            let _ = TelephoneEvent::parse(&bytes);
        }
    }

    #[test]
    fn telephone_events_carry_event_end_volume_and_duration() {
        let event = TelephoneEvent::parse(&[11, 0x80 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(event, TelephoneEvent { event: 11, end: true, volume: 10, duration: 800 });
        assert_eq!(event.digit(), Some('#'));
        assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Ok(event));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(TelephoneEventError::TooShort { len: 3 }));
        // The reserved bit is ignored, not taken for volume.
        assert_eq!(TelephoneEvent::parse(&[5, 0x40 | 7, 0, 160]).unwrap().volume, 7);
        let digits: String = (0..=16).filter_map(dtmf_digit).collect();
        assert_eq!(digits, "0123456789*#ABCD");
    }
}
