-- The replica, the run ledger. Applied by the local stack and the tests, so
-- that what is tested is what is deployed.

-- `case` is a reserved word: always quoted.
CREATE TABLE IF NOT EXISTS "case" (
    country_id integer    PRIMARY KEY,
    country    varchar(3) NOT NULL
);

-- One row per replicator run: written when the run starts (outcome
-- 'running'), updated when it ends. A run that stays 'running' crashed.
CREATE TABLE IF NOT EXISTS replication_run (
    run_id        uuid        PRIMARY KEY,
    trigger_id    text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    outcome       text        NOT NULL
                  CHECK (outcome IN ('running', 'succeeded', 'partial', 'failed', 'skipped')),
    rows_read     bigint      NOT NULL DEFAULT 0,
    rows_written  bigint      NOT NULL DEFAULT 0,
    rows_changed  bigint      NOT NULL DEFAULT 0,
    rows_invalid  bigint      NOT NULL DEFAULT 0,
    rows_rejected bigint      NOT NULL DEFAULT 0,
    rows_enqueued bigint      NOT NULL DEFAULT 0,
    rows_deferred bigint      NOT NULL DEFAULT 0,
    rows_deferred_duplicates bigint NOT NULL DEFAULT 0,
    rows_deleted  bigint      NOT NULL DEFAULT 0,
    error         text
);

CREATE INDEX IF NOT EXISTS replication_run_started_at ON replication_run (started_at DESC);
