//! The replicator's run over one table (`case`, the mapping the variables
//! make, or a table of the mapping file): take the table's run guard (its
//! own lock and ledger rows), count (an empty table: idle), freeze at most
//! the table's cap into a snapshot numbered by key, then page by page, each
//! page kept as the source sent it ([`EncodedPage`]) and decoded a chunk of
//! `BATCH_SIZE` rows at a time:
//!
//! - plan each row of the chunk ([`plan`]): a value Snowflake's decoder
//!   refused, a NULL key, an integer past its column's range or a value a
//!   rule refuses makes it a row-level failure (`invalid`); another
//!   version of a key waits for the next run; an identical copy or another
//!   spelling goes with the row it repeats;
//! - confirm the run still holds its lock (lost to another run: stop, the
//!   page stays in Snowflake; Postgres unreachable: the writes stop, the
//!   invalid rows still go to the queue);
//! - write the chunk's valid rows to the sink (Postgres isolates the rows
//!   it refuses, which become `rejected` failures);
//! - once the page's chunks are done, send its failures to the retry queue
//!   as version-2 messages (`case`'s as version 1, by its queue's adapter),
//!   each carrying its row as read;
//! - delete from Snowflake exactly the rows now safe: the join on the key
//!   and the row hash ([`crate::ports::TableSnapshot::delete`]).
//!
//! Every row read is written, enqueued, or left in Snowflake (deferred),
//! and the ledger says how many of each; a row that goes with another (an
//! identical copy, another spelling) is counted where it went ([`chunk`]).
//! A crash anywhere leaves each row in Postgres, in the queue, or in
//! Snowflake: the upsert is idempotent and the delete matches whole rows.
//! The next page is read while one is written, enqueued and deleted (in
//! memory: two encoded pages, one decoded chunk, and the page's failed
//! rows). A [`StepHook`] hears of each [`Step`] a run reaches (once per
//! run). [`set`] prepares and runs the tables of a deployment together.

mod chunk;
mod plan;
mod safe;
pub mod set;
#[cfg(test)]
pub(crate) mod tests;

use chrono::Utc;
use uuid::Uuid;

use crate::config::RunLimits;
use crate::deadline::Deadline;
use crate::failure::{Classify, SourceError, WriteError};
use crate::ledger::{RunOutcome, RunSummary};
use crate::model::mapped_message::MappedRetryMessage;
use crate::model::message::FailureDetail;
use crate::model::rules::BoundRules;
use crate::model::value::{EncodedPage, TablePage};
use crate::page::Page;
use crate::ports::{
    GuardedRun, NoHook, RetryQueue, RowNumbers, RunGuard, Step, StepHook, TableSink, TableSnapshot,
    TableSource,
};
use crate::retry::{retry, Backoff, RetryPolicy};
use chunk::{Chunk, Fate};
use plan::{leading_copies, Versions};

/// One mapped table and the services its runs use.
pub struct TableReplicator {
    /// The mapping's name (ledger, logs, messages).
    pub name: String,
    /// The copied columns' source names, in the order of a row's cells.
    pub columns: Vec<String>,
    /// Each cell's target column (the name a reason gives).
    pub targets: Vec<String>,
    /// Where the key columns are among them.
    pub key_positions: Vec<usize>,
    /// The checks before the write (the mapping's rules, the integer
    /// columns' ranges), bound to the columns.
    pub rules: BoundRules,
    pub source: Box<dyn TableSource>,
    /// The table's own run lock and ledger.
    pub guard: Box<dyn RunGuard>,
    pub sink: Box<dyn TableSink>,
    pub queue: Box<dyn RetryQueue>,
    pub limits: RunLimits,
    pub backoff: Backoff,
}

/// A failed row on its way to the retry queue. `rows_invalid` and
/// `rows_rejected` count these; `rows_enqueued` counts rows, copies
/// included.
struct Failure {
    /// The row's snapshot number, and its identical copies' (a copy
    /// leaves Snowflake with it: the delete matches content).
    numbers: Vec<u64>,
    key_null: bool,
    message: MappedRetryMessage,
}

/// One run's state, passed by reference through its steps.
struct TableRun<'a> {
    summary: RunSummary,
    guard: Box<dyn GuardedRun>,
    deadline: &'a Deadline,
    versions: Versions,
    /// Where the last row of the last chunk went (its copy may open the
    /// next chunk).
    carried: Option<Fate>,
    steps: &'a dyn StepHook,
    /// The steps already reported (a bit per [`Step::ALL`] index).
    reached: u16,
}

impl TableRun<'_> {
    /// Tells the hook of `step`, the first time this run reaches it.
    fn reached(&mut self, step: Step) {
        let bit = 1u16 << Step::ALL.iter().position(|s| *s == step).unwrap_or(0);
        if self.reached & bit == 0 {
            self.reached |= bit;
            self.steps.reached(step);
        }
    }
}

/// The columns of a `case` page: `SNOWFLAKE_PAGE_ROWS` counts rows of two.
const CASE_COLUMNS: usize = 2;

impl TableReplicator {
    /// Rows per page: as many cells as a `case` page holds, so that memory
    /// follows `SNOWFLAKE_PAGE_ROWS` whatever the table's width (a page is
    /// held as Arrow, a few bytes a value, and a wider row costs more).
    fn page_rows(&self) -> usize {
        (self.limits.page_rows.saturating_mul(CASE_COLUMNS) / self.columns.len().max(1)).max(1)
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.limits.write_attempts.max(1),
            backoff: self.backoff,
        }
    }

    /// One run; near `deadline` it starts nothing new, and what is left
    /// stays in Snowflake (the run ends `partial`, saying why).
    pub async fn run(
        &self,
        run_id: Uuid,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> RunSummary {
        self.run_observed(run_id, trigger_id, deadline, &NoHook)
            .await
    }

    /// [`Self::run`], telling `steps` of each step it reaches.
    pub async fn run_observed(
        &self,
        run_id: Uuid,
        trigger_id: Option<String>,
        deadline: &Deadline,
        steps: &dyn StepHook,
    ) -> RunSummary {
        let mut summary = RunSummary::new(run_id, trigger_id);
        summary.table = Some(self.name.clone());
        let guard = match self.guard.open_run(&summary).await {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                summary.outcome = RunOutcome::Skipped;
                summary.add_error(format!("another run of table {} holds its lock", self.name));
                summary.finished_at = Some(Utc::now());
                return summary;
            }
            Err(e) => {
                summary.outcome = RunOutcome::Failed;
                summary.add_error(format!("cannot start the run of table {}: {e}", self.name));
                summary.finished_at = Some(Utc::now());
                return summary;
            }
        };
        let statements_before = self.source.statements_sent();
        let mut run = TableRun {
            summary,
            guard,
            deadline,
            versions: Versions::default(),
            carried: None,
            steps,
            reached: 0,
        };
        let decided = self.move_rows(&mut run).await;
        run.reached(Step::BeforeLedger);
        let TableRun {
            mut summary,
            mut guard,
            ..
        } = run;
        summary.snowflake_statements = self.source.statements_sent() - statements_before;
        summary.outcome = match decided {
            Some(outcome) => outcome,
            None if summary.rows_deferred_for_trouble() > 0 || summary.error.is_some() => {
                RunOutcome::Partial
            }
            None => RunOutcome::Succeeded,
        };
        summary.finished_at = Some(Utc::now());
        debug_assert_eq!(summary.unaccounted(), 0, "{summary:?}");
        if let Err(e) = guard.finish(&summary).await {
            summary.add_error(format!("ledger not updated: {e}"));
        }
        summary
    }

    /// Counts, snapshots and moves the rows page by page; the outcome when
    /// the rows do not decide it (idle, failed).
    async fn move_rows(&self, run: &mut TableRun<'_>) -> Option<RunOutcome> {
        let (run_id, deadline) = (run.summary.run_id, run.deadline);
        run.reached(Step::BeforeRead);
        let count = retry(self.policy(), deadline, "Snowflake count", async || {
            self.source.count_rows(run_id, deadline).await
        })
        .await;
        match count {
            Ok(0) => return Some(RunOutcome::Idle),
            Ok(_) => {}
            Err(e) => {
                run.summary
                    .add_error(format!("counting the rows of table {}: {e}", self.name));
                return Some(RunOutcome::Failed);
            }
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
                    .add_error(format!("taking the snapshot of table {}: {e}", self.name));
                return Some(RunOutcome::Failed);
            }
        };
        run.reached(Step::AfterSnapshot);
        let page_rows = self.page_rows() as u64;
        let last = limit as u64;
        let mut failed_first = false;
        let mut first = 1u64;
        // The next page, read while this one is written, enqueued and
        // deleted: at most two pages in memory. A page read ahead that the
        // run does not get to is dropped unaccounted: it is still in
        // Snowflake, and reading the snapshot has no side effect.
        let mut ahead: Option<Result<Box<dyn EncodedPage>, SourceError>> = None;
        while first <= last {
            if deadline.is_near() {
                run.summary.add_error(format!(
                    "deadline: the snapshot rows from number {first} on were not moved and stay in Snowflake"
                ));
                break;
            }
            let numbers = first..=last.min(first + page_rows - 1);
            let full = numbers.end() - numbers.start() + 1;
            let read = match ahead.take() {
                Some(read) => read,
                None => self.read_page(&*snapshot, numbers.clone(), deadline).await,
            };
            let rows = match read {
                Ok(rows) => rows,
                Err(e) => {
                    run.summary
                        .add_error(format!("reading the snapshot of table {}: {e}", self.name));
                    // A snapshot gone with its session is not the table's
                    // fault: the run ends partial and the next one takes a
                    // new snapshot.
                    failed_first = first == 1 && !matches!(e, SourceError::SnapshotLost { .. });
                    break;
                }
            };
            run.reached(Step::AfterRead);
            let held = rows.len() as u64;
            let next = (held == full && *numbers.end() < last)
                .then(|| numbers.end() + 1..=last.min(numbers.end() + page_rows));
            let steps = run.steps;
            let read_ahead = async {
                let numbers = next.filter(|_| !deadline.is_near())?;
                let read = self.read_page(&*snapshot, numbers, deadline).await;
                if first == 1 {
                    steps.reached(Step::AfterReadAhead);
                }
                Some(read)
            };
            let (go_on, read_ahead) =
                futures::join!(self.move_page(&*snapshot, first, rows, run), read_ahead);
            ahead = read_ahead;
            if !go_on || held < full {
                break;
            }
            first += page_rows;
        }
        run.reached(Step::BeforeDrop);
        if let Err(e) = snapshot.drop_snapshot().await {
            tracing::warn!(table = %self.name, error = %e, "could not drop the run snapshot; it is dropped before the next one, or goes with the session");
        }
        failed_first.then_some(RunOutcome::Failed)
    }

    /// One page: a chunk at a time, decode, plan and write; then enqueue
    /// the page's failures and delete its safe rows. False when the run
    /// must stop (the lock lost, Snowflake failing, the writes stopped by
    /// the sink or the deadline).
    async fn move_page(
        &self,
        snapshot: &dyn TableSnapshot,
        first: u64,
        rows: Box<dyn EncodedPage>,
        run: &mut TableRun<'_>,
    ) -> bool {
        let held = rows.len();
        run.summary.rows_read += held;
        let mut page = Page::new(first, held);
        let mut stopped = false;
        match run.guard.confirm().await {
            Ok(()) => {}
            // Postgres cannot be reached: the writes stop and the page's
            // valid rows stay in Snowflake. Its invalid rows, which need no
            // Postgres, still go to the queue and leave Snowflake (at worst
            // queued twice, should another run reach Postgres and take the
            // lock meanwhile: the retrier's versions make that harmless).
            Err(e) if e.is_transient() => {
                run.summary.add_error(format!(
                    "writing table {} stopped: the run lock cannot be confirmed: {e}",
                    self.name
                ));
                stopped = true;
            }
            Err(e) => return self.lock_lost(first, &*rows, run, &e),
        }
        let mut failures = Vec::new();
        let size = self.limits.batch_size.max(1);
        // Decoded a chunk at a time: the cells of one chunk are in memory,
        // not those of the page. Once the writes stop, the chunks left are
        // still planned, so that their invalid rows reach the queue.
        for start in (0..held).step_by(size) {
            let mut chunk = Chunk {
                rows: rows.decode(start..(start + size).min(held)),
                page: &mut page,
                failures: &mut failures,
            };
            self.move_chunk(&mut chunk, &mut stopped, run).await;
        }
        // A first page with no row to write: still in step order.
        run.reached(Step::MidWrite);
        run.reached(Step::AfterWrite);
        let sent = self
            .enqueue(failures, &mut page, &mut run.summary, run.deadline)
            .await;
        // A copy of the page's last row, opening the next page, goes where
        // that row went: now enqueued (and deleted below) or left.
        if let Some(Fate::Failed(f)) = run.carried {
            run.carried = Some(if sent.get(f).copied().unwrap_or(false) {
                Fate::Enqueued
            } else {
                Fate::Left { duplicate: false }
            });
        }
        run.reached(Step::AfterEnqueue);
        self.delete_safe(snapshot, &page, run).await && !stopped
    }

    /// Another run holds the lock now and works on the table: this run
    /// writes and deletes nothing more; the page stays in Snowflake, but
    /// for copies of the page before's last row, which went with it.
    /// Always false (the run stops).
    fn lock_lost(
        &self,
        first: u64,
        rows: &dyn EncodedPage,
        run: &mut TableRun<'_>,
        e: &WriteError,
    ) -> bool {
        let held = rows.len();
        let opening = rows.decode(0..held.min(self.limits.batch_size.max(1)));
        let copies = leading_copies(&opening, &run.versions);
        match run.carried {
            Some(Fate::Written) => run.summary.rows_written += copies,
            Some(Fate::Enqueued) => run.summary.rows_enqueued += copies,
            Some(Fate::Left { duplicate: true }) => {
                run.summary.rows_deferred += copies;
                run.summary.rows_deferred_duplicates += copies;
            }
            _ => run.summary.rows_deferred += copies,
        }
        let summary = &mut run.summary;
        summary.rows_deferred += held - copies;
        summary.add_error(format!(
            "the run of table {} lost its lock; the snapshot rows from number {first} on stay in Snowflake: {e}",
            self.name
        ));
        false
    }

    /// One page of the snapshot, read with retries.
    async fn read_page(
        &self,
        snapshot: &dyn TableSnapshot,
        numbers: RowNumbers,
        deadline: &Deadline,
    ) -> Result<Box<dyn EncodedPage>, SourceError> {
        retry(self.policy(), deadline, "Snowflake read", async || {
            snapshot.read(numbers.clone()).await
        })
        .await
    }

    /// Row `i` of `rows` on its way to the retry queue.
    fn failure(&self, rows: &TablePage, i: usize, error: FailureDetail, run_id: Uuid) -> Failure {
        Failure {
            numbers: vec![rows.number(i)],
            key_null: rows.key_null(i, &self.key_positions),
            message: MappedRetryMessage::first_failure(
                &self.name,
                &self.columns,
                &rows.cells(i),
                error,
                run_id,
                Utc::now(),
            ),
        }
    }
}
