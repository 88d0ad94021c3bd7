//! Any bytes as a stored recording: the header parse, the layout check and decryption with a fixed key, and
//! the same bytes spliced after a valid header. Must never panic, and must never return plain text for a
//! file that is not the one that was sealed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use recall_crypto::file::{decrypt_in_memory, FileHeader, FileSealer, Termination};
use recall_crypto::PrivateKey;

fn key() -> &'static (PrivateKey, Vec<u8>) {
    static KEY: OnceLock<(PrivateKey, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = PrivateKey::generate().expect("a key");
        let id = uuid::Uuid::from_u128(1);
        let (mut sealer, mut stored) = FileSealer::with_chunk_size(&key.public(), id, id, 64).expect("sealer");
        sealer.push(&[7u8; 300], &mut stored).expect("push");
        sealer.finish(b"patch", &mut stored).expect("finish");
        (key, stored)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, sealed) = key();
    let _ = FileHeader::parse(data);
    let _ = decrypt_in_memory(data, key, None);
    let _ = decrypt_in_memory(data, key, Some(Termination::Unterminated { chunks: data.len() as u64 % 8 }));
    // A valid header followed by anything: only the exact original opens.
    let header = FileHeader::parse(sealed).expect("header").len();
    let mut spliced = sealed[..header].to_vec();
    spliced.extend_from_slice(data);
    if let Ok(plain) = decrypt_in_memory(&spliced, key, None) {
        assert_eq!(spliced, *sealed, "a changed file opened to {} bytes", plain.len());
    }
});
