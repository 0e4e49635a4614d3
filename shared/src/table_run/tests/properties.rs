//! Random datasets, limits and faults for the table run: a crash at any
//! await point (the run's future dropped), Postgres or the queue down, a
//! queue that answers for part of a batch, Snowflake down after some
//! deletes, the run lock unconfirmable, a deadline mid-run.

use super::*;
use crate::model::mapped_message::cell_json;
use crate::testing::CrashAfter;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Fault {
    Crash(usize),
    PostgresDown,
    QueueDown,
    /// The deadline passes this many milliseconds into the run (each
    /// write takes one).
    Deadline(u64),
    /// The queue answers for only this many messages of a batch.
    QueuePartial(usize),
    /// Snowflake goes down after this many deletes.
    DeletesFail(usize),
    /// Postgres unreachable for the lock (and the writes): invalid rows
    /// still go to the queue.
    LockUnconfirmed,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => (0usize..40).prop_map(Fault::Crash),
        1 => Just(Fault::PostgresDown),
        1 => Just(Fault::QueueDown),
        1 => (0u64..4).prop_map(Fault::Deadline),
        1 => (0usize..3).prop_map(Fault::QueuePartial),
        1 => (0usize..3).prop_map(Fault::DeletesFail),
        1 => Just(Fault::LockUnconfirmed),
    ]
}

fn row() -> impl Strategy<Value = (Option<i64>, String)> {
    (
        prop::option::weighted(0.9, 0i64..6),
        prop::sample::select(vec!["a", "b", "c", "refused", "unreadable"]),
    )
        .prop_map(|(key, note)| (key, note.to_string()))
}

fn limits() -> impl Strategy<Value = RunLimits> {
    (1usize..30, 1usize..5, 1usize..4, 0usize..5).prop_map(|(max_rows, page, batch, failures)| {
        RunLimits {
            max_rows_per_run: max_rows,
            page_rows: page,
            batch_size: batch,
            max_failures_per_run: failures,
            ..RunLimits::default()
        }
    })
}

/// The source and target columns' values of a drawn row.
fn values(row: &(Option<i64>, String)) -> Vec<Value> {
    vec![
        row.0.map_or(Value::Null, Value::Int),
        Value::Text(row.1.as_str().into()),
    ]
}

fn writable(row: &(Option<i64>, String)) -> bool {
    row.0.is_some() && row.1 != "refused" && row.1 != "unreadable"
}

/// Every drawn row is still in Snowflake, on the queue, or was committed
/// by Postgres (its change log: a version deleted without being written
/// shows even when its key holds another).
fn assert_nothing_lost(
    rows: &[(Option<i64>, String)],
    table: &MemoryTable,
    target: &MemoryTarget,
    queue: &MemoryQueue,
) {
    let left = table.rows.lock().unwrap().clone();
    let queued = queue.mapped.lock().unwrap().clone();
    let committed = target.changes.lock().unwrap().clone();
    for row in rows {
        let cells = cells(row);
        let on_queue = queued.iter().any(|m| {
            m.row.get("ID") == Some(&cell_json(&cells[0]))
                && m.row.get("NOTE") == Some(&cell_json(&cells[1]))
        });
        let in_postgres = writable(row) && committed.contains(&values(row));
        assert!(
            left.contains(row) || on_queue || in_postgres,
            "lost {row:?}: left {left:?}, Postgres committed {committed:?}"
        );
    }
}

/// After a run that read the whole table (`before` rows), the ledger
/// tells the truth about Snowflake, trouble or not: no row it counts as
/// left was deleted (a copy goes with its twin), and every row deleted was
/// counted written or enqueued; untroubled, these are equalities.
fn assert_ledger_true(summary: &crate::ledger::RunSummary, table: &MemoryTable, before: usize) {
    if summary.outcome == RunOutcome::Idle || summary.rows_read != before {
        return;
    }
    let left = table.rows.lock().unwrap().len();
    let placed = summary.rows_written + summary.rows_enqueued;
    assert!(
        left >= summary.rows_deferred,
        "counted left but deleted: {summary:?}"
    );
    assert!(
        summary.rows_deleted <= placed,
        "deleted but not placed: {summary:?}"
    );
    if summary.error.is_none() {
        assert_eq!(summary.rows_deferred, left, "{summary:?}");
        assert_eq!(placed, summary.rows_deleted, "{summary:?}");
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES sets another count (`make soak`).
    /// Whatever the dataset, limits and faults: after every run no row
    /// is lost and each finished run accounts for every row it read (and,
    /// when it read the whole table untroubled, its ledger matches what is
    /// left in Snowflake); once healed, Snowflake empties, no version was written twice and
    /// the queue carries only rows that were read.
    #[test]
    fn no_fault_loses_a_row_of_a_mapped_table_or_writes_a_version_twice(
        rows in prop::collection::vec(row(), 0..25),
        faulty_runs in prop::collection::vec((limits(), fault()), 1..4),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (table, target, queue) = services();
            table.rows.lock().unwrap().extend(rows.iter().cloned());
            for (limits, fault) in &faulty_runs {
                let (mut run, store) = guarded(&table, &target, &queue);
                run.limits = *limits;
                let mut deadline = Deadline::none();
                match fault {
                    Fault::Crash(_) => {}
                    Fault::PostgresDown => *target.down.lock().unwrap() = true,
                    Fault::QueueDown => *queue.down.lock().unwrap() = true,
                    Fault::Deadline(ms) => {
                        *target.delay.lock().unwrap() = Some(Duration::from_millis(1));
                        deadline = Deadline::after(Duration::from_millis(*ms), Duration::ZERO);
                    }
                    Fault::QueuePartial(n) => *queue.answers_for.lock().unwrap() = Some(*n),
                    Fault::DeletesFail(n) => *table.deletes_left.lock().unwrap() = Some(*n),
                    Fault::LockUnconfirmed => {
                        store.state().lock_unconfirmed = true;
                        *target.down.lock().unwrap() = true;
                    }
                }
                let before = table.rows.lock().unwrap().len();
                let future = run.run(Uuid::new_v4(), None, &deadline);
                let summary = match fault {
                    Fault::Crash(polls) => CrashAfter { inner: Box::pin(future), polls: *polls }.await,
                    _ => Some(future.await),
                };
                if let Some(summary) = summary {
                    assert_eq!(summary.unaccounted(), 0, "{summary:?}");
                    assert_ledger_true(&summary, &table, before);
                }
                *target.down.lock().unwrap() = false;
                *queue.down.lock().unwrap() = false;
                *target.delay.lock().unwrap() = None;
                *queue.answers_for.lock().unwrap() = None;
                *table.deletes_left.lock().unwrap() = None;
                assert_nothing_lost(&rows, &table, &target, &queue);
            }
            // Heal: each run writes one version of a key.
            let mut runs = 0;
            while !table.rows.lock().unwrap().is_empty() {
                runs += 1;
                assert!(runs <= rows.len() + 1, "Snowflake does not empty");
                let before = table.rows.lock().unwrap().len();
                let summary = replicator(&table, &target, &queue)
                    .run(Uuid::new_v4(), None, &Deadline::none())
                    .await;
                assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
                assert_eq!(summary.unaccounted(), 0, "{summary:?}");
                assert_ledger_true(&summary, &table, before);
                assert_nothing_lost(&rows, &table, &target, &queue);
            }
            let changes = target.changes.lock().unwrap().clone();
            for (i, change) in changes.iter().enumerate() {
                assert!(
                    !changes[..i].contains(change),
                    "a version written twice: {changes:?}"
                );
            }
            for message in queue.mapped.lock().unwrap().iter() {
                assert!(
                    rows.iter().any(|r| {
                        let cells = cells(r);
                        message.row.get("ID") == Some(&cell_json(&cells[0]))
                            && message.row.get("NOTE") == Some(&cell_json(&cells[1]))
                    }),
                    "queued a row never read: {message:?}"
                );
            }
        });
    }
}
