//! Playback's costs and the recorder's: data-key unwraps per second (RSA-2048 OAEP), grant opens per second,
//! and for a one-hour recording (MP3 32 kbit/s and WAV 16-bit stereo 8 kHz) the time to first byte (header,
//! unwrap, final chunk, first chunk) and decryption throughput; sealing throughput as the recorder writes.
//! Single-threaded: figures are per core.
//!
//! `cargo bench -p recall-crypto --bench crypto`

use std::hint::black_box;
use std::time::{Duration, Instant};

use recall_crypto::file::{FileHeader, FileOpener, FileSealer, Termination};
use recall_crypto::{Grant, PrivateKey, SealedUserKey, UserKeyIds};
use uuid::Uuid;

fn per_second(count: u32, elapsed: Duration) -> f64 {
    f64::from(count) / elapsed.as_secs_f64()
}

fn main() {
    let tenant = PrivateKey::generate().expect("tenant key");
    let key_id = Uuid::now_v7();

    // Unwraps: a fresh recording header each time, as playback of different recordings does.
    let headers: Vec<Vec<u8>> =
        (0..200).map(|_| FileSealer::new(&tenant.public(), key_id, Uuid::now_v7()).expect("sealer").1).collect();
    let started = Instant::now();
    for header in &headers {
        let header = FileHeader::parse(header).expect("header");
        black_box(header.unwrap_key(&tenant).expect("unwrap"));
    }
    let unwraps = per_second(headers.len() as u32, started.elapsed());
    println!("data-key unwraps (RSA-2048 OAEP-SHA256): {unwraps:.0}/s, {:.2} ms each", 1000.0 / unwraps);

    let started = Instant::now();
    let ids = UserKeyIds { tenant_id: None, user_id: Uuid::now_v7(), key_id: Uuid::now_v7() };
    let (sealed_user, user) = SealedUserKey::generate(b"password", &ids).expect("user key");
    println!("user key pair generated and sealed in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
    let started = Instant::now();
    black_box(sealed_user.unlock(b"password", &ids).expect("unlock"));
    println!("user key unlocked (Argon2id 19 MiB, t=2) in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
    let grant = Grant::seal(&tenant, key_id, &user.public(), ids.user_id).expect("grant");
    let started = Instant::now();
    for _ in 0..50 {
        black_box(grant.open(&user, key_id).expect("open"));
    }
    println!("grant opens: {:.0}/s", per_second(50, started.elapsed()));

    for (name, bytes_per_second) in [("MP3 32 kbit/s", 4_000usize), ("WAV 8 kHz stereo", 32_000)] {
        let len = bytes_per_second * 3600;
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let started = Instant::now();
        let (mut sealer, mut stored) = FileSealer::new(&tenant.public(), key_id, Uuid::now_v7()).expect("sealer");
        for second in plain.chunks(bytes_per_second) {
            sealer.push(second, &mut stored).expect("push");
        }
        sealer.finish(&plain[..44], &mut stored).expect("finish");
        let sealing = started.elapsed();

        let started = Instant::now();
        let header = FileHeader::parse(&stored).expect("header");
        let key = header.unwrap_key(&tenant).expect("unwrap");
        let termination = Termination::from_tail(&stored).expect("footer");
        let opener = FileOpener::new(header, &key, stored.len() as u64, termination).expect("opener");
        let last = opener.final_chunk_range().expect("final chunk");
        let file = opener.open(Some(&stored[last.start as usize..last.end as usize])).expect("open");
        let first = file.read_from(&stored, 0..65_536).expect("first chunk");
        let first_byte = started.elapsed();
        black_box(first);
        let started = Instant::now();
        let all = file.read_from(&stored, 0..file.len()).expect("all");
        let whole = started.elapsed();
        assert_eq!(all.len(), len);
        let mb = len as f64 / 1e6;
        println!(
            "one hour of {name} ({mb:.1} MB): time to first byte {:.2} ms; decrypt {:.0} MB/s ({:.0} ms); seal {:.0} MB/s, {:.0} hours of audio per core-second",
            first_byte.as_secs_f64() * 1000.0,
            mb / whole.as_secs_f64(),
            whole.as_secs_f64() * 1000.0,
            mb / sealing.as_secs_f64(),
            1.0 / sealing.as_secs_f64(),
        );
    }
}
