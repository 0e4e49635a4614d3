-- The source table in Snowflake. `case` is reserved: quoted, so its name is
-- lowercase; the columns are unquoted, so Snowflake stores them upper-case.
--
-- `country_id` is the primary key by design, but Snowflake never enforces a
-- primary key, so duplicate and NULL ids can reach the replicator, which
-- handles both. The key is not declared here because the local emulator
-- (DuckDB under fakesnow) would enforce it and so behave unlike Snowflake.
CREATE TABLE IF NOT EXISTS "case" (
    country_id NUMBER(38,0),
    country    VARCHAR
);
