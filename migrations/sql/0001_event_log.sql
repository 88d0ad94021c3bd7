-- The event log: postgres-es's `events` and `snapshots` tables (their columns and keys exactly as postgres-es
-- expects), the envelope columns with defaults (so a plain postgres-es writer still produces a complete row),
-- and the site's dense, hash-chained order `event_log`, filled only by the sequencer.

-- UUIDv7 for rows written by foreign writers that do not name their event id (recall always does).
CREATE FUNCTION recall_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

-- The site this database belongs to; one row, written by `recall` at start.
CREATE TABLE recall_site (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION recall_local_site() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT coalesce((SELECT name FROM recall_site), 'local') $$;

-- Hybrid logical clock value for rows of foreign writers: the wall clock as NTP64 (seconds since the UNIX
-- epoch in the high 32 bits, fraction in the low 32), node 0. Same text form as recall's HlcTimestamp.
CREATE FUNCTION recall_hlc_now() RETURNS text
LANGUAGE sql VOLATILE AS $$
  SELECT lpad(to_hex((us / 1000000) * 4294967296 + (us % 1000000) * 4294967296 / 1000000), 16, '0') || '/0'
    FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) AS now
$$;

CREATE TABLE events (
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- the envelope
    event_id       uuid        NOT NULL DEFAULT recall_uuid_v7(),
    tenant_id      uuid,
    actor          text        NOT NULL DEFAULT ('db:' || session_user),
    impersonator   text,
    session_id     uuid,
    device_id      uuid,
    source_addr    inet,
    correlation_id uuid,
    causation_id   uuid,
    origin_site    text        NOT NULL DEFAULT recall_local_site(),
    origin_pos     bigint,
    hlc            text        NOT NULL DEFAULT recall_hlc_now(),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the writing transaction: the sequencer numbers rows only once every older transaction has finished
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
-- The sequencer's cursor walks this order.
CREATE INDEX events_sequencing_idx ON events (tx_id, aggregate_type, aggregate_id, sequence);

CREATE TABLE snapshots (
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- The site's log: position N is the N-th event this site sequenced. `hash` chains the log:
-- SHA-256(previous hash || canonical encoding of the event) (see commands/src/log/chain.rs).
CREATE TABLE event_log (
    global_position bigint      PRIMARY KEY CHECK (global_position > 0),
    event_id        uuid        NOT NULL UNIQUE,
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    sequenced_at    timestamptz NOT NULL DEFAULT now()
);

-- The sequencer's state: where its cursor stands in the (tx_id, aggregate_type, aggregate_id, sequence)
-- order, and the head of the chain.
CREATE TABLE log_sequencer (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cursor_tx      xid8    NOT NULL DEFAULT '0'::xid8,
    cursor_type    text    NOT NULL DEFAULT '',
    cursor_id      text    NOT NULL DEFAULT '',
    cursor_seq     bigint  NOT NULL DEFAULT -1,
    head_position  bigint  NOT NULL DEFAULT 0,
    head_hash      bytea   NOT NULL DEFAULT decode(repeat('00', 32), 'hex')
);
INSERT INTO log_sequencer DEFAULT VALUES;

-- The log is append-only: what was written is never changed.
CREATE FUNCTION recall_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'recall: % on % is refused: the event log is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION recall_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION recall_refuse_change();
CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log
  FOR EACH ROW EXECUTE FUNCTION recall_refuse_change();
CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log
  FOR EACH STATEMENT EXECUTE FUNCTION recall_refuse_change();
