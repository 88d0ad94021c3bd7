-- The write side's own tables beside the log.
--
-- `write_index`: keys at most one aggregate holds (a username, an extension within a tenant, a group name
-- within a tenant) and memberships the write side counts or looks up (role holders, group members,
-- unassigned calls by extension). Changed only by the command service, in the same transaction as the events
-- that claim or release a key, so two commands racing for one key cannot both win. Derived from the log:
-- it can be rebuilt from it. Keys compare byte-wise (COLLATE "C") so prefix ranges use the primary key.
CREATE TABLE write_index (
    namespace      text COLLATE "C" NOT NULL,
    key            text COLLATE "C" NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);
CREATE INDEX write_index_holder_idx ON write_index (aggregate_type, aggregate_id);

-- `secrets`: what must never enter the immutable log. Password hashes (Argon2id, PHC strings), digests of
-- tokens and verification codes, storage credentials (sealed with the site's secrets key). Events name
-- them by id; destroying one (crypto-shredding) clears its value and keeps the row as a tombstone.
CREATE TABLE secrets (
    id           uuid PRIMARY KEY,
    kind         text        NOT NULL,
    tenant_id    uuid,
    holder       text,
    value        bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CHECK ((value IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE INDEX secrets_holder_idx ON secrets (holder) WHERE destroyed_at IS NULL;
