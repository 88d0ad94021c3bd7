//! Sample-rate conversion by two (8 kHz ⇄ 16 kHz) for the timeline: a 65-tap linear-phase windowed-sinc
//! low-pass whose delay is taken out, so that a resampled stream keeps its position to the sample. It never
//! converts other ratios; the timeline refuses them.

use std::f64::consts::PI;

const TAPS: usize = 65;
/// Group delay of the filter, in samples at the higher rate.
const DELAY: usize = (TAPS - 1) / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Same,
    Up,
    Down,
}

/// Converts one stream's samples from one rate to another, keeping the filter's state across calls.
#[derive(Debug, Clone)]
pub(crate) struct Resampler {
    mode: Mode,
    /// The filter's non-zero taps as (delay, weight): a half-band filter's even taps are zero but the centre
    /// one, which halves the work. For ×2, one list per output phase, delays counted in input samples.
    taps: Vec<(usize, f32)>,
    phases: [Vec<(usize, f32)>; 2],
    /// The last inputs, oldest first (`TAPS` of them for ÷2, `TAPS / 2 + 1` for ×2), then the new ones.
    history: Vec<f32>,
    /// Outputs still to discard: the filter's delay at the start.
    skip: usize,
    /// Inputs seen since the start, modulo 2 (÷2 keeps every other one).
    parity: usize,
    /// Whether any input has been taken since the start (or the last flush).
    primed: bool,
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz: equal rates, or one twice the other.
    pub(crate) fn new(from: u32, to: u32) -> Option<Self> {
        let mode = if from == to {
            Mode::Same
        } else if from.checked_mul(2) == Some(to) {
            Mode::Up
        } else if to.checked_mul(2) == Some(from) {
            Mode::Down
        } else {
            return None;
        };
        let taps: Vec<(usize, f32)> = low_pass().into_iter().enumerate().filter(|(_, tap)| tap.abs() > 1e-9).collect();
        // Tap k = 2i + p of the filter weighs input m - i for output phase p.
        let phases =
            [0, 1].map(|phase| taps.iter().filter(|(k, _)| k % 2 == phase).map(|&(k, tap)| (k / 2, tap)).collect());
        let mut resampler = Self { mode, taps, phases, history: Vec::new(), skip: 0, parity: 0, primed: false };
        resampler.restart();
        Some(resampler)
    }

    fn restart(&mut self) {
        let kept = match self.mode {
            Mode::Same => 0,
            Mode::Up => TAPS / 2 + 1,
            Mode::Down => TAPS,
        };
        self.history.clear();
        self.history.resize(kept, 0.0);
        self.skip = match self.mode {
            Mode::Same => 0,
            Mode::Up => DELAY,
            Mode::Down => DELAY / 2,
        };
        self.parity = 0;
        self.primed = false;
    }

    /// Output samples the filter still holds (owed by a [`Resampler::flush`]).
    pub(crate) fn pending(&self) -> usize {
        if self.primed {
            match self.mode {
                Mode::Same => 0,
                Mode::Up => DELAY,
                Mode::Down => DELAY / 2,
            }
        } else {
            0
        }
    }

    /// Converts `input`, appending to `out`.
    pub(crate) fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if input.is_empty() {
            return;
        }
        self.primed = true;
        match self.mode {
            Mode::Same => out.extend_from_slice(input),
            Mode::Up => self.up(input, out),
            Mode::Down => self.down(input, out),
        }
    }

    /// Lets out what the filter holds (by feeding it silence) and starts afresh.
    pub(crate) fn flush(&mut self, out: &mut Vec<i16>) {
        if !self.primed {
            return;
        }
        let zeros = match self.mode {
            Mode::Same => 0,
            Mode::Up => DELAY / 2,
            Mode::Down => DELAY,
        };
        self.process(&vec![0; zeros], out);
        self.restart();
    }

    fn up(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let kept = TAPS / 2 + 1;
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        for newest in kept..self.history.len() {
            // y[2m + p] = 2 Σ h[2i + p] x[m - i]
            for phase in 0..2 {
                let sum: f32 = self.phases[phase].iter().map(|&(i, tap)| tap * self.history[newest - i]).sum();
                self.emit(2.0 * sum, out);
            }
        }
        let consumed = self.history.len() - kept;
        self.history.drain(..consumed);
    }

    fn down(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        for newest in TAPS..self.history.len() {
            self.parity ^= 1;
            if self.parity == 1 {
                // y[m] = Σ h[k] x[2m - k]
                let sum: f32 = self.taps.iter().map(|&(k, tap)| tap * self.history[newest - k]).sum();
                self.emit(sum, out);
            }
        }
        let consumed = self.history.len() - TAPS;
        self.history.drain(..consumed);
    }

    fn emit(&mut self, value: f32, out: &mut Vec<i16>) {
        if self.skip > 0 {
            self.skip -= 1;
        } else {
            out.push(value.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
        }
    }
}

/// A Blackman-windowed sinc with its cut-off at a quarter of the higher rate (the lower rate's Nyquist
/// frequency): a half-band filter, whose even taps are zero but the centre one.
fn low_pass() -> [f32; TAPS] {
    let mut taps = [0.0f64; TAPS];
    let centre = DELAY as f64;
    let span = (TAPS - 1) as f64;
    for (k, tap) in taps.iter_mut().enumerate() {
        let x = k as f64 - centre;
        let sinc = if x == 0.0 { 1.0 } else { (PI * x / 2.0).sin() / (PI * x / 2.0) };
        let window = 0.42 - 0.5 * (2.0 * PI * k as f64 / span).cos() + 0.08 * (4.0 * PI * k as f64 / span).cos();
        *tap = sinc * window;
    }
    // Each polyphase branch gets half the gain, so that ×2 has no ripple at DC (and ÷2 unit gain).
    for phase in 0..2 {
        let sum: f64 = taps.iter().skip(phase).step_by(2).sum();
        taps.iter_mut().skip(phase).step_by(2).for_each(|tap| *tap *= 0.5 / sum);
    }
    taps.map(|tap| tap as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(frequency: f64, rate: f64, len: usize) -> Vec<i16> {
        (0..len).map(|n| (10000.0 * (2.0 * PI * frequency * n as f64 / rate).sin()).round() as i16).collect()
    }

    fn max_error(a: &[i16], b: &[i16]) -> i32 {
        a.iter().zip(b).map(|(&x, &y)| (i32::from(x) - i32::from(y)).abs()).max().unwrap_or(0)
    }

    #[test]
    fn upsampling_keeps_a_tone_in_place_and_in_length() {
        let mut resampler = Resampler::new(8000, 16000).unwrap();
        let input = sine(440.0, 8000.0, 1600);
        let mut out = Vec::new();
        for chunk in input.chunks(160) {
            resampler.process(chunk, &mut out);
        }
        assert_eq!(out.len() + resampler.pending(), 3200);
        resampler.flush(&mut out);
        assert_eq!(out.len(), 3200);
        let expected = sine(440.0, 16000.0, 3200);
        // Away from the edges the delay-compensated output is the same tone at the same phase.
        assert!(
            max_error(&out[100..3100], &expected[100..3100]) < 150,
            "{}",
            max_error(&out[100..3100], &expected[100..3100])
        );
    }

    #[test]
    fn downsampling_keeps_a_tone_in_place_and_removes_what_would_alias() {
        let mut resampler = Resampler::new(16000, 8000).unwrap();
        let tone = sine(440.0, 16000.0, 3200);
        let alias = sine(6000.0, 16000.0, 3200);
        let input: Vec<i16> = tone.iter().zip(&alias).map(|(&a, &b)| a / 2 + b / 2).collect();
        let mut out = Vec::new();
        for chunk in input.chunks(320) {
            resampler.process(chunk, &mut out);
        }
        resampler.flush(&mut out);
        assert_eq!(out.len(), 1600);
        let expected: Vec<i16> = sine(440.0, 8000.0, 1600).iter().map(|s| s / 2).collect();
        assert!(
            max_error(&out[50..1550], &expected[50..1550]) < 150,
            "{}",
            max_error(&out[50..1550], &expected[50..1550])
        );
    }

    #[test]
    fn other_ratios_are_refused_and_equal_rates_pass_through() {
        assert!(Resampler::new(8000, 48000).is_none());
        let mut same = Resampler::new(8000, 8000).unwrap();
        let mut out = Vec::new();
        same.process(&[1, 2, 3], &mut out);
        assert_eq!((out, same.pending()), (vec![1, 2, 3], 0));
    }
}
