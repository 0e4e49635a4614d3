//! Setting up the local stack's emulators, for `infra/local/stack.sh` (the
//! `countries local …` commands) and the tests' own slices of it:
//! [`queues`] makes `template.yaml`'s queues in the AWS emulator from the
//! template's own definitions; [`snowflake`] makes the source database,
//! schema and table in the Snowflake emulator from `infra/sql/snowflake`.

pub mod queues;
pub mod snowflake;
