//! One replicator run, top to bottom:
//!
//! 1. take the run lock in Postgres (another run in progress: skip);
//! 2. read at most `MAX_ROWS_PER_RUN` rows from Snowflake;
//! 3. validate them; invalid rows become retry messages;
//! 4. upsert the valid rows in chunks of `BATCH_SIZE`; a chunk Postgres
//!    refuses is bisected until the refused rows are isolated; transient
//!    errors are retried with backoff, then the rows are deferred;
//! 5. send refused and invalid rows to the retry queue (circuit breaker:
//!    `MAX_FAILURES_PER_RUN`);
//! 6. delete from Snowflake exactly the rows that are safe: committed in
//!    Postgres or accepted by SQS; every other row stays for the next run;
//! 7. record the run in the ledger and log one summary line.
//!
//! A crash between any two steps leaves every row in Postgres, in the queue,
//! or still in Snowflake, and the next run finishes the job: the upsert is
//! idempotent and the delete matches whole rows.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ReplicatorConfig, RunLimits};
use crate::fault::fault_point;
use crate::model::{validate, CountryRow, FailureClass, FailureDetail, RetryMessage, SourceRow};
use crate::queue::{QueueError, RetryQueue, SqsRetryQueue};
use crate::sink::{PostgresStore, ReplicaRun, ReplicaStore, RowWriter, WriteError, WriteErrorKind};
use crate::source::{RowSource, SnowflakeSource, SourceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Running,
    /// Every row read is in Postgres or in the retry queue, and was deleted.
    Succeeded,
    /// Some rows were deferred (they stay in Snowflake) or could not be deleted.
    Partial,
    /// The run stopped before it could move rows.
    Failed,
    /// Another run held the lock.
    Skipped,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// What a run did; logged, stored in the ledger and returned by the handler.
/// `rows_read = rows_written + rows_enqueued + rows_deferred` always holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub trigger_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    pub rows_read: usize,
    /// Committed in Postgres (including rows a replay left unchanged).
    pub rows_written: usize,
    /// Inserted or updated by this run.
    pub rows_changed: usize,
    pub rows_invalid: usize,
    pub rows_rejected: usize,
    /// Accepted by the retry queue (invalid and rejected rows).
    pub rows_enqueued: usize,
    /// Left in Snowflake for a later run.
    pub rows_deferred: usize,
    /// Of those, second versions of an id already in this batch: held back by
    /// design (the next run writes them), so they do not make a run partial.
    pub rows_deferred_duplicates: usize,
    /// Deleted from Snowflake, as Snowflake counted them.
    pub rows_deleted: usize,
    pub error: Option<String>,
}

impl RunSummary {
    pub fn new(run_id: Uuid, trigger_id: Option<String>) -> Self {
        Self {
            run_id,
            trigger_id,
            started_at: Utc::now(),
            finished_at: None,
            outcome: RunOutcome::Running,
            rows_read: 0,
            rows_written: 0,
            rows_changed: 0,
            rows_invalid: 0,
            rows_rejected: 0,
            rows_enqueued: 0,
            rows_deferred: 0,
            rows_deferred_duplicates: 0,
            rows_deleted: 0,
            error: None,
        }
    }

    fn add_error(&mut self, error: impl Into<String>) {
        let error = error.into();
        self.error = Some(match self.error.take() {
            Some(previous) => format!("{previous}; {error}"),
            None => error,
        });
    }
}

/// Backoff between attempts of a write that failed for a transient reason.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// The services a run uses.
pub struct Replicator {
    pub source: Box<dyn RowSource>,
    pub store: Box<dyn ReplicaStore>,
    pub queue: Box<dyn RetryQueue>,
    pub limits: RunLimits,
    pub backoff: Backoff,
}

/// A row bound for the retry queue, with the identical copies that share its
/// message (the one delete removes them all).
#[derive(Debug)]
struct Failure {
    message: RetryMessage,
    copies: usize,
}

/// A valid row to write, with the other rows of its chunk that have the same
/// id and the same (normalised) country: written once, deleted together.
#[derive(Debug)]
struct PlannedRow {
    row: CountryRow,
    also: Vec<SourceRow>,
}

/// One chunk of a batch, sorted by what happens to its rows.
#[derive(Debug, Default)]
struct ChunkPlan {
    valid: Vec<PlannedRow>,
    failures: Vec<Failure>,
    /// A different version of an id already seen in this run: written by the
    /// next run, so each version reaches Postgres in turn and the one written
    /// last wins. Nothing is dropped silently.
    conflicting_duplicates: usize,
}

/// Plans one chunk. `first_version` remembers the country each id had when
/// it was first seen in this run, across chunks, in 8 bytes per id.
fn plan_chunk(
    rows: Vec<SourceRow>,
    first_version: &mut HashMap<i32, [u8; 3]>,
    run_id: Uuid,
    now: DateTime<Utc>,
) -> ChunkPlan {
    let mut plan = ChunkPlan::default();
    let mut in_chunk: HashMap<i32, usize> = HashMap::with_capacity(rows.len());
    for raw in rows {
        let row = match validate(&raw) {
            Ok(row) => row,
            Err(invalid) => {
                plan.failures.push(Failure {
                    message: RetryMessage::first_failure(
                        raw,
                        FailureDetail {
                            class: FailureClass::Invalid,
                            sqlstate: None,
                            message: invalid.to_string(),
                        },
                        run_id,
                        now,
                    ),
                    copies: 0,
                });
                continue;
            }
        };
        let code = country_code(&row.country);
        match first_version.get(&row.country_id) {
            Some(first) if *first != code => {
                plan.conflicting_duplicates += 1;
                continue;
            }
            Some(_) => {}
            None => {
                first_version.insert(row.country_id, code);
            }
        }
        match in_chunk.get(&row.country_id) {
            // One statement may not touch an id twice: the same row again
            // (or the same country in another spelling) goes with the first.
            Some(&index) => plan.valid[index].also.push(row.source),
            None => {
                in_chunk.insert(row.country_id, plan.valid.len());
                plan.valid.push(PlannedRow {
                    row,
                    also: Vec::new(),
                });
            }
        }
    }
    plan
}

fn country_code(country: &str) -> [u8; 3] {
    let mut code = [0u8; 3];
    for (slot, byte) in code.iter_mut().zip(country.bytes()) {
        *slot = byte;
    }
    code
}

/// Safe rows waiting for their DELETE; flushed whenever a statement's worth
/// has gathered, so memory stays bounded whatever the batch size.
struct PendingDeletes {
    rows: Vec<SourceRow>,
    statement_rows: usize,
    statements: usize,
}

/// What happened to one chunk of rows (indices into the chunk).
#[derive(Debug, Default)]
pub struct ChunkResult {
    pub written: Vec<usize>,
    pub rejected: Vec<(usize, WriteError)>,
    pub deferred: Vec<usize>,
    pub changed: u64,
    /// Set when no further chunk should be tried: a transient error outlasted
    /// its retries, or a systemic one.
    pub stop: Option<WriteError>,
}

/// How a write that fails for a transient reason is retried.
#[derive(Debug, Clone, Copy)]
pub struct WritePolicy {
    pub attempts: u32,
    pub backoff: Backoff,
}

/// Writes a chunk; when Postgres refuses it because of a row, halves it
/// until the refused rows stand alone. A clean chunk costs one statement;
/// k bad rows among n cost about 2·k·log2(n) statements. At most
/// `failure_budget` rows are isolated; past that, refused parts are deferred.
pub async fn write_isolating(
    writer: &mut dyn RowWriter,
    rows: &[&CountryRow],
    failure_budget: usize,
    policy: WritePolicy,
) -> ChunkResult {
    let mut result = ChunkResult::default();
    // A stack of row ranges still to write; it starts as the whole chunk.
    let mut pending = Vec::with_capacity(64);
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let slice: Vec<CountryRow> = rows[range.clone()].iter().map(|r| (*r).clone()).collect();
        match write_with_retries(writer, &slice, policy).await {
            Ok(changed) => {
                result.changed += changed;
                result.written.extend(range);
            }
            Err(e) if e.kind == WriteErrorKind::RowLevel => {
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

async fn write_with_retries(
    writer: &mut dyn RowWriter,
    rows: &[CountryRow],
    policy: WritePolicy,
) -> Result<u64, WriteError> {
    let mut attempt = 1;
    loop {
        match writer.write_chunk(rows).await {
            Err(e) if e.is_transient() && attempt < policy.attempts => {
                let delay = policy.backoff.delay(attempt);
                tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "transient Postgres error; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Replicator {
    /// The production wiring: Snowflake, Postgres and SQS from the
    /// configuration, built once per process and reused by warm invocations.
    pub async fn from_config(config: &ReplicatorConfig) -> Result<Self, SourceError> {
        let sqs = aws_sdk_sqs::Client::new(&crate::aws_config().await);
        Ok(Self {
            source: Box::new(SnowflakeSource::connect(&config.snowflake)?),
            store: Box::new(PostgresStore::new(config.postgres.clone())),
            queue: Box::new(SqsRetryQueue::new(sqs, config.retry_queue_url.clone())),
            limits: config.limits,
            backoff: Backoff::default(),
        })
    }

    pub async fn run(&self, run_id: Uuid, trigger_id: Option<String>) -> RunSummary {
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
        self.move_rows(replica.as_mut(), &mut summary).await;
        fault_point("before_ledger");
        summary.finished_at = Some(Utc::now());
        if let Err(e) = replica.finish(&summary).await {
            // The rows are where the summary says; only the record is missing.
            tracing::error!(run_id = %run_id, error = %e, "could not record the run in the ledger");
            summary.add_error(format!("ledger not updated: {e}"));
        }
        summary
    }

    fn write_policy(&self) -> WritePolicy {
        WritePolicy {
            attempts: self.limits.write_attempts,
            backoff: self.backoff,
        }
    }

    async fn move_rows(&self, replica: &mut dyn ReplicaRun, summary: &mut RunSummary) {
        fault_point("before_read");
        let mut rows = match self.source.read_batch(self.limits.max_rows_per_run).await {
            Ok(rows) => rows,
            Err(e) => {
                summary.outcome = RunOutcome::Failed;
                summary.add_error(format!("reading from Snowflake: {e}"));
                return;
            }
        };
        summary.rows_read = rows.remaining();
        fault_point("after_read");

        let mut first_version: HashMap<i32, [u8; 3]> = HashMap::new();
        let mut failures: Vec<Failure> = Vec::new();
        let mut deletes = PendingDeletes {
            rows: Vec::new(),
            statement_rows: self.source.max_rows_per_delete().max(1),
            statements: 0,
        };
        let mut stopped = false;
        let mut chunk_no = 0usize;
        loop {
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
            let plan = plan_chunk(raw, &mut first_version, summary.run_id, Utc::now());
            // Invalid rows need no Postgres: they are queued even after the
            // writes stopped.
            summary.rows_invalid += plan.failures.len();
            failures.extend(plan.failures);
            summary.rows_deferred += plan.conflicting_duplicates;
            summary.rows_deferred_duplicates += plan.conflicting_duplicates;
            if stopped {
                summary.rows_deferred += plan.valid.iter().map(|p| 1 + p.also.len()).sum::<usize>();
                continue;
            }

            let budget_left = self
                .limits
                .max_failures_per_run
                .saturating_sub(failures.len());
            let refs: Vec<&CountryRow> = plan.valid.iter().map(|p| &p.row).collect();
            let result =
                write_isolating(&mut *replica, &refs, budget_left, self.write_policy()).await;
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
                        deletes.rows.push(planned.row.source);
                        deletes.rows.extend(planned.also);
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
                        failures.push(Failure {
                            message: RetryMessage::first_failure(
                                planned.row.source,
                                error.detail(),
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
                stopped = true;
            }
            if chunk_no == 0 {
                fault_point("mid_write");
            }
            chunk_no += 1;
            if deletes.rows.len() >= deletes.statement_rows
                && !self.flush_deletes(&mut deletes, summary, false).await
            {
                // Deleting failed: the rest of the run still writes (the
                // rows stay safe in Snowflake), but deletes no more.
                deletes.statement_rows = usize::MAX;
            }
        }
        fault_point("after_write");

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
        if !failures.is_empty() {
            let messages: Vec<RetryMessage> = failures.iter().map(|f| f.message.clone()).collect();
            let results = self.queue.enqueue(&messages).await;
            // A queue that answers for fewer messages than it was given leaves
            // the rest unconfirmed: they stay in Snowflake.
            let results = results.into_iter().chain(std::iter::repeat_with(|| {
                Err(QueueError(
                    "the queue gave no result for this message".into(),
                ))
            }));
            let mut first_error = None;
            for (failure, result) in failures.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        summary.rows_enqueued += 1 + failure.copies;
                        deletes.rows.push(failure.message.record);
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
        fault_point("after_enqueue");

        if deletes.statement_rows != usize::MAX {
            self.flush_deletes(&mut deletes, summary, true).await;
        }

        let deferred_for_trouble = summary.rows_deferred - summary.rows_deferred_duplicates;
        summary.outcome = if deferred_for_trouble > 0 || summary.error.is_some() {
            RunOutcome::Partial
        } else {
            RunOutcome::Succeeded
        };
    }

    /// Deletes pending rows, a statement's worth at a time (all of them when
    /// `everything`). Returns false when Snowflake refused: the rows are safe
    /// elsewhere, the next run reads them again, the upsert changes nothing,
    /// and the delete is retried then.
    async fn flush_deletes(
        &self,
        pending: &mut PendingDeletes,
        summary: &mut RunSummary,
        everything: bool,
    ) -> bool {
        while pending.rows.len() >= pending.statement_rows
            || (everything && !pending.rows.is_empty())
        {
            let take = pending.statement_rows.min(pending.rows.len());
            let chunk: Vec<SourceRow> = pending.rows.drain(..take).collect();
            let mut attempt = 1;
            let deleted = loop {
                match self.source.delete_rows(&chunk).await {
                    Err(e) if e.is_transient() && attempt < self.limits.write_attempts => {
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            match deleted {
                Ok(n) => summary.rows_deleted += usize::try_from(n).unwrap_or(usize::MAX),
                Err(e) => {
                    summary.add_error(format!(
                        "deleting from Snowflake stopped; safe rows left for the next run: {e}"
                    ));
                    pending.rows.clear();
                    return false;
                }
            }
            pending.statements += 1;
            if pending.statements == 1 {
                fault_point("mid_delete");
            }
        }
        true
    }
}

/// The Lambda handler: one run per scheduled event. The event's content does
/// not matter (EventBridge Scheduler may send `{}` or a full scheduled event);
/// its `id`, when present, is kept as the trigger id for correlation.
pub async fn handle(
    replicator: &Replicator,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<RunSummary, lambda_runtime::Error> {
    let trigger_id = event
        .payload
        .get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or_else(|| Some(event.context.request_id.clone()).filter(|id| !id.is_empty()));
    let run_id = Uuid::new_v4();
    let summary = replicator.run(run_id, trigger_id).await;
    log_summary(&summary);
    let count = |n: usize| n as f64;
    crate::telemetry::emit_metrics(
        "replicator",
        &[
            ("RowsRead", count(summary.rows_read)),
            ("RowsWritten", count(summary.rows_written)),
            ("RowsEnqueued", count(summary.rows_enqueued)),
            // Held-back duplicate versions are normal: not counted here.
            (
                "RowsDeferred",
                count(summary.rows_deferred - summary.rows_deferred_duplicates),
            ),
            ("RowsDeleted", count(summary.rows_deleted)),
        ],
    );
    match summary.outcome {
        RunOutcome::Succeeded | RunOutcome::Skipped => Ok(summary),
        _ => Err(RunFailed(summary).into()),
    }
}

/// A run that left rows behind or could not start. The Lambda invocation
/// fails, so that alarms and the scheduler's retry policy see it; the summary
/// is in the error message, the log line and the ledger.
#[derive(Debug, thiserror::Error)]
#[error("replicator run {} ended {}: {} read, {} written, {} enqueued, {} deferred, {} deleted; {}",
    .0.run_id, .0.outcome.as_str(), .0.rows_read, .0.rows_written, .0.rows_enqueued,
    .0.rows_deferred, .0.rows_deleted, .0.error.as_deref().unwrap_or("no error text"))]
pub struct RunFailed(pub RunSummary);

pub fn log_summary(s: &RunSummary) {
    let duration_ms = s
        .finished_at
        .map(|end| (end - s.started_at).num_milliseconds())
        .unwrap_or_default();
    macro_rules! summary_event {
        ($level:ident) => {
            tracing::$level!(
                run_id = %s.run_id,
                trigger_id = s.trigger_id.as_deref().unwrap_or(""),
                outcome = s.outcome.as_str(),
                rows_read = s.rows_read,
                rows_written = s.rows_written,
                rows_changed = s.rows_changed,
                rows_invalid = s.rows_invalid,
                rows_rejected = s.rows_rejected,
                rows_enqueued = s.rows_enqueued,
                rows_deferred = s.rows_deferred,
                rows_deferred_duplicates = s.rows_deferred_duplicates,
                rows_deleted = s.rows_deleted,
                duration_ms,
                error = s.error.as_deref().unwrap_or(""),
                "replicator run finished"
            )
        };
    }
    match s.outcome {
        RunOutcome::Succeeded | RunOutcome::Skipped => summary_event!(info),
        _ => summary_event!(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct SourceState {
        rows: Vec<SourceRow>,
        fail_deletes: bool,
        /// Deletes that still succeed before deleting fails (an outage
        /// in the middle of the deletes).
        deletes_before_outage: Option<usize>,
        read_down: bool,
        /// Rows per DELETE statement; 7 when unset.
        delete_chunk: Option<usize>,
    }

    #[derive(Clone, Default)]
    struct MemorySource(Arc<Mutex<SourceState>>);

    #[async_trait]
    impl RowSource for MemorySource {
        async fn read_batch(
            &self,
            limit: usize,
        ) -> Result<Box<dyn crate::source::SourceRows>, SourceError> {
            // Every call is an await point, as a network call is: a crash
            // (the run's future dropped) can fall between any two of them.
            tokio::task::yield_now().await;
            if self.0.lock().unwrap().read_down {
                return Err(SourceError::Unreachable {
                    operation: "read",
                    detail: "test outage".into(),
                });
            }
            let rows = self
                .0
                .lock()
                .unwrap()
                .rows
                .iter()
                .take(limit)
                .cloned()
                .collect();
            Ok(Box::new(crate::source::RowsInMemory::new(rows)))
        }
        async fn delete_rows(&self, rows: &[SourceRow]) -> Result<u64, SourceError> {
            tokio::task::yield_now().await;
            let mut state = self.0.lock().unwrap();
            match &mut state.deletes_before_outage {
                Some(0) => state.fail_deletes = true,
                Some(n) => *n -= 1,
                None => {}
            }
            if state.fail_deletes {
                return Err(SourceError::Unreachable {
                    operation: "delete",
                    detail: "test outage".into(),
                });
            }
            let before = state.rows.len();
            state.rows.retain(|r| !rows.contains(r));
            Ok((before - state.rows.len()) as u64)
        }
        fn max_rows_per_delete(&self) -> usize {
            self.0.lock().unwrap().delete_chunk.unwrap_or(7)
        }
    }

    #[derive(Default)]
    struct StoreState {
        table: BTreeMap<i32, String>,
        locked: bool,
        /// Countries Postgres refuses, as a CHECK constraint would.
        refused: Vec<String>,
        transient_failures_left: usize,
        systemic: bool,
        statements: usize,
        ledger: Vec<RunSummary>,
        /// Every change committed to the table, in order.
        changes: Vec<(i32, String)>,
        /// Statements that still succeed before the store goes down.
        statements_before_outage: Option<usize>,
    }

    #[derive(Clone, Default)]
    struct MemoryStore(Arc<Mutex<StoreState>>);

    #[async_trait]
    impl ReplicaStore for MemoryStore {
        async fn open_run(
            &self,
            summary: &RunSummary,
        ) -> Result<Option<Box<dyn ReplicaRun>>, WriteError> {
            let mut state = self.0.lock().unwrap();
            if state.locked {
                return Ok(None);
            }
            state.locked = true;
            state.ledger.push(summary.clone());
            Ok(Some(Box::new(MemoryRun(self.0.clone()))))
        }
    }

    struct MemoryRun(Arc<Mutex<StoreState>>);

    impl Drop for MemoryRun {
        fn drop(&mut self) {
            self.0.lock().unwrap().locked = false;
        }
    }

    #[async_trait]
    impl RowWriter for MemoryRun {
        async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError> {
            tokio::task::yield_now().await;
            let mut state = self.0.lock().unwrap();
            state.statements += 1;
            match &mut state.statements_before_outage {
                Some(0) => return Err(WriteError::transient("connection refused")),
                Some(n) => *n -= 1,
                None => {}
            }
            if state.systemic {
                return Err(WriteError::systemic("relation \"case\" does not exist"));
            }
            if state.transient_failures_left > 0 {
                state.transient_failures_left -= 1;
                return Err(WriteError::transient("connection reset"));
            }
            if rows.iter().any(|r| state.refused.contains(&r.country)) {
                return Err(WriteError {
                    kind: WriteErrorKind::RowLevel,
                    sqlstate: Some("23514".into()),
                    message: "violates check constraint".into(),
                });
            }
            let mut changed = 0;
            for r in rows {
                if state.table.insert(r.country_id, r.country.clone()).as_ref() != Some(&r.country)
                {
                    changed += 1;
                    state.changes.push((r.country_id, r.country.clone()));
                }
            }
            Ok(changed)
        }
    }

    #[async_trait]
    impl ReplicaRun for MemoryRun {
        async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError> {
            self.0.lock().unwrap().ledger.push(summary.clone());
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct MemoryQueue {
        messages: Arc<Mutex<Vec<RetryMessage>>>,
        down: Arc<Mutex<bool>>,
        /// Answers for only this many messages of a batch (a short reply).
        answers_for: Arc<Mutex<Option<usize>>>,
    }

    #[async_trait]
    impl RetryQueue for MemoryQueue {
        async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>> {
            tokio::task::yield_now().await;
            if let Some(n) = *self.answers_for.lock().unwrap() {
                let taken = &messages[..n.min(messages.len())];
                self.messages.lock().unwrap().extend(taken.iter().cloned());
                return taken.iter().map(|_| Ok(())).collect();
            }
            if *self.down.lock().unwrap() {
                return messages
                    .iter()
                    .map(|_| Err(QueueError("down".into())))
                    .collect();
            }
            self.messages
                .lock()
                .unwrap()
                .extend(messages.iter().cloned());
            messages.iter().map(|_| Ok(())).collect()
        }
    }

    struct World {
        source: MemorySource,
        store: MemoryStore,
        queue: MemoryQueue,
        original: Vec<SourceRow>,
    }

    impl World {
        fn new(rows: Vec<SourceRow>) -> Self {
            let source = MemorySource::default();
            source.0.lock().unwrap().rows = rows.clone();
            Self {
                source,
                store: MemoryStore::default(),
                queue: MemoryQueue::default(),
                original: rows,
            }
        }

        fn replicator(&self, limits: RunLimits) -> Replicator {
            Replicator {
                source: Box::new(self.source.clone()),
                store: Box::new(self.store.clone()),
                queue: Box::new(self.queue.clone()),
                limits,
                backoff: Backoff::default(),
            }
        }

        async fn run(&self, limits: RunLimits) -> RunSummary {
            self.replicator(limits).run(Uuid::new_v4(), None).await
        }

        /// Every original row is in Postgres (as its validated form), in the
        /// queue, or still in Snowflake.
        fn assert_nothing_lost(&self) {
            let source = self.source.0.lock().unwrap();
            let store = self.store.0.lock().unwrap();
            let queued = self.queue.messages.lock().unwrap();
            for row in &self.original {
                let in_source = source.rows.contains(row);
                let in_queue = queued.iter().any(|m| &m.record == row);
                // In Postgres as its validated form, or replaced there by
                // another version of its id that was also read (the upsert
                // keeps the version written last).
                let in_postgres = validate(row).is_ok_and(|v| {
                    store.table.get(&v.country_id).is_some_and(|current| {
                        self.original
                            .iter()
                            .filter_map(|r| validate(r).ok())
                            .any(|other| {
                                other.country_id == v.country_id && &other.country == current
                            })
                    })
                });
                assert!(in_source || in_queue || in_postgres, "lost {row:?}");
            }
        }
    }

    fn rows(spec: &[(i128, &str)]) -> Vec<SourceRow> {
        spec.iter()
            .map(|(id, c)| SourceRow::new(Some(*id), Some(c)))
            .collect()
    }

    fn assert_balanced(s: &RunSummary) {
        assert_eq!(
            s.rows_read,
            s.rows_written + s.rows_enqueued + s.rows_deferred,
            "{s:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_batch_is_written_and_deleted() {
        let world = World::new(rows(&[(1, "USA"), (2, "fra"), (3, " DEU ")]));
        let s = world.run(RunLimits::default()).await;
        assert_eq!(s.outcome, RunOutcome::Succeeded, "{s:?}");
        assert_eq!((s.rows_read, s.rows_written, s.rows_deleted), (3, 3, 3));
        let store = world.store.0.lock().unwrap();
        assert_eq!(store.table.get(&2).map(String::as_str), Some("FRA"));
        assert_eq!(store.table.get(&3).map(String::as_str), Some("DEU"));
        assert!(world.source.0.lock().unwrap().rows.is_empty());
        assert_eq!(store.ledger.last().unwrap().outcome, RunOutcome::Succeeded);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_limits_what_one_run_reads() {
        let spec: Vec<(i128, &str)> = (0..25).map(|i| (i, "ITA")).collect();
        let world = World::new(rows(&spec));
        let limits = RunLimits {
            max_rows_per_run: 10,
            batch_size: 4,
            ..RunLimits::default()
        };
        let s = world.run(limits).await;
        assert_eq!((s.rows_read, s.rows_deleted), (10, 10));
        assert_eq!(world.source.0.lock().unwrap().rows.len(), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_and_refused_rows_go_to_the_queue_and_the_rest_is_written() {
        let mut input = rows(&[(1, "USA"), (2, "XXX"), (3, "U1"), (4, "GBR")]);
        input.push(SourceRow::new(None, Some("ESP")));
        input.push(SourceRow::new(Some(6), None));
        let world = World::new(input);
        world.store.0.lock().unwrap().refused.push("XXX".into());
        let s = world
            .run(RunLimits {
                batch_size: 2,
                ..RunLimits::default()
            })
            .await;
        assert_eq!(s.outcome, RunOutcome::Succeeded, "{s:?}");
        assert_eq!((s.rows_written, s.rows_invalid, s.rows_rejected), (2, 3, 1));
        assert_eq!(s.rows_enqueued, 4);
        assert_balanced(&s);
        let queued = world.queue.messages.lock().unwrap();
        let rejected = queued
            .iter()
            .find(|m| m.record.country.as_deref() == Some("XXX"))
            .unwrap();
        assert_eq!(rejected.error.class, FailureClass::Rejected);
        assert_eq!(rejected.error.sqlstate.as_deref(), Some("23514"));
        assert!(
            queued
                .iter()
                .filter(|m| m.error.class == FailureClass::Invalid)
                .count()
                == 3
        );
        drop(queued);
        assert!(world.source.0.lock().unwrap().rows.is_empty());
        world.assert_nothing_lost();
    }

    #[tokio::test(start_paused = true)]
    async fn bisection_isolates_exactly_the_refused_rows() {
        let mut spec: Vec<(i128, &str)> = (0..1000).map(|i| (i, "NOR")).collect();
        for bad in [3, 500, 999] {
            spec[bad].1 = "BAD";
        }
        let world = World::new(rows(&spec));
        world.store.0.lock().unwrap().refused.push("BAD".into());
        let s = world
            .run(RunLimits {
                batch_size: 250,
                ..RunLimits::default()
            })
            .await;
        assert_eq!((s.rows_written, s.rows_rejected), (997, 3), "{s:?}");
        let statements = world.store.0.lock().unwrap().statements;
        // 4 chunks, 3 of them bisected down to one row: far below row-by-row.
        assert!(statements < 4 + 3 * 2 * 9, "{statements} statements");
        world.assert_nothing_lost();
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_ids_never_fail_the_write_and_no_version_is_dropped() {
        let world = World::new(rows(&[(1, "USA"), (1, "USA"), (1, "CAN"), (2, "MEX")]));
        let s = world.run(RunLimits::default()).await;
        // The identical copy goes with the first row; the other version waits,
        // which is normal and does not fail the run.
        assert_eq!((s.rows_written, s.rows_deferred), (3, 1), "{s:?}");
        assert_eq!(s.rows_deferred_duplicates, 1);
        assert_eq!(s.outcome, RunOutcome::Succeeded);
        assert_eq!(world.source.0.lock().unwrap().rows, rows(&[(1, "CAN")]));
        world.assert_nothing_lost();
        let second = world.run(RunLimits::default()).await;
        assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:?}");
        assert_eq!(
            world
                .store
                .0
                .lock()
                .unwrap()
                .table
                .get(&1)
                .map(String::as_str),
            Some("CAN"),
            "the version written last wins, as an upsert does"
        );
        assert!(world.source.0.lock().unwrap().rows.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_then_deferred() {
        let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
        world.store.0.lock().unwrap().transient_failures_left = 2;
        let s = world.run(RunLimits::default()).await;
        assert_eq!(
            s.outcome,
            RunOutcome::Succeeded,
            "recovered on attempt 3: {s:?}"
        );

        let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
        world.store.0.lock().unwrap().transient_failures_left = usize::MAX;
        let s = world
            .run(RunLimits {
                batch_size: 1,
                ..RunLimits::default()
            })
            .await;
        assert_eq!(s.outcome, RunOutcome::Partial);
        assert_eq!(
            (s.rows_written, s.rows_deferred, s.rows_enqueued),
            (0, 2, 0)
        );
        assert!(
            world.queue.messages.lock().unwrap().is_empty(),
            "deferred, not queued"
        );
        assert_eq!(
            world.source.0.lock().unwrap().rows.len(),
            2,
            "nothing deleted"
        );
        assert!(s.error.unwrap().contains("connection reset"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_systemic_error_stops_the_run_without_flooding_the_queue() {
        let world = World::new(rows(&[(1, "USA"), (2, "FRA"), (3, "DEU")]));
        world.store.0.lock().unwrap().systemic = true;
        let s = world
            .run(RunLimits {
                batch_size: 1,
                ..RunLimits::default()
            })
            .await;
        assert_eq!(
            (s.rows_deferred, s.rows_enqueued, s.rows_deleted),
            (3, 0, 0)
        );
        assert_eq!(
            world.store.0.lock().unwrap().statements,
            1,
            "stopped at once"
        );
        assert!(s.error.unwrap().contains("does not exist"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_breaker_caps_what_is_enqueued() {
        let world = World::new(rows(&[
            (1, "B1"),
            (2, "B2"),
            (3, "B3"),
            (4, "B4"),
            (5, "B5"),
            (6, "OK_"),
            (7, "NZL"),
        ]));
        let s = world
            .run(RunLimits {
                max_failures_per_run: 2,
                ..RunLimits::default()
            })
            .await;
        assert_eq!(s.outcome, RunOutcome::Partial);
        assert_eq!((s.rows_enqueued, s.rows_written), (2, 1), "{s:?}");
        assert_eq!(s.rows_deferred, 4);
        assert!(s.error.unwrap().contains("MAX_FAILURES_PER_RUN=2"));
        assert_eq!(world.source.0.lock().unwrap().rows.len(), 4);
        world.assert_nothing_lost();
    }

    #[tokio::test(start_paused = true)]
    async fn rows_the_queue_did_not_accept_stay_in_snowflake() {
        let world = World::new(rows(&[(1, "USA"), (2, "U2")]));
        *world.queue.down.lock().unwrap() = true;
        let s = world.run(RunLimits::default()).await;
        assert_eq!((s.rows_written, s.rows_deferred, s.rows_deleted), (1, 1, 1));
        assert_eq!(world.source.0.lock().unwrap().rows, rows(&[(2, "U2")]));
        world.assert_nothing_lost();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_delete_leaves_safe_rows_for_an_idempotent_rerun() {
        let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
        world.source.0.lock().unwrap().fail_deletes = true;
        let first = world.run(RunLimits::default()).await;
        assert_eq!(first.outcome, RunOutcome::Partial);
        assert_eq!((first.rows_written, first.rows_deleted), (2, 0));
        world.source.0.lock().unwrap().fail_deletes = false;
        let second = world.run(RunLimits::default()).await;
        assert_eq!(second.outcome, RunOutcome::Succeeded);
        assert_eq!(
            (second.rows_changed, second.rows_deleted),
            (0, 2),
            "replay changed nothing"
        );
        world.assert_nothing_lost();
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_finds_the_lock_taken_does_nothing() {
        let world = World::new(rows(&[(1, "USA")]));
        world.store.0.lock().unwrap().locked = true;
        let s = world.run(RunLimits::default()).await;
        assert_eq!(s.outcome, RunOutcome::Skipped);
        assert_eq!(s.rows_read, 0);
        assert_eq!(world.source.0.lock().unwrap().rows.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_handler_fails_the_invocation_when_rows_are_left_behind() {
        let world = World::new(rows(&[(1, "USA")]));
        world.store.0.lock().unwrap().systemic = true;
        let event = lambda_runtime::LambdaEvent::new(
            serde_json::json!({"id": "evt-1", "detail-type": "Scheduled Event"}),
            lambda_runtime::Context::default(),
        );
        let err = handle(&world.replicator(RunLimits::default()), event)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partial") && err.contains("1 deferred"),
            "{err}"
        );

        let world = World::new(rows(&[(1, "USA")]));
        let event = lambda_runtime::LambdaEvent::new(
            serde_json::json!({"id": "evt-2"}),
            lambda_runtime::Context::default(),
        );
        let summary = handle(&world.replicator(RunLimits::default()), event)
            .await
            .unwrap();
        assert_eq!(summary.trigger_id.as_deref(), Some("evt-2"));
        assert_eq!(summary.rows_written, 1);
    }

    /// Property tests: random datasets, limits and faults, including a crash
    /// at a random await point (the run's future dropped mid-flight, as a
    /// killed process leaves it; the fakes' state survives, as the services'
    /// does).
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context as TaskContext, Poll};

        /// Polls a future at most `polls` times, then drops it.
        struct CrashAfter<F: Future> {
            inner: Pin<Box<F>>,
            polls: usize,
        }

        impl<F: Future> Future for CrashAfter<F> {
            type Output = Option<F::Output>;
            fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
                if self.polls == 0 {
                    return Poll::Ready(None);
                }
                self.polls -= 1;
                self.inner.as_mut().poll(cx).map(Some)
            }
        }

        #[derive(Debug, Clone)]
        enum Fault {
            Crash { polls: usize },
            SnowflakeReadDown,
            SnowflakeDeleteDownAfter(usize),
            PostgresDownAfter(usize),
            PostgresTransient(usize),
            PostgresSystemic,
            QueueDown,
            QueueShortReply(usize),
        }

        fn fault() -> impl Strategy<Value = Fault> {
            prop_oneof![
                3 => (0usize..60).prop_map(|polls| Fault::Crash { polls }),
                1 => Just(Fault::SnowflakeReadDown),
                1 => (0usize..4).prop_map(Fault::SnowflakeDeleteDownAfter),
                1 => (0usize..6).prop_map(Fault::PostgresDownAfter),
                1 => (1usize..5).prop_map(Fault::PostgresTransient),
                1 => Just(Fault::PostgresSystemic),
                1 => Just(Fault::QueueDown),
                1 => (0usize..4).prop_map(Fault::QueueShortReply),
            ]
        }

        fn row() -> impl Strategy<Value = SourceRow> {
            let country = prop_oneof![
                6 => prop::sample::select(vec!["USA", "fra", " DEU ", "NZL", "Jpn"]),
                2 => prop::sample::select(vec!["", "US", "U2A", "O'B", "A\\B", "ÄÖÜ", "XXX"]),
            ];
            (
                prop::option::weighted(0.95, -3i128..12),
                prop::option::weighted(0.95, country),
            )
                .prop_map(|(id, country)| SourceRow::new(id, country))
        }

        fn limits() -> impl Strategy<Value = RunLimits> {
            (1usize..40, 1usize..6, 0usize..6).prop_map(|(max_rows, batch, failures)| RunLimits {
                max_rows_per_run: max_rows,
                batch_size: batch,
                max_failures_per_run: failures,
                ..RunLimits::default()
            })
        }

        impl World {
            fn apply(&self, fault: &Fault) {
                let mut source = self.source.0.lock().unwrap();
                let mut store = self.store.0.lock().unwrap();
                match fault {
                    Fault::Crash { .. } => {}
                    Fault::SnowflakeReadDown => source.read_down = true,
                    Fault::SnowflakeDeleteDownAfter(n) => source.deletes_before_outage = Some(*n),
                    Fault::PostgresDownAfter(n) => store.statements_before_outage = Some(*n),
                    Fault::PostgresTransient(n) => store.transient_failures_left = *n,
                    Fault::PostgresSystemic => store.systemic = true,
                    Fault::QueueDown => *self.queue.down.lock().unwrap() = true,
                    Fault::QueueShortReply(n) => *self.queue.answers_for.lock().unwrap() = Some(*n),
                }
            }

            fn heal(&self) {
                let mut source = self.source.0.lock().unwrap();
                source.read_down = false;
                source.fail_deletes = false;
                source.deletes_before_outage = None;
                let mut store = self.store.0.lock().unwrap();
                store.statements_before_outage = None;
                store.transient_failures_left = 0;
                store.systemic = false;
                *self.queue.down.lock().unwrap() = false;
                *self.queue.answers_for.lock().unwrap() = None;
            }

            /// One run with a fault; None when the run crashed.
            async fn run_with(&self, limits: RunLimits, fault: &Fault) -> Option<RunSummary> {
                self.apply(fault);
                let replicator = self.replicator(limits);
                let run = replicator.run(Uuid::new_v4(), None);
                let summary = match fault {
                    Fault::Crash { polls } => {
                        CrashAfter {
                            inner: Box::pin(run),
                            polls: *polls,
                        }
                        .await
                    }
                    _ => Some(run.await),
                };
                self.heal();
                summary
            }
        }

        proptest! {
            // 256 cases by default; PROPTEST_CASES sets another count (`make soak`).
            /// Whatever the dataset, limits and faults: after every run no row
            /// is lost; once healed, Snowflake empties; no version of a row is
            /// written twice; the queue carries only rows that were read; and
            /// every finished run accounts for each row it read.
            #[test]
            fn no_fault_loses_a_row_or_writes_a_version_twice(
                rows in prop::collection::vec(row(), 0..30),
                faulty_runs in prop::collection::vec((limits(), fault()), 1..4),
                delete_chunk in 1usize..9,
                refuse_xxx in any::<bool>(),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let world = World::new(rows.clone());
                    world.source.0.lock().unwrap().delete_chunk = Some(delete_chunk);
                    if refuse_xxx {
                        world.store.0.lock().unwrap().refused.push("XXX".into());
                    }
                    for (limits, fault) in &faulty_runs {
                        if let Some(summary) = world.run_with(*limits, fault).await {
                            assert_balanced(&summary);
                        }
                        world.assert_nothing_lost();
                    }
                    // Heal: each run writes one version of an id.
                    let mut runs = 0;
                    while !world.source.0.lock().unwrap().rows.is_empty() {
                        runs += 1;
                        assert!(runs <= rows.len() + 1, "Snowflake does not empty");
                        let summary = world.run(RunLimits::default()).await;
                        assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
                        assert_balanced(&summary);
                        world.assert_nothing_lost();
                    }
                    let store = world.store.0.lock().unwrap();
                    let mut changes = store.changes.clone();
                    let all = changes.len();
                    changes.sort();
                    changes.dedup();
                    assert_eq!(changes.len(), all, "a version written twice: {:?}", store.changes);
                    for message in world.queue.messages.lock().unwrap().iter() {
                        assert!(rows.contains(&message.record), "{message:?}");
                    }
                });
            }
        }
    }
}
