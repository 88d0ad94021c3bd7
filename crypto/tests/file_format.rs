//! The encrypted recording format: round trips, reads of any range, and the tamper suite (every change to a
//! stored file fails, and a failure gives no plain text).

use std::sync::OnceLock;

use recall_crypto::file::{decrypt_in_memory, open_in_memory, FileHeader, FileSealer, Termination};
use recall_crypto::{CryptoError, PrivateKey};
use uuid::Uuid;

const KEY_ID: Uuid = Uuid::from_u128(0x1111);

fn tenant_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().expect("a key"))
}

/// Deterministic "audio": a pattern no chunk repeats.
fn audio(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `plain` in uneven pieces with a small chunk size; `patch` goes over the start.
fn seal(plain: &[u8], patch: &[u8], chunk: u32, recording: Uuid) -> Vec<u8> {
    let (mut sealer, mut stored) =
        FileSealer::with_chunk_size(&tenant_key().public(), KEY_ID, recording, chunk).expect("a sealer");
    for piece in plain.chunks(37) {
        sealer.push(piece, &mut stored).expect("push");
    }
    sealer.finish(patch, &mut stored).expect("finish");
    stored
}

fn patched(plain: &[u8], patch: &[u8]) -> Vec<u8> {
    let mut expected = plain.to_vec();
    expected[..patch.len()].copy_from_slice(patch);
    expected
}

#[test]
fn a_recording_decrypts_to_what_was_written_with_the_patch_over_its_start() {
    for (len, chunk) in
        [(0usize, 64u32), (1, 64), (63, 64), (64, 64), (65, 64), (1000, 64), (70_000, 65_536), (131_072, 65_536)]
    {
        let plain = audio(len, len as u64);
        let patch = audio(len.min(44), 7);
        let stored = seal(&plain, &patch, chunk, Uuid::now_v7());
        let decrypted = decrypt_in_memory(&stored, tenant_key(), None).expect("decrypts");
        assert_eq!(*decrypted, patched(&plain, &patch), "length {len}, chunk {chunk}");
        // Nothing of the plain audio shows in the stored file.
        if len >= 64 {
            assert!(!stored.windows(16).any(|w| plain.windows(16).take(200).any(|p| p == w)), "plain text leaked");
        }
    }
}

#[test]
fn any_range_reads_exactly_those_bytes() {
    let plain = audio(5_000, 3);
    let patch = audio(44, 9);
    let stored = seal(&plain, &patch, 256, Uuid::now_v7());
    let expected = patched(&plain, &patch);
    let file = open_in_memory(&stored, tenant_key(), None).expect("opens");
    assert_eq!(file.len(), 5_000);
    let mut state = 12345u64;
    for _ in 0..500 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let start = (state >> 33) % 5_100;
        let end = start + (state >> 13) % 1_500;
        let got = file.read_from(&stored, start..end).expect("reads");
        let (s, e) = (start.min(5_000) as usize, end.min(5_000) as usize);
        assert_eq!(*got, expected[s..e], "range {start}..{end}");
    }
}

#[test]
fn a_file_whose_writer_died_reads_up_to_its_last_sealed_chunk_when_the_count_is_known() {
    let plain = audio(1_000, 5);
    let (mut sealer, mut stored) =
        FileSealer::with_chunk_size(&tenant_key().public(), KEY_ID, Uuid::now_v7(), 128).expect("a sealer");
    sealer.push(&plain, &mut stored).expect("push");
    let chunks = u64::from(sealer.sealed_chunks());
    assert_eq!(chunks, 7);
    drop(sealer);
    let decrypted =
        decrypt_in_memory(&stored, tenant_key(), Some(Termination::Unterminated { chunks })).expect("reads");
    assert_eq!(*decrypted, plain[..7 * 128]);
    // Told one chunk fewer or more than it has, or read as if complete, it is refused.
    for termination in [
        Some(Termination::Unterminated { chunks: chunks - 1 }),
        Some(Termination::Unterminated { chunks: chunks + 1 }),
        None,
    ] {
        assert!(decrypt_in_memory(&stored, tenant_key(), termination).is_err(), "{termination:?}");
    }
    // Cut to fewer chunks, it no longer matches the count the log holds.
    let cut = &stored[..stored.len() - 144];
    assert_eq!(
        decrypt_in_memory(cut, tenant_key(), Some(Termination::Unterminated { chunks })).unwrap_err(),
        CryptoError::Tampered
    );
}

fn refused(stored: &[u8]) -> bool {
    decrypt_in_memory(stored, tenant_key(), None).is_err()
}

#[test]
fn every_changed_byte_anywhere_in_the_file_is_refused() {
    let stored = seal(&audio(700, 11), &audio(44, 12), 64, Uuid::now_v7());
    for at in 0..stored.len() {
        for flip in [0x01u8, 0x80] {
            let mut changed = stored.clone();
            changed[at] ^= flip;
            assert!(refused(&changed), "a flip of byte {at} of {} went unnoticed", stored.len());
        }
    }
}

#[test]
fn a_file_cut_short_or_with_bytes_added_is_refused() {
    let stored = seal(&audio(700, 13), &audio(44, 14), 64, Uuid::now_v7());
    for len in 0..stored.len() {
        assert!(refused(&stored[..len]), "cut to {len} of {} bytes went unnoticed", stored.len());
    }
    for extra in [&[0u8][..], &[0; 4], &[0; 80], &stored[stored.len() - 84..]] {
        let mut longer = stored.clone();
        longer.extend_from_slice(extra);
        assert!(refused(&longer), "{} bytes appended went unnoticed", extra.len());
    }
}

#[test]
fn reordered_duplicated_or_dropped_chunks_are_refused() {
    let chunk = 64usize;
    let stored = seal(&audio(700, 15), &audio(44, 16), chunk as u32, Uuid::now_v7());
    let header = FileHeader::parse(&stored).expect("header").len();
    let sealed = chunk + 16;
    let body = &stored[header..];
    let full: Vec<&[u8]> = body.chunks(sealed).take((body.len() - 4) / sealed).collect();
    let tail = &body[full.len() * sealed..];
    let rebuild = |order: &[usize], tail: &[u8]| {
        let mut file = stored[..header].to_vec();
        for &i in order {
            file.extend_from_slice(full[i]);
        }
        file.extend_from_slice(tail);
        file
    };
    let all: Vec<usize> = (0..full.len()).collect();
    assert!(!refused(&rebuild(&all, tail)), "the unchanged order must read");
    let mut swapped = all.clone();
    swapped.swap(2, 3);
    assert!(refused(&rebuild(&swapped, tail)), "swapped chunks");
    let mut duplicated = all.clone();
    duplicated[4] = 3;
    assert!(refused(&rebuild(&duplicated, tail)), "a duplicated chunk");
    let dropped: Vec<usize> = all.iter().copied().filter(|&i| i != 5).collect();
    assert!(refused(&rebuild(&dropped, tail)), "a dropped chunk");
    // The last full chunk presented as the final one (the real final chunk dropped, a footer forged).
    let mut forged = rebuild(&all[..all.len() - 1], full[full.len() - 1]);
    forged.extend_from_slice(&(sealed as u32).to_be_bytes());
    assert!(refused(&forged), "a forged end");
}

#[test]
fn a_header_or_chunks_swapped_between_recordings_are_refused() {
    let one = seal(&audio(500, 17), &[], 64, Uuid::now_v7());
    let two = seal(&audio(500, 18), &[], 64, Uuid::now_v7());
    let header_one = FileHeader::parse(&one).expect("header").len();
    let header_two = FileHeader::parse(&two).expect("header").len();
    let mut mixed = two[..header_two].to_vec();
    mixed.extend_from_slice(&one[header_one..]);
    assert!(refused(&mixed), "one file's chunks under another's header");
    let mut spliced = one[..header_one + 80].to_vec();
    spliced.extend_from_slice(&two[header_two + 80..]);
    assert!(refused(&spliced), "chunks of two files");
    // A wrapped key copied into a header naming another recording does not unwrap (the ids are its label).
    let mut renamed = one.clone();
    let id_at = FileHeader::PREFIX_LEN + 4 + 7 + 16;
    renamed[id_at..id_at + 16].copy_from_slice(Uuid::now_v7().as_bytes());
    assert_eq!(decrypt_in_memory(&renamed, tenant_key(), None).unwrap_err(), CryptoError::WrongKey);
}

#[test]
fn a_failed_chunk_gives_an_error_and_no_bytes() {
    let plain = audio(2_000, 19);
    let stored = seal(&plain, &[], 256, Uuid::now_v7());
    let file = open_in_memory(&stored, tenant_key(), None).expect("opens");
    let reads = file.reads(0..2_000);
    let second = &reads[1];
    let range = second.sealed.clone().expect("a full chunk");
    let mut sealed = stored[range.start as usize..range.end as usize].to_vec();
    sealed[10] ^= 1;
    assert_eq!(file.decrypt(second, &sealed).unwrap_err(), CryptoError::Tampered);
    let mut changed = stored.clone();
    changed[range.start as usize + 10] ^= 1;
    assert_eq!(file.read_from(&changed, 0..2_000).unwrap_err(), CryptoError::Tampered);
    // The untouched first chunk still reads: chunks authenticate on their own, so a player can seek.
    assert_eq!(*file.read_from(&changed, 0..256).expect("first chunk"), plain[..256]);
}

#[test]
fn another_tenant_key_cannot_open_a_file() {
    let stored = seal(&audio(300, 21), &[], 64, Uuid::now_v7());
    let other = PrivateKey::generate().expect("a key");
    assert_eq!(decrypt_in_memory(&stored, &other, None).unwrap_err(), CryptoError::WrongKey);
}

#[test]
fn hostile_headers_are_refused_without_panics() {
    let stored = seal(&audio(300, 23), &[], 64, Uuid::now_v7());
    let mut state = 99u64;
    for _ in 0..2_000 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let len = (state >> 40) as usize % 400;
        let mut junk = stored[..len.min(stored.len())].to_vec();
        for b in junk.iter_mut().skip(9) {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            if state >> 60 == 0 {
                *b = (state >> 32) as u8;
            }
        }
        let _ = FileHeader::parse(&junk);
        let _ = decrypt_in_memory(&junk, tenant_key(), None);
    }
    assert!(matches!(FileHeader::parse(b"RIFF\0\0\0\0WAVE"), Err(CryptoError::Malformed(_))));
    let mut version = stored.clone();
    version[6] = 9;
    assert_eq!(FileHeader::parse(&version).unwrap_err(), CryptoError::UnsupportedVersion(9));
}
