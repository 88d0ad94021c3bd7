-- Key custody for file encryption. Public keys are kept in clear; private keys only sealed: a user's
-- private key under a key derived from their password, a tenant's private key once per holder, wrapped to
-- that holder's public key (a grant). Events name these rows by id and never carry key material, so
-- deleting a row (crypto-shredding) makes what it sealed unreadable although the log is immutable.

-- A tenant's RSA-2048 public key (SubjectPublicKeyInfo DER), which the recorder encrypts new files with.
CREATE TABLE tenant_keys (
    key_id      uuid PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    public_key  bytea       NOT NULL,
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_keys_tenant_idx ON tenant_keys (tenant_id);

-- A user's own key pair: `sealed` is recall_crypto's SealedUserKey (public key, Argon2id parameters and
-- salt, nonce, the private key sealed with AES-256-GCM under the tenant, user and key ids). `key_id` is
-- the id sealed in; a password reset by an administrator deletes the row (and the user's grants).
CREATE TABLE user_keys (
    user_id     uuid PRIMARY KEY,
    key_id      uuid        NOT NULL UNIQUE,
    fingerprint text        NOT NULL,
    sealed      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A tenant key's private part wrapped to one holder (recall_crypto's Grant).
CREATE TABLE key_grants (
    key_id     uuid        NOT NULL REFERENCES tenant_keys ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    sealed     jsonb       NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, user_id)
);
CREATE INDEX key_grants_user_idx ON key_grants (user_id);
