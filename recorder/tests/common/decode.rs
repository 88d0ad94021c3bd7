//! Decoding a stored recording with symphonia, for the tests that check what the recorder wrote (the
//! recorder's own tests, and the sipp end-to-end test, which includes this file by path).

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Decodes a file's bytes: (sample rate, channels of samples in [-1, 1]). MP3 is decoded gapless, so the
/// encoder's delay and padding are trimmed when the file says how much they are.
pub fn decode(bytes: Vec<u8>, extension: &str) -> (u32, Vec<Vec<f64>>) {
    let stream = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(extension);
    let options = FormatOptions { enable_gapless: true, ..FormatOptions::default() };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &options, &MetadataOptions::default())
        .expect("a known format");
    let mut format = probed.format;
    let track = format.default_track().expect("a track").clone();
    let mut decoder =
        symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default()).expect("codec");
    let (mut rate, mut channels) = (0, Vec::new());
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(symphonia::core::errors::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("cannot read the file: {e}"),
        };
        let decoded = decoder.decode(&packet).expect("decoded");
        let spec = *decoded.spec();
        rate = spec.rate;
        let count = spec.channels.count();
        channels.resize(count, Vec::new());
        let mut buffer = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buffer.copy_interleaved_ref(decoded);
        for frame in buffer.samples().chunks_exact(count) {
            for (channel, sample) in frame.iter().enumerate() {
                channels[channel].push(f64::from(*sample));
            }
        }
    }
    (rate, channels)
}
