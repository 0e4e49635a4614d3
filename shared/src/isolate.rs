//! Row isolation by bisection: the shared machinery that lets every write
//! path (the replicator, the retrier, `countries replay`) carry on past a
//! row Postgres refuses.
//!
//! One bad row makes a whole statement (or COPY) fail and nothing of it is
//! written. A clean chunk costs one statement; k refused rows among n cost
//! about 2·k·log2(n) statements. Measured on a 50,000-row chunk (a clean
//! one takes ~110 ms): 1 bad row ~290 ms, 10 ~320 ms, 50 ~440 ms; a
//! server-side loop with a per-row exception block takes ~260 ms whatever
//! the count, but opens a subtransaction per row, so bisection is kept.

use crate::deadline::Deadline;
use crate::failure::{Classify, ErrorKind, WriteError};
use crate::model::row::CountryRow;
use crate::ports::RowSink;
use crate::retry::{retry, RetryPolicy};

/// What happened to one chunk of rows (indices into the chunk).
#[derive(Debug, Default)]
pub struct ChunkResult {
    pub written: Vec<usize>,
    pub rejected: Vec<(usize, WriteError)>,
    pub deferred: Vec<usize>,
    pub changed: u64,
    /// Set when no further chunk should be tried: a transient error outlasted
    /// its retries, or a fatal one.
    pub stop: Option<WriteError>,
}

/// Writes a chunk; when Postgres refuses it because of a row, halves it
/// until the refused rows stand alone. At most `failure_budget` rows are
/// isolated; past that, refused parts are deferred (the circuit breaker).
/// Near `deadline` no further statement starts: what is left is deferred and
/// `stop` says why.
pub async fn write_isolating(
    writer: &mut dyn RowSink,
    rows: &[&CountryRow],
    failure_budget: usize,
    policy: RetryPolicy,
    deadline: &Deadline,
) -> ChunkResult {
    let mut result = ChunkResult::default();
    // A stack of row ranges still to write; it starts as the whole chunk.
    let mut pending = Vec::with_capacity(64);
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        if deadline.is_near() {
            result.deferred.extend(range);
            for rest in pending.drain(..) {
                result.deferred.extend(rest);
            }
            result.stop = Some(WriteError::transient(
                "the invocation's deadline is near; the rest is not started",
            ));
            break;
        }
        let slice: Vec<CountryRow> = rows[range.clone()].iter().map(|r| (*r).clone()).collect();
        let written = retry(policy, deadline, "Postgres write", async || {
            writer.write_chunk(&slice).await
        })
        .await;
        match written {
            Ok(changed) => {
                result.changed += changed;
                result.written.extend(range);
            }
            Err(e) if e.kind() == ErrorKind::RowLevel => {
                if result.rejected.len() >= failure_budget {
                    // The breaker is open: no point isolating more rows
                    // that could not be enqueued anyway.
                    result.deferred.extend(range);
                } else if range.len() == 1 {
                    result.rejected.push((range.start, e));
                } else {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
            Err(e) => {
                result.deferred.extend(range);
                for rest in pending.drain(..) {
                    result.deferred.extend(rest);
                }
                result.stop = Some(e);
            }
        }
    }
    result
}
