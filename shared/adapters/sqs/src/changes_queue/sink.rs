//! Stream mode's sink: the publisher's rows, packed into compact batches
//! on the changes queue, one FIFO message group per bucket of ids
//! ([`countries_shared::model::change::pack`]), sent through the
//! [`ChangeQueue`] port (in SQS: [`super::SqsChangesQueue`]). "Written" means the queue accepted
//! every batch of the rows; the queue refuses no single row, so nothing is
//! ever isolated or sent to the retry queue from here.
//!
//! Rows the queue took only in part are sent again whole: the batches it
//! accepted carry the same deduplication id and SQS drops them. If the
//! retries run out, every row of the call is deferred (it stays in
//! Snowflake; the next run publishes it again, and the writers' upsert
//! makes that harmless).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use countries_shared::deadline::Deadline;
use countries_shared::failure::{QueueError, SinkError};
use countries_shared::ledger::SinkKind;
use countries_shared::model::change::{pack, ChangeBatch, Groups, MAX_CHANGE_BYTES};
use countries_shared::model::row::CountryRow;
use countries_shared::ports::{ChangeQueue, RowSink, SinkOutcome, SinkPool, WriteLimits};
use countries_shared::retry::retry;

#[cfg(test)]
mod tests;

/// Opens a changes-queue sink per run.
pub struct ChangesQueueSinks {
    pub queue: Arc<dyn ChangeQueue>,
    /// How ids are spread over message groups, the bound of the writers'
    /// parallelism.
    pub groups: Groups,
}

#[async_trait]
impl SinkPool for ChangesQueueSinks {
    fn kind(&self) -> SinkKind {
        SinkKind::ChangesQueue
    }

    async fn open(&self, run_id: Option<Uuid>) -> Result<Box<dyn RowSink>, SinkError> {
        Ok(Box::new(ChangesQueueSink {
            queue: self.queue.clone(),
            // A run's batches carry its id; rows outside a run (none today)
            // a fresh one, so that their deduplication ids never collide.
            run_id: run_id.unwrap_or_else(Uuid::new_v4),
            groups: self.groups,
            next_seq: AtomicU64::new(0),
        }))
    }
}

/// One run's sink on the changes queue.
pub struct ChangesQueueSink {
    queue: Arc<dyn ChangeQueue>,
    run_id: Uuid,
    groups: Groups,
    /// The next batch's `seq`: it grows with every batch packed, sent or
    /// not, so that a batch sent later always has the higher one.
    next_seq: AtomicU64,
}

impl ChangesQueueSink {
    /// The rows as batches, numbered on from the last call's.
    fn pack(&self, rows: &[CountryRow]) -> Vec<ChangeBatch> {
        let mut batches = pack(self.run_id, rows, self.groups, MAX_CHANGE_BYTES);
        // One sink is written by one run, one call at a time.
        let first_seq = self
            .next_seq
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        for batch in &mut batches {
            batch.seq += first_seq;
        }
        batches
    }

    /// `Ok` only when the queue accepted every batch.
    fn verdict(
        &self,
        batches: &[ChangeBatch],
        results: Vec<Result<(), QueueError>>,
    ) -> Result<(), QueueError> {
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        if accepted == batches.len() && results.len() == batches.len() {
            return Ok(());
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
        Err(first)
    }
}

#[async_trait]
impl RowSink for ChangesQueueSink {
    async fn write(
        &mut self,
        rows: &[&CountryRow],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome {
        if deadline.is_near() {
            return SinkOutcome::none_taken(rows.len(), SinkError::Deadline);
        }
        let rows: Vec<CountryRow> = rows.iter().map(|r| (*r).clone()).collect();
        let (sink, batch_rows) = (&*self, &rows);
        // Sent again whole after a partial or failed attempt. The error is a
        // SinkError before retry() sees it: its classification (never
        // row-level for the queue) decides what is retried.
        let published = retry(limits.policy, deadline, "changes-queue publish", || async {
            let batches = sink.pack(batch_rows);
            let results = sink.queue.publish(&batches).await;
            sink.verdict(&batches, results)
                .map_err(SinkError::ChangesQueue)
        })
        .await;
        match published {
            Ok(()) => SinkOutcome {
                written: (0..rows.len()).collect(),
                ..SinkOutcome::default()
            },
            Err(e) => SinkOutcome::none_taken(rows.len(), e),
        }
    }
}
