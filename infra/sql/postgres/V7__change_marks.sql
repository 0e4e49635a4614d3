-- Stream mode: for each message group of the changes queue, the batch the
-- writer gave Postgres last (its publisher run and its place in that run's
-- order), marked before its rows are written. `countries replay` compares a
-- parked batch with it: a row whose group was written past it, and which
-- Postgres holds with another value, may be older than what is there, and
-- is not replayed. Keyed by the bucket count too, since a batch names the
-- count it was packed with. Re-runnable, like every file here.
CREATE TABLE IF NOT EXISTS change_marks (
    buckets   integer     NOT NULL,
    bucket    integer     NOT NULL,
    run_id    uuid        NOT NULL,
    seq       bigint      NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buckets, bucket)
);

-- Where a failure-report row of stream mode came from: its batch's group
-- and place (NULL for the retry path's rows).
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS change_buckets integer;
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS change_bucket integer;
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS change_seq bigint;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'countries_app') THEN
        GRANT SELECT, INSERT, UPDATE ON change_marks TO countries_app;
    END IF;
END
$$;
