//! Stream mode's publisher: the replicator's run, unchanged, with the
//! changes queue as its sink instead of Postgres.
//!
//! The run takes the same lock and records itself in the same ledger (so
//! the two modes never hold a snapshot at once, and `countries status`
//! sees both); only its writes differ: a chunk of valid rows is packed into
//! compact batches, one FIFO message group per bucket of ids
//! ([`crate::model::change::pack`]), and "written" means the changes queue
//! accepted every batch of the chunk. Everything else is the replicator's:
//! the snapshot, invalid rows to the retry queue, the circuit breaker, and
//! the join delete of exactly the rows that are safe, so a row leaves
//! Snowflake only once the queue holds it.
//!
//! A chunk the queue took only in part is sent again whole: the batches it
//! accepted carry the same deduplication id and SQS drops them. If the
//! retries run out, the run stops writing and the chunk stays in Snowflake;
//! the next run publishes it again, and the writers' upsert makes that
//! harmless.

use std::time::Duration;

// Tokio's clock: the same as the system's in Lambda, and one a test can
// pause and move on.
use tokio::time::Instant;

use async_trait::async_trait;
use uuid::Uuid;

use crate::deadline::Deadline;
use crate::failure::{QueueError, WriteError};
use crate::ledger::{RunOutcome, RunSink, RunSummary};
use crate::model::change::{pack, MAX_CHANGE_BYTES};
use crate::model::row::CountryRow;
use crate::ports::{ChangeQueue, ReplicaRun, ReplicaStore, RowSink};
use crate::replicator::Replicator;

/// The publisher function's use case: runs, one after another, for
/// `loop_for` (one run when it is zero).
pub struct Publisher {
    /// A replicator whose store is a [`PublishingStore`].
    pub runs: Replicator,
    pub loop_for: Duration,
    /// Between looks at an empty table.
    pub idle_wait: Duration,
}

impl Publisher {
    /// Runs until `loop_for` has passed, the deadline is near, or a run
    /// does not succeed (the invocation then fails, so alarms see it).
    /// While looping, an empty table is seen by a metadata `COUNT(*)` and
    /// costs no run and no ledger row; an invocation that found nothing
    /// records one idle run, so the ledger shows the publisher is alive.
    pub async fn publish(
        &self,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> Vec<RunSummary> {
        let until = Instant::now() + self.loop_for;
        let looping = !self.loop_for.is_zero();
        let mut runs: Vec<RunSummary> = Vec::new();
        loop {
            let empty =
                looping && matches!(self.runs.source.count_rows(None, deadline).await, Ok(0));
            let mut wait = empty;
            if !empty {
                let summary = self
                    .runs
                    .run(Uuid::new_v4(), trigger_id.clone(), deadline)
                    .await;
                summary.log();
                let stop = !summary.outcome.is_success();
                // Another run holds the lock: look again after a pause.
                wait = matches!(summary.outcome, RunOutcome::Skipped | RunOutcome::Idle);
                runs.push(summary);
                if stop {
                    break;
                }
            }
            if Instant::now() >= until || deadline.is_near() {
                break;
            }
            if wait {
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(self.idle_wait.min(left)).await;
            }
        }
        if runs.is_empty() {
            let summary = self.runs.run(Uuid::new_v4(), trigger_id, deadline).await;
            summary.log();
            runs.push(summary);
        }
        runs
    }
}

/// The changes queue, behind the replica's run lock and ledger.
pub struct PublishingStore {
    /// Takes the lock and keeps the ledger (Postgres in production).
    pub ledger: Box<dyn ReplicaStore>,
    pub queue: std::sync::Arc<dyn ChangeQueue>,
    /// `CHANGE_BUCKETS`: message groups, the bound of the writers' parallelism.
    pub buckets: u32,
}

#[async_trait]
impl ReplicaStore for PublishingStore {
    fn sink(&self) -> RunSink {
        RunSink::ChangesQueue
    }

    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn ReplicaRun>>, WriteError> {
        let Some(ledger) = self.ledger.open_run(summary).await? else {
            return Ok(None);
        };
        Ok(Some(Box::new(PublishingRun {
            ledger,
            queue: self.queue.clone(),
            run_id: summary.run_id,
            buckets: self.buckets,
            next_seq: 0,
        })))
    }
}

/// One publisher run: holds the lock through the ledger's run.
struct PublishingRun {
    ledger: Box<dyn ReplicaRun>,
    queue: std::sync::Arc<dyn ChangeQueue>,
    run_id: Uuid,
    buckets: u32,
    /// The next batch's `seq`: it grows with every batch packed, sent or
    /// not, so that a batch sent later always has the higher one.
    next_seq: u64,
}

#[async_trait]
impl RowSink for PublishingRun {
    /// Publishes the rows; `Ok` only when the queue accepted every batch.
    async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError> {
        let mut batches = pack(self.run_id, rows, self.buckets, MAX_CHANGE_BYTES);
        for batch in &mut batches {
            batch.seq += self.next_seq;
        }
        self.next_seq += batches.len() as u64;
        let results = self.queue.publish(&batches).await;
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        if accepted == batches.len() && results.len() == batches.len() {
            return Ok(rows.len() as u64);
        }
        let first = results
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| {
                QueueError::call("SendMessageBatch", "the queue gave no result for a batch")
            });
        tracing::warn!(
            run_id = %self.run_id,
            batches = batches.len(),
            accepted,
            error = %first,
            "the changes queue did not take every batch of a chunk; it is sent again whole"
        );
        Err(WriteError::changes_queue(&first))
    }
}

#[async_trait]
impl ReplicaRun for PublishingRun {
    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError> {
        self.ledger.finish(summary).await
    }
}

#[cfg(test)]
mod tests;
