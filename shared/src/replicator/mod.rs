//! The replicator's use case: one run, top to bottom.
//!
//! 1. take the run lock in Postgres (another run in progress: skip);
//! 2. read at most `MAX_ROWS_PER_RUN` rows from Snowflake;
//! 3. plan each chunk ([`plan`]): invalid rows become retry messages, other
//!    versions of an id wait for the next run;
//! 4. upsert the valid rows in chunks of `BATCH_SIZE`; a chunk Postgres
//!    refuses is bisected until the refused rows are isolated
//!    ([`crate::isolate`]); transient errors are retried with backoff
//!    ([`crate::retry`]), then the rows are deferred;
//! 5. send refused and invalid rows to the retry queue (circuit breaker:
//!    `MAX_FAILURES_PER_RUN`);
//! 6. delete from Snowflake exactly the rows that are safe ([`deletes`]):
//!    committed in Postgres or accepted by SQS; every other row stays for the
//!    next run;
//! 7. record the run in the ledger ([`crate::ledger`]).
//!
//! A crash between any two steps leaves every row in Postgres, in the queue,
//! or still in Snowflake, and the next run finishes the job: the upsert is
//! idempotent and the delete matches whole rows.

mod deletes;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use crate::config::RunLimits;
use crate::deadline::Deadline;
use crate::failure::{QueueError, WriteError};
use crate::isolate::write_isolating;
use crate::ledger::{RunOutcome, RunSummary};
use crate::model::message::{FailureDetail, RetryMessage};
use crate::model::row::CountryRow;
use crate::ports::{ReplicaRun, ReplicaStore, RetryQueue, RowSource, Step, StepHook};
use crate::replicator::deletes::PendingDeletes;
use crate::replicator::plan::{plan_chunk, ChunkPlan, Failure};
use crate::retry::{Backoff, RetryPolicy};

/// The services a run uses, and its limits.
pub struct Replicator {
    pub source: Box<dyn RowSource>,
    pub store: Box<dyn ReplicaStore>,
    pub queue: Box<dyn RetryQueue>,
    pub limits: RunLimits,
    /// Between attempts of a Postgres write or a Snowflake delete.
    pub backoff: Backoff,
    /// Told at each step boundary ([`crate::ports::NoHook`] in Lambda).
    pub steps: Box<dyn StepHook>,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<std::time::Duration>,
}

/// The state of one run while it moves rows.
struct Progress {
    /// The country each id had when first seen in this run (8 bytes per id).
    first_version: HashMap<i32, [u8; 3]>,
    /// Rows bound for the retry queue.
    failures: Vec<Failure>,
    deletes: PendingDeletes,
    /// Set when Postgres writing stopped (a fatal error, or a transient one
    /// that outlasted its retries): later chunks are deferred.
    writes_stopped: bool,
    chunks: usize,
}

impl Replicator {
    /// One run. Near `deadline` it starts no new chunk, enqueue or delete:
    /// what is left stays in Snowflake and the run ends `partial`, saying why.
    pub async fn run(
        &self,
        run_id: Uuid,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> RunSummary {
        let mut summary = RunSummary::new(run_id, trigger_id);
        let mut replica = match self.store.open_run(&summary).await {
            Ok(Some(replica)) => replica,
            Ok(None) => {
                summary.outcome = RunOutcome::Skipped;
                summary.add_error("another replicator run holds the lock");
                summary.finished_at = Some(Utc::now());
                return summary;
            }
            Err(e) => {
                summary.outcome = RunOutcome::Failed;
                summary.add_error(format!("cannot start the run: {e}"));
                summary.finished_at = Some(Utc::now());
                return summary;
            }
        };
        self.move_rows(replica.as_mut(), &mut summary, deadline)
            .await;
        self.steps.reached(Step::BeforeLedger);
        summary.finished_at = Some(Utc::now());
        debug_assert_eq!(summary.unaccounted(), 0, "{summary:?}");
        if let Err(e) = replica.finish(&summary).await {
            // The rows are where the summary says; only the record is missing.
            tracing::error!(run_id = %run_id, error = %e, "could not record the run in the ledger");
            summary.add_error(format!("ledger not updated: {e}"));
        }
        summary
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.limits.write_attempts.max(1),
            backoff: self.backoff,
        }
    }

    async fn move_rows(
        &self,
        replica: &mut dyn ReplicaRun,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) {
        self.steps.reached(Step::BeforeRead);
        let mut rows = match self.source.read_batch(self.limits.max_rows_per_run).await {
            Ok(rows) => rows,
            Err(e) => {
                summary.outcome = RunOutcome::Failed;
                summary.add_error(format!("reading from Snowflake: {e}"));
                return;
            }
        };
        summary.rows_read = rows.remaining();
        self.steps.reached(Step::AfterRead);

        let mut progress = Progress {
            first_version: HashMap::new(),
            failures: Vec::new(),
            deletes: PendingDeletes::new(self.source.max_rows_per_delete()),
            writes_stopped: false,
            chunks: 0,
        };
        loop {
            if deadline.is_near() && rows.remaining() > 0 {
                summary.rows_deferred += rows.remaining();
                summary.add_error(format!(
                    "deadline: less than {}s left, {} rows not started are left in Snowflake",
                    deadline.margin().as_secs(),
                    rows.remaining()
                ));
                break;
            }
            let raw = match rows.next_chunk(self.limits.batch_size.max(1)) {
                Ok(raw) if raw.is_empty() => break,
                Ok(raw) => raw,
                Err(e) => {
                    // Not seen in practice (the schema is checked up front);
                    // whatever was not decoded stays in Snowflake.
                    summary.rows_deferred += rows.remaining();
                    summary.add_error(format!("decoding the Snowflake rows: {e}"));
                    break;
                }
            };
            let plan = plan_chunk(raw, &mut progress.first_version, summary.run_id, Utc::now());
            self.write_chunk(replica, plan, &mut progress, summary, deadline)
                .await;
            if progress.chunks == 1 {
                self.steps.reached(Step::MidWrite);
            }
            self.delete_safe_rows(&mut progress, summary, deadline, false)
                .await;
        }
        self.steps.reached(Step::AfterWrite);

        self.enqueue(&mut progress, summary, deadline).await;
        self.steps.reached(Step::AfterEnqueue);

        self.delete_safe_rows(&mut progress, summary, deadline, true)
            .await;

        summary.outcome = if summary.rows_deferred_for_trouble() > 0 || summary.error.is_some() {
            RunOutcome::Partial
        } else {
            RunOutcome::Succeeded
        };
    }

    /// Deletes the rows that became safe: a statement's worth at a time, or
    /// all of them (`everything`, at the end of the run).
    async fn delete_safe_rows(
        &self,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
        everything: bool,
    ) {
        progress
            .deletes
            .flush(
                &*self.source,
                self.policy(),
                &*self.steps,
                deadline,
                summary,
                everything,
            )
            .await;
    }

    /// Writes one planned chunk and sorts its rows: written (then deleted),
    /// refused (then queued) or deferred (left in Snowflake).
    async fn write_chunk(
        &self,
        replica: &mut dyn ReplicaRun,
        plan: ChunkPlan,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) {
        progress.chunks += 1;
        // Invalid rows need no Postgres: they are queued even after the
        // writes stopped.
        summary.rows_invalid += plan.failures.len();
        progress.failures.extend(plan.failures);
        summary.rows_deferred += plan.conflicting_duplicates;
        summary.rows_deferred_duplicates += plan.conflicting_duplicates;
        if progress.writes_stopped {
            summary.rows_deferred += plan.valid.iter().map(|p| 1 + p.also.len()).sum::<usize>();
            return;
        }

        let budget_left = self
            .limits
            .max_failures_per_run
            .saturating_sub(progress.failures.len());
        let refs: Vec<&CountryRow> = plan.valid.iter().map(|p| &p.row).collect();
        let result =
            write_isolating(&mut *replica, &refs, budget_left, self.policy(), deadline).await;
        drop(refs);
        summary.rows_changed += usize::try_from(result.changed).unwrap_or(usize::MAX);
        let mut outcome: Vec<Option<Result<(), WriteError>>> = vec![None; plan.valid.len()];
        for i in result.written {
            outcome[i] = Some(Ok(()));
        }
        for (i, error) in result.rejected {
            outcome[i] = Some(Err(error));
        }
        for (planned, outcome) in plan.valid.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => {
                    summary.rows_written += 1 + planned.also.len();
                    progress.deletes.push(planned.row.source);
                    progress.deletes.extend(planned.also);
                }
                Some(Err(error)) => {
                    summary.rows_rejected += 1;
                    // Identical copies go with the message; another
                    // spelling of the row stays for the next run.
                    let (copies, variants): (Vec<_>, Vec<_>) = planned
                        .also
                        .into_iter()
                        .partition(|r| *r == planned.row.source);
                    summary.rows_deferred += variants.len();
                    progress.failures.push(Failure {
                        message: RetryMessage::first_failure(
                            planned.row.source,
                            FailureDetail::of_write(&error),
                            summary.run_id,
                            Utc::now(),
                        ),
                        copies: copies.len(),
                    });
                }
                None => summary.rows_deferred += 1 + planned.also.len(),
            }
        }
        if let Some(error) = result.stop {
            summary.add_error(format!("writing to Postgres stopped: {error}"));
            progress.writes_stopped = true;
        }
    }

    /// Sends the failed rows to the retry queue, at most
    /// `MAX_FAILURES_PER_RUN` of them; the ones SQS accepted become safe to
    /// delete, the others stay in Snowflake.
    async fn enqueue(
        &self,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) {
        let failures = &mut progress.failures;
        if deadline.is_near() && !failures.is_empty() {
            let left: usize = failures.drain(..).map(|f| 1 + f.copies).sum();
            summary.rows_deferred += left;
            summary.add_error(format!(
                "deadline: the retry queue was not called; {left} failed rows are left in Snowflake"
            ));
            return;
        }
        if failures.len() > self.limits.max_failures_per_run {
            let over: usize = failures
                .drain(self.limits.max_failures_per_run..)
                .map(|f| 1 + f.copies)
                .sum();
            summary.rows_deferred += over;
            summary.add_error(format!(
                "circuit breaker: more than MAX_FAILURES_PER_RUN={} rows failed; {over} left in Snowflake",
                self.limits.max_failures_per_run
            ));
        }
        if failures.is_empty() {
            return;
        }
        let messages: Vec<RetryMessage> = failures.iter().map(|f| f.message.clone()).collect();
        let results = self.queue.enqueue(&messages).await;
        // A queue that answers for fewer messages than it was given leaves
        // the rest unconfirmed: they stay in Snowflake.
        let results = results.into_iter().chain(std::iter::repeat_with(|| {
            Err(QueueError::call(
                "SendMessageBatch",
                "the queue gave no result for this message",
            ))
        }));
        let mut first_error = None;
        for (failure, result) in failures.drain(..).zip(results) {
            match result {
                Ok(()) => {
                    summary.rows_enqueued += 1 + failure.copies;
                    progress.deletes.push(failure.message.record);
                }
                Err(e) => {
                    summary.rows_deferred += 1 + failure.copies;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            summary.add_error(format!("some failed rows stay in Snowflake: {e}"));
        }
    }
}
