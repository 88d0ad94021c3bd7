//! How many real-time streams one core carries through the media core: RTP parsing, jitter buffer, decoding,
//! the timeline and draining the recording's frames, for calls of two streams on a virtual clock (the
//! packets are generated beforehand and not timed). Single-threaded, so the figures are per core.
//!
//! `cargo bench -p recall-recorder --bench media [-- --seconds 60 --repeat 10]`

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::hint::black_box;
use std::time::{Duration, Instant};

use recall_recorder::media::{
    output_rate_for, CallMedia, CallMediaConfig, Codec, Decoder, Drained, PayloadKind, PayloadTypes, Route,
};
use sim::{Delivery, Network, Sender, Signal, Simulation, TELEPHONE_EVENT};

struct Options {
    seconds: u64,
    repeat: u32,
}

fn options() -> Options {
    let mut options = Options { seconds: 60, repeat: 10 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--seconds" => options.seconds = value().unwrap_or(options.seconds),
            "--repeat" => options.repeat = value().map_or(options.repeat, |v: u64| v as u32),
            _ => {} // cargo passes --bench
        }
    }
    options
}

struct Scenario {
    name: &'static str,
    codecs: [Codec; 2],
    network: Network,
}

fn sender(codec: Codec, seconds: u64, ssrc: u32, skew_ppm: f64) -> Sender {
    let signal =
        if codec == Codec::G722 { Signal::Sine { frequency: 440.0 } } else { Signal::Noise { seed: u64::from(ssrc) } };
    Sender { signal, ssrc, skew_ppm, ..Sender::new(codec, 20, Duration::from_secs(seconds)) }
}

fn deliveries(scenario: &Scenario, seconds: u64) -> Vec<Delivery> {
    let senders = vec![sender(scenario.codecs[0], seconds, 1, 50.0), sender(scenario.codecs[1], seconds, 2, -50.0)];
    Simulation::new(senders, scenario.network).collect()
}

/// Runs one call as the driver would (polled every 20 ms); returns the frames recorded.
fn run_call(deliveries: &[Delivery], codecs: [Codec; 2], end: Duration) -> usize {
    let epoch = Instant::now();
    let config = CallMediaConfig { output_rate: output_rate_for(codecs), ..CallMediaConfig::default() };
    let mut call = CallMedia::new(epoch, config);
    let types = PayloadTypes::default().with(TELEPHONE_EVENT, PayloadKind::TelephoneEvent { clock_rate: 8000 });
    let streams = [call.add_stream(Route::Left, types.clone()), call.add_stream(Route::Right, types)];
    let mut drained = Drained::default();
    let mut frames = 0;
    let mut clock = Duration::ZERO;
    let poll = Duration::from_millis(20);
    for delivery in deliveries {
        while clock + poll <= delivery.at {
            clock += poll;
            call.poll(epoch + clock, &mut drained).ok();
            frames += drained.samples.len() / 2;
            drained.clear();
        }
        let _ = call.receive(streams[delivery.stream], &delivery.bytes, epoch + delivery.at);
    }
    call.finish(epoch + end, &mut drained).ok();
    frames + drained.samples.len() / 2
}

fn decode_rate(codec: Codec) -> f64 {
    let payload: Vec<u8> = (0..160u32).map(|n| (n * 37 % 256) as u8).collect();
    let mut decoder = Decoder::new(codec);
    let mut out = Vec::with_capacity(320);
    let packets = 200_000;
    let started = Instant::now();
    for _ in 0..packets {
        out.clear();
        decoder.decode(black_box(&payload), &mut out);
        black_box(&out);
    }
    // Each packet is 20 ms of audio.
    f64::from(packets) * 0.02 / started.elapsed().as_secs_f64()
}

fn main() {
    let options = options();
    let clean = Network::perfect(Duration::from_millis(30));
    let rough = Network { jitter: Duration::from_millis(40), loss: 0.02, duplicate: 0.01, seed: 7, ..clean };
    let scenarios = [
        Scenario {
            name: "G.711 + G.711, clean network, 8 kHz stereo",
            codecs: [Codec::Pcmu, Codec::Pcma],
            network: clean,
        },
        Scenario {
            name: "G.711 + G.711, 40 ms jitter, 2% loss, 1% dup",
            codecs: [Codec::Pcmu, Codec::Pcmu],
            network: rough,
        },
        Scenario {
            name: "G.711 + G.722, 16 kHz stereo (G.711 upsampled)",
            codecs: [Codec::Pcmu, Codec::G722],
            network: rough,
        },
        Scenario { name: "G.722 + G.722, 16 kHz stereo", codecs: [Codec::G722, Codec::G722], network: rough },
    ];
    println!("media core, one core: {} s calls of two streams, {} runs each", options.seconds, options.repeat);
    println!();
    println!("| scenario | call-seconds | CPU time | × real time per call | real-time streams per core |");
    println!("|---|---:|---:|---:|---:|");
    for scenario in &scenarios {
        let deliveries = deliveries(scenario, options.seconds);
        let end = Duration::from_secs(options.seconds + 1);
        run_call(&deliveries, scenario.codecs, end); // warm-up
        let started = Instant::now();
        let mut frames = 0;
        for _ in 0..options.repeat {
            frames += run_call(black_box(&deliveries), scenario.codecs, end);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let call_seconds = end.as_secs_f64() * f64::from(options.repeat);
        let expected = (end.as_secs() as usize) * output_rate_for(scenario.codecs) as usize * options.repeat as usize;
        assert_eq!(frames, expected, "every call is recorded whole");
        let realtime = call_seconds / elapsed;
        println!(
            "| {} | {:.0} | {:.3} s | {:.0}× | {:.0} |",
            scenario.name,
            call_seconds,
            elapsed,
            realtime,
            2.0 * realtime
        );
    }
    println!();
    println!(
        "decoding alone: PCMU {:.0}× real time, G.722 {:.0}× real time",
        decode_rate(Codec::Pcmu),
        decode_rate(Codec::G722)
    );
}
