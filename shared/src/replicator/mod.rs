//! The replicator's use case: one run, top to bottom.
//!
//! 1. take the run lock in Postgres (another run in progress: skip);
//! 2. count the source table (answered from metadata): empty, the run is
//!    idle and ends here, without waking Snowflake's warehouse;
//! 3. freeze at most `MAX_ROWS_PER_RUN` rows into a snapshot inside
//!    Snowflake, numbered in id order;
//! 4. then page by page (`SNOWFLAKE_PAGE_ROWS`), so memory follows the page,
//!    not the cap:
//!    - read the page (the next page is read while this one is written,
//!      enqueued and deleted: at most two pages in memory), and plan each
//!      chunk ([`plan`]): invalid rows become retry messages, other
//!      versions of an id wait for the next run;
//!    - upsert the valid rows in chunks of `BATCH_SIZE`; a chunk Postgres
//!      refuses is bisected until the refused rows are isolated
//!      ([`crate::isolate`]); transient errors are retried with backoff
//!      ([`crate::retry`]), then the rows are deferred;
//!    - send refused and invalid rows to the retry queue (circuit breaker:
//!      `MAX_FAILURES_PER_RUN` for the whole run);
//!    - delete from Snowflake exactly the rows that are safe, by joining the
//!      table against the page's safe ranges of the snapshot ([`page`]);
//!      every other row stays for the next run;
//! 5. drop the snapshot;
//! 6. record the run in the ledger ([`crate::ledger`]).
//!
//! A crash between any two steps leaves every row in Postgres, in the queue,
//! or still in Snowflake, and the next run finishes the job: the upsert is
//! idempotent, the delete matches whole rows, and the snapshot is a
//! temporary table that dies with its session.

mod enqueue;
mod page;
mod plan;
#[cfg(test)]
mod tests;
mod write;

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use crate::config::RunLimits;
use crate::deadline::Deadline;
use crate::failure::SourceError;
use crate::ledger::{RunOutcome, RunSummary};
use crate::ports::{
    IdMatch, ReplicaRun, ReplicaStore, RetryQueue, RowNumbers, RowSource, Snapshot, SourceRows,
    Step, StepHook, MAX_RANGES_PER_DELETE,
};
use crate::replicator::page::Page;
use crate::replicator::plan::{plan_chunk, Failure};
use crate::retry::{retry, Backoff, RetryPolicy};

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

impl Replicator {
    /// The production shape: the given adapters, the configured limits and
    /// margin, the default backoff and no step hook.
    pub fn new(
        source: Box<dyn RowSource>,
        store: Box<dyn ReplicaStore>,
        queue: Box<dyn RetryQueue>,
        config: &crate::config::ReplicatorConfig,
    ) -> Self {
        Self {
            source,
            store,
            queue,
            limits: config.limits,
            backoff: Backoff::default(),
            steps: Box::new(crate::ports::NoHook),
            deadline_margin: config.deadline_margin,
        }
    }
}

/// The state of one run while it moves rows.
#[derive(Default)]
struct Progress {
    /// The country each id had when first seen in this run (the last id's
    /// only, between chunks: see [`plan_chunk`]).
    first_version: HashMap<i32, [u8; 3]>,
    /// Failure messages made so far (the circuit breaker's count).
    failures_seen: usize,
    /// Set when Postgres writing stopped (a fatal error, or a transient one
    /// that outlasted its retries): later chunks are deferred.
    writes_stopped: bool,
    /// Set when the breaker tripped (reported once).
    breaker_tripped: bool,
    /// Pages read so far.
    pages: usize,
    /// Steps reached so far (each is reported once per run).
    steps_reached: Vec<Step>,
}

/// A page of the snapshot, read.
struct PageRows {
    numbers: RowNumbers,
    rows: Box<dyn SourceRows>,
}

/// Why the page loop ended early.
enum Stop {
    /// Snowflake failed: what is not done stays there for the next run.
    Source,
    Deadline,
}

impl Replicator {
    /// One run. Near `deadline` it starts no new page, chunk or enqueue (a
    /// page's delete still runs: it is bounded, and it removes what the
    /// queue owns): what is left stays in Snowflake and the run ends
    /// `partial`, saying why.
    pub async fn run(
        &self,
        run_id: Uuid,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> RunSummary {
        let mut summary = RunSummary::new(run_id, trigger_id);
        summary.sink = self.store.sink();
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

    /// Tells the step hook, once per run.
    fn reached(&self, progress: &mut Progress, step: Step) {
        if !progress.steps_reached.contains(&step) {
            progress.steps_reached.push(step);
            self.steps.reached(step);
        }
    }

    async fn move_rows(
        &self,
        replica: &mut dyn ReplicaRun,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) {
        let statements_before = self.source.statements_sent();
        let mut progress = Progress::default();
        self.reached(&mut progress, Step::BeforeRead);
        let outcome = self
            .snapshot_and_move(replica, &mut progress, summary, deadline)
            .await;
        summary.snowflake_statements = self.source.statements_sent() - statements_before;
        summary.outcome = match outcome {
            Some(outcome) => outcome,
            None if summary.rows_deferred_for_trouble() > 0 || summary.error.is_some() => {
                RunOutcome::Partial
            }
            None => RunOutcome::Succeeded,
        };
    }

    /// Counts, snapshots, moves the rows page by page and drops the
    /// snapshot. Returns the outcome when it is not decided by the rows
    /// (idle, failed).
    async fn snapshot_and_move(
        &self,
        replica: &mut dyn ReplicaRun,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) -> Option<RunOutcome> {
        let count = retry(self.policy(), deadline, "Snowflake count", async || {
            self.source.count_rows(Some(summary.run_id), deadline).await
        })
        .await;
        match count {
            Ok(0) => return Some(RunOutcome::Idle),
            Ok(_) => {}
            Err(e) => {
                summary.add_error(format!("counting the Snowflake rows: {e}"));
                return Some(RunOutcome::Failed);
            }
        }
        if deadline.is_near() {
            summary.add_error(format!(
                "deadline: less than {}s left before the snapshot; nothing was read",
                deadline.margin().as_secs()
            ));
            return None;
        }
        let limit = self.limits.max_rows_per_run;
        let snapshot = retry(self.policy(), deadline, "Snowflake snapshot", async || {
            self.source.snapshot(summary.run_id, limit, deadline).await
        })
        .await;
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) => {
                summary.add_error(format!("taking the Snowflake snapshot: {e}"));
                return Some(RunOutcome::Failed);
            }
        };
        self.reached(progress, Step::AfterSnapshot);

        let page_rows = self.limits.page_rows.max(1) as u64;
        let last = limit as u64;
        let mut first = 1u64;
        let mut source_failed_first = false;
        // The next page, read while this one was written, enqueued and
        // deleted: at most two pages in memory. A page read ahead that the
        // run does not get to is dropped unaccounted: it is still in
        // Snowflake, and reading has no side effect.
        let mut ahead: Option<Result<Box<dyn SourceRows>, SourceError>> = None;
        while first <= last {
            let numbers = first..=last.min(first + page_rows - 1);
            let full = numbers.end() - numbers.start() + 1;
            if deadline.is_near() {
                summary.add_error(format!(
                    "deadline: less than {}s left; the snapshot rows from number {first} on were not read and stay in Snowflake",
                    deadline.margin().as_secs(),
                ));
                break;
            }
            let read = match ahead.take() {
                Some(read) => read,
                None => self.read_page(&*snapshot, numbers.clone(), deadline).await,
            };
            let rows = match read {
                Ok(rows) => rows,
                Err(e) => {
                    summary.add_error(format!("reading the Snowflake snapshot: {e}"));
                    source_failed_first =
                        progress.pages == 0 && !matches!(e, SourceError::SnapshotLost { .. });
                    break;
                }
            };
            let next = (rows.remaining() as u64 == full && *numbers.end() < last)
                .then(|| numbers.end() + 1..=last.min(numbers.end() + page_rows));
            let first_ahead = progress.pages == 0;
            let (moved, read_ahead) = futures::join!(
                self.move_page(
                    &*snapshot,
                    PageRows { numbers, rows },
                    replica,
                    progress,
                    summary,
                    deadline
                ),
                self.read_ahead(&*snapshot, next, first_ahead, deadline),
            );
            ahead = read_ahead;
            match moved {
                Ok(read) if read < full => break,
                Ok(_) => {}
                Err(Stop::Source | Stop::Deadline) => break,
            }
            first += page_rows;
        }

        self.reached(progress, Step::BeforeDrop);
        // The drop needs no warehouse, and a snapshot it misses dies with the
        // session (or is dropped before the next snapshot): a failure here
        // loses nothing and does not make the run partial.
        if let Err(e) = snapshot.drop_snapshot().await {
            tracing::warn!(run_id = %summary.run_id, error = %e, "could not drop the run snapshot; it goes with the session");
        }
        source_failed_first.then_some(RunOutcome::Failed)
    }

    /// One page's read, with the transient failures retried.
    async fn read_page(
        &self,
        snapshot: &dyn Snapshot,
        numbers: RowNumbers,
        deadline: &Deadline,
    ) -> Result<Box<dyn SourceRows>, SourceError> {
        retry(self.policy(), deadline, "Snowflake read", async || {
            snapshot.read(numbers.clone()).await
        })
        .await
    }

    /// The next page's read, started beside the current page's work when
    /// there is a next page and time for it. The step hook hears of the
    /// run's first one.
    async fn read_ahead(
        &self,
        snapshot: &dyn Snapshot,
        next: Option<RowNumbers>,
        first_ahead: bool,
        deadline: &Deadline,
    ) -> Option<Result<Box<dyn SourceRows>, SourceError>> {
        let numbers = next.filter(|_| !deadline.is_near())?;
        let read = self.read_page(snapshot, numbers, deadline).await;
        if first_ahead {
            self.steps.reached(Step::AfterReadAhead);
        }
        Some(read)
    }

    /// One page, read: write, enqueue, delete. Returns how many rows the
    /// page held.
    async fn move_page(
        &self,
        snapshot: &dyn Snapshot,
        page: PageRows,
        replica: &mut dyn ReplicaRun,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) -> Result<u64, Stop> {
        let PageRows { numbers, mut rows } = page;
        let first = *numbers.start();
        let held = rows.remaining();
        progress.pages += 1;
        summary.rows_read += held;
        self.reached(progress, Step::AfterRead);

        let mut page = Page::new(first, held);
        let mut failures: Vec<Failure> = Vec::new();
        let mut next = first;
        let mut cut_by_deadline = false;
        loop {
            if deadline.is_near() && rows.remaining() > 0 {
                summary.rows_deferred += rows.remaining();
                summary.add_error(format!(
                    "deadline: less than {}s left, {} rows not started and the snapshot rows after number {} are left in Snowflake",
                    deadline.margin().as_secs(),
                    rows.remaining(),
                    numbers.end()
                ));
                cut_by_deadline = true;
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
            let chunk_first = next;
            next += raw.len() as u64;
            let plan = plan_chunk(
                raw,
                chunk_first,
                &mut progress.first_version,
                summary.run_id,
                Utc::now(),
            );
            self.write_chunk(
                replica,
                plan,
                progress,
                &mut page,
                &mut failures,
                summary,
                deadline,
            )
            .await;
            // Once per run: after the run's first chunk.
            self.reached(progress, Step::MidWrite);
        }
        drop(rows);
        self.reached(progress, Step::AfterWrite);

        self.enqueue(failures, progress, &mut page, summary, deadline)
            .await;
        self.reached(progress, Step::AfterEnqueue);

        self.delete_safe_rows(snapshot, &page, progress, summary, deadline)
            .await?;
        if cut_by_deadline {
            return Err(Stop::Deadline);
        }
        Ok(held as u64)
    }

    /// Deletes the page's safe rows from the source table, by joining it
    /// against the snapshot: one statement for a page without trouble. It
    /// is started even near the deadline (it is bounded, and leaving rows
    /// the queue owns in Snowflake would enqueue them again next run); only
    /// its retries stop there.
    async fn delete_safe_rows(
        &self,
        snapshot: &dyn Snapshot,
        page: &Page,
        progress: &mut Progress,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) -> Result<(), Stop> {
        for ids in [IdMatch::Equal, IdMatch::BothNull] {
            let ranges = page.safe_ranges(ids);
            for statement in ranges.chunks(MAX_RANGES_PER_DELETE) {
                let deleted: Result<u64, SourceError> =
                    retry(self.policy(), deadline, "Snowflake delete", async || {
                        snapshot.delete(statement, ids).await
                    })
                    .await;
                match deleted {
                    Ok(n) => summary.rows_deleted += usize::try_from(n).unwrap_or(usize::MAX),
                    Err(e) => {
                        // The rows are safe elsewhere: the next run reads them
                        // again, the upsert changes nothing, and the delete is
                        // done then.
                        summary.add_error(format!(
                            "deleting from Snowflake stopped; safe rows left for the next run: {e}"
                        ));
                        return Err(Stop::Source);
                    }
                }
                // Once per run: after the run's first delete.
                self.reached(progress, Step::MidDelete);
            }
        }
        Ok(())
    }
}
