-- Each run's table: a deployment replicates several tables, each with its
-- own run lock and its own ledger rows. Runs recorded before this file
-- replicated `case`.
ALTER TABLE replication_run ADD COLUMN IF NOT EXISTS table_name text NOT NULL DEFAULT 'case';
CREATE INDEX IF NOT EXISTS replication_run_table_started ON replication_run (table_name, started_at);
