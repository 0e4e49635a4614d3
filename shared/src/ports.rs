//! The ports: the small traits through which the use cases (replicator,
//! publisher, retrier, dlq-reporter, writer) reach the services. Their
//! real adapters are the crates of their services under `shared/adapters/`
//! (the publisher's changes-queue store is in `publisher/`), each tested
//! against the real service; their in-memory adapters are in `testing.rs`,
//! which the unit tests use.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::deadline::Deadline;
use crate::failure::{MailError, QueueError, SinkError, SourceError, WriteError};
use crate::ledger::{RunSummary, SinkKind};
use crate::model::change::{ChangeBatch, ChangeMark};
use crate::model::mapped_message::MappedRetryMessage;
use crate::model::message::RetryMessage;
use crate::model::report::{DeadLetter, Digest, FailureEntry};
use crate::model::row::{CountryRow, SourceRow};
use crate::model::value::{EncodedPage, Value};
use crate::retry::RetryPolicy;

// ---- Snowflake: the source ----

/// Rows read from the source, handed out a chunk at a time, so that a large
/// batch is never held as row structs all at once (the Arrow columns are
/// several times smaller than the rows they decode to).
pub trait SourceRows: Send {
    /// Rows not handed out yet.
    fn remaining(&self) -> usize;
    /// Up to `max` rows; empty when none remain.
    fn next_chunk(&mut self, max: usize) -> Result<Vec<SourceRow>, SourceError>;
}

/// Every remaining row at once (tests and small tools).
pub fn collect_rows(mut rows: Box<dyn SourceRows>) -> Result<Vec<SourceRow>, SourceError> {
    let n = rows.remaining();
    rows.next_chunk(n.max(1))
}

/// Rows already in memory (an empty result, and the in-memory source).
pub struct RowsInMemory(VecDeque<SourceRow>);

impl RowsInMemory {
    pub fn new(rows: Vec<SourceRow>) -> Self {
        Self(rows.into())
    }
}

impl SourceRows for RowsInMemory {
    fn remaining(&self) -> usize {
        self.0.len()
    }
    fn next_chunk(&mut self, max: usize) -> Result<Vec<SourceRow>, SourceError> {
        let n = max.min(self.0.len());
        Ok(self.0.drain(..n).collect())
    }
}

/// The source of rows, as the replicator sees it: a run freezes its batch
/// into a snapshot inside the source, reads it in pages and deletes by
/// joining against it, so that no statement carries the rows' keys.
#[async_trait]
pub trait RowSource: Send + Sync {
    /// How many rows the table holds. Snowflake answers `COUNT(*)` of a
    /// whole table from metadata, without a running warehouse: an idle run
    /// ends here.
    /// `run_id` and `deadline` go with the statements (their tag, and when
    /// a statement still running is given up and aborted).
    async fn count_rows(
        &self,
        run_id: Option<Uuid>,
        deadline: &Deadline,
    ) -> Result<u64, SourceError>;
    /// Freezes up to `limit` rows into a snapshot for run `run_id`, numbered
    /// `1..=n` in the order of `country_id` (NULLs last), so that every
    /// version of an id sits next to the others.
    /// Its statements, and the snapshot's, are bounded by `deadline`.
    async fn snapshot(
        &self,
        run_id: Uuid,
        limit: usize,
        deadline: &Deadline,
    ) -> Result<Box<dyn Snapshot>, SourceError>;
    /// Statements sent so far by this source and its snapshots (the run
    /// records the difference).
    fn statements_sent(&self) -> usize;
}

/// A range of snapshot row numbers, inclusive at both ends.
pub type RowNumbers = std::ops::RangeInclusive<u64>;

/// One run's snapshot of the source table.
#[async_trait]
pub trait Snapshot: Send + Sync {
    /// The snapshot rows numbered `numbers`, in order and without gaps: the
    /// first row handed out is number `numbers.start()`. Fewer rows than
    /// the range holds means the snapshot ends there.
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn SourceRows>, SourceError>;
    /// Deletes from the source table every row that matches, on every
    /// column and NULL-safely, a snapshot row numbered in one of `safe`
    /// (at most [`MAX_RANGES_PER_DELETE`]) whose id is as `ids` says;
    /// returns how many the source deleted. Safe to run twice.
    async fn delete(&self, safe: &[RowNumbers], ids: IdMatch) -> Result<u64, SourceError>;
    /// Drops the snapshot. Safe to run twice.
    async fn drop_snapshot(&self) -> Result<(), SourceError>;
}

/// Which snapshot rows of the named ranges a delete matches: the rows with
/// an id (joined on it), or the rows without one. Apart because a join on
/// `=` is a hash join everywhere, and a NULL-safe one may not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMatch {
    Equal,
    BothNull,
}

/// Ranges one delete statement may name: ~40 bytes of SQL each, so a
/// statement stays far below Snowflake's 1 MB text and 16,384-expression
/// limits. A normal range has one; only trouble (rows left behind in the
/// middle of a page) makes more.
pub const MAX_RANGES_PER_DELETE: usize = 1_000;

// ---- A table of the table run (case's mapping, the mapping file's): source and sink ----

/// A table in the source, as a table run sees it: a snapshot, its pages
/// and the join delete, over typed rows.
#[async_trait]
pub trait TableSource: Send + Sync {
    /// How many rows the table holds (from metadata: an idle run ends here).
    async fn count_rows(&self, run_id: Uuid, deadline: &Deadline) -> Result<u64, SourceError>;
    /// Freezes up to `limit` rows into run `run_id`'s snapshot, numbered by
    /// key.
    async fn snapshot(
        &self,
        run_id: Uuid,
        limit: usize,
        deadline: &Deadline,
    ) -> Result<Box<dyn TableSnapshot + '_>, SourceError>;
    /// Statements sent so far (the run records the difference).
    fn statements_sent(&self) -> usize;
}

/// One table run's snapshot.
#[async_trait]
pub trait TableSnapshot: Send + Sync {
    /// The rows numbered `numbers`, in order, as one page; fewer when the
    /// snapshot ends. An encoding the source cannot decode is an error
    /// here, not later: the page's rows then decode value by value (a
    /// value that is no value of its type refuses its row only).
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn EncodedPage>, SourceError>;
    /// Deletes the table's rows matching, on the key and the whole copied
    /// content, a snapshot row numbered in `safe`; how many went.
    async fn delete(&self, safe: &[RowNumbers], keys: IdMatch) -> Result<u64, SourceError>;
    /// Drops the snapshot. Safe to run twice.
    async fn drop_snapshot(&self) -> Result<(), SourceError>;
}

/// Where a mapped table's rows go (Postgres): each row's values in the
/// order of the table's copied columns.
#[async_trait]
pub trait TableSink: Send + Sync {
    /// Writes the rows; says which it accepted, refused (with why) or
    /// deferred, as [`RowSink::write`] does.
    async fn write(
        &self,
        rows: &[&[Value]],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome;

    /// Why the table must be planned again before the run writes, if it
    /// must: its target changed since the sink's plan was made (a column
    /// gone, added, or with another type, NOT NULL, default or key), or the
    /// check could not be made (say Postgres is down: unchecked is not
    /// unchanged). `None`: the target is as planned.
    async fn target_drift(&self, _deadline: &Deadline) -> Option<String> {
        None
    }
}

/// Rows of mapped tables written again, as the retry queue and the failure
/// report carry them (`countries replay`): keyed by source column name,
/// each value in [`crate::model::value_json`]'s tagged JSON.
#[async_trait]
pub trait MappedRows: Send + Sync {
    /// Writes rows of table `table` (the mapping's name); the outcome's
    /// indexes are the rows'. `Err` when the table cannot be written at all
    /// (not in the mapping file, its target unreadable), saying why.
    async fn write_rows(
        &self,
        table: &str,
        rows: &[&serde_json::Map<String, serde_json::Value>],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> Result<SinkOutcome, String>;
}

// ---- The run guard: one per run, whatever the sink ----

/// The run lock and the run ledger: a run holds the lock while it moves
/// rows, so that two runs never work on the table at once, and records
/// itself in the ledger when it starts and when it ends. Postgres keeps
/// both, for either sink.
#[async_trait]
pub trait RunGuard: Send + Sync {
    /// Takes the run lock and records the run as started. `None` when
    /// another run holds the lock.
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn GuardedRun>>, WriteError>;
}

/// One run's hold on the lock. Dropping it releases the lock.
#[async_trait]
pub trait GuardedRun: Send {
    /// Whether the run still holds the lock (its connection may have been
    /// lost, and another run may have taken it since): checked before each
    /// page is written. An error means it does not.
    async fn confirm(&mut self) -> Result<(), WriteError>;
    /// Records the run's outcome in the ledger.
    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError>;
}

// ---- Sinks: where rows go ----

/// How much a sink may do for one call of [`RowSink::write`].
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Rows the sink may refuse one by one; past that, what it would refuse
    /// is deferred (the circuit breaker: rows that could not be enqueued
    /// anyway are not isolated).
    pub failure_budget: usize,
    /// Attempts and backoff for transient failures.
    pub policy: RetryPolicy,
}

/// A sink: where a use case's rows go (the Postgres replica; stream mode's
/// changes queue). Each sink decides how it takes rows; only a sink that
/// refuses single rows (Postgres, through its constraints) isolates them.
#[async_trait]
pub trait RowSink: Send {
    /// Writes the rows and says what became of each ([`SinkOutcome`]):
    /// accepted, refused with the reason, or deferred because the sink
    /// stopped taking rows (unavailable, fatal, or the deadline), which the
    /// outcome's `stop` says.
    async fn write(
        &mut self,
        rows: &[&CountryRow],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome;

    /// Stream mode: records which batch of each message group is written
    /// next ([`ChangeMark`]), before its rows. Only the Postgres replica
    /// keeps marks; any other sink has nothing to record.
    async fn mark_changes(&mut self, marks: &[ChangeMark]) -> Result<(), WriteError> {
        let _ = marks;
        Ok(())
    }
}

/// What one [`RowSink::write`] did (indices into its rows).
#[derive(Debug, Default)]
pub struct SinkOutcome {
    /// Accepted: in the sink now.
    pub written: Vec<usize>,
    /// Refused by the sink, each with its reason (Postgres's constraints):
    /// bound for the retry queue.
    pub rejected: Vec<(usize, WriteError)>,
    /// Not tried, or not taken: still the caller's.
    pub deferred: Vec<usize>,
    /// Rows the sink changed (Postgres: inserted or updated; a replay
    /// changes none). The changes queue changes nothing itself: 0.
    pub changed: u64,
    /// Set when no further write should be tried: the sink is unavailable
    /// (a transient error outlasted its retries), a fatal error, or the
    /// deadline.
    pub stop: Option<SinkError>,
}

impl SinkOutcome {
    /// Every row deferred, and why.
    pub fn none_taken(rows: usize, stop: SinkError) -> Self {
        Self {
            deferred: (0..rows).collect(),
            stop: Some(stop),
            ..Self::default()
        }
    }
}

/// Opens sinks of one kind: one per run (the replicator, the publisher),
/// per invocation (the retrier, the writer) or per command (replay).
#[async_trait]
pub trait SinkPool: Send + Sync {
    /// Which sink this is (the ledger's `sink` column, logs, errors).
    fn kind(&self) -> SinkKind;
    /// A sink; `run_id` is the run whose rows it takes, when there is one
    /// (the changes queue stamps its batches with it).
    async fn open(&self, run_id: Option<Uuid>) -> Result<Box<dyn RowSink>, SinkError>;
}

// ---- Postgres: the failure report ----

/// What storing one failure-report entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Not in the report before (a message already stored is left as it is).
    pub new: bool,
    /// A digest email announced it already.
    pub emailed: bool,
}

/// The durable failure report.
#[async_trait]
pub trait FailureStore: Send + Sync {
    /// Stores the entries, each on its own: one the store refuses (a value it
    /// cannot hold) gets its own row-level error and the others are stored.
    /// The outer error means nothing could be stored (the store is down).
    async fn store(
        &self,
        report_run_id: Uuid,
        entries: &[FailureEntry],
    ) -> Result<Vec<Result<Stored, WriteError>>, WriteError>;

    /// Records that the digest of `report_run_id` announced these messages.
    async fn mark_emailed(
        &self,
        report_run_id: Uuid,
        message_ids: &[String],
    ) -> Result<u64, WriteError>;
}

// ---- SQS: the retry queue and its dead-letter queue ----

/// The changes queue of stream mode (a FIFO queue): the publisher sends,
/// the writer function receives through Lambda's event source mapping.
#[async_trait]
pub trait ChangeQueue: Send + Sync {
    /// Sends the batches; one result per batch, in order. Per bucket (the
    /// FIFO message group) nothing is sent after a batch that failed, so
    /// the queue never holds a later batch of a bucket without an earlier
    /// one.
    async fn publish(&self, batches: &[ChangeBatch]) -> Vec<Result<(), QueueError>>;
}

/// Stream mode's changes dead-letter queue, as the writer uses it: a
/// message that can never be written (not a valid batch) is parked there
/// at once, so that it does not hold its message group until the redrive
/// policy moves it, nor take good batches of its group with it; a batch
/// that fails on its last receive is parked there with its last error, so
/// that the failure report can say why.
#[async_trait]
pub trait ChangeParking: Send + Sync {
    /// Sends the body unchanged, in its message group, deduplicated on its
    /// message id (a redelivery parks it once), with why it was parked.
    async fn park(&self, parked: &Parked<'_>) -> Result<(), QueueError>;
}

/// A changes-queue message the writer gives up on, and why.
#[derive(Debug, Clone, Copy)]
pub struct Parked<'a> {
    pub message_id: &'a str,
    pub group: &'a str,
    pub body: &'a str,
    /// The last error (or why the body is not a batch).
    pub error: &'a str,
    /// Receives so far (`ApproximateReceiveCount`), when known.
    pub receive_count: Option<u32>,
}

#[async_trait]
pub trait RetryQueue: Send + Sync {
    /// Sends the messages; the result has one entry per message, in order.
    async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>>;
    /// The same for rows of mapped tables (schema version 2).
    async fn enqueue_mapped(&self, messages: &[MappedRetryMessage]) -> Vec<Result<(), QueueError>>;
}

/// What a delete of many messages did: some may be deleted before one fails.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Deletes SQS confirmed.
    pub count: usize,
    /// The first failure, if any.
    pub error: Option<QueueError>,
}

#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Up to `max` (≤ 10) messages, hidden from other readers meanwhile.
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Deletes the messages, each batch on its own.
    async fn delete(&self, letters: &[DeadLetter]) -> Deleted;
    /// When the reporter last announced that the failure report could not be
    /// stored, if that outage is still going on. Kept on the queue itself
    /// (a tag), so that it survives cold starts while Postgres is down.
    async fn outage_announced(&self) -> Result<Option<DateTime<Utc>>, QueueError>;
    /// Records (Some) or clears (None) that announcement.
    async fn set_outage_announced(&self, at: Option<DateTime<Utc>>) -> Result<(), QueueError>;
}

/// Stretches the visibility timeout of a retry message that failed again.
#[async_trait]
pub trait VisibilityDelay: Send + Sync {
    async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), QueueError>;
}

// ---- SES: the digest email ----

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, digest: &Digest) -> Result<(), MailError>;
}

// ---- The replicator's step boundaries ----

/// The boundaries between the steps of a replicator run, in order; each is
/// reached at most once per run (the first page's, when a step repeats per
/// page). A crash between any two of them must lose nothing; the
/// fault-schedule tests stop the real process at each one through a
/// [`StepHook`] of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    BeforeRead,
    /// The snapshot exists; nothing was read from it yet.
    AfterSnapshot,
    /// The first page was read.
    AfterRead,
    /// After the first chunk was written.
    MidWrite,
    /// The first page was written.
    AfterWrite,
    /// The first page's failed rows were sent to the retry queue.
    AfterEnqueue,
    /// After the first range delete, before the next page.
    MidDelete,
    /// The second page was read while the first was still being written,
    /// enqueued or deleted.
    AfterReadAhead,
    /// Every range is done; the snapshot still exists.
    BeforeDrop,
    BeforeLedger,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::BeforeRead,
        Step::AfterSnapshot,
        Step::AfterRead,
        Step::MidWrite,
        Step::AfterWrite,
        Step::AfterEnqueue,
        Step::MidDelete,
        Step::AfterReadAhead,
        Step::BeforeDrop,
        Step::BeforeLedger,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BeforeRead => "before_read",
            Self::AfterSnapshot => "after_snapshot",
            Self::AfterRead => "after_read",
            Self::MidWrite => "mid_write",
            Self::AfterWrite => "after_write",
            Self::AfterEnqueue => "after_enqueue",
            Self::MidDelete => "mid_delete",
            Self::AfterReadAhead => "after_read_ahead",
            Self::BeforeDrop => "before_drop",
            Self::BeforeLedger => "before_ledger",
        }
    }
}

/// Told when a run reaches a [`Step`]. The Lambda functions use [`NoHook`].
pub trait StepHook: Send + Sync {
    fn reached(&self, step: Step);
}

/// Does nothing at any step.
pub struct NoHook;

impl StepHook for NoHook {
    fn reached(&self, _step: Step) {}
}
