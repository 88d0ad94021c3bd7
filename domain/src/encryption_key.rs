//! The encryption key aggregate (keyed by key id): a tenant's RSA key pair for recordings, who holds its
//! private part (one grant per user, wrapping it to that user's own key pair) and whether it was destroyed.
//! Key material never enters its events, plain or wrapped: they carry ids and the public key's fingerprint.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::index::{moves, IndexChange, IndexKey, Namespace};
use crate::names::{display_name, NameError};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionKey {
    tenant_id: Option<Uuid>,
    name: String,
    fingerprint: String,
    origin: Option<KeyOrigin>,
    with_private: bool,
    holders: BTreeSet<Uuid>,
    destroyed: bool,
}

/// Where a key pair came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrigin {
    /// Made by recall.
    Generated,
    /// Brought by the tenant, with or without its private part.
    Imported,
}

/// Why a user's grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantEndReason {
    /// Taken away on purpose, by someone the write side authorised.
    Revoked,
    /// An administrator reset the user's password: the user's key pair, which the grant wraps to, is lost.
    PasswordReset,
    /// The user was deactivated.
    UserDeactivated,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EncryptionKeyCommand {
    /// recall made a new key pair; `holder` (who asked for it) receives the first grant.
    GenerateEncryptionKey {
        tenant_id: Uuid,
        name: String,
        fingerprint: String,
        holder: Uuid,
    },
    /// The tenant brought a key pair. Without its private part the site records files it cannot play and
    /// nobody holds the key; with it, `holder` (who imported it) receives the first grant and is required,
    /// since the private part is kept only as grants.
    ImportEncryptionKey {
        tenant_id: Uuid,
        name: String,
        fingerprint: String,
        with_private: bool,
        holder: Option<Uuid>,
    },
    /// `by` grants the key to `user_id`: only a holder may, whatever their role. Granting to a holder is no
    /// event.
    GrantEncryptionKey {
        by: Uuid,
        user_id: Uuid,
    },
    /// Ends `user_id`'s grant. A holder's revocation of a non-holder is refused; the write side's automatic
    /// revocations (a password reset, a deactivation) of a non-holder are no event, so it need not check.
    RevokeEncryptionKeyGrant {
        user_id: Uuid,
        reason: GrantEndReason,
    },
    /// `by` exports the public part (whoever the write side authorised) or the whole pair (a holder only).
    ExportEncryptionKey {
        by: Uuid,
        with_private: bool,
    },
    RenameEncryptionKey {
        name: String,
    },
    /// Crypto-shredding: the write side deletes every grant, so files encrypted with this key can never be
    /// played again. The key keeps its name and fingerprint for the record but frees the name.
    DestroyEncryptionKey,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncryptionKeyEvent {
    EncryptionKeyGenerated { tenant_id: Uuid, name: String, fingerprint: String },
    EncryptionKeyImported { tenant_id: Uuid, name: String, fingerprint: String, with_private: bool },
    EncryptionKeyGranted { user_id: Uuid },
    EncryptionKeyGrantRevoked { user_id: Uuid, reason: GrantEndReason },
    EncryptionKeyExported { with_private: bool },
    EncryptionKeyRenamed { name: String },
    EncryptionKeyDestroyed,
}

impl DomainEvent for EncryptionKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::EncryptionKeyGenerated { .. } => "EncryptionKeyGenerated",
            Self::EncryptionKeyImported { .. } => "EncryptionKeyImported",
            Self::EncryptionKeyGranted { .. } => "EncryptionKeyGranted",
            Self::EncryptionKeyGrantRevoked { .. } => "EncryptionKeyGrantRevoked",
            Self::EncryptionKeyExported { .. } => "EncryptionKeyExported",
            Self::EncryptionKeyRenamed { .. } => "EncryptionKeyRenamed",
            Self::EncryptionKeyDestroyed => "EncryptionKeyDestroyed",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionKeyError {
    #[error("this encryption key already exists")]
    AlreadyExists,
    #[error("no such encryption key")]
    NotFound,
    #[error("this encryption key was destroyed")]
    Destroyed,
    #[error("invalid encryption key name: {0}")]
    InvalidName(NameError),
    #[error("a key fingerprint must be the SHA-256 digest of the public key as 64 hexadecimal digits")]
    InvalidFingerprint,
    #[error("a key imported without its private part cannot be held by anyone")]
    HolderWithoutPrivatePart,
    #[error("an imported private part must be granted to the user who imports it: it is kept only as grants")]
    PrivatePartWithoutHolder,
    #[error("this key was imported without its private part: nobody can hold, grant or export it")]
    NoPrivatePart,
    #[error("only a user who holds this key may grant it to another user, whatever their role")]
    GrantNotAllowed,
    #[error("only a user who holds this key may export its private part")]
    PrivateExportNotAllowed,
    #[error("this user does not hold this key")]
    NotAHolder,
}

/// The fingerprint of a public key as recall writes it: the SHA-256 digest as 64 lower-case hexadecimal
/// digits (surrounding white space removed, upper case accepted); `None` if `raw` is not one.
pub fn sha256_fingerprint(raw: &str) -> Option<String> {
    let fingerprint = raw.trim();
    let valid = fingerprint.len() == 64 && fingerprint.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| fingerprint.to_ascii_lowercase())
}

impl EncryptionKey {
    /// Whether the key was ever generated or imported (a destroyed key still exists).
    pub fn exists(&self) -> bool {
        self.origin.is_some()
    }

    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    /// Empty before the key exists; a destroyed key keeps its name (but no longer claims it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 digest of the public key, in hexadecimal; empty before the key exists.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `None` before the key exists.
    pub fn origin(&self) -> Option<KeyOrigin> {
        self.origin
    }

    /// Whether the site has the private part, so that files encrypted with this key can be played. A
    /// destroyed key keeps the answer it had: what it tells is whether its grants ever existed.
    pub fn with_private(&self) -> bool {
        self.with_private
    }

    /// Whether `user` has a grant of the key.
    pub fn holds(&self, user: Uuid) -> bool {
        self.holders.contains(&user)
    }

    /// The users with a grant (none after destruction).
    pub fn holders(&self) -> &BTreeSet<Uuid> {
        &self.holders
    }

    /// Generated or imported and not destroyed.
    fn usable(&self) -> Result<(), EncryptionKeyError> {
        if !self.exists() {
            Err(EncryptionKeyError::NotFound)
        } else if self.destroyed {
            Err(EncryptionKeyError::Destroyed)
        } else {
            Ok(())
        }
    }

    fn new_key(&self, name: &str, fingerprint: &str) -> Result<(String, String), EncryptionKeyError> {
        if self.destroyed {
            return Err(EncryptionKeyError::Destroyed);
        }
        if self.exists() {
            return Err(EncryptionKeyError::AlreadyExists);
        }
        let name = display_name(name).map_err(EncryptionKeyError::InvalidName)?;
        let fingerprint = sha256_fingerprint(fingerprint).ok_or(EncryptionKeyError::InvalidFingerprint)?;
        Ok((name, fingerprint))
    }

    fn name_key(&self, name: &str) -> Option<IndexKey> {
        self.tenant_id.map(|tenant| IndexKey::name(Namespace::EncryptionKeyName(tenant), name))
    }
}

impl Aggregate for EncryptionKey {
    const TYPE: &'static str = "EncryptionKey";
    type Command = EncryptionKeyCommand;
    type Event = EncryptionKeyEvent;
    type Error = EncryptionKeyError;
    type Services = ();

    async fn decide(
        &self,
        command: EncryptionKeyCommand,
        _: &(),
    ) -> Result<Vec<EncryptionKeyEvent>, EncryptionKeyError> {
        use EncryptionKeyCommand as C;
        use EncryptionKeyError as Error;
        use EncryptionKeyEvent as E;
        match command {
            C::GenerateEncryptionKey { tenant_id, name, fingerprint, holder } => {
                let (name, fingerprint) = self.new_key(&name, &fingerprint)?;
                Ok(vec![
                    E::EncryptionKeyGenerated { tenant_id, name, fingerprint },
                    E::EncryptionKeyGranted { user_id: holder },
                ])
            }
            C::ImportEncryptionKey { tenant_id, name, fingerprint, with_private, holder } => {
                let (name, fingerprint) = self.new_key(&name, &fingerprint)?;
                match (with_private, holder) {
                    (false, Some(_)) => Err(Error::HolderWithoutPrivatePart),
                    (true, None) => Err(Error::PrivatePartWithoutHolder),
                    (_, holder) => {
                        let imported = E::EncryptionKeyImported { tenant_id, name, fingerprint, with_private };
                        let granted = holder.map(|user_id| E::EncryptionKeyGranted { user_id });
                        Ok(std::iter::once(imported).chain(granted).collect())
                    }
                }
            }
            C::GrantEncryptionKey { by, user_id } => {
                self.usable()?;
                if !self.with_private {
                    return Err(Error::NoPrivatePart);
                }
                if !self.holds(by) {
                    return Err(Error::GrantNotAllowed);
                }
                Ok(if self.holds(user_id) { vec![] } else { vec![E::EncryptionKeyGranted { user_id }] })
            }
            C::RevokeEncryptionKeyGrant { user_id, reason } => {
                if !self.exists() {
                    return Err(Error::NotFound);
                }
                // A destroyed key has no holders, so the write side's automatic revocations find nothing.
                if reason == GrantEndReason::Revoked {
                    self.usable()?;
                    if !self.holds(user_id) {
                        return Err(Error::NotAHolder);
                    }
                }
                Ok(if self.holds(user_id) { vec![E::EncryptionKeyGrantRevoked { user_id, reason }] } else { vec![] })
            }
            C::ExportEncryptionKey { by, with_private } => {
                self.usable()?;
                if with_private && !self.with_private {
                    return Err(Error::NoPrivatePart);
                }
                if with_private && !self.holds(by) {
                    return Err(Error::PrivateExportNotAllowed);
                }
                Ok(vec![E::EncryptionKeyExported { with_private }])
            }
            C::RenameEncryptionKey { name } => {
                self.usable()?;
                let name = display_name(&name).map_err(Error::InvalidName)?;
                Ok(if name == self.name { vec![] } else { vec![E::EncryptionKeyRenamed { name }] })
            }
            C::DestroyEncryptionKey => {
                self.usable()?;
                Ok(vec![E::EncryptionKeyDestroyed])
            }
        }
    }

    fn apply(&mut self, event: EncryptionKeyEvent) {
        use EncryptionKeyEvent as E;
        match event {
            E::EncryptionKeyGenerated { tenant_id, name, fingerprint } => {
                self.tenant_id = Some(tenant_id);
                self.name = name;
                self.fingerprint = fingerprint;
                self.origin = Some(KeyOrigin::Generated);
                self.with_private = true;
            }
            E::EncryptionKeyImported { tenant_id, name, fingerprint, with_private } => {
                self.tenant_id = Some(tenant_id);
                self.name = name;
                self.fingerprint = fingerprint;
                self.origin = Some(KeyOrigin::Imported);
                self.with_private = with_private;
            }
            E::EncryptionKeyGranted { user_id } => {
                self.holders.insert(user_id);
            }
            E::EncryptionKeyGrantRevoked { user_id, .. } => {
                self.holders.remove(&user_id);
            }
            E::EncryptionKeyExported { .. } => {}
            E::EncryptionKeyRenamed { name } => self.name = name,
            E::EncryptionKeyDestroyed => {
                self.destroyed = true;
                self.holders.clear();
            }
        }
    }

    /// The name is claimed on generation or import, moved on rename and released on destruction.
    fn index_changes(&self, event: &EncryptionKeyEvent) -> Vec<IndexChange> {
        use EncryptionKeyEvent as E;
        match event {
            E::EncryptionKeyGenerated { tenant_id, name, .. } | E::EncryptionKeyImported { tenant_id, name, .. } => {
                vec![IndexChange::Claim(IndexKey::name(Namespace::EncryptionKeyName(*tenant_id), name))]
            }
            E::EncryptionKeyRenamed { name } => moves(&self.name_key(&self.name), &self.name_key(name)),
            E::EncryptionKeyDestroyed => self.name_key(&self.name).map(IndexChange::Release).into_iter().collect(),
            E::EncryptionKeyGranted { .. } | E::EncryptionKeyGrantRevoked { .. } | E::EncryptionKeyExported { .. } => {
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const TENANT: Uuid = Uuid::from_u128(7);
    const ALICE: Uuid = Uuid::from_u128(0xA11CE);
    const BOB: Uuid = Uuid::from_u128(0xB0B);
    const ROOT: Uuid = Uuid::from_u128(0x1);
    const FINGERPRINT: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn generate(name: &str, fingerprint: &str) -> EncryptionKeyCommand {
        EncryptionKeyCommand::GenerateEncryptionKey {
            tenant_id: TENANT,
            name: name.into(),
            fingerprint: fingerprint.into(),
            holder: ALICE,
        }
    }

    fn import(with_private: bool, holder: Option<Uuid>) -> EncryptionKeyCommand {
        EncryptionKeyCommand::ImportEncryptionKey {
            tenant_id: TENANT,
            name: "Legacy".into(),
            fingerprint: FINGERPRINT.into(),
            with_private,
            holder,
        }
    }

    /// Generated by Alice, who holds it.
    fn generated() -> Vec<EncryptionKeyEvent> {
        vec![
            EncryptionKeyEvent::EncryptionKeyGenerated {
                tenant_id: TENANT,
                name: "Main".into(),
                fingerprint: FINGERPRINT.into(),
            },
            EncryptionKeyEvent::EncryptionKeyGranted { user_id: ALICE },
        ]
    }

    /// Imported without its private part: held by nobody.
    fn public_only() -> Vec<EncryptionKeyEvent> {
        vec![EncryptionKeyEvent::EncryptionKeyImported {
            tenant_id: TENANT,
            name: "Legacy".into(),
            fingerprint: FINGERPRINT.into(),
            with_private: false,
        }]
    }

    fn destroyed() -> Vec<EncryptionKeyEvent> {
        let mut events = generated();
        events.push(EncryptionKeyEvent::EncryptionKeyDestroyed);
        events
    }

    fn grant(by: Uuid, user_id: Uuid) -> EncryptionKeyCommand {
        EncryptionKeyCommand::GrantEncryptionKey { by, user_id }
    }

    fn revoke(user_id: Uuid, reason: GrantEndReason) -> EncryptionKeyCommand {
        EncryptionKeyCommand::RevokeEncryptionKeyGrant { user_id, reason }
    }

    fn export(by: Uuid, with_private: bool) -> EncryptionKeyCommand {
        EncryptionKeyCommand::ExportEncryptionKey { by, with_private }
    }

    fn rename(name: &str) -> EncryptionKeyCommand {
        EncryptionKeyCommand::RenameEncryptionKey { name: name.into() }
    }

    #[test]
    fn a_generated_key_is_held_by_its_creator() {
        assert_eq!(when::<EncryptionKey>([], generate(" Main ", FINGERPRINT), &()), Ok(generated()));
        let key = given::<EncryptionKey>(generated());
        assert!(key.exists() && !key.is_destroyed() && key.with_private());
        assert_eq!((key.tenant_id(), key.name(), key.fingerprint()), (Some(TENANT), "Main", FINGERPRINT));
        assert_eq!(key.origin(), Some(KeyOrigin::Generated));
        assert!(key.holds(ALICE) && !key.holds(BOB));
        assert_eq!(key.holders(), &BTreeSet::from([ALICE]));
    }

    #[test]
    fn the_fingerprint_is_a_sha256_digest_in_lower_case_hexadecimal() {
        let upper = format!(" {} ", FINGERPRINT.to_ascii_uppercase());
        assert_eq!(when::<EncryptionKey>([], generate("Main", &upper), &()), Ok(generated()));
        for bad in [
            "",
            "9f86d081",
            &FINGERPRINT.replace('9', "g"),
            &format!("{FINGERPRINT}0"),
            &format!("SHA256:{FINGERPRINT}"),
        ] {
            assert_eq!(
                when::<EncryptionKey>([], generate("Main", bad), &()),
                Err(EncryptionKeyError::InvalidFingerprint),
                "{bad:?}"
            );
        }
        assert_eq!(sha256_fingerprint(&upper).as_deref(), Some(FINGERPRINT));
    }

    #[test]
    fn a_key_cannot_be_made_twice_or_with_an_invalid_name() {
        assert_eq!(
            when::<EncryptionKey>(generated(), generate("Other", FINGERPRINT), &()),
            Err(EncryptionKeyError::AlreadyExists)
        );
        assert_eq!(
            when::<EncryptionKey>(public_only(), import(false, None), &()),
            Err(EncryptionKeyError::AlreadyExists)
        );
        assert_eq!(when::<EncryptionKey>(destroyed(), import(false, None), &()), Err(EncryptionKeyError::Destroyed));
        assert_eq!(
            when::<EncryptionKey>([], generate("  ", FINGERPRINT), &()),
            Err(EncryptionKeyError::InvalidName(NameError::Empty))
        );
    }

    #[test]
    fn an_imported_key_with_its_private_part_is_held_by_the_importer() {
        assert_eq!(
            when::<EncryptionKey>([], import(true, Some(BOB)), &()),
            Ok(vec![
                EncryptionKeyEvent::EncryptionKeyImported {
                    tenant_id: TENANT,
                    name: "Legacy".into(),
                    fingerprint: FINGERPRINT.into(),
                    with_private: true,
                },
                EncryptionKeyEvent::EncryptionKeyGranted { user_id: BOB },
            ])
        );
        assert_eq!(
            when::<EncryptionKey>([], import(true, None), &()),
            Err(EncryptionKeyError::PrivatePartWithoutHolder)
        );
    }

    #[test]
    fn an_imported_public_key_is_held_by_nobody() {
        assert_eq!(when::<EncryptionKey>([], import(false, None), &()), Ok(public_only()));
        assert_eq!(
            when::<EncryptionKey>([], import(false, Some(BOB)), &()),
            Err(EncryptionKeyError::HolderWithoutPrivatePart)
        );
        let key = given::<EncryptionKey>(public_only());
        assert!(key.exists() && !key.with_private() && key.holders().is_empty());
        assert_eq!(key.origin(), Some(KeyOrigin::Imported));
    }

    #[test]
    fn a_holder_grants_the_key_to_another_user_once() {
        assert_eq!(
            when::<EncryptionKey>(generated(), grant(ALICE, BOB), &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyGranted { user_id: BOB }])
        );
        let mut granted = generated();
        granted.push(EncryptionKeyEvent::EncryptionKeyGranted { user_id: BOB });
        assert_eq!(when::<EncryptionKey>(granted.clone(), grant(ALICE, BOB), &()), Ok(vec![]));
        assert_eq!(when::<EncryptionKey>(granted.clone(), grant(BOB, ALICE), &()), Ok(vec![]));
        assert_eq!(
            when::<EncryptionKey>(granted.clone(), grant(BOB, ROOT), &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyGranted { user_id: ROOT }])
        );
        assert_eq!(given::<EncryptionKey>(granted).holders(), &BTreeSet::from([ALICE, BOB]));
    }

    #[test]
    fn an_administrator_without_a_grant_cannot_grant_the_key() {
        assert_eq!(when::<EncryptionKey>(generated(), grant(ROOT, BOB), &()), Err(EncryptionKeyError::GrantNotAllowed));
        assert_eq!(
            when::<EncryptionKey>(generated(), grant(ROOT, ROOT), &()),
            Err(EncryptionKeyError::GrantNotAllowed)
        );
    }

    #[test]
    fn a_key_without_its_private_part_cannot_be_granted() {
        assert_eq!(
            when::<EncryptionKey>(public_only(), grant(ALICE, BOB), &()),
            Err(EncryptionKeyError::NoPrivatePart)
        );
    }

    #[test]
    fn a_holder_revokes_a_grant_but_not_one_that_does_not_exist() {
        assert_eq!(
            when::<EncryptionKey>(generated(), revoke(ALICE, GrantEndReason::Revoked), &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyGrantRevoked { user_id: ALICE, reason: GrantEndReason::Revoked }])
        );
        assert_eq!(
            when::<EncryptionKey>(generated(), revoke(BOB, GrantEndReason::Revoked), &()),
            Err(EncryptionKeyError::NotAHolder)
        );
        let mut revoked = generated();
        revoked.push(EncryptionKeyEvent::EncryptionKeyGrantRevoked { user_id: ALICE, reason: GrantEndReason::Revoked });
        let key = given::<EncryptionKey>(revoked);
        assert!(!key.holds(ALICE) && key.holders().is_empty());
    }

    #[test]
    fn a_password_reset_or_deactivation_ends_the_users_grant_if_there_is_one() {
        for reason in [GrantEndReason::PasswordReset, GrantEndReason::UserDeactivated] {
            assert_eq!(
                when::<EncryptionKey>(generated(), revoke(ALICE, reason), &()),
                Ok(vec![EncryptionKeyEvent::EncryptionKeyGrantRevoked { user_id: ALICE, reason }]),
                "{reason:?}"
            );
            assert_eq!(when::<EncryptionKey>(generated(), revoke(BOB, reason), &()), Ok(vec![]), "{reason:?}");
            assert_eq!(when::<EncryptionKey>(public_only(), revoke(BOB, reason), &()), Ok(vec![]), "{reason:?}");
            assert_eq!(when::<EncryptionKey>(destroyed(), revoke(ALICE, reason), &()), Ok(vec![]), "{reason:?}");
            assert_eq!(when::<EncryptionKey>([], revoke(ALICE, reason), &()), Err(EncryptionKeyError::NotFound));
        }
    }

    #[test]
    fn anyone_authorised_exports_the_public_part_but_only_a_holder_the_private_part() {
        for (events, by) in [(generated(), ROOT), (generated(), ALICE), (public_only(), ROOT)] {
            assert_eq!(
                when::<EncryptionKey>(events, export(by, false), &()),
                Ok(vec![EncryptionKeyEvent::EncryptionKeyExported { with_private: false }])
            );
        }
        assert_eq!(
            when::<EncryptionKey>(generated(), export(ALICE, true), &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyExported { with_private: true }])
        );
        assert_eq!(
            when::<EncryptionKey>(generated(), export(ROOT, true), &()),
            Err(EncryptionKeyError::PrivateExportNotAllowed)
        );
        assert_eq!(
            when::<EncryptionKey>(public_only(), export(ROOT, true), &()),
            Err(EncryptionKeyError::NoPrivatePart)
        );
    }

    #[test]
    fn renaming_is_an_event_only_when_the_name_changes() {
        assert_eq!(
            when::<EncryptionKey>(generated(), rename(" Key 2026 "), &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyRenamed { name: "Key 2026".into() }])
        );
        assert_eq!(when::<EncryptionKey>(generated(), rename(" Main "), &()), Ok(vec![]));
        assert_eq!(
            when::<EncryptionKey>(generated(), rename(""), &()),
            Err(EncryptionKeyError::InvalidName(NameError::Empty))
        );
    }

    #[test]
    fn destroying_a_key_ends_every_grant() {
        assert_eq!(
            when::<EncryptionKey>(generated(), EncryptionKeyCommand::DestroyEncryptionKey, &()),
            Ok(vec![EncryptionKeyEvent::EncryptionKeyDestroyed])
        );
        let key = given::<EncryptionKey>(destroyed());
        assert!(key.exists() && key.is_destroyed());
        assert!(key.holders().is_empty() && !key.holds(ALICE));
        assert_eq!((key.name(), key.fingerprint()), ("Main", FINGERPRINT));
    }

    #[test]
    fn a_destroyed_key_refuses_every_command() {
        for command in [
            generate("Main", FINGERPRINT),
            import(false, None),
            grant(ALICE, BOB),
            revoke(ALICE, GrantEndReason::Revoked),
            export(ALICE, false),
            export(ALICE, true),
            rename("Other"),
            EncryptionKeyCommand::DestroyEncryptionKey,
        ] {
            assert_eq!(
                when::<EncryptionKey>(destroyed(), command.clone(), &()),
                Err(EncryptionKeyError::Destroyed),
                "{command:?}"
            );
        }
    }

    #[test]
    fn an_unknown_key_refuses_every_change() {
        for command in [
            grant(ALICE, BOB),
            revoke(ALICE, GrantEndReason::Revoked),
            export(ALICE, false),
            rename("Other"),
            EncryptionKeyCommand::DestroyEncryptionKey,
        ] {
            assert_eq!(
                when::<EncryptionKey>([], command.clone(), &()),
                Err(EncryptionKeyError::NotFound),
                "{command:?}"
            );
        }
        assert!(!EncryptionKey::default().exists());
    }

    #[test]
    fn events_carry_ids_and_the_fingerprint_and_name_reasons_in_snake_case() {
        let json = serde_json::to_value(&generated()[0]).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"EncryptionKeyGenerated": {
                "tenant_id": TENANT,
                "name": "Main",
                "fingerprint": FINGERPRINT,
            }})
        );
        let revoked =
            EncryptionKeyEvent::EncryptionKeyGrantRevoked { user_id: ALICE, reason: GrantEndReason::PasswordReset };
        let json = serde_json::to_value(&revoked).expect("serializes");
        assert_eq!(json["EncryptionKeyGrantRevoked"]["reason"], "password_reset");
        assert_eq!(serde_json::from_value::<EncryptionKeyEvent>(json).expect("deserializes"), revoked);
        for (reason, text) in [
            (GrantEndReason::Revoked, "revoked"),
            (GrantEndReason::PasswordReset, "password_reset"),
            (GrantEndReason::UserDeactivated, "user_deactivated"),
        ] {
            assert_eq!(serde_json::to_value(reason).expect("serializes"), text);
        }
        assert_eq!(revoked.event_type(), "EncryptionKeyGrantRevoked");
        assert_eq!(revoked.event_version(), "1");
    }

    #[test]
    fn the_name_is_claimed_when_made_moved_on_rename_and_released_on_destruction() {
        let key = |name: &str| IndexKey::name(Namespace::EncryptionKeyName(TENANT), name);
        assert_eq!(EncryptionKey::default().index_changes(&generated()[0]), vec![IndexChange::Claim(key("main"))]);
        assert_eq!(EncryptionKey::default().index_changes(&public_only()[0]), vec![IndexChange::Claim(key("legacy"))]);
        let state = given::<EncryptionKey>(generated());
        assert_eq!(
            state.index_changes(&EncryptionKeyEvent::EncryptionKeyRenamed { name: "Old".into() }),
            vec![IndexChange::Release(key("main")), IndexChange::Claim(key("old"))]
        );
        assert_eq!(state.index_changes(&EncryptionKeyEvent::EncryptionKeyRenamed { name: "MAIN".into() }), vec![]);
        assert_eq!(state.index_changes(&EncryptionKeyEvent::EncryptionKeyGranted { user_id: BOB }), vec![]);
        assert_eq!(
            state.index_changes(&EncryptionKeyEvent::EncryptionKeyDestroyed),
            vec![IndexChange::Release(key("main"))]
        );
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_key() {
        let (state, events) = run::<EncryptionKey>(
            [
                generate("Main", FINGERPRINT),
                grant(ALICE, BOB),
                grant(BOB, ROOT),
                revoke(ALICE, GrantEndReason::PasswordReset),
                export(BOB, true),
                rename("Main 2026"),
            ],
            &(),
        );
        assert_eq!(events.len(), 7);
        assert_eq!(given::<EncryptionKey>(events), state);
        assert_eq!(state.holders(), &BTreeSet::from([BOB, ROOT]));
        assert_eq!(state.name(), "Main 2026");
    }
}
