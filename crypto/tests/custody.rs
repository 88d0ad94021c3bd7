//! Key custody: user keys sealed under passwords, grants of a tenant key, OpenSSL interchange.

use std::io::Write;
use std::process::{Command, Stdio};

use recall_crypto::file::{decrypt_in_memory, FileSealer};
use recall_crypto::{CryptoError, Grant, KeyImport, PrivateKey, SealedUserKey, UserKeyIds};
use uuid::Uuid;

fn ids(user: u128) -> UserKeyIds {
    UserKeyIds {
        tenant_id: Some(Uuid::from_u128(1)),
        user_id: Uuid::from_u128(user),
        key_id: Uuid::from_u128(user + 1000),
    }
}

#[test]
fn a_user_key_opens_only_with_the_password_and_the_ids_it_was_sealed_for() {
    let (sealed, unlocked) = SealedUserKey::generate(b"s3cret pass", &ids(5)).expect("generate");
    assert_eq!(sealed.public().expect("public"), unlocked.public());
    assert!(sealed.unlock(b"s3cret pass", &ids(5)).is_ok());
    assert_eq!(sealed.unlock(b"s3cret pasS", &ids(5)).unwrap_err(), CryptoError::WrongPassword);
    assert_eq!(sealed.unlock(b"s3cret pass", &ids(6)).unwrap_err(), CryptoError::WrongPassword);
    let json = serde_json::to_string(&sealed).expect("json");
    assert!(json.contains("\"m_cost_kib\":19456") && json.contains("\"t_cost\":2"), "{json}");
    let back: SealedUserKey = serde_json::from_str(&json).expect("back");
    assert!(back.unlock(b"s3cret pass", &ids(5)).is_ok());
}

#[test]
fn a_password_change_reseals_the_same_key_pair() {
    let (sealed, unlocked) = SealedUserKey::generate(b"old password", &ids(7)).expect("generate");
    let resealed = SealedUserKey::seal(&unlocked, b"new password").expect("reseal");
    assert_eq!(resealed.public_key, sealed.public_key);
    assert_ne!(resealed.kdf.salt, sealed.kdf.salt);
    assert!(resealed.unlock(b"new password", &ids(7)).is_ok());
    assert_eq!(resealed.unlock(b"old password", &ids(7)).unwrap_err(), CryptoError::WrongPassword);
}

#[test]
fn a_grant_gives_the_grantee_and_nobody_else_the_tenant_key() {
    let tenant = PrivateKey::generate().expect("tenant key");
    let key_id = Uuid::from_u128(77);
    let (_, alice) = SealedUserKey::generate(b"alice pw", &ids(10)).expect("alice");
    let (_, bob) = SealedUserKey::generate(b"bob pw", &ids(11)).expect("bob");
    let grant = Grant::seal(&tenant, key_id, &alice.public(), alice.ids().user_id).expect("grant");
    let opened = grant.open(&alice, key_id).expect("alice opens");
    assert_eq!(opened.public(), tenant.public());
    assert_eq!(grant.open(&bob, key_id).unwrap_err(), CryptoError::WrongKey);
    assert_eq!(grant.open(&alice, Uuid::from_u128(78)).unwrap_err(), CryptoError::WrongKey);
    // The opened key reads files written under the tenant's public key.
    let (mut sealer, mut stored) = FileSealer::new(&tenant.public(), key_id, Uuid::now_v7()).expect("sealer");
    sealer.push(b"hello, recorded world", &mut stored).expect("push");
    sealer.finish(&[], &mut stored).expect("finish");
    assert_eq!(*decrypt_in_memory(&stored, &opened, None).expect("reads"), b"hello, recorded world");
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (Debian package openssl)");
    child.stdin.take().expect("stdin").write_all(input).expect("write");
    let output = child.wait_with_output().expect("openssl output");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn an_exported_key_opens_in_openssl_and_openssl_keys_import() {
    let tenant = PrivateKey::generate().expect("key");
    let pem = tenant.export_encrypted_pem("export passphrase").expect("export");
    let public = openssl(&["pkey", "-passin", "pass:export passphrase", "-pubout"], pem.as_bytes());
    assert_eq!(String::from_utf8(public).expect("utf-8").trim(), tenant.public().to_pem().trim());

    let generated = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], b"");
    let import = KeyImport::from_pem(std::str::from_utf8(&generated).expect("pem"), None).expect("PKCS#8 imports");
    assert!(import.private.is_some());
    let traditional = openssl(&["pkey", "-traditional"], &generated);
    assert!(traditional.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    let again = KeyImport::from_pem(std::str::from_utf8(&traditional).expect("pem"), None).expect("PKCS#1 imports");
    assert_eq!(again.public, import.public);
    let encrypted = openssl(&["pkey", "-aes256", "-passout", "pass:pw"], &generated);
    let opened =
        KeyImport::from_pem(std::str::from_utf8(&encrypted).expect("pem"), Some("pw")).expect("encrypted imports");
    assert_eq!(opened.public, import.public);

    let small = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], b"");
    assert!(matches!(
        KeyImport::from_pem(std::str::from_utf8(&small).expect("pem"), None),
        Err(CryptoError::InvalidKey(_))
    ));
}
