//! The core of the countries replication job (Snowflake `case` rows into
//! Postgres): the data, the rules and the use cases, with no service client.
//!
//! Organised by role, one home each:
//! - the data: [`model`] (row, validation, queue message, failure report),
//!   [`ledger`] (what a run did, and its accounting rule);
//! - the vocabulary every path shares: [`failure`] (transient / row-level /
//!   fatal), [`retry`] (the one retry helper);
//! - [`sink`]: where rows go, as the use cases see it (one outcome for every
//!   sink, and the bisection a sink that refuses single rows uses; the sinks
//!   themselves live with their adapters);
//! - the ports ([`ports`]): the traits the use cases reach the services
//!   through. Their real adapters are crates of their own, one per service,
//!   under `shared/adapters/` (`countries-snowflake`, `countries-postgres`,
//!   `countries-sqs`, `countries-ses`, `countries-secrets`), so that each
//!   function links only the services it uses; [`aws`] is the SDK
//!   configuration they share;
//! - the use cases: [`table_run`], the replicator function's run over any
//!   table (`case`, the mapping the variables make, and those of the
//!   mapping file); [`retrier`], [`dlq_reporter`], and stream mode's
//!   [`publisher`] and [`writer`]; the publisher moves `case` with
//!   [`case_run`], `case`'s own run over any sink, and `page` is which
//!   rows of a snapshot page are safe, for both runs;
//! - the Lambda handlers: [`lambda`] (each function's wiring, configuration
//!   in and adapters out, is the library of its crate under `functions/`);
//! - [`config`] (the environment, read once), [`deadline`] (the
//!   invocation's), [`telemetry`] (logs, metrics);
//! - `checks`, with the `fuzzing` feature only: the properties the fuzz
//!   targets drive.
//! - `testing`, in unit tests and with the `testing` feature only (the
//!   adapter crates' dev-dependency): the in-memory adapters of the ports.
//!
//! Operator and local-stack tooling lives in `infra/cli`, test tooling in
//! `tests/`.

pub mod aws;
pub mod case_run;
#[cfg(any(test, feature = "fuzzing"))]
pub mod checks;
pub mod config;
pub mod deadline;
pub mod dlq_reporter;
pub mod failure;
pub mod lambda;
pub mod ledger;
pub mod model;
pub(crate) mod page;
pub mod ports;
pub mod publisher;
pub mod retrier;
pub mod retry;
pub mod sink;
pub mod table_run;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod writer;
