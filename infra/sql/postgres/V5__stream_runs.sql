-- Stream mode: the publisher's runs share the ledger and the run
-- lock with the replicator's; `sink` says where a run sent its rows
-- ('postgres' for the replicator, 'changes_queue' for the publisher, whose
-- rows_written counts the rows the changes queue accepted). Re-runnable,
-- like every file here.

ALTER TABLE replication_run
    ADD COLUMN IF NOT EXISTS sink text NOT NULL DEFAULT 'postgres';

ALTER TABLE replication_run DROP CONSTRAINT IF EXISTS replication_run_sink_check;
ALTER TABLE replication_run ADD CONSTRAINT replication_run_sink_check
    CHECK (sink IN ('postgres', 'changes_queue'));
