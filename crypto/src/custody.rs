//! Key custody: a key-holding user's own RSA key pair, its private part sealed under a key derived from
//! their password (Argon2id; AES-256-GCM with the tenant, user and key ids as associated data), and grants,
//! which wrap a tenant's private key to one user's public key. Nothing here stores or prints a private key.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{PrivateKey, PublicKey};
use crate::{random, CryptoError};

/// Argon2id parameters and salt, stored with what they sealed. New seals use OWASP's recommendation
/// (19 MiB, 2 passes, 1 lane).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
}

impl fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} m={} t={} p={}", self.algorithm, self.m_cost_kib, self.t_cost, self.p_cost)
    }
}

impl KdfParams {
    fn owasp() -> Result<Self, CryptoError> {
        let mut salt = vec![0u8; 16];
        random(&mut salt)?;
        Ok(Self { algorithm: "argon2id".into(), m_cost_kib: 19_456, t_cost: 2, p_cost: 1, salt })
    }

    fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        if self.algorithm != "argon2id" || self.m_cost_kib > 4 * 1024 * 1024 || self.t_cost > 100 {
            return Err(CryptoError::Malformed("unsupported key derivation parameters"));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|_| CryptoError::Malformed("invalid Argon2 parameters"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, &self.salt, key.as_mut())
            .map_err(|_| CryptoError::Malformed("invalid Argon2 salt"))?;
        Ok(key)
    }
}

/// Whose sealed key this is: the associated data of its seal, so a sealed key moved to another user or
/// key record does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserKeyIds {
    /// `None` for the service provider's own users.
    pub tenant_id: Option<Uuid>,
    pub user_id: Uuid,
    /// The id of the user's key pair record.
    pub key_id: Uuid,
}

impl UserKeyIds {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"recall user key v1\0".to_vec();
        aad.extend_from_slice(self.tenant_id.unwrap_or_default().as_bytes());
        aad.extend_from_slice(self.user_id.as_bytes());
        aad.extend_from_slice(self.key_id.as_bytes());
        aad
    }
}

fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let mut nonce = [0u8; 12];
    random(&mut nonce)?;
    let sealed = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .map_err(|_| CryptoError::Limit("AES-GCM refused to seal"))?;
    Ok((nonce.to_vec(), sealed))
}

fn open(key: &[u8; 32], nonce: &[u8], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
        .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}

/// A user's key pair as it is stored: the public key in clear, the private key sealed under their password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedUserKey {
    #[serde(with = "hex_bytes")]
    pub public_key: Vec<u8>,
    pub kdf: KdfParams,
    #[serde(with = "hex_bytes")]
    pub nonce: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub sealed_private_key: Vec<u8>,
}

impl fmt::Debug for SealedUserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedUserKey").field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

impl SealedUserKey {
    /// A new key pair for a user, sealed under `password`; also returned unlocked.
    pub fn generate(password: &[u8], ids: &UserKeyIds) -> Result<(Self, UnlockedUserKey), CryptoError> {
        let unlocked = UnlockedUserKey { private: PrivateKey::generate()?, ids: *ids };
        Ok((Self::seal(&unlocked, password)?, unlocked))
    }

    /// Seals an unlocked key under a (new) password, with fresh salt and nonce: a password change.
    pub fn seal(key: &UnlockedUserKey, password: &[u8]) -> Result<Self, CryptoError> {
        let kdf = KdfParams::owasp()?;
        let wrapping = kdf.derive(password)?;
        let (nonce, sealed_private_key) = seal(&wrapping, &key.private.to_der()?, &key.ids.associated_data())?;
        Ok(Self { public_key: key.private.public().to_der().to_vec(), kdf, nonce, sealed_private_key })
    }

    /// Opens the private key with the user's password (`WrongPassword` otherwise, or when the record was
    /// moved to other ids or changed).
    pub fn unlock(&self, password: &[u8], ids: &UserKeyIds) -> Result<UnlockedUserKey, CryptoError> {
        let wrapping = self.kdf.derive(password)?;
        let der = open(&wrapping, &self.nonce, &self.sealed_private_key, &ids.associated_data())
            .ok_or(CryptoError::WrongPassword)?;
        let private = PrivateKey::from_der(&der)?;
        if private.public().to_der() != self.public_key.as_slice() {
            return Err(CryptoError::WrongPassword);
        }
        Ok(UnlockedUserKey { private, ids: *ids })
    }

    pub fn public(&self) -> Result<PublicKey, CryptoError> {
        PublicKey::from_der(&self.public_key)
    }
}

/// A user's private key, opened at sign-in and kept in memory for the session only.
pub struct UnlockedUserKey {
    private: PrivateKey,
    ids: UserKeyIds,
}

impl fmt::Debug for UnlockedUserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockedUserKey").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl UnlockedUserKey {
    pub fn ids(&self) -> UserKeyIds {
        self.ids
    }

    pub fn public(&self) -> PublicKey {
        self.private.public()
    }
}

/// A tenant's private key wrapped to one user: a random AES-256 key wrapped with the user's public key
/// (RSA-OAEP-SHA256), and the tenant key's PKCS#8 sealed under it; the key and user ids are the OAEP label
/// and the associated data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(with = "hex_bytes")]
    pub wrapped_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub nonce: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub sealed_private_key: Vec<u8>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Grant(…)")
    }
}

fn grant_label(key_id: Uuid, user_id: Uuid) -> Vec<u8> {
    let mut label = b"recall key grant v1\0".to_vec();
    label.extend_from_slice(key_id.as_bytes());
    label.extend_from_slice(user_id.as_bytes());
    label
}

impl Grant {
    /// Wraps the tenant key `key_id` to the user `user_id`'s public key.
    pub fn seal(
        tenant_key: &PrivateKey,
        key_id: Uuid,
        grantee: &PublicKey,
        user_id: Uuid,
    ) -> Result<Self, CryptoError> {
        let label = grant_label(key_id, user_id);
        let mut transport = Zeroizing::new([0u8; 32]);
        random(transport.as_mut())?;
        let wrapped_key = grantee.encrypt(transport.as_ref(), &label)?;
        let (nonce, sealed_private_key) = seal(&transport, &tenant_key.to_der()?, &label)?;
        Ok(Self { wrapped_key, nonce, sealed_private_key })
    }

    /// The tenant key, opened with the grantee's unlocked key.
    pub fn open(&self, holder: &UnlockedUserKey, key_id: Uuid) -> Result<PrivateKey, CryptoError> {
        let label = grant_label(key_id, holder.ids.user_id);
        let transport = holder.private.decrypt(&self.wrapped_key, &label)?;
        let transport: [u8; 32] = transport.as_slice().try_into().map_err(|_| CryptoError::WrongKey)?;
        let transport = Zeroizing::new(transport);
        let der = open(&transport, &self.nonce, &self.sealed_private_key, &label).ok_or(CryptoError::WrongKey)?;
        PrivateKey::from_der(&der)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
