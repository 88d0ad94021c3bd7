//! File-encryption keys: generate, import, grant, revoke, export, rename, activate, destroy. PEMs and
//! passphrases arrive as `String`s and go straight to the administration service; an export's PEM comes
//! back only in the result's `issuedToken`.

use async_graphql::{Context, InputObject, Object};
use recall_commands::admin::{AdminCommand, EncryptionKeyRequest};
use secrecy::SecretString;
use uuid::Uuid;

use super::{new_id, run, Changed, MutationResult};

async fn key(ctx: &Context<'_>, key_id: Uuid, request: EncryptionKeyRequest) -> async_graphql::Result<MutationResult> {
    run(ctx, Changed::EncryptionKey, key_id, AdminCommand::EncryptionKey { key_id, request }).await
}

#[derive(InputObject, Debug)]
pub struct GenerateEncryptionKeyInput {
    /// The new key's id (made here when left out).
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    pub name: String,
}

#[derive(InputObject)]
pub struct ImportEncryptionKeyInput {
    pub id: Option<Uuid>,
    pub tenant_id: Uuid,
    pub name: String,
    /// `PUBLIC KEY`, `RSA PUBLIC KEY`, `PRIVATE KEY`, `RSA PRIVATE KEY` or `ENCRYPTED PRIVATE KEY` PEM (RSA-2048).
    pub pem: String,
    /// The passphrase of an `ENCRYPTED PRIVATE KEY`.
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for ImportEncryptionKeyInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportEncryptionKeyInput")
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .finish()
    }
}

#[derive(Debug, Default)]
pub struct KeysMutation;

#[Object]
impl KeysMutation {
    /// Makes a new RSA-2048 key pair for a tenant; the viewer holds it. Needs a session signed in with a
    /// password on this server (the viewer's own key pair wraps it).
    async fn generate_encryption_key(
        &self,
        ctx: &Context<'_>,
        input: GenerateEncryptionKeyInput,
    ) -> async_graphql::Result<MutationResult> {
        let request = EncryptionKeyRequest::Generate { tenant_id: input.tenant_id, name: input.name };
        key(ctx, new_id(input.id), request).await
    }

    /// Brings a key pair from a PEM: the public key alone (recordings are encrypted, nobody here can play
    /// them) or with its private part (the viewer holds it).
    async fn import_encryption_key(
        &self,
        ctx: &Context<'_>,
        input: ImportEncryptionKeyInput,
    ) -> async_graphql::Result<MutationResult> {
        let request = EncryptionKeyRequest::Import {
            tenant_id: input.tenant_id,
            name: input.name,
            pem: SecretString::from(input.pem),
            passphrase: input.passphrase.map(SecretString::from),
        };
        key(ctx, new_id(input.id), request).await
    }

    /// Lets a user play what the key encrypted. Only a holder may grant, whatever their role; the user must
    /// have signed in once with their password (that makes their own key pair).
    async fn grant_encryption_key(
        &self,
        ctx: &Context<'_>,
        key_id: Uuid,
        user_id: Uuid,
    ) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Grant { user_id }).await
    }

    async fn revoke_encryption_key(
        &self,
        ctx: &Context<'_>,
        key_id: Uuid,
        user_id: Uuid,
    ) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Revoke { user_id }).await
    }

    /// The key as PEM in `issuedToken`: the public key, or with `passphrase` (12 characters or more; holders
    /// only) the private key encrypted under it (PKCS#8, which OpenSSL reads). Keep private exports safe:
    /// they recover recordings when every holder has forgotten their password.
    async fn export_encryption_key(
        &self,
        ctx: &Context<'_>,
        key_id: Uuid,
        passphrase: Option<String>,
    ) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Export { passphrase: passphrase.map(SecretString::from) }).await
    }

    async fn rename_encryption_key(
        &self,
        ctx: &Context<'_>,
        key_id: Uuid,
        name: String,
    ) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Rename { name }).await
    }

    /// New recordings of the key's tenant are encrypted with this key (rotation; older files keep theirs).
    async fn activate_encryption_key(&self, ctx: &Context<'_>, key_id: Uuid) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Activate).await
    }

    /// Crypto-shredding: every grant is destroyed and nothing the key encrypted can be played again. Refused
    /// for the active key while the tenant's file encryption is on.
    async fn destroy_encryption_key(&self, ctx: &Context<'_>, key_id: Uuid) -> async_graphql::Result<MutationResult> {
        key(ctx, key_id, EncryptionKeyRequest::Destroy).await
    }
}
