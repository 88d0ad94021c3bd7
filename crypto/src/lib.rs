//! Recording encryption and key custody: the encrypted file format (STREAM over AES-256-GCM in 64 KiB
//! chunks), data keys wrapped with a tenant's RSA-2048 key (OAEP with SHA-256, never PKCS#1 v1.5), user
//! key pairs sealed under a password-derived key (Argon2id), and grants of a tenant key to a user.
//! Pure apart from the operating system's random numbers: no I/O, no clock. Key material is zeroised when
//! dropped and never printed (`Debug` shows ids and fingerprints only).

pub mod custody;
mod error;
pub mod file;
pub mod keys;

pub use custody::{Grant, KdfParams, SealedUserKey, UnlockedUserKey, UserKeyIds};
pub use error::CryptoError;
pub use file::{
    data_key_label, decrypt_in_memory, open_in_memory, ChunkRead, FileHeader, FileOpener, FileSealer, PlainFile,
    Termination, CHUNK_SIZE, FORMAT_VERSION, MAX_PATCH,
};
pub use keys::{DataKey, KeyImport, PrivateKey, PublicKey};

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Random)
}
