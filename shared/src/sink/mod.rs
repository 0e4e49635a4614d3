//! Sinks, the places rows go, on the use cases' side of the ports
//! ([`crate::ports::RowSink`], [`crate::ports::SinkPool`], and the outcome
//! every sink gives, [`crate::ports::SinkOutcome`]): the row isolation a
//! sink that refuses single rows uses ([`isolate`]: Postgres and its
//! in-memory stand-in), and stream mode's sink ([`changes_queue`]: the
//! publisher's rows, packed into batches on the changes queue). The
//! Postgres sink itself is `countries_postgres::sink`.

pub mod changes_queue;
pub mod isolate;
