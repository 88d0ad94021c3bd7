//! Passwords and tokens. Passwords are hashed with Argon2id (the OWASP parameters: 19 MiB, 2 passes, 1 lane)
//! off the async threads; tokens (session, password reset) and verification codes are random, and only
//! their SHA-256 digests are kept. Nothing here ever logs or stores a password or token in clear.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Shortest password accepted (NIST SP 800-63B's minimum).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted: enough for any pass phrase, short enough that hashing it is no attack.
pub const MAX_PASSWORD_CHARS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("a password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("a password must be at most {MAX_PASSWORD_CHARS} characters long")]
    TooLong,
    #[error("a password must not contain control characters")]
    ControlCharacter,
    #[error("a password must not be the username")]
    SameAsUsername,
}

/// Checks a new password against the policy: 8 to 1024 characters, no control characters, not the
/// username. Length matters, composition rules do not (NIST SP 800-63B).
pub fn check_policy(password: &SecretString, username: &str) -> Result<(), PasswordPolicyError> {
    let password = password.expose_secret();
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordPolicyError::ControlCharacter);
    }
    if !username.is_empty() && password.trim().eq_ignore_ascii_case(username.trim()) {
        return Err(PasswordPolicyError::SameAsUsername);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("the password could not be hashed: {0}")]
pub struct HashError(String);

/// The Argon2id hash of `password` as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), with a fresh salt.
pub async fn hash_password(password: SecretString) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// Whether `password` matches the PHC string `hash` (with the parameters stored in it).
pub async fn verify_password(password: SecretString, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default().verify_password(password.expose_secret().as_bytes(), hash.as_str()).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A hash of a password nobody has, verified when a username is unknown so that a failed sign-in takes
/// the same time whether or not the account exists.
pub async fn dummy_hash() -> &'static str {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            let random: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
            hash_password(SecretString::from(random)).await.unwrap_or_default()
        })
        .await
}

/// SHA-256 of a token's secret part: what is stored instead of the token.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Compares two digests in time independent of where they differ.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A bearer token: the id of its record (a session, a reset link's secret) and 256 random bits.
/// Text form `<uuid>.<base64url>`; only the digest of the random part is stored.
#[derive(Debug)]
pub struct Token {
    pub id: Uuid,
    pub text: SecretString,
    pub digest: [u8; 32],
}

impl Token {
    pub fn new(id: Uuid) -> Self {
        let secret: [u8; 32] = rand::rng().random();
        let text = format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret));
        Self { id, text: SecretString::from(text), digest: digest(&secret) }
    }

    /// The id and the digest of the secret part of a presented token; `None` when it is not shaped like one.
    pub fn parse(text: &str) -> Option<(Uuid, [u8; 32])> {
        let (id, secret) = text.trim().split_once('.')?;
        let id = Uuid::parse_str(id).ok()?;
        let secret = URL_SAFE_NO_PAD.decode(secret).ok()?;
        (secret.len() == 32).then(|| (id, digest(&secret)))
    }
}

/// A six-digit verification code and its digest.
pub fn verification_code() -> (SecretString, [u8; 32]) {
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let digest = digest(code.as_bytes());
    (SecretString::from(code), digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn the_policy_wants_length_and_nothing_silly() {
        assert_eq!(check_policy(&secret("short"), "alice"), Err(PasswordPolicyError::TooShort));
        assert_eq!(check_policy(&secret(&"x".repeat(1025)), "alice"), Err(PasswordPolicyError::TooLong));
        assert_eq!(check_policy(&secret("correct\nhorse"), "alice"), Err(PasswordPolicyError::ControlCharacter));
        assert_eq!(check_policy(&secret("AliceSmith"), "alicesmith"), Err(PasswordPolicyError::SameAsUsername));
        assert_eq!(check_policy(&secret("correct horse battery"), "alice"), Ok(()));
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password(secret("correct horse battery")).await.expect("hashed");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(secret("correct horse battery"), hash.clone()).await);
        assert!(!verify_password(secret("correct horse batterz"), hash.clone()).await);
        let again = hash_password(secret("correct horse battery")).await.expect("hashed");
        assert_ne!(hash, again, "every hash has its own salt");
        assert!(!verify_password(secret("x"), "not a hash".into()).await);
    }

    #[test]
    fn tokens_parse_back_to_their_id_and_digest_and_nothing_else_does() {
        let id = Uuid::now_v7();
        let token = Token::new(id);
        assert_eq!(Token::parse(token.text.expose_secret()), Some((id, token.digest)));
        let mut tampered = token.text.expose_secret().to_owned();
        // The last character changed to another one (it was once put back unchanged, 1 time in 64).
        let last = tampered.pop();
        tampered.push(if last == Some('A') { 'B' } else { 'A' });
        assert_ne!(Token::parse(&tampered).map(|t| t.1), Some(token.digest));
        for bad in ["", "x.y", &format!("{id}"), &format!("{id}.!!"), &format!("{id}.AAAA")] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn verification_codes_are_six_digits_with_their_digest() {
        let (code, digest_of) = verification_code();
        assert_eq!(code.expose_secret().len(), 6);
        assert!(code.expose_secret().chars().all(|c| c.is_ascii_digit()));
        assert_eq!(digest(code.expose_secret().as_bytes()), digest_of);
        assert!(digests_equal(&digest_of, &digest_of));
        assert!(!digests_equal(&digest_of, &digest(b"000000x")));
    }
}
