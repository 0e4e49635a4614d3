//! Sinks, the places rows go, on the use cases' side of the ports
//! ([`crate::ports::RowSink`], [`crate::ports::SinkPool`], and the outcome
//! every sink gives, [`crate::ports::SinkOutcome`]): here, the row isolation
//! a sink that refuses single rows uses ([`isolate`]: Postgres and its
//! in-memory stand-in). Each sink lives with its service's adapter: the
//! Postgres sink in `countries_postgres::sink`, stream mode's changes-queue
//! sink in `countries_sqs::changes_queue::sink`.

pub mod isolate;
