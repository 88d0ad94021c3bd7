-- Job runs waiting for, or held by, a worker (DESIGN.md §8). A run's history is in the log (the `Job`
-- aggregate's events); this table is the work queue beside it: any recall process claims a due run with
-- `FOR UPDATE SKIP LOCKED`, holds it under a lease it renews while it works, and keeps the run's cursor here,
-- so a run whose worker died is taken over where it stopped once the lease has run out.
CREATE TABLE job_runs (
    run_id      uuid PRIMARY KEY,
    job_id      uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    -- 'manual' or 'schedule'; a scheduled run's slot (0 = the schedule's first time).
    trigger     text        NOT NULL CHECK (trigger IN ('manual', 'schedule')),
    slot        bigint,
    due_at      timestamptz NOT NULL DEFAULT now(),
    state       text        NOT NULL DEFAULT 'due' CHECK (state IN ('due', 'running', 'finished', 'failed')),
    worker      text,
    lease_until timestamptz,
    attempts    integer     NOT NULL DEFAULT 0,
    -- Where the run is (its cursor and counts), as the worker last saved it.
    cursor      jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A schedule's slot is run once, however many processes see it fall due. By its time, not its number:
-- an edited schedule numbers its slots afresh.
CREATE UNIQUE INDEX job_runs_slot_idx ON job_runs (job_id, due_at) WHERE trigger = 'schedule';
CREATE INDEX job_runs_claimable_idx ON job_runs (due_at) WHERE state IN ('due', 'running');
