//! Postgres, the system rows go to: [`connect`] (TLS), [`catalog`] (a
//! target table's columns), [`sqlstate`] (the one
//! classification of its errors), [`sink`] (the Postgres sink, rows in: COPY
//! first, then the upsert, refused rows isolated; and its pool on the warm
//! connection), [`run_guard`] (the run lock, [`lock`], and the ledger),
//! [`failure_report`] (the dlq-reporter's durable report), [`warm`] (the
//! connection a warm container keeps between invocations), and [`values`]
//! (a typed value of any mapped column in Postgres's binary format) and
//! [`mapped`] (a mapped table's rows in: COPY first, then the staged upsert),
//! [`mapped_rows`] (such rows written again from their JSON: replay).

pub mod catalog;
pub mod connect;
pub mod failure_report;
pub mod lock;
pub mod mapped;
pub mod mapped_rows;
pub mod run_guard;
pub mod sink;
pub mod sqlstate;
pub mod values;
pub mod warm;
