//! The table run over in-memory adapters: the accounting rule, one version
//! per key, invalid and refused rows to the queue as version-2 messages,
//! exactly the safe rows deleted, and (property tests) no row lost and no
//! version written twice whatever the crashes, outages and deadlines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::failure::{ErrorKind, SourceError, WriteError};
use crate::model::value::Value;
use crate::ports::{IdMatch, SinkOutcome, TableSnapshot, WriteLimits};
use crate::testing::{MemoryQueue, MemoryStore};

/// Rows of (key, note).
type Rows = Arc<Mutex<Vec<(Option<i64>, String)>>>;

/// A table in memory; the snapshot is its rows sorted, and a delete takes
/// every live row equal to a chosen snapshot row, as the join does.
#[derive(Clone, Default)]
pub(crate) struct MemoryTable {
    pub(crate) rows: Rows,
    /// Reads fail: the snapshot went with its session (true), or Snowflake
    /// refuses them (false).
    read_fails: Arc<Mutex<Option<bool>>>,
    /// Snowflake goes down after this many more deletes.
    pub(crate) deletes_left: Arc<Mutex<Option<usize>>>,
}

struct MemoryTableSnapshot {
    table: MemoryTable,
    frozen: Vec<(Option<i64>, String)>,
}

fn cells(row: &(Option<i64>, String)) -> Vec<Result<Value, String>> {
    let note = if row.1 == "unreadable" {
        Err("column NOTE: unreadable".to_string())
    } else {
        Ok(Value::Text(row.1.as_str().into()))
    };
    vec![Ok(row.0.map_or(Value::Null, Value::Int)), note]
}

#[async_trait]
impl TableSource for MemoryTable {
    async fn count_rows(&self, _: Uuid, _: &Deadline) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        Ok(self.rows.lock().unwrap().len() as u64)
    }
    async fn snapshot(
        &self,
        _: Uuid,
        limit: usize,
        _: &Deadline,
    ) -> Result<Box<dyn TableSnapshot + '_>, SourceError> {
        tokio::task::yield_now().await;
        let mut frozen = self.rows.lock().unwrap().clone();
        frozen.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
        frozen.truncate(limit);
        Ok(Box::new(MemoryTableSnapshot {
            table: self.clone(),
            frozen,
        }))
    }
    fn statements_sent(&self) -> usize {
        0
    }
}

#[async_trait]
impl TableSnapshot for MemoryTableSnapshot {
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn EncodedPage>, SourceError> {
        tokio::task::yield_now().await;
        match *self.table.read_fails.lock().unwrap() {
            Some(true) => {
                return Err(SourceError::SnapshotLost {
                    operation: "read",
                    detail: "the session ended".into(),
                })
            }
            Some(false) => {
                return Err(SourceError::Refused {
                    operation: "read",
                    detail: "insufficient privileges".into(),
                })
            }
            None => {}
        }
        let mut page = TablePage::new(*numbers.start(), 2, 0);
        for n in numbers {
            let Some(row) = usize::try_from(n - 1).ok().and_then(|i| self.frozen.get(i)) else {
                break;
            };
            page.push_row(cells(row));
        }
        Ok(Box::new(page))
    }
    async fn delete(&self, safe: &[RowNumbers], keys: IdMatch) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        if let Some(left) = self.table.deletes_left.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(SourceError::Unreachable {
                    operation: "delete",
                    detail: "connection reset".into(),
                });
            }
            *left -= 1;
        }
        let chosen: Vec<&(Option<i64>, String)> = safe
            .iter()
            .flat_map(|r| r.clone())
            .filter_map(|n| self.frozen.get(usize::try_from(n - 1).ok()?))
            .filter(|row| (keys == IdMatch::BothNull) == row.0.is_none())
            .collect();
        let mut rows = self.table.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|row| !chosen.contains(&row));
        Ok((before - rows.len()) as u64)
    }
    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Postgres in memory: refuses notes equal to "refused" (a CHECK); upserts
/// by the key (the first value), recording each change it makes (an upsert
/// that changes nothing records nothing, as the staged upsert).
#[derive(Clone, Default)]
pub(crate) struct MemoryTarget {
    pub(crate) current: Arc<Mutex<Vec<Vec<Value>>>>,
    changes: Arc<Mutex<Vec<Vec<Value>>>>,
    pub(crate) down: Arc<Mutex<bool>>,
    /// Each write takes this long (a deadline can pass mid-run).
    delay: Arc<Mutex<Option<Duration>>>,
    /// What `target_drift` says (a changed target table).
    pub(crate) drift: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl TableSink for MemoryTarget {
    async fn write(&self, rows: &[&[Value]], _: WriteLimits, _: &Deadline) -> SinkOutcome {
        tokio::task::yield_now().await;
        let delay = *self.delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut outcome = SinkOutcome::default();
        if *self.down.lock().unwrap() {
            outcome.deferred = (0..rows.len()).collect();
            outcome.stop = Some(crate::failure::SinkError::Postgres(WriteError::transient(
                "down",
            )));
            return outcome;
        }
        for (i, row) in rows.iter().enumerate() {
            if row[1] == Value::Text("refused".into()) || row[1] == Value::Text("ZZZ".into()) {
                outcome.rejected.push((
                    i,
                    WriteError {
                        kind: ErrorKind::RowLevel,
                        sqlstate: Some("23514".into()),
                        message: "violates check constraint".into(),
                    },
                ));
            } else {
                let mut current = self.current.lock().unwrap();
                let held = current.iter().position(|r| r[0] == row[0]);
                if held.is_none_or(|k| current[k] != *row) {
                    current.retain(|r| r[0] != row[0]);
                    current.push(row.to_vec());
                    self.changes.lock().unwrap().push(row.to_vec());
                    outcome.changed += 1;
                }
                outcome.written.push(i);
            }
        }
        outcome
    }

    async fn target_drift(&self, _: &Deadline) -> Option<String> {
        self.drift.lock().unwrap().clone()
    }
}

pub(crate) fn replicator(
    table: &MemoryTable,
    target: &MemoryTarget,
    queue: &MemoryQueue,
) -> TableReplicator {
    TableReplicator {
        name: "notes".into(),
        columns: vec!["ID".into(), "NOTE".into()],
        targets: vec!["id".into(), "note".into()],
        key_positions: vec![0],
        rules: crate::model::rules::BoundRules::default(),
        source: Box::new(table.clone()),
        guard: Box::new(MemoryStore::default()),
        sink: Box::new(target.clone()),
        queue: Box::new(queue.clone()),
        limits: RunLimits {
            page_rows: 3,
            batch_size: 2,
            ..RunLimits::default()
        },
        backoff: Backoff::ZERO,
    }
}

/// An empty table, target and queue.
fn services() -> (MemoryTable, MemoryTarget, MemoryQueue) {
    Default::default()
}

pub(crate) fn load(table: &MemoryTable, rows: &[(Option<i64>, &str)]) {
    table
        .rows
        .lock()
        .unwrap()
        .extend(rows.iter().map(|(k, n)| (*k, n.to_string())));
}

#[tokio::test]
async fn every_row_ends_written_enqueued_or_left_and_only_safe_rows_are_deleted() {
    let (table, target, queue) = services();
    load(
        &table,
        &[
            (Some(1), "a"),
            (Some(1), "a"),
            (Some(1), "b"),
            (Some(2), "refused"),
            (Some(2), "refused"),
            (Some(3), "unreadable"),
            (None, "no key"),
            (Some(4), "d"),
        ],
    );
    let summary = replicator(&table, &target, &queue)
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.unaccounted(), 0);
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_enqueued
        ),
        (8, 3, 4),
        "the copy of (2, refused) went in its twin's message"
    );
    assert_eq!((summary.rows_invalid, summary.rows_rejected), (2, 1));
    assert_eq!(
        (summary.rows_deferred, summary.rows_deferred_duplicates),
        (1, 1),
        "(1, b) is held back; the copy of (1, a) went with it, written"
    );
    let left = table.rows.lock().unwrap().clone();
    assert_eq!(
        left,
        [(Some(1), "b".to_string())],
        "the copy left with its twin (the delete matches content); the other version waits"
    );
    assert_eq!(
        summary.rows_deferred,
        left.len(),
        "what the ledger says is left is what is left"
    );
    let messages = queue.mapped.lock().unwrap().clone();
    assert_eq!(
        messages.len(),
        3,
        "one message for a refused row and its copy"
    );
    let errors: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.error.class.as_str(), m.error.message.as_str()))
        .collect();
    assert!(
        errors.contains(&("invalid", "column NOTE: unreadable")),
        "{errors:?}"
    );
    assert!(errors.contains(&("invalid", "id is NULL")), "{errors:?}");
    assert!(
        errors.contains(&("rejected", "violates check constraint")),
        "{errors:?}"
    );
    assert!(messages
        .iter()
        .all(|m| m.table == "notes" && m.schema_version == 2));

    // The next run writes the held-back version and empties the table.
    let again = replicator(&table, &target, &queue)
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!((again.rows_read, again.rows_written), (1, 1));
    assert!(table.rows.lock().unwrap().is_empty());
    let idle = replicator(&table, &target, &queue)
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!(idle.outcome, RunOutcome::Idle);
}

#[tokio::test]
async fn a_rule_of_the_mapping_normalises_what_it_writes_and_fails_what_it_refuses() {
    let (table, target, queue) = services();
    load(
        &table,
        &[
            (Some(1), " usa"),
            (Some(1), "USA"),
            (Some(2), "U5A"),
            (Some(3), "FRA"),
            (Some(4), " zzz"),
        ],
    );
    let mut run = replicator(&table, &target, &queue);
    run.rules.columns = vec![crate::model::rules::ColumnRule {
        position: 1,
        column: "note".into(),
        rule: crate::model::rules::Rule::CountryCode,
    }];
    let summary = run.run(Uuid::new_v4(), None, &Deadline::none()).await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(
        (
            summary.rows_written,
            summary.rows_invalid,
            summary.rows_rejected,
            summary.unaccounted()
        ),
        (3, 1, 1, 0),
        "USA is \" usa\" spelled otherwise: written with it, once"
    );
    let mut written = target.current.lock().unwrap().clone();
    written.sort_by_key(|r| format!("{:?}", r[0]));
    assert_eq!(
        written,
        [
            vec![Value::Int(1), Value::Text("USA".into())],
            vec![Value::Int(3), Value::Text("FRA".into())],
        ],
        "written normalised"
    );
    let messages = queue.mapped.lock().unwrap().clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].error.class.as_str(), "invalid");
    assert_eq!(
        messages[0].error.message,
        "note must be exactly three letters A-Z after trimming, got \"U5A\""
    );
    // Postgres refused ZZZ: the message carries the row as read.
    assert_eq!(messages[1].error.class.as_str(), "rejected");
    assert_eq!(messages[1].row["NOTE"], serde_json::json!(" zzz"));
    assert!(
        table.rows.lock().unwrap().is_empty(),
        "the source rows go as read, the normalised one included"
    );
}

#[tokio::test]
async fn with_postgres_down_and_the_queue_down_nothing_leaves_snowflake() {
    let (table, target, queue) = services();
    load(
        &table,
        &[(Some(1), "a"), (Some(2), "unreadable"), (Some(3), "c")],
    );
    *target.down.lock().unwrap() = true;
    *queue.down.lock().unwrap() = true;
    let summary = replicator(&table, &target, &queue)
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    assert_eq!(summary.unaccounted(), 0);
    assert_eq!((summary.rows_deferred, summary.rows_deleted), (3, 0));
    assert_eq!(table.rows.lock().unwrap().len(), 3);
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains("writing table notes stopped") && error.contains("retry queue"),
        "{error}"
    );
}

#[tokio::test]
async fn near_the_deadline_the_failures_are_not_sent_and_stay_in_snowflake() {
    let (table, target, queue) = services();
    load(&table, &[(Some(1), "a"), (Some(2), "unreadable")]);
    // The write outlasts what is left before the margin.
    *target.delay.lock().unwrap() = Some(Duration::from_millis(300));
    let deadline = Deadline::after(Duration::from_millis(400), Duration::from_millis(300));
    let summary = replicator(&table, &target, &queue)
        .run(Uuid::new_v4(), None, &deadline)
        .await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    assert_eq!(summary.unaccounted(), 0);
    assert_eq!(
        (
            summary.rows_written,
            summary.rows_enqueued,
            summary.rows_deferred
        ),
        (1, 0, 1)
    );
    assert!(queue.mapped.lock().unwrap().is_empty());
    assert_eq!(
        *table.rows.lock().unwrap(),
        vec![(Some(2), "unreadable".to_string())],
        "the written row leaves Snowflake, the failed one stays for the next run"
    );
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains("deadline: the retry queue was not called; 1 failed rows of table notes"),
        "{error}"
    );
}

#[tokio::test]
async fn a_snapshot_gone_with_its_session_ends_the_run_partial_not_failed() {
    let (table, target, queue) = services();
    load(&table, &[(Some(1), "a")]);
    let run = replicator(&table, &target, &queue);
    *table.read_fails.lock().unwrap() = Some(true);
    let summary = run.run(Uuid::new_v4(), None, &Deadline::none()).await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    assert_eq!(table.rows.lock().unwrap().len(), 1);
    let error = summary.error.unwrap_or_default();
    assert!(error.contains("the run snapshot is gone"), "{error}");

    // Any other failure of the first read fails the run.
    *table.read_fails.lock().unwrap() = Some(false);
    let summary = run.run(Uuid::new_v4(), None, &Deadline::none()).await;
    assert_eq!(summary.outcome, RunOutcome::Failed, "{summary:?}");
    assert_eq!(table.rows.lock().unwrap().len(), 1);
}

/// Records the steps a run reaches.
#[derive(Default)]
struct Steps(Mutex<Vec<Step>>);

impl StepHook for Steps {
    fn reached(&self, step: Step) {
        self.0.lock().unwrap().push(step);
    }
}

#[tokio::test]
async fn the_next_page_is_read_while_one_is_moved_and_each_step_is_told_once() {
    let (table, target, queue) = services();
    let rows: Vec<(Option<i64>, &str)> = (1..=9).map(|k| (Some(k), "n")).collect();
    load(&table, &rows);
    // Three rows a page (page_rows 3 of two columns): three pages.
    let steps = Steps::default();
    let summary = replicator(&table, &target, &queue)
        .run_observed(Uuid::new_v4(), None, &Deadline::none(), &steps)
        .await;
    assert_eq!(
        (summary.outcome, summary.rows_read, summary.rows_written),
        (RunOutcome::Succeeded, 9, 9),
        "{summary:?}"
    );
    assert!(table.rows.lock().unwrap().is_empty());
    let heard = steps.0.lock().unwrap().clone();
    let read_ahead = heard.iter().position(|s| *s == Step::AfterReadAhead);
    let after_read = heard.iter().position(|s| *s == Step::AfterRead);
    assert!(
        matches!((after_read, read_ahead), (Some(r), Some(a)) if r < a),
        "{heard:?}"
    );
    for step in Step::ALL {
        assert_eq!(
            heard.iter().filter(|s| **s == step).count(),
            1,
            "{step:?} in {heard:?}"
        );
    }

    // One page: nothing to read ahead.
    load(&table, &[(Some(1), "m")]);
    let steps = Steps::default();
    replicator(&table, &target, &queue)
        .run_observed(Uuid::new_v4(), None, &Deadline::none(), &steps)
        .await;
    assert!(!steps.0.lock().unwrap().contains(&Step::AfterReadAhead));
}

mod properties;

/// Does `act` once the run's first delete is done.
struct AfterFirstDelete<F>(F);

impl<F: Fn() + Send + Sync> StepHook for AfterFirstDelete<F> {
    fn reached(&self, step: Step) {
        if step == Step::MidDelete {
            (self.0)();
        }
    }
}

/// The run over the in-memory adapters, its guard `store`'s.
fn guarded(
    table: &MemoryTable,
    target: &MemoryTarget,
    queue: &MemoryQueue,
) -> (TableReplicator, MemoryStore) {
    let store = MemoryStore::default();
    let mut run = replicator(table, target, queue);
    run.guard = Box::new(store.clone());
    (run, store)
}

#[tokio::test]
async fn with_postgres_unreachable_mid_run_invalid_rows_still_go_to_the_queue() {
    let (table, target, queue) = services();
    load(
        &table,
        &[
            (Some(1), "a"),
            (Some(2), "b"),
            (Some(3), "c"),
            (Some(4), "d"),
            (Some(5), "unreadable"),
            (Some(6), "f"),
        ],
    );
    let (run, store) = guarded(&table, &target, &queue);
    // Postgres unreachable: for the lock and for the writes.
    let down = target.down.clone();
    let hook = AfterFirstDelete(move || {
        store.state().lock_unconfirmed = true;
        *down.lock().unwrap() = true;
    });
    let summary = run
        .run_observed(Uuid::new_v4(), None, &Deadline::none(), &hook)
        .await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    assert_eq!(summary.unaccounted(), 0, "{summary:?}");
    assert_eq!(
        (
            summary.rows_written,
            summary.rows_enqueued,
            summary.rows_deferred
        ),
        (3, 1, 2),
        "the second page's valid rows stay, its invalid one is queued: {summary:?}"
    );
    assert_eq!(queue.mapped.lock().unwrap().len(), 1);
    assert_eq!(
        *table.rows.lock().unwrap(),
        [(Some(4), "d".to_string()), (Some(6), "f".to_string())]
    );
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains("writing table notes stopped: the run lock cannot be confirmed"),
        "{error}"
    );
}

#[tokio::test]
async fn a_copy_opening_the_next_page_is_counted_where_its_row_went() {
    let (table, target, queue) = services();
    // Pages of three rows: (3, c) ends the first, its copy opens the second.
    load(
        &table,
        &[
            (Some(1), "a"),
            (Some(2), "b"),
            (Some(3), "c"),
            (Some(3), "c"),
            (Some(4), "d"),
        ],
    );
    let (run, store) = guarded(&table, &target, &queue);
    // Another run takes the lock once the first page is deleted.
    let lose_lock = AfterFirstDelete(move || store.state().lock_lost = true);
    let summary = run
        .run_observed(Uuid::new_v4(), None, &Deadline::none(), &lose_lock)
        .await;
    assert_eq!(summary.unaccounted(), 0, "{summary:?}");
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_deferred,
            summary.rows_deleted
        ),
        (5, 4, 1, 4),
        "the copy went with (3, c) by the first page's delete; (4, d) stays: {summary:?}"
    );
    assert_eq!(*table.rows.lock().unwrap(), [(Some(4), "d".to_string())]);
    assert!(summary.error.unwrap_or_default().contains("lost its lock"));

    // The breaker lets a row through with all its copies, whatever their
    // number, and holds back what comes after.
    let (table, target, queue) = services();
    load(
        &table,
        &[
            (Some(5), "refused"),
            (Some(5), "refused"),
            (Some(5), "refused"),
            (Some(6), "refused"),
        ],
    );
    let mut run = replicator(&table, &target, &queue);
    run.limits.max_failures_per_run = 1;
    run.limits.page_rows = 10;
    let summary = run.run(Uuid::new_v4(), None, &Deadline::none()).await;
    assert_eq!(
        (
            summary.rows_enqueued,
            summary.rows_deferred,
            summary.rows_deleted
        ),
        (3, 1, 3),
        "{summary:?}"
    );
    assert_eq!(queue.mapped.lock().unwrap().len(), 1);
    assert_eq!(
        *table.rows.lock().unwrap(),
        [(Some(6), "refused".to_string())]
    );
}
