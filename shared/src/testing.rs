//! The in-memory adapters, one per port, used by every unit test. Each keeps
//! its state behind an `Arc<Mutex<…>>` so that a test can inspect it, break
//! the service (an outage, a refusal, a short reply) and heal it again.
//! Every call yields once, as a network call would: a crash (the run's
//! future dropped) can fall between any two of them.
//!
//! The real adapters are tested against the real services in `tests/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::deadline::Deadline;
use crate::failure::{ErrorKind, MailError, QueueError, SinkError, SourceError, WriteError};
use crate::ledger::{RunSummary, SinkKind};
use crate::model::change::ChangeBatch;
use crate::model::mapped_message::MappedRetryMessage;
use crate::model::message::RetryMessage;
use crate::model::report::{DeadLetter, Digest, FailureEntry};
use crate::model::row::{CountryRow, SourceRow};
use crate::ports::SinkOutcome;
use crate::ports::{
    ChangeParking, ChangeQueue, DeadLetterQueue, Deleted, FailureStore, GuardedRun, IdMatch,
    Mailer, RetryQueue, RowNumbers, RowSink, RowSource, RowsInMemory, RunGuard, SinkPool, Snapshot,
    SourceRows, Stored, VisibilityDelay, WriteLimits, MAX_RANGES_PER_DELETE,
};
use crate::sink::isolate::{write_isolating, AllOrNothing};

/// Locks a fake's state; a test that panicked while holding it has failed
/// already, so its poison is ignored.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- Snowflake ----

#[derive(Default)]
pub struct SourceState {
    pub rows: Vec<SourceRow>,
    pub fail_deletes: bool,
    /// Deletes that still succeed before deleting fails (an outage in the
    /// middle of the deletes).
    pub deletes_before_outage: Option<usize>,
    /// Counting, snapshots and reads fail.
    pub read_down: bool,
    /// Page reads that still succeed before reading fails.
    pub reads_before_outage: Option<usize>,
    /// The snapshots that exist (made, not dropped), by name.
    pub snapshots: BTreeMap<String, Vec<SourceRow>>,
    /// Every statement, as a short name ("count", "snapshot", "read",
    /// "delete", "drop").
    pub statements: Vec<&'static str>,
    /// Snapshots whose drop failed (as a lost session would leave them).
    pub fail_drops: bool,
}

/// Snowflake's `case` table, its snapshots included.
#[derive(Clone, Default)]
pub struct MemorySource(pub Arc<Mutex<SourceState>>);

impl MemorySource {
    pub fn with_rows(rows: Vec<SourceRow>) -> Self {
        let source = Self::default();
        source.state().rows = rows;
        source
    }

    pub fn state(&self) -> MutexGuard<'_, SourceState> {
        lock(&self.0)
    }

    fn outage(operation: &'static str) -> SourceError {
        SourceError::Unreachable {
            operation,
            detail: "test outage".into(),
        }
    }
}

#[async_trait]
impl RowSource for MemorySource {
    async fn count_rows(
        &self,
        _run_id: Option<Uuid>,
        _deadline: &crate::deadline::Deadline,
    ) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        let mut state = self.state();
        state.statements.push("count");
        if state.read_down {
            return Err(Self::outage("count"));
        }
        Ok(state.rows.len() as u64)
    }

    async fn snapshot(
        &self,
        run_id: Uuid,
        limit: usize,
        _deadline: &crate::deadline::Deadline,
    ) -> Result<Box<dyn Snapshot>, SourceError> {
        tokio::task::yield_now().await;
        let mut state = self.state();
        state.statements.push("snapshot");
        if state.read_down {
            return Err(Self::outage("snapshot"));
        }
        // As the snapshot statement: the `limit` lowest rows by id, then
        // country, NULLs last, numbered in that order.
        let mut rows = state.rows.clone();
        rows.sort_by(|a, b| {
            let key = |r: &SourceRow| {
                (
                    r.country_id.is_none(),
                    r.country_id,
                    r.country.is_none(),
                    r.country.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        rows.truncate(limit);
        let name = run_id.to_string();
        state.snapshots.insert(name.clone(), rows);
        Ok(Box::new(MemorySnapshot {
            source: self.clone(),
            name,
        }))
    }

    fn statements_sent(&self) -> usize {
        self.state().statements.len()
    }
}

/// Counts down the calls that still succeed before an outage (`None`: no
/// outage planned); says whether this call fails.
fn countdown(calls_left: &mut Option<usize>, down: &mut bool) -> bool {
    match calls_left {
        Some(0) => *down = true,
        Some(n) => *n -= 1,
        None => {}
    }
    *down
}

struct MemorySnapshot {
    source: MemorySource,
    name: String,
}

impl MemorySnapshot {
    /// The snapshot's rows; a missing snapshot fails as a lost session does.
    fn rows(
        state: &SourceState,
        name: &str,
        operation: &'static str,
    ) -> Result<Vec<SourceRow>, SourceError> {
        state
            .snapshots
            .get(name)
            .cloned()
            .ok_or(SourceError::Refused {
                operation,
                detail: format!("snapshot {name} does not exist"),
            })
    }
}

#[async_trait]
impl Snapshot for MemorySnapshot {
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn SourceRows>, SourceError> {
        tokio::task::yield_now().await;
        let mut state = self.source.state();
        state.statements.push("read");
        let state = &mut *state;
        if countdown(&mut state.reads_before_outage, &mut state.read_down) {
            return Err(MemorySource::outage("read"));
        }
        let rows = Self::rows(state, &self.name, "read")?;
        let page = rows
            .into_iter()
            .zip(1u64..)
            .filter(|(_, n)| numbers.contains(n))
            .map(|(row, _)| row)
            .collect();
        Ok(Box::new(RowsInMemory::new(page)))
    }

    async fn delete(&self, safe: &[RowNumbers], ids: IdMatch) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        let mut state = self.source.state();
        state.statements.push("delete");
        assert!(safe.len() <= MAX_RANGES_PER_DELETE, "{} ranges", safe.len());
        let state = &mut *state;
        if countdown(&mut state.deletes_before_outage, &mut state.fail_deletes) {
            return Err(MemorySource::outage("delete"));
        }
        let snapshot = Self::rows(state, &self.name, "delete")?;
        let matched: Vec<SourceRow> = snapshot
            .into_iter()
            .zip(1u64..)
            .filter(|(row, n)| {
                safe.iter().any(|r| r.contains(n))
                    && (row.country_id.is_some() == (ids == IdMatch::Equal))
            })
            .map(|(row, _)| row)
            .collect();
        // Whole-row, NULL-safe: every copy of a matched row goes.
        let before = state.rows.len();
        state.rows.retain(|r| !matched.contains(r));
        Ok((before - state.rows.len()) as u64)
    }

    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        tokio::task::yield_now().await;
        let mut state = self.source.state();
        state.statements.push("drop");
        if state.fail_drops {
            return Err(MemorySource::outage("drop"));
        }
        state.snapshots.remove(&self.name);
        Ok(())
    }
}

// ---- Postgres ----

#[derive(Default)]
pub struct StoreState {
    pub table: BTreeMap<i32, String>,
    pub locked: bool,
    /// Countries Postgres refuses, as a CHECK constraint would.
    pub refused: Vec<String>,
    pub transient_failures_left: usize,
    /// Every statement fails as a missing table would.
    pub fatal: bool,
    /// Connecting fails (the server is down).
    pub down: bool,
    /// A writer bug: writing this country panics.
    pub panic_on: Option<String>,
    pub statements: usize,
    pub ledger: Vec<RunSummary>,
    /// Every change committed to the table, in order.
    pub changes: Vec<(i32, String)>,
    /// Statements that still succeed before the store goes down.
    pub statements_before_outage: Option<usize>,
    /// How long each write takes.
    pub write_delay: Option<Duration>,
    /// A run's lock connection was lost and another run took the lock.
    pub lock_lost: bool,
    /// A run's lock cannot be confirmed: Postgres is unreachable.
    pub lock_unconfirmed: bool,
    /// Stream mode's marks: (buckets, block, bucket) → (run, seq).
    pub marks: BTreeMap<(u32, u32, u32), (uuid::Uuid, u64)>,
    /// Statements that held two versions of one id (which Postgres may
    /// apply in either order: see [`MemorySink`]'s upsert).
    pub repeated_ids: usize,
}

/// The replica: the `case` table, its run lock and the ledger.
#[derive(Clone, Default)]
pub struct MemoryStore(pub Arc<Mutex<StoreState>>);

impl MemoryStore {
    pub fn state(&self) -> MutexGuard<'_, StoreState> {
        lock(&self.0)
    }
}

#[async_trait]
impl RunGuard for MemoryStore {
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn GuardedRun>>, WriteError> {
        let mut state = self.state();
        if state.down {
            return Err(WriteError::transient("connection refused"));
        }
        if state.locked {
            return Ok(None);
        }
        state.locked = true;
        state.ledger.push(summary.clone());
        Ok(Some(Box::new(MemoryRun {
            state: self.0.clone(),
        })))
    }
}

/// One run's hold on the lock.
pub struct MemoryRun {
    state: Arc<Mutex<StoreState>>,
}

impl Drop for MemoryRun {
    fn drop(&mut self) {
        lock(&self.state).locked = false;
    }
}

#[async_trait]
impl GuardedRun for MemoryRun {
    async fn confirm(&mut self) -> Result<(), WriteError> {
        if lock(&self.state).lock_lost {
            return Err(WriteError::fatal(
                "lost the run lock with the connection, and another run holds it now",
            ));
        }
        if lock(&self.state).lock_unconfirmed {
            return Err(WriteError::transient("connection refused"));
        }
        Ok(())
    }

    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError> {
        lock(&self.state).ledger.push(summary.clone());
        Ok(())
    }
}

#[async_trait]
impl SinkPool for MemoryStore {
    fn kind(&self) -> SinkKind {
        SinkKind::Postgres
    }

    async fn open(&self, _run_id: Option<uuid::Uuid>) -> Result<Box<dyn RowSink>, SinkError> {
        if self.state().down {
            return Err(WriteError::transient("connection refused").into());
        }
        Ok(Box::new(MemorySink {
            state: self.0.clone(),
        }))
    }
}

/// A connection to the replica.
pub struct MemorySink {
    state: Arc<Mutex<StoreState>>,
}

#[async_trait]
impl RowSink for MemorySink {
    async fn write(
        &mut self,
        rows: &[&CountryRow],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome {
        write_isolating(self, rows, limits, deadline).await
    }

    async fn mark_changes(
        &mut self,
        marks: &[crate::model::change::ChangeMark],
    ) -> Result<(), WriteError> {
        tokio::task::yield_now().await;
        let mut state = lock(&self.state);
        if state.down || state.statements_before_outage == Some(0) {
            return Err(WriteError::transient("connection refused"));
        }
        for m in marks {
            state
                .marks
                .insert((m.buckets, m.block, m.bucket), (m.run_id, m.seq));
        }
        Ok(())
    }
}

#[async_trait]
impl AllOrNothing for MemorySink {
    async fn write_all(&mut self, rows: &[&CountryRow]) -> Result<u64, WriteError> {
        tokio::task::yield_now().await;
        let delay = lock(&self.state).write_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = lock(&self.state);
        state.statements += 1;
        match &mut state.statements_before_outage {
            Some(0) => return Err(WriteError::transient("connection refused")),
            Some(n) => *n -= 1,
            None => {}
        }
        if let Some(bug) = &state.panic_on {
            if rows.iter().any(|r| &r.country == bug) {
                let bug = bug.clone();
                drop(state);
                panic!("writer bug on {bug}");
            }
        }
        if state.fatal {
            return Err(WriteError::fatal("relation \"case\" does not exist"));
        }
        if state.transient_failures_left > 0 {
            state.transient_failures_left -= 1;
            return Err(WriteError::transient("connection reset"));
        }
        let mut ids: Vec<i32> = rows.iter().map(|r| r.country_id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != rows.len() {
            state.repeated_ids += 1;
            // What Postgres's upsert does with two versions of an id in one
            // statement: a version equal to what the row holds is skipped;
            // once the statement changed (or inserted) the row, any later
            // version of it is refused, whole.
            let mut changed: std::collections::HashSet<i32> = Default::default();
            for r in rows {
                if changed.contains(&r.country_id) {
                    return Err(WriteError::row_level(
                        "21000",
                        "ON CONFLICT DO UPDATE command cannot affect row a second time",
                    ));
                }
                if state.table.get(&r.country_id) != Some(&r.country) {
                    changed.insert(r.country_id);
                }
            }
        }
        if rows.iter().any(|r| state.refused.contains(&r.country)) {
            return Err(WriteError::row_level("23514", "violates check constraint"));
        }
        let mut changed = 0;
        for r in rows {
            if state.table.insert(r.country_id, r.country.clone()).as_ref() != Some(&r.country) {
                changed += 1;
                state.changes.push((r.country_id, r.country.clone()));
            }
        }
        Ok(changed)
    }
}

/// The failure report table. Like Postgres `text`, it refuses a NUL
/// character in any text field.
#[derive(Clone, Default)]
pub struct MemoryFailureStore {
    pub rows: Arc<Mutex<BTreeMap<String, FailureEntry>>>,
    /// Message ids a digest announced, with the report run that sent it.
    pub emailed: Arc<Mutex<BTreeMap<String, Uuid>>>,
    pub down: Arc<Mutex<bool>>,
}

fn holds_nul(e: &FailureEntry) -> bool {
    [
        Some(e.message_id.as_str()),
        e.record_key.as_deref(),
        e.country.as_deref(),
        Some(e.error_class.as_str()),
        e.sqlstate.as_deref(),
        Some(e.error_message.as_str()),
        e.raw_body.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|text| text.contains('\0'))
}

#[async_trait]
impl FailureStore for MemoryFailureStore {
    async fn store(
        &self,
        _: Uuid,
        entries: &[FailureEntry],
    ) -> Result<Vec<Result<Stored, WriteError>>, WriteError> {
        if *lock(&self.down) {
            return Err(WriteError::transient("connection refused"));
        }
        let mut rows = lock(&self.rows);
        let emailed = lock(&self.emailed);
        Ok(entries
            .iter()
            .map(|e| {
                if holds_nul(e) {
                    return Err(WriteError::row_level(
                        "22021",
                        "invalid byte sequence for encoding \"UTF8\": 0x00",
                    ));
                }
                let new = !rows.contains_key(&e.message_id);
                if new {
                    rows.insert(e.message_id.clone(), e.clone());
                }
                Ok(Stored {
                    new,
                    emailed: emailed.contains_key(&e.message_id),
                })
            })
            .collect())
    }

    async fn mark_emailed(
        &self,
        report_run_id: Uuid,
        message_ids: &[String],
    ) -> Result<u64, WriteError> {
        let mut emailed = lock(&self.emailed);
        let mut marked = 0;
        for id in message_ids {
            if !emailed.contains_key(id) {
                emailed.insert(id.clone(), report_run_id);
                marked += 1;
            }
        }
        Ok(marked)
    }
}

// ---- crashes ----

/// Polls a future at most `polls` times, then drops it (`None`): a crash
/// between two calls of a run, exactly what a killed Lambda leaves behind.
pub struct CrashAfter<F: std::future::Future> {
    pub inner: std::pin::Pin<Box<F>>,
    pub polls: usize,
}

impl<F: std::future::Future> std::future::Future for CrashAfter<F> {
    type Output = Option<F::Output>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.polls == 0 {
            return std::task::Poll::Ready(None);
        }
        self.polls -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

// ---- SQS ----

/// The retry queue.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    pub messages: Arc<Mutex<Vec<RetryMessage>>>,
    /// Version-2 messages (rows of mapped tables).
    pub mapped: Arc<Mutex<Vec<MappedRetryMessage>>>,
    pub down: Arc<Mutex<bool>>,
    /// Answers for only this many messages of a batch (a short reply).
    pub answers_for: Arc<Mutex<Option<usize>>>,
}

#[async_trait]
impl RetryQueue for MemoryQueue {
    async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>> {
        tokio::task::yield_now().await;
        if let Some(n) = *lock(&self.answers_for) {
            let taken = &messages[..n.min(messages.len())];
            lock(&self.messages).extend(taken.iter().cloned());
            return taken.iter().map(|_| Ok(())).collect();
        }
        if *lock(&self.down) {
            return messages
                .iter()
                .map(|_| Err(QueueError::call("SendMessageBatch", "down")))
                .collect();
        }
        lock(&self.messages).extend(messages.iter().cloned());
        messages.iter().map(|_| Ok(())).collect()
    }

    async fn enqueue_mapped(&self, messages: &[MappedRetryMessage]) -> Vec<Result<(), QueueError>> {
        tokio::task::yield_now().await;
        if let Some(n) = *lock(&self.answers_for) {
            let taken = &messages[..n.min(messages.len())];
            lock(&self.mapped).extend(taken.iter().cloned());
            return taken.iter().map(|_| Ok(())).collect();
        }
        if *lock(&self.down) {
            return messages
                .iter()
                .map(|_| Err(QueueError::call("SendMessageBatch", "down")))
                .collect();
        }
        lock(&self.mapped).extend(messages.iter().cloned());
        messages.iter().map(|_| Ok(())).collect()
    }
}

/// The changes queue: a FIFO queue that drops a batch whose deduplication
/// id it already holds, as SQS does within five minutes.
#[derive(Clone, Default)]
pub struct MemoryChanges(pub Arc<Mutex<ChangesState>>);

#[derive(Default)]
pub struct ChangesState {
    /// Accepted batches, in the order the queue took them.
    pub batches: Vec<ChangeBatch>,
    pub down: bool,
    /// Refuse this bucket's batches the next `n` times they are sent.
    pub refuse_bucket: Option<(u32, usize)>,
    /// Publish calls made.
    pub calls: usize,
}

impl MemoryChanges {
    pub fn state(&self) -> MutexGuard<'_, ChangesState> {
        lock(&self.0)
    }
}

#[async_trait]
impl ChangeQueue for MemoryChanges {
    async fn publish(&self, batches: &[ChangeBatch]) -> Vec<Result<(), QueueError>> {
        tokio::task::yield_now().await;
        let mut state = self.state();
        state.calls += 1;
        let mut failed: Vec<u32> = Vec::new();
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            if state.down {
                results.push(Err(QueueError::call("SendMessageBatch", "down")));
                continue;
            }
            let refused = match &mut state.refuse_bucket {
                Some((bucket, n)) if *bucket == batch.bucket && *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            if refused || failed.contains(&batch.bucket) {
                failed.push(batch.bucket);
                results.push(Err(QueueError::entry("SendMessageBatch", "refused")));
                continue;
            }
            let id = crate::model::change::deduplication_id(batch);
            let duplicate = state
                .batches
                .iter()
                .any(|b| crate::model::change::deduplication_id(b) == id);
            if !duplicate {
                state.batches.push(batch.clone());
            }
            results.push(Ok(()));
        }
        results
    }
}

/// The bodies of packed batches, each with its message group (its bucket),
/// as the changes queue holds them.
pub fn change_bodies(batches: &[ChangeBatch]) -> Vec<(String, Option<String>)> {
    batches
        .iter()
        .map(|b| (b.bucket.to_string(), serde_json::to_string(b).ok()))
        .collect()
}

/// Delivers (group, body) pairs to a stream writer as one invocation, in
/// order; the message ids are "m0", "m1", …
pub async fn deliver_changes(
    writer: &crate::writer::ChangeWriter,
    bodies: &[(String, Option<String>)],
) -> crate::writer::StreamSummary {
    let ids: Vec<String> = (0..bodies.len()).map(|i| format!("m{i}")).collect();
    let deliveries: Vec<crate::writer::ChangeDelivery<'_>> = bodies
        .iter()
        .zip(&ids)
        .map(|((group, body), id)| crate::writer::ChangeDelivery {
            message_id: id,
            body: body.as_deref(),
            group: Some(group.as_str()),
            receive_count: None,
        })
        .collect();
    writer
        .handle(&deliveries, &crate::deadline::Deadline::none())
        .await
}

/// Why a message was parked: the error, and the receive it failed on.
pub type ParkedWhy = (String, Option<u32>);

/// The changes dead-letter queue: (message id, group, body) parked there,
/// and why each was parked.
#[derive(Clone, Default)]
pub struct MemoryParking {
    pub parked: Arc<Mutex<Vec<(String, String, String)>>>,
    pub errors: Arc<Mutex<Vec<ParkedWhy>>>,
    pub down: Arc<Mutex<bool>>,
}

#[async_trait]
impl ChangeParking for MemoryParking {
    async fn park(&self, parked: &crate::ports::Parked<'_>) -> Result<(), QueueError> {
        tokio::task::yield_now().await;
        if *lock(&self.down) {
            return Err(QueueError::call("SendMessage", "down"));
        }
        let mut list = lock(&self.parked);
        if !list.iter().any(|(id, _, _)| id == parked.message_id) {
            list.push((
                parked.message_id.into(),
                parked.group.into(),
                parked.body.into(),
            ));
            lock(&self.errors).push((parked.error.into(), parked.receive_count));
        }
        Ok(())
    }
}

/// The dead-letter queue: what waits, what was deleted (and with which
/// receipt handle), and the outage announcement tag.
#[derive(Clone, Default)]
pub struct MemoryDeadLetters {
    pub waiting: Arc<Mutex<Vec<DeadLetter>>>,
    /// Received and not deleted: hidden until [`MemoryDeadLetters::expire`].
    pub in_flight: Arc<Mutex<Vec<DeadLetter>>>,
    /// Each receive hands out every message twice (a standard queue may).
    pub deliver_twice: Arc<Mutex<bool>>,
    pub deleted: Arc<Mutex<Vec<String>>>,
    pub deleted_handles: Arc<Mutex<Vec<String>>>,
    /// Deletes that succeed before deleting fails.
    pub deletes_before_failure: Arc<Mutex<Option<usize>>>,
    pub outage_announced: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl MemoryDeadLetters {
    /// The visibility timeout passes: what was received and not deleted is
    /// visible again, with a new receipt handle.
    pub fn expire(&self) {
        let mut in_flight = lock(&self.in_flight);
        let mut waiting = lock(&self.waiting);
        for mut letter in in_flight.drain(..) {
            letter.receipt_handle.push('+');
            waiting.push(letter);
        }
    }

    /// Every message still in the queue, visible or not.
    pub fn message_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.waiting)
            .iter()
            .chain(lock(&self.in_flight).iter())
            .map(|l| l.message_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryDeadLetters {
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut waiting = lock(&self.waiting);
        let n = max.min(waiting.len());
        let batch: Vec<DeadLetter> = waiting.drain(..n).collect();
        lock(&self.in_flight).extend(batch.iter().cloned());
        if *lock(&self.deliver_twice) {
            let again = batch.iter().map(|l| DeadLetter {
                receipt_handle: format!("{}-again", l.receipt_handle),
                ..l.clone()
            });
            return Ok(batch.iter().cloned().chain(again).collect());
        }
        Ok(batch)
    }

    async fn delete(&self, letters: &[DeadLetter]) -> Deleted {
        let mut deleted = Deleted::default();
        for letter in letters {
            let mut budget = lock(&self.deletes_before_failure);
            match budget.as_mut() {
                Some(0) => {
                    deleted.error.get_or_insert(QueueError::call(
                        "DeleteMessageBatch",
                        "ReceiptHandleIsInvalid",
                    ));
                    continue;
                }
                Some(n) => *n -= 1,
                None => {}
            }
            lock(&self.in_flight).retain(|l| l.message_id != letter.message_id);
            lock(&self.deleted).push(letter.message_id.clone());
            lock(&self.deleted_handles).push(letter.receipt_handle.clone());
            deleted.count += 1;
        }
        deleted
    }

    async fn outage_announced(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(*lock(&self.outage_announced))
    }

    async fn set_outage_announced(&self, at: Option<DateTime<Utc>>) -> Result<(), QueueError> {
        *lock(&self.outage_announced) = at;
        Ok(())
    }
}

/// Visibility timeouts set on the retry queue: (receipt handle, wait).
#[derive(Clone, Default)]
pub struct MemoryDelays(pub Arc<Mutex<Vec<(String, Duration)>>>);

#[async_trait]
impl VisibilityDelay for MemoryDelays {
    async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), QueueError> {
        lock(&self.0).push((receipt_handle.to_string(), wait));
        Ok(())
    }
}

// ---- SES ----

/// The mail service: what was sent; `refuse` makes it refuse.
#[derive(Clone, Default)]
pub struct MemoryMailer {
    pub sent: Arc<Mutex<Vec<Digest>>>,
    pub refuse: Arc<Mutex<bool>>,
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, digest: &Digest) -> Result<(), MailError> {
        if *lock(&self.refuse) {
            return Err(MailError::new(ErrorKind::Fatal, "MessageRejected"));
        }
        lock(&self.sent).push(digest.clone());
        Ok(())
    }
}
