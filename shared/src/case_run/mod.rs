//! `case`'s own run, over any [`crate::ports::SinkPool`]: stream mode's
//! publisher runs it with the changes queue as its sink
//! ([`crate::publisher`]). (The replicator function runs every table,
//! `case` included, through [`crate::table_run`].) One run, top to bottom:
//!
//! 1. take the run guard (the lock and the ledger, in Postgres; another run
//!    in progress: skip) and open the sink (Postgres; the changes queue for
//!    stream mode's publisher);
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
//!    - confirm the run still holds its lock (lost to another run: stop,
//!      everything not done stays in Snowflake; Postgres unreachable: stop
//!      writing, as when a write fails);
//!    - write the valid rows to the sink in chunks of `BATCH_SIZE`; the sink
//!      says which it
//!      accepted, refused (Postgres isolates them by bisection,
//!      [`crate::sink::isolate`]) or deferred after retrying transient
//!      errors ([`crate::retry`]);
//!    - send refused and invalid rows to the retry queue (circuit breaker:
//!      `MAX_FAILURES_PER_RUN` for the whole run);
//!    - delete from Snowflake exactly the rows that are safe, by joining the
//!      table against the page's safe ranges of the snapshot ([`page`]);
//!      every other row stays for the next run ([`delete`]);
//! 5. drop the snapshot;
//! 6. record the run in the ledger ([`crate::ledger`]).
//!
//! A crash between any two steps leaves every row in Postgres, in the queue,
//! or still in Snowflake, and the next run finishes the job: the upsert is
//! idempotent, the delete matches whole rows, and the snapshot is a
//! temporary table that dies with its session.

mod delete;
mod enqueue;
mod plan;
#[cfg(test)]
mod tests;
mod write;

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use crate::case_run::plan::{plan_chunk, Failure};
use crate::config::RunLimits;
use crate::deadline::Deadline;
use crate::failure::{Classify, SourceError};
use crate::ledger::{RunOutcome, RunSummary};
use crate::page::Page;
use crate::ports::{
    GuardedRun, RetryQueue, RowNumbers, RowSink, RowSource, RunGuard, SinkPool, Snapshot,
    SourceRows, Step, StepHook,
};
use crate::retry::{retry, Backoff, RetryPolicy};

/// The services a run uses, and its limits.
pub struct CaseRun {
    pub source: Box<dyn RowSource>,
    /// The run lock and the ledger.
    pub guard: Box<dyn RunGuard>,
    /// Where the rows go.
    pub sinks: Box<dyn SinkPool>,
    pub queue: Box<dyn RetryQueue>,
    pub limits: RunLimits,
    /// Between attempts of a Postgres write or a Snowflake delete.
    pub backoff: Backoff,
    /// Told at each step boundary ([`crate::ports::NoHook`] in Lambda).
    pub steps: Box<dyn StepHook>,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<std::time::Duration>,
}

impl CaseRun {
    /// The production shape: the given adapters, the configured limits and
    /// margin, the default backoff and no step hook.
    pub fn new(
        source: Box<dyn RowSource>,
        guard: Box<dyn RunGuard>,
        sinks: Box<dyn SinkPool>,
        queue: Box<dyn RetryQueue>,
        config: &crate::config::ReplicatorConfig,
    ) -> Self {
        Self {
            source,
            guard,
            sinks,
            queue,
            limits: config.limits,
            backoff: Backoff::default(),
            steps: Box::new(crate::ports::NoHook),
            deadline_margin: config.deadline_margin,
        }
    }
}

/// One run's state, passed by reference through its steps: what it did,
/// its hold on the guard, its sink, how far it got, and the page in hand.
struct Run {
    summary: RunSummary,
    guard: Box<dyn GuardedRun>,
    sink: Box<dyn RowSink>,
    progress: Progress,
    /// Which rows of the page in hand are safe to delete.
    page: Page,
    /// The page's failed rows, bound for the retry queue.
    failures: Vec<Failure>,
}

/// How far a run got.
#[derive(Default)]
struct Progress {
    /// The country each id had when first seen in this run (the last id's
    /// only, between chunks: see [`plan_chunk`]).
    first_version: HashMap<i32, [u8; 3]>,
    /// Failure messages made so far (the circuit breaker's count).
    failures_seen: usize,
    /// Set when the sink stopped taking rows (a fatal error, a transient one
    /// that outlasted its retries, the deadline): later chunks are deferred.
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
    /// The run guard no longer confirms the lock.
    LockLost,
}

impl CaseRun {
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
        summary.sink = self.sinks.kind();
        let mut guard = match self.guard.open_run(&summary).await {
            Ok(Some(guard)) => guard,
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
        let sink = match self.sinks.open(Some(run_id)).await {
            Ok(sink) => sink,
            Err(e) => {
                summary.outcome = RunOutcome::Failed;
                summary.add_error(format!("cannot open {}: {e}", summary.sink.target()));
                summary.finished_at = Some(Utc::now());
                Self::record(guard.as_mut(), &mut summary).await;
                return summary;
            }
        };
        let mut run = Run {
            summary,
            guard,
            sink,
            progress: Progress::default(),
            page: Page::new(1, 0),
            failures: Vec::new(),
        };
        self.move_rows(&mut run, deadline).await;
        self.steps.reached(Step::BeforeLedger);
        let Run {
            mut summary,
            mut guard,
            ..
        } = run;
        summary.finished_at = Some(Utc::now());
        debug_assert_eq!(summary.unaccounted(), 0, "{summary:?}");
        Self::record(guard.as_mut(), &mut summary).await;
        summary
    }

    /// Records the run's outcome in the ledger; the rows are where the
    /// summary says whether or not that works.
    async fn record(guard: &mut dyn GuardedRun, summary: &mut RunSummary) {
        if let Err(e) = guard.finish(summary).await {
            tracing::error!(run_id = %summary.run_id, error = %e, "could not record the run in the ledger");
            summary.add_error(format!("ledger not updated: {e}"));
        }
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.limits.write_attempts.max(1),
            backoff: self.backoff,
        }
    }

    /// Tells the step hook, once per run.
    fn reached(&self, run: &mut Run, step: Step) {
        let progress = &mut run.progress;
        if !progress.steps_reached.contains(&step) {
            progress.steps_reached.push(step);
            self.steps.reached(step);
        }
    }

    async fn move_rows(&self, run: &mut Run, deadline: &Deadline) {
        let statements_before = self.source.statements_sent();
        self.reached(run, Step::BeforeRead);
        let outcome = self.snapshot_and_move(run, deadline).await;
        let summary = &mut run.summary;
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
    async fn snapshot_and_move(&self, run: &mut Run, deadline: &Deadline) -> Option<RunOutcome> {
        let run_id = run.summary.run_id;
        let count = retry(self.policy(), deadline, "Snowflake count", async || {
            self.source.count_rows(Some(run_id), deadline).await
        })
        .await;
        match count {
            Ok(0) => return Some(RunOutcome::Idle),
            Ok(_) => {}
            Err(e) => {
                run.summary
                    .add_error(format!("counting the Snowflake rows: {e}"));
                return Some(RunOutcome::Failed);
            }
        }
        if deadline.is_near() {
            run.summary.add_error(format!(
                "deadline: less than {}s left before the snapshot; nothing was read",
                deadline.margin().as_secs()
            ));
            return None;
        }
        let limit = self.limits.max_rows_per_run;
        let snapshot = retry(self.policy(), deadline, "Snowflake snapshot", async || {
            self.source.snapshot(run_id, limit, deadline).await
        })
        .await;
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) => {
                run.summary
                    .add_error(format!("taking the Snowflake snapshot: {e}"));
                return Some(RunOutcome::Failed);
            }
        };
        self.reached(run, Step::AfterSnapshot);

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
                run.summary.add_error(format!(
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
                    run.summary
                        .add_error(format!("reading the Snowflake snapshot: {e}"));
                    source_failed_first =
                        run.progress.pages == 0 && !matches!(e, SourceError::SnapshotLost { .. });
                    break;
                }
            };
            let next = (rows.remaining() as u64 == full && *numbers.end() < last)
                .then(|| numbers.end() + 1..=last.min(numbers.end() + page_rows));
            let first_ahead = run.progress.pages == 0;
            let (moved, read_ahead) = futures::join!(
                self.move_page(&*snapshot, PageRows { numbers, rows }, run, deadline),
                self.read_ahead(&*snapshot, next, first_ahead, deadline),
            );
            ahead = read_ahead;
            match moved {
                Ok(read) if read < full => break,
                Ok(_) => {}
                Err(Stop::Source | Stop::Deadline | Stop::LockLost) => break,
            }
            first += page_rows;
        }

        self.reached(run, Step::BeforeDrop);
        // The drop needs no warehouse, and a snapshot it misses dies with the
        // session (or is dropped before the next snapshot): a failure here
        // loses nothing and does not make the run partial.
        if let Err(e) = snapshot.drop_snapshot().await {
            tracing::warn!(run_id = %run.summary.run_id, error = %e, "could not drop the run snapshot; it is dropped before the next one, or goes with the session");
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
        run: &mut Run,
        deadline: &Deadline,
    ) -> Result<u64, Stop> {
        let PageRows { numbers, mut rows } = page;
        let first = *numbers.start();
        let held = rows.remaining();
        run.progress.pages += 1;
        run.summary.rows_read += held;
        self.reached(run, Step::AfterRead);

        match run.guard.confirm().await {
            Ok(()) => {}
            // Another run holds the lock now: this one writes, enqueues and
            // deletes nothing more, and what it read stays in Snowflake.
            Err(e) if !e.is_transient() => {
                run.summary.rows_deferred += held;
                run.summary.add_error(format!(
                    "the run lost its lock; the snapshot rows from number {first} on stay in Snowflake: {e}"
                ));
                return Err(Stop::LockLost);
            }
            // Postgres cannot be reached: nobody writes there now. The page's
            // invalid rows, which need no Postgres, still go to the queue.
            Err(e) if !run.progress.writes_stopped => {
                run.summary.add_error(format!(
                    "writing to {} stopped: the run lock cannot be confirmed: {e}",
                    run.summary.sink.target()
                ));
                run.progress.writes_stopped = true;
            }
            Err(_) => {}
        }
        run.page = Page::new(first, held);
        run.failures = Vec::new();
        let mut next = first;
        let mut cut_by_deadline = false;
        loop {
            if deadline.is_near() && rows.remaining() > 0 {
                run.summary.rows_deferred += rows.remaining();
                run.summary.add_error(format!(
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
                    run.summary.rows_deferred += rows.remaining();
                    run.summary
                        .add_error(format!("decoding the Snowflake rows: {e}"));
                    break;
                }
            };
            let chunk_first = next;
            next += raw.len() as u64;
            let plan = plan_chunk(
                raw,
                chunk_first,
                &mut run.progress.first_version,
                run.summary.run_id,
                Utc::now(),
            );
            self.write_chunk(run, plan, deadline).await;
            // Once per run: after the run's first chunk.
            self.reached(run, Step::MidWrite);
        }
        drop(rows);
        self.reached(run, Step::AfterWrite);

        self.enqueue(run, deadline).await;
        self.reached(run, Step::AfterEnqueue);

        self.delete_safe_rows(snapshot, run, deadline).await?;
        if cut_by_deadline {
            return Err(Stop::Deadline);
        }
        Ok(held as u64)
    }
}
