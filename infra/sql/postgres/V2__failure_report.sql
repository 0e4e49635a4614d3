-- The durable failure report: one row per dead-letter message, written by the
-- dlq-reporter before it deletes the message. Operators replay or resolve rows
-- with the `countries` command.
CREATE TABLE IF NOT EXISTS failure_report (
    message_id      text        PRIMARY KEY,  -- SQS message id: a message seen twice is stored once
    record_key      text,                     -- country_id:"country"; the same row enqueued twice shares it
    country_id      numeric,                  -- as read from Snowflake: may be NULL or exceed 32 bits
    country         text,                     -- as read from Snowflake: untrimmed, original case, may be NULL
    error_class     text        NOT NULL,     -- invalid | rejected | transient | malformed
    sqlstate        text,
    error_message   text        NOT NULL,
    attempts        integer,                  -- SQS ApproximateReceiveCount when reported
    first_failed_at timestamptz,              -- from the message (the replicator's first failure)
    last_failed_at  timestamptz NOT NULL,     -- no later than this: when the reporter took it from the DLQ
    source_run_id   uuid,                     -- replicator run (replication_run.run_id)
    report_run_id   uuid        NOT NULL,
    raw_body        text,                     -- only for bodies that did not parse (truncated)
    reported_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolution      text                      -- replayed | redriven | a note from an operator
);

CREATE INDEX IF NOT EXISTS failure_report_unresolved
    ON failure_report (reported_at) WHERE resolved_at IS NULL;

-- Which digest email announced each record, so that a record is emailed once
-- even when its dead letter could not be deleted and comes back.
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS emailed_in uuid;        -- report_run_id of that email
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS emailed_at timestamptz;
