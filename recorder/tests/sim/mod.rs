//! A seeded simulator of RTP senders and the network between them and the recorder, on a virtual clock.
//! Senders capture a known signal on their own (possibly drifting) clock; the network loses, duplicates,
//! delays and so reorders their packets. Deliveries come out lazily in arrival order, so hours of media run
//! in constant memory.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use audio_codec_algorithms::encode_ulaw;
use ezk_g722::libg722::{encoder::Encoder as G722Encoder, Bitrate};
use rand::{rngs::StdRng, Rng, SeedableRng};
use recall_recorder::media::{Codec, RtpPacket, TelephoneEvent};

pub const RATE: u32 = 8000;

/// What a sender captures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Seeded noise: every packet's samples are unique, so a played chunk tells which packet it came from.
    Noise {
        seed: u64,
    },
    /// A 5 ms pulse at every whole second of true time, silence between: where pulses land shows alignment.
    Pulses,
    Sine {
        frequency: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dtmf {
    pub at: Duration,
    pub length: Duration,
    pub event: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewSource {
    pub at: Duration,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub codec: Codec,
    pub ptime_ms: u32,
    pub ssrc: u32,
    pub first_sequence: u16,
    pub first_timestamp: u32,
    /// True time of the first captured sample, from the call's start.
    pub start: Duration,
    pub duration: Duration,
    /// How much faster than true time the sender's clock runs, in parts per million.
    pub skew_ppm: f64,
    pub signal: Signal,
    /// Silence suppression: talk for `.0`, then send nothing for `.1`, and so on.
    pub talk_spurts: Option<(Duration, Duration)>,
    /// Telephone-events sent instead of audio (payload type 101).
    pub dtmf: Vec<Dtmf>,
    pub new_source: Option<NewSource>,
}

impl Sender {
    pub fn new(codec: Codec, ptime_ms: u32, duration: Duration) -> Self {
        Self {
            codec,
            ptime_ms,
            ssrc: 0x1234_5678,
            first_sequence: 1000,
            first_timestamp: 160_000,
            start: Duration::ZERO,
            duration,
            skew_ppm: 0.0,
            signal: Signal::Noise { seed: 1 },
            talk_spurts: None,
            dtmf: Vec::new(),
            new_source: None,
        }
    }

    pub fn frame_ticks(&self) -> u32 {
        self.ptime_ms * RATE / 1000
    }
}

pub const TELEPHONE_EVENT: u8 = 101;

/// One packet as sent, with what the test needs to know about it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: usize,
    pub sent_at: Duration,
    pub packet: RtpPacket,
    /// Index of the audio frame (ptime period) since the sender's start.
    pub frame: u64,
    pub is_audio: bool,
    pub ticks: u32,
}

/// What happened to one sent packet on the network.
#[derive(Debug, Clone)]
pub struct Fate {
    pub sent: Sent,
    pub lost: bool,
    pub arrivals: Vec<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    pub delay: Duration,
    /// Each packet is delayed by a further uniform 0..jitter.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back by `late_by` more (beyond any jitter buffer's patience).
    pub late: f64,
    pub late_by: Duration,
    pub seed: u64,
}

impl Network {
    pub fn perfect(delay: Duration) -> Self {
        Self { delay, jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0, late: 0.0, late_by: Duration::ZERO, seed: 0 }
    }
}

/// Deterministic noise byte for sample `n`.
fn noise(seed: u64, n: u64) -> u8 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z >> 56) as u8
}

/// Generates one sender's packets in sending order.
pub struct SenderRun {
    stream: usize,
    sender: Sender,
    frame: u64,
    sequence: u16,
    rate: f64,
    g722: Option<G722Encoder>,
    was_silent: bool,
    pending: Vec<Sent>,
    switched: bool,
    switch_frame: u64,
}

impl SenderRun {
    pub fn new(stream: usize, sender: Sender) -> Self {
        let rate = f64::from(RATE) * (1.0 + sender.skew_ppm * 1e-6);
        let g722 = (sender.codec == Codec::G722).then(|| G722Encoder::new(Bitrate::Mode1_64000, false, false));
        Self {
            stream,
            frame: 0,
            sequence: sender.first_sequence,
            rate,
            g722,
            was_silent: false,
            pending: Vec::new(),
            switched: false,
            switch_frame: 0,
            sender,
        }
    }

    /// True time at which sender tick `tick` is captured.
    fn true_time(&self, tick: u64) -> Duration {
        self.sender.start + Duration::from_secs_f64(tick as f64 / self.rate)
    }

    fn samples(&self, first_tick: u64, ticks: u32) -> Vec<i16> {
        let per_tick = self.sender.codec.samples_per_tick() as u64;
        let sample_rate = self.rate * per_tick as f64;
        (first_tick * per_tick..(first_tick + u64::from(ticks)) * per_tick)
            .map(|n| match self.sender.signal {
                Signal::Noise { .. } => 0,
                Signal::Pulses => {
                    let t = n as f64 / sample_rate + self.sender.start.as_secs_f64();
                    let into_second = t - t.floor();
                    if t >= 1.0 && into_second < 0.005 {
                        12000
                    } else {
                        0
                    }
                }
                Signal::Sine { frequency } => {
                    (8000.0 * (2.0 * std::f64::consts::PI * frequency * n as f64 / sample_rate).sin()) as i16
                }
            })
            .collect()
    }

    fn payload(&mut self, first_tick: u64, ticks: u32) -> Vec<u8> {
        if let Signal::Noise { seed } = self.sender.signal {
            assert_ne!(self.sender.codec, Codec::G722, "noise is for G.711 senders");
            return (first_tick..first_tick + u64::from(ticks)).map(|n| noise(seed, n)).collect();
        }
        let samples = self.samples(first_tick, ticks);
        match (self.sender.codec, self.g722.as_mut()) {
            (Codec::G722, Some(encoder)) => encoder.encode(&samples),
            (Codec::Pcma, _) => samples.iter().map(|&s| audio_codec_algorithms::encode_alaw(s)).collect(),
            _ => samples.iter().map(|&s| encode_ulaw(s)).collect(),
        }
    }

    /// The next packet, or `None` when the sender has finished.
    pub fn next_packet(&mut self) -> Option<Sent> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        loop {
            let ticks = self.sender.frame_ticks();
            let first_tick = self.frame * u64::from(ticks);
            let captured_from = self.true_time(first_tick) - self.sender.start;
            let sent_at = self.true_time(first_tick + u64::from(ticks));
            if sent_at > self.sender.start + self.sender.duration {
                return None;
            }
            let frame = self.frame;
            self.frame += 1;
            let (ssrc, timestamp) = match self.sender.new_source {
                Some(change) if captured_from >= change.at => {
                    if !self.switched {
                        self.switched = true;
                        self.sequence = change.sequence;
                        self.switch_frame = frame;
                    }
                    let since = (frame - self.switch_frame) * u64::from(ticks);
                    (change.ssrc, change.timestamp.wrapping_add(since as u32))
                }
                _ => (self.sender.ssrc, self.sender.first_timestamp.wrapping_add(first_tick as u32)),
            };
            if let Some((talk, pause)) = self.sender.talk_spurts {
                let period = (talk + pause).as_secs_f64();
                if captured_from.as_secs_f64() % period >= talk.as_secs_f64() {
                    self.was_silent = true;
                    continue;
                }
            }
            let dtmf =
                self.sender.dtmf.iter().copied().find(|d| captured_from >= d.at && captured_from < d.at + d.length);
            if let Some(dtmf) = dtmf {
                let event_first_tick = (dtmf.at.as_secs_f64() * self.rate).ceil() as u64;
                let event_first_frame = event_first_tick.div_ceil(u64::from(ticks));
                let event_timestamp =
                    self.sender.first_timestamp.wrapping_add((event_first_frame * u64::from(ticks)) as u32);
                let duration = ((frame + 1 - event_first_frame) * u64::from(ticks)) as u16;
                let last = self.true_time(first_tick + u64::from(ticks)) - self.sender.start >= dtmf.at + dtmf.length;
                let copies = if last { 3 } else { 1 };
                for copy in 0..copies {
                    let event = TelephoneEvent { event: dtmf.event, end: last, volume: 10, duration };
                    let packet = RtpPacket {
                        payload_type: TELEPHONE_EVENT,
                        sequence: self.next_sequence(),
                        timestamp: event_timestamp,
                        ssrc,
                        marker: frame == event_first_frame && copy == 0,
                        payload: event.to_bytes().to_vec(),
                    };
                    self.pending.push(Sent { stream: self.stream, sent_at, packet, frame, is_audio: false, ticks: 0 });
                }
                return Some(self.pending.remove(0));
            }
            let payload = self.payload(first_tick, ticks);
            let marker = std::mem::take(&mut self.was_silent);
            let packet = RtpPacket {
                payload_type: self.sender.codec.static_payload_type(),
                sequence: self.next_sequence(),
                timestamp,
                ssrc,
                marker,
                payload,
            };
            return Some(Sent { stream: self.stream, sent_at, packet, frame, is_audio: true, ticks });
        }
    }

    fn next_sequence(&mut self) -> u16 {
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        sequence
    }
}

/// A packet arriving at the recorder.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Duration,
    pub stream: usize,
    pub bytes: Vec<u8>,
}

/// A packet on its way: arrival time, order of sending (to break ties), stream, bytes.
type InFlight = (Duration, u64, usize, Vec<u8>);

/// Several senders through one network, delivered lazily in arrival order.
pub struct Simulation {
    senders: Vec<SenderRun>,
    next: Vec<Option<Sent>>,
    network: Network,
    rng: StdRng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// What happened to each packet, when asked to keep it.
    pub fates: Option<Vec<Fate>>,
}

impl Simulation {
    pub fn new(senders: Vec<Sender>, network: Network) -> Self {
        let mut runs: Vec<SenderRun> = senders.into_iter().enumerate().map(|(i, s)| SenderRun::new(i, s)).collect();
        let next = runs.iter_mut().map(SenderRun::next_packet).collect();
        Self {
            senders: runs,
            next,
            network,
            rng: StdRng::seed_from_u64(network.seed),
            in_flight: BinaryHeap::new(),
            order: 0,
            fates: None,
        }
    }

    pub fn keeping_fates(mut self) -> Self {
        self.fates = Some(Vec::new());
        self
    }

    fn transmit(&mut self, sent: Sent) {
        let network = self.network;
        let mut fate = Fate { sent, lost: false, arrivals: Vec::new() };
        if self.rng.random_bool(network.loss) {
            fate.lost = true;
        } else {
            let copies = if self.rng.random_bool(network.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let mut at = fate.sent.sent_at + network.delay + network.jitter.mul_f64(self.rng.random::<f64>());
                if self.rng.random_bool(network.late) {
                    at += network.late_by;
                }
                fate.arrivals.push(at);
                self.order += 1;
                self.in_flight.push(Reverse((at, self.order, fate.sent.stream, fate.sent.packet.to_bytes())));
            }
        }
        if let Some(fates) = self.fates.as_mut() {
            fates.push(fate);
        }
    }
}

impl Iterator for Simulation {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        loop {
            let earliest = self.next.iter().enumerate().filter_map(|(i, sent)| Some((sent.as_ref()?.sent_at, i))).min();
            // Whatever is in flight and arrives before the next packet is even sent is final.
            if let Some(Reverse((at, ..))) = self.in_flight.peek() {
                if earliest.is_none_or(|(sent_at, _)| *at <= sent_at) {
                    let Reverse((at, _, stream, bytes)) = self.in_flight.pop()?;
                    return Some(Delivery { at, stream, bytes });
                }
            }
            let (_, index) = earliest?;
            let sent = self.next[index].take()?;
            self.next[index] = self.senders[index].next_packet();
            self.transmit(sent);
        }
    }
}
