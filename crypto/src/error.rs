use thiserror::Error;

/// Why an encryption operation failed. A failed decryption never says more than that it failed: whether a
/// tag, a key or a label was wrong is not told apart, so no oracle leaks.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// Not a recall encrypted file, or its header is damaged.
    #[error("not a recall encrypted recording: {0}")]
    Malformed(&'static str),
    #[error("encrypted recording format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A chunk, the header, or the order of chunks was changed, the file was cut short, or the key is not
    /// the one the file was written with.
    #[error("the encrypted recording does not authenticate (modified, truncated, or another key)")]
    Tampered,
    /// A wrapped key did not unwrap with this private key and label.
    #[error("the key does not unwrap with this private key")]
    WrongKey,
    /// A sealed user key did not open: the password is wrong (or the sealed key was changed).
    #[error("wrong password")]
    WrongPassword,
    /// An imported key could not be read, or is not RSA-2048.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("{0}")]
    Limit(&'static str),
}
