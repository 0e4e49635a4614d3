-- The failure report, ready for tables other than `case`: the table a record
-- was bound for, and its row as JSON (column name → value as read from the
-- source), beside the `case` columns, which stay for today's readers and
-- tools. Rows stored before this file have table_name 'case' and no row_data.
-- Re-runnable, like every file here.
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS table_name text NOT NULL DEFAULT 'case';
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS row_data jsonb;
