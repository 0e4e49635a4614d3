-- A least-privilege role for the three functions: exactly the table rights
-- they use, nothing else (no DDL, no DELETE). Grant it to the login user the
-- Postgres secret names:  GRANT countries_app TO <user>;
-- The run lock is a session advisory lock, which needs no grant.
-- Run as a role that may create roles (the RDS master user, or a superuser).
DO $$
BEGIN
    CREATE ROLE countries_app NOLOGIN;
EXCEPTION
    -- Already there (roles are cluster-wide; a concurrent run may race us).
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO countries_app;
GRANT SELECT, INSERT, UPDATE ON "case" TO countries_app;             -- the upsert
GRANT SELECT, INSERT, UPDATE ON replication_run TO countries_app;    -- the ledger
GRANT SELECT, INSERT, UPDATE ON failure_report TO countries_app;     -- report, replay, resolve
