//! Every output format, written through the spool and decoded again with symphonia: the decoded audio
//! lasts as long as the input, each channel matches its own source (and not the other one), and a WAV file
//! holds exactly the samples that went in.

mod common;

use std::time::Duration;

use common::decode::decode;
use recall_domain::recording_policy::AudioFormat;
use recall_recorder::encode::AudioEncoder;
use recall_recorder::spool::{RecordingMeta, Spool};
use uuid::Uuid;

const SECONDS: usize = 3;

/// Two distinct voices-like signals: a gliding tone with a beat on the left, a lower chord on the right.
fn source(rate: usize) -> (Vec<i16>, Vec<i16>) {
    let n = rate * SECONDS;
    let (mut left, mut right) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let glide = 2.0 * std::f64::consts::PI * (300.0 * t + 60.0 * t * t);
        let beat = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
        left.push((9000.0 * beat * glide.sin()) as i16);
        let chord =
            (2.0 * std::f64::consts::PI * 220.0 * t).sin() + 0.6 * (2.0 * std::f64::consts::PI * 330.0 * t).sin();
        right.push((7000.0 * chord) as i16);
    }
    (left, right)
}

/// Encodes through the spool in 20 ms pieces, as the recorder will; returns the spooled file's bytes.
fn record(format: AudioFormat, rate: u32, left: &[i16], right: &[i16]) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
    let call_id = Uuid::now_v7();
    let extension = if matches!(format, AudioFormat::WavStereo | AudioFormat::WavMono) { "wav" } else { "mp3" };
    let mut writer = spool.create(call_id, extension, Duration::from_millis(500)).expect("spool file");
    let (mut encoder, start) = AudioEncoder::new(format, rate).expect("encoder");
    writer.write(&start).expect("start");
    let piece = rate as usize / 50;
    for (l, r) in left.chunks(piece).zip(right.chunks(piece)) {
        let interleaved: Vec<i16> = l.iter().zip(r).flat_map(|(a, b)| [*a, *b]).collect();
        writer.write(&encoder.encode(&interleaved).expect("encoded")).expect("written");
    }
    let finished = encoder.finish().expect("finished");
    writer.write(&finished.tail).expect("tail");
    if let Some(header) = finished.header {
        writer.patch_start(&header).expect("header");
    }
    let meta = RecordingMeta {
        tenant_id: Uuid::nil(),
        storage_target_id: None,
        object_path: format!("x/{call_id}.{extension}"),
        format,
        duration_ms: (SECONDS * 1000) as u64,
        sample_rate: None,
        encryption: None,
    };
    let spooled = writer.finish(meta).expect("spooled");
    let bytes = std::fs::read(spool.file_of(&spooled)).expect("file");
    use sha2::Digest;
    assert_eq!(spooled.sha256, hex::encode(sha2::Sha256::digest(&bytes)), "the manifest's digest is the file's");
    (bytes, extension.to_owned())
}

/// The best normalised correlation of `decoded` with `source` over lags 0..`max_lag` (codec delay).
fn correlation(source: &[i16], decoded: &[f64], max_lag: usize) -> f64 {
    let source: Vec<f64> = source.iter().map(|s| f64::from(*s) / 32768.0).collect();
    let n = source.len().min(decoded.len().saturating_sub(max_lag)) - 1;
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let a = &source[..n];
    (0..max_lag)
        .map(|lag| {
            let b = &decoded[lag..lag + n];
            a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b)).max(1e-12)
        })
        .fold(f64::MIN, f64::max)
}

fn check(format: AudioFormat, rate: u32) {
    let (left, right) = source(rate as usize);
    let (bytes, extension) = record(format, rate, &left, &right);
    let (decoded_rate, channels) = decode(bytes, &extension);
    assert_eq!(decoded_rate, rate, "{format:?}");
    let stereo = matches!(format, AudioFormat::Mp3Stereo32 | AudioFormat::WavStereo);
    assert_eq!(channels.len(), if stereo { 2 } else { 1 }, "{format:?}");
    let seconds = channels[0].len() as f64 / f64::from(rate);
    // The stereo MP3's Info frame states the encoder's delay and padding: a gapless decoder gives back
    // exactly the recorded length, starting at the first sample. A 16 kbit/s mono frame at 8 kHz (144 bytes)
    // has no room for that frame (LAME leaves it out): its decoded audio starts LAME's delay late.
    let exact = format != AudioFormat::Mp3Mono16;
    let tolerance = if exact { 0.005 } else { 0.25 };
    assert!((seconds - SECONDS as f64).abs() < tolerance, "{format:?} lasts {seconds} s");
    // At most a few samples of filter delay; before the Info frame, LAME's 1,105-sample delay was in the file.
    let max_lag = if extension == "wav" {
        1
    } else if exact {
        16
    } else {
        3000
    };
    if stereo {
        let (ll, rr) = (correlation(&left, &channels[0], max_lag), correlation(&right, &channels[1], max_lag));
        let (lr, rl) = (correlation(&right, &channels[0], max_lag), correlation(&left, &channels[1], max_lag));
        assert!(ll >= 0.9 && rr >= 0.9, "{format:?}: each channel matches its source ({ll:.3}, {rr:.3})");
        assert!(lr < 0.5 && rl < 0.5, "{format:?}: the channels are not swapped or mixed ({lr:.3}, {rl:.3})");
    } else {
        let mixed: Vec<i16> =
            left.iter().zip(&right).map(|(l, r)| ((i32::from(*l) + i32::from(*r)) / 2) as i16).collect();
        let c = correlation(&mixed, &channels[0], max_lag);
        assert!(c >= 0.9, "{format:?}: the mono mix matches ({c:.3})");
    }
}

#[test]
fn stereo_mp3_at_32_kbits_keeps_each_party_on_its_channel() {
    check(AudioFormat::Mp3Stereo32, 8000);
}

#[test]
fn mono_mp3_at_16_kbits_holds_both_parties() {
    check(AudioFormat::Mp3Mono16, 8000);
}

#[test]
fn wav_files_hold_exactly_the_samples_at_8_and_16_khz() {
    for rate in [8000, 16000] {
        check(AudioFormat::WavStereo, rate);
        check(AudioFormat::WavMono, rate);
        let (left, right) = source(rate as usize);
        let (bytes, extension) = record(AudioFormat::WavStereo, rate, &left, &right);
        let (_, channels) = decode(bytes, &extension);
        let back: Vec<i16> = channels[0].iter().map(|s| (s * 32768.0).round() as i16).collect();
        assert_eq!(back, left, "lossless at {rate} Hz");
    }
}

#[test]
fn an_unsupported_sample_rate_is_refused() {
    assert!(AudioEncoder::new(AudioFormat::Mp3Stereo32, 44_100).is_err());
}
