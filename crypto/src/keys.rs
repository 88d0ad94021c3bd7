//! RSA-2048 key pairs (a tenant's file-encryption key, and each key-holding user's own pair) and the
//! 256-bit data keys of single recordings. Only RSA-OAEP with SHA-256 is used to wrap: never PKCS#1 v1.5.

use std::fmt;

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::{Digest, Sha256};
use rsa::traits::PublicKeyParts;
use rsa::Oaep;
use zeroize::Zeroizing;

use crate::{random, CryptoError};

/// The only key size recall creates or accepts.
pub const RSA_BITS: usize = 2048;

/// A random 256-bit AES key, zeroised when dropped.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        random(key.as_mut())?;
        Ok(Self(key))
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(CryptoError::WrongKey);
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// The public half of an RSA-2048 key pair, with its SubjectPublicKeyInfo DER encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: rsa::PublicKey,
    der: Vec<u8>,
}

impl PublicKey {
    fn new(key: rsa::PublicKey) -> Result<Self, CryptoError> {
        if key.size() * 8 != RSA_BITS {
            return Err(CryptoError::InvalidKey(format!(
                "an RSA key of {} bits; recall uses {RSA_BITS}",
                key.size() * 8
            )));
        }
        let der = key.to_public_key_der().map_err(|e| CryptoError::InvalidKey(e.to_string()))?.into_vec();
        Ok(Self { key, der })
    }

    /// Reads a SubjectPublicKeyInfo DER encoding (what [`PublicKey::to_der`] writes).
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        Self::new(rsa::PublicKey::from_public_key_der(der).map_err(|e| CryptoError::InvalidKey(e.to_string()))?)
    }

    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo), what OpenSSL reads and writes.
    pub fn to_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Hex SHA-256 of the DER encoding: how the log and people name a key.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256) with `label`: the label binds the ciphertext to its purpose and ids.
    pub(crate) fn encrypt(&self, message: &[u8], label: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key
            .encrypt(&mut getrandom::SysRng, Oaep::<Sha256>::new_with_label(label.to_vec()), message)
            .map_err(|_| CryptoError::Random)
    }

    /// Wraps a recording's data key; `label` names the key and the recording (see `file::data_key_label`).
    pub fn wrap_data_key(&self, key: &DataKey, label: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.encrypt(key.bytes(), label)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// The private half of an RSA-2048 key pair. rsa's key zeroises itself when dropped; every encoding of it
/// handed out here is `Zeroizing`.
pub struct PrivateKey {
    key: rsa::PrivateKey,
}

impl PrivateKey {
    /// A new RSA-2048 key pair (about 0.1–1 s).
    pub fn generate() -> Result<Self, CryptoError> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS).map_err(|_| CryptoError::Random)?;
        Ok(Self { key })
    }

    fn checked(key: rsa::PrivateKey) -> Result<Self, CryptoError> {
        if key.size() * 8 != RSA_BITS {
            return Err(CryptoError::InvalidKey(format!(
                "an RSA key of {} bits; recall uses {RSA_BITS}",
                key.size() * 8
            )));
        }
        key.validate().map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::new(self.key.to_public_key()).expect("a checked RSA-2048 key has a 2048-bit public key")
    }

    pub(crate) fn decrypt(&self, ciphertext: &[u8], label: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.key
            .decrypt(Oaep::<Sha256>::new_with_label(label.to_vec()), ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::WrongKey)
    }

    /// Unwraps a data key wrapped with [`PublicKey::wrap_data_key`] under the same label.
    pub fn unwrap_data_key(&self, wrapped: &[u8], label: &[u8]) -> Result<DataKey, CryptoError> {
        DataKey::from_slice(&self.decrypt(wrapped, label)?)
    }

    /// PKCS#8 DER, for sealing inside a grant or a sealed user key; never stored as it is.
    pub(crate) fn to_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let document = self.key.to_pkcs8_der().map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    pub(crate) fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        Self::checked(rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| CryptoError::WrongKey)?)
    }

    /// `-----BEGIN ENCRYPTED PRIVATE KEY-----`: PKCS#8 encrypted under `passphrase` (PBES2: scrypt and
    /// AES-256), which OpenSSL reads (`openssl pkey -in key.pem`). The passphrase must not be empty.
    pub fn export_encrypted_pem(&self, passphrase: &str) -> Result<Zeroizing<String>, CryptoError> {
        if passphrase.is_empty() {
            return Err(CryptoError::InvalidKey("an export needs a passphrase".into()));
        }
        self.key
            .to_pkcs8_encrypted_pem(passphrase.as_bytes(), LineEnding::LF)
            .map_err(|e| CryptoError::InvalidKey(e.to_string()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(of {})", self.public().fingerprint())
    }
}

/// What an imported PEM held: always the public key, and the private key when the PEM had it (a site may
/// hold only a public key: it records files it cannot play).
#[derive(Debug)]
pub struct KeyImport {
    pub public: PublicKey,
    pub private: Option<PrivateKey>,
}

impl KeyImport {
    /// Reads a PEM: a public key (`PUBLIC KEY`, `RSA PUBLIC KEY`) or a private key (`PRIVATE KEY`,
    /// `RSA PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with its `passphrase`). Only RSA-2048 is accepted.
    pub fn from_pem(pem: &str, passphrase: Option<&str>) -> Result<Self, CryptoError> {
        let pem = pem.trim();
        let label = pem
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("-----BEGIN "))
            .and_then(|line| line.strip_suffix("-----"))
            .ok_or_else(|| CryptoError::InvalidKey("not a PEM (no -----BEGIN … ----- line)".into()))?;
        let invalid = |e: &dyn fmt::Display| CryptoError::InvalidKey(format!("{label}: {e}"));
        let private = match label {
            "PUBLIC KEY" => {
                let public = rsa::PublicKey::from_public_key_pem(pem).map_err(|e| invalid(&e))?;
                return Ok(Self { public: PublicKey::new(public)?, private: None });
            }
            "RSA PUBLIC KEY" => {
                let public = rsa::PublicKey::from_pkcs1_pem(pem).map_err(|e| invalid(&e))?;
                return Ok(Self { public: PublicKey::new(public)?, private: None });
            }
            "PRIVATE KEY" => rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|e| invalid(&e))?,
            "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_pem(pem).map_err(|e| invalid(&e))?,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| CryptoError::InvalidKey("the key is encrypted: give its passphrase".into()))?;
                rsa::PrivateKey::from_pkcs8_encrypted_pem(pem, passphrase.as_bytes())
                    .map_err(|_| CryptoError::WrongPassword)?
            }
            other => return Err(CryptoError::InvalidKey(format!("a PEM of type {other:?} is not an RSA key"))),
        };
        let private = PrivateKey::checked(private)?;
        Ok(Self { public: private.public(), private: Some(private) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_key_wrapped_under_one_label_does_not_unwrap_under_another() {
        let private = PrivateKey::generate().expect("key");
        let data = DataKey::generate().expect("data key");
        let wrapped = private.public().wrap_data_key(&data, b"label one").expect("wrap");
        let unwrapped = private.unwrap_data_key(&wrapped, b"label one").expect("unwrap");
        assert_eq!(unwrapped.bytes(), data.bytes());
        assert_eq!(private.unwrap_data_key(&wrapped, b"label two").unwrap_err(), CryptoError::WrongKey);
        let other = PrivateKey::generate().expect("key");
        assert_eq!(other.unwrap_data_key(&wrapped, b"label one").unwrap_err(), CryptoError::WrongKey);
    }

    #[test]
    fn an_export_imports_back_only_with_its_passphrase() {
        let private = PrivateKey::generate().expect("key");
        let pem = private.export_encrypted_pem("correct horse").expect("export");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let import = KeyImport::from_pem(&pem, Some("correct horse")).expect("import");
        assert_eq!(import.public, private.public());
        assert!(import.private.is_some());
        assert_eq!(KeyImport::from_pem(&pem, Some("wrong")).unwrap_err(), CryptoError::WrongPassword);
        assert!(matches!(KeyImport::from_pem(&pem, None), Err(CryptoError::InvalidKey(_))));
    }

    #[test]
    fn a_public_key_imports_without_a_private_part() {
        let private = PrivateKey::generate().expect("key");
        let import = KeyImport::from_pem(&private.public().to_pem(), None).expect("import");
        assert!(import.private.is_none());
        assert_eq!(import.public.fingerprint(), private.public().fingerprint());
        assert_eq!(import.public.fingerprint().len(), 64);
    }

    #[test]
    fn garbage_and_foreign_pems_are_refused_with_a_reason() {
        for pem in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----",
        ] {
            assert!(matches!(KeyImport::from_pem(pem, None), Err(CryptoError::InvalidKey(_))), "{pem:?}");
        }
    }

    #[test]
    fn debug_output_shows_fingerprints_not_key_material() {
        let private = PrivateKey::generate().expect("key");
        let shown = format!("{private:?} {:?} {:?}", private.public(), DataKey::generate().expect("data key"));
        assert!(shown.contains(&private.public().fingerprint()));
        assert!(!shown.contains("BEGIN"));
        assert!(shown.len() < 200, "{shown}");
    }
}
