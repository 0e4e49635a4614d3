-- Run once in Snowflake as SECURITYADMIN (or a role that can create roles and
-- users), replacing the <…> placeholders. It creates a role with exactly the
-- rights the replicator uses, SELECT and DELETE on the one table, and a
-- service user that logs in with a key pair (no password). Each run freezes
-- its batch into a TEMPORARY table (dropped by the run, and gone with the
-- session anyway). Snowflake's "Access control privileges" page says of the
-- schema privilege CREATE TABLE that it is not required to create temporary
-- tables, so it is not granted. Behaviour change 2023_03 (bcr-427) asks for
-- OWNERSHIP only for a temporary table named like a permanent one; the
-- snapshot's name (COUNTRIES_RUN_<run id>) never is. If an account still
-- refuses the snapshot (error 003001, insufficient privileges), grant it:
--   GRANT CREATE TABLE ON SCHEMA <database>.<schema> TO ROLE COUNTRIES_REPLICATOR;
--
-- Make the key pair (unencrypted PKCS#8, which the functions read):
--   openssl genrsa 2048 | openssl pkcs8 -topk8 -inform PEM -out rsa_key.p8 -nocrypt
--   openssl rsa -in rsa_key.p8 -pubout -out rsa_key.pub
-- Store rsa_key.p8 in Secrets Manager (SnowflakePrivateKeySecretArn) and paste
-- the body of rsa_key.pub (without the BEGIN/END lines) below.

CREATE ROLE IF NOT EXISTS COUNTRIES_REPLICATOR;
GRANT USAGE ON WAREHOUSE <warehouse> TO ROLE COUNTRIES_REPLICATOR;
GRANT USAGE ON DATABASE <database> TO ROLE COUNTRIES_REPLICATOR;
GRANT USAGE ON SCHEMA <database>.<schema> TO ROLE COUNTRIES_REPLICATOR;
GRANT SELECT, DELETE ON TABLE <database>.<schema>."case" TO ROLE COUNTRIES_REPLICATOR;

CREATE USER IF NOT EXISTS COUNTRIES_REPLICATOR
    TYPE = SERVICE
    DEFAULT_ROLE = COUNTRIES_REPLICATOR
    DEFAULT_WAREHOUSE = <warehouse>
    RSA_PUBLIC_KEY = '<public key body>';
GRANT ROLE COUNTRIES_REPLICATOR TO USER COUNTRIES_REPLICATOR;

-- Key rotation without downtime: set RSA_PUBLIC_KEY_2 to the new key, update
-- the secret, wait for the functions' next cold start, then unset the old one:
--   ALTER USER COUNTRIES_REPLICATOR SET RSA_PUBLIC_KEY_2 = '<new public key body>';
--   ALTER USER COUNTRIES_REPLICATOR UNSET RSA_PUBLIC_KEY;
