//! The countries replication job: Snowflake `case` rows into Postgres.
//!
//! Organised by role, one home each:
//! - the data: [`model`] (row, validation, queue message, failure report),
//!   [`ledger`] (what a run did, and its accounting rule);
//! - the vocabulary every path shares: [`failure`] (transient / row-level /
//!   fatal), [`retry`] (the one retry helper), [`isolate`] (bisection);
//! - the ports ([`ports`]) and one adapter folder per service: [`snowflake`],
//!   [`postgres`], [`sqs`], [`ses`], plus [`secrets`] and [`aws`];
//! - the use cases, one per function and named after it: [`replicator`],
//!   [`retrier`], [`dlq_reporter`], and stream mode's [`publisher`] and
//!   [`writer`];
//! - the Lambda handlers and their wiring: [`lambda`];
//! - [`config`] (the environment, read once), [`deadline`] (the
//!   invocation's), [`telemetry`] (logs, metrics);
//! - `checks`, with the `fuzzing` feature only: the properties the fuzz
//!   targets drive.
//!
//! Binaries under `functions/` only wire these together. Operator and
//! local-stack tooling lives in `infra/cli`, test tooling in `tests/`.

pub mod aws;
#[cfg(any(test, feature = "fuzzing"))]
pub mod checks;
pub mod config;
pub mod deadline;
pub mod dlq_reporter;
pub mod failure;
pub mod isolate;
pub mod lambda;
pub mod ledger;
pub mod model;
pub mod ports;
pub mod postgres;
pub mod publisher;
pub mod replicator;
pub mod retrier;
pub mod retry;
pub mod secrets;
pub mod ses;
pub mod snowflake;
pub mod sqs;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod writer;
