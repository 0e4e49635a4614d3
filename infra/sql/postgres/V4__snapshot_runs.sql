-- The run snapshot: runs that found the source empty end 'idle'
-- after one metadata statement, and every run records how many statements
-- it sent to Snowflake. Re-runnable, like every file here.

ALTER TABLE replication_run
    ADD COLUMN IF NOT EXISTS snowflake_statements bigint NOT NULL DEFAULT 0;

ALTER TABLE replication_run DROP CONSTRAINT IF EXISTS replication_run_outcome_check;
ALTER TABLE replication_run ADD CONSTRAINT replication_run_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'partial', 'failed', 'skipped', 'idle'));
