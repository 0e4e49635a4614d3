use super::*;
use crate::deadline::Deadline;
use crate::ledger::RunSummary;
use crate::model::message::FailureClass;
use crate::model::row::{validate, SourceRow};
use crate::ports::NoHook;
use crate::testing::{MemoryQueue, MemorySource, MemoryStore};

struct World {
    source: MemorySource,
    store: MemoryStore,
    queue: MemoryQueue,
    original: Vec<SourceRow>,
}

impl World {
    fn new(rows: Vec<SourceRow>) -> Self {
        Self {
            source: MemorySource::with_rows(rows.clone()),
            store: MemoryStore::default(),
            queue: MemoryQueue::default(),
            original: rows,
        }
    }

    fn replicator(&self, limits: RunLimits) -> CaseRun {
        CaseRun {
            source: Box::new(self.source.clone()),
            guard: Box::new(self.store.clone()),
            sinks: Box::new(self.store.clone()),
            queue: Box::new(self.queue.clone()),
            limits,
            backoff: Backoff::ZERO,
            steps: Box::new(NoHook),
            deadline_margin: None,
        }
    }

    async fn run(&self, limits: RunLimits) -> RunSummary {
        self.replicator(limits)
            .run(Uuid::new_v4(), None, &Deadline::none())
            .await
    }

    /// Every original row is in Postgres (as its validated form), in the
    /// queue, or still in Snowflake.
    fn assert_nothing_lost(&self) {
        let source = self.source.state();
        let store = self.store.state();
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
                        .any(|other| other.country_id == v.country_id && &other.country == current)
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

#[tokio::test]
async fn a_clean_batch_is_written_and_deleted() {
    let world = World::new(rows(&[(1, "USA"), (2, "fra"), (3, " DEU ")]));
    let s = world.run(RunLimits::default()).await;
    assert_eq!(s.outcome, RunOutcome::Succeeded, "{s:?}");
    assert_eq!((s.rows_read, s.rows_written, s.rows_deleted), (3, 3, 3));
    let store = world.store.state();
    assert_eq!(store.table.get(&2).map(String::as_str), Some("FRA"));
    assert_eq!(store.table.get(&3).map(String::as_str), Some("DEU"));
    assert!(world.source.state().rows.is_empty());
    assert_eq!(store.ledger.last().unwrap().outcome, RunOutcome::Succeeded);
}

#[tokio::test]
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
    assert_eq!(world.source.state().rows.len(), 15);
}

#[tokio::test]
async fn invalid_and_refused_rows_go_to_the_queue_and_the_rest_is_written() {
    let mut input = rows(&[(1, "USA"), (2, "XXX"), (3, "U1"), (4, "GBR")]);
    input.push(SourceRow::new(None, Some("ESP")));
    input.push(SourceRow::new(Some(6), None));
    let world = World::new(input);
    world.store.state().refused.push("XXX".into());
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
    assert!(world.source.state().rows.is_empty());
    world.assert_nothing_lost();
}

#[tokio::test]
async fn bisection_isolates_exactly_the_refused_rows() {
    let mut spec: Vec<(i128, &str)> = (0..1000).map(|i| (i, "NOR")).collect();
    for bad in [3, 500, 999] {
        spec[bad].1 = "BAD";
    }
    let world = World::new(rows(&spec));
    world.store.state().refused.push("BAD".into());
    let s = world
        .run(RunLimits {
            batch_size: 250,
            ..RunLimits::default()
        })
        .await;
    assert_eq!((s.rows_written, s.rows_rejected), (997, 3), "{s:?}");
    let statements = world.store.state().statements;
    // 4 chunks, 3 of them bisected down to one row: far below row-by-row.
    assert!(statements < 4 + 3 * 2 * 9, "{statements} statements");
    world.assert_nothing_lost();
}

#[tokio::test]
async fn duplicate_ids_never_fail_the_write_and_no_version_is_dropped() {
    let world = World::new(rows(&[(1, "USA"), (1, "CAN"), (1, "USA"), (2, "MEX")]));
    let s = world.run(RunLimits::default()).await;
    // The snapshot orders an id's versions by country: CAN is written, and
    // the other version (with its identical copy) waits, which is normal
    // and does not fail the run.
    assert_eq!((s.rows_written, s.rows_deferred), (2, 2), "{s:?}");
    assert_eq!(s.rows_deferred_duplicates, 2);
    assert_eq!(s.outcome, RunOutcome::Succeeded);
    assert_eq!(world.source.state().rows, rows(&[(1, "USA"), (1, "USA")]));
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
        Some("USA"),
        "the version written last wins, as an upsert does"
    );
    assert!(world.source.state().rows.is_empty());
}

#[tokio::test]
async fn transient_errors_are_retried_then_deferred() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
    world.store.state().transient_failures_left = 2;
    let s = world.run(RunLimits::default()).await;
    assert_eq!(
        s.outcome,
        RunOutcome::Succeeded,
        "recovered on attempt 3: {s:?}"
    );

    let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
    world.store.state().transient_failures_left = usize::MAX;
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
    assert_eq!(world.source.state().rows.len(), 2, "nothing deleted");
    assert!(s.error.unwrap().contains("connection reset"));
}

#[tokio::test]
async fn a_fatal_error_stops_the_run_without_flooding_the_queue() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA"), (3, "DEU")]));
    world.store.state().fatal = true;
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
    assert_eq!(world.store.state().statements, 1, "stopped at once");
    assert!(s.error.unwrap().contains("does not exist"));
}

#[tokio::test]
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
    assert_eq!(world.source.state().rows.len(), 4);
    world.assert_nothing_lost();
}

#[tokio::test]
async fn rows_the_queue_did_not_accept_stay_in_snowflake() {
    let world = World::new(rows(&[(1, "USA"), (2, "U2")]));
    *world.queue.down.lock().unwrap() = true;
    let s = world.run(RunLimits::default()).await;
    assert_eq!((s.rows_written, s.rows_deferred, s.rows_deleted), (1, 1, 1));
    assert_eq!(world.source.state().rows, rows(&[(2, "U2")]));
    world.assert_nothing_lost();
}

#[tokio::test]
async fn a_failed_delete_leaves_safe_rows_for_an_idempotent_rerun() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
    world.source.state().fail_deletes = true;
    let first = world.run(RunLimits::default()).await;
    assert_eq!(first.outcome, RunOutcome::Partial);
    assert_eq!((first.rows_written, first.rows_deleted), (2, 0));
    world.source.state().fail_deletes = false;
    let second = world.run(RunLimits::default()).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_eq!(
        (second.rows_changed, second.rows_deleted),
        (0, 2),
        "replay changed nothing"
    );
    world.assert_nothing_lost();
}

#[tokio::test]
async fn a_run_that_finds_the_lock_taken_does_nothing() {
    let world = World::new(rows(&[(1, "USA")]));
    world.store.state().locked = true;
    let s = world.run(RunLimits::default()).await;
    assert_eq!(s.outcome, RunOutcome::Skipped);
    assert_eq!(s.rows_read, 0);
    assert_eq!(world.source.state().rows.len(), 1);
}

#[tokio::test]
async fn near_the_deadline_the_run_starts_nothing_new_and_loses_nothing() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA"), (3, "DEU"), (4, "X1")]));
    // Each write takes 200 ms; the deadline is 100 ms past its margin away,
    // so the first chunk is written and nothing after it starts.
    world.store.state().write_delay = Some(std::time::Duration::from_millis(200));
    let deadline = Deadline::after(
        std::time::Duration::from_millis(1_100),
        std::time::Duration::from_secs(1),
    );
    let s = world
        .replicator(RunLimits {
            batch_size: 1,
            ..RunLimits::default()
        })
        .run(Uuid::new_v4(), None, &deadline)
        .await;
    assert_eq!(s.outcome, RunOutcome::Partial, "{s:?}");
    assert_eq!(s.rows_written, 1, "{s:?}");
    assert_eq!(s.rows_deferred, 3, "{s:?}");
    // The final flush is bounded and runs even near the deadline: the one
    // row written is deleted (leaving it would only rewrite it next run).
    assert_eq!(s.rows_deleted, 1, "{s:?}");
    assert!(
        world.queue.messages.lock().unwrap().is_empty(),
        "no enqueue started"
    );
    assert!(
        s.error.as_deref().unwrap_or("").contains("deadline"),
        "{s:?}"
    );
    assert_balanced(&s);
    world.assert_nothing_lost();
    assert_eq!(
        world.source.state().rows.len(),
        3,
        "everything not written is still in Snowflake"
    );
}

#[tokio::test]
async fn an_empty_table_makes_an_idle_run_of_one_metadata_statement() {
    let world = World::new(Vec::new());
    let s = world.run(RunLimits::default()).await;
    assert_eq!(s.outcome, RunOutcome::Idle, "{s:?}");
    assert!(s.outcome.is_success());
    assert_eq!(s.snowflake_statements, 1);
    assert_eq!(world.source.state().statements, vec!["count"]);
    assert_eq!(
        world.store.state().ledger.last().unwrap().outcome,
        RunOutcome::Idle
    );
}

#[tokio::test]
async fn statements_do_not_grow_with_the_rows_pages_aside() {
    async fn statements(rows_in_table: usize) -> (Vec<&'static str>, RunSummary) {
        let spec: Vec<(i128, &str)> = (0..rows_in_table as i128).map(|i| (i, "ITA")).collect();
        let world = World::new(rows(&spec));
        let s = world
            .run(RunLimits {
                max_rows_per_run: rows_in_table,
                page_rows: rows_in_table / 2,
                batch_size: 7,
                ..RunLimits::default()
            })
            .await;
        assert_eq!(s.outcome, RunOutcome::Succeeded, "{s:?}");
        assert!(world.source.state().rows.is_empty());
        assert!(world.source.state().snapshots.is_empty(), "dropped");
        let sent = world.source.state().statements.clone();
        (sent, s)
    }
    let (small, s_small) = statements(10).await;
    let (large, s_large) = statements(10_000).await;
    // The second page is read while the first is written and deleted.
    assert_eq!(
        small,
        vec!["count", "snapshot", "read", "read", "delete", "delete", "drop"]
    );
    assert_eq!(small, large, "the same statements for 1,000 times the rows");
    assert_eq!(s_small.snowflake_statements, 7);
    assert_eq!(s_large.snowflake_statements, 7);
    assert_eq!(s_large.rows_deleted, 10_000);
}

#[tokio::test]
async fn with_postgres_down_nothing_is_deleted_but_queued_rows() {
    let mut input = rows(&[(1, "USA"), (2, "FRA"), (3, "U1"), (4, "DEU")]);
    input.push(SourceRow::new(None, Some("ESP")));
    let world = World::new(input);
    world.store.state().transient_failures_left = usize::MAX;
    let s = world.run(RunLimits::default()).await;
    assert_eq!(s.outcome, RunOutcome::Partial, "{s:?}");
    assert_eq!(
        (s.rows_written, s.rows_enqueued, s.rows_deferred),
        (0, 2, 3)
    );
    // The two invalid rows were queued and deleted (one has no id: its own
    // statement); the three valid ones stay.
    assert_eq!(s.rows_deleted, 2);
    let sent = world.source.state().statements.clone();
    assert_eq!(
        sent.iter().filter(|s| **s == "delete").count(),
        2,
        "{sent:?}"
    );
    assert_eq!(
        world.source.state().rows,
        rows(&[(1, "USA"), (2, "FRA"), (4, "DEU")])
    );
    world.assert_nothing_lost();
}

#[tokio::test]
async fn a_read_outage_between_pages_keeps_the_pages_done_and_loses_nothing() {
    let spec: Vec<(i128, &str)> = (0..9).map(|i| (i, "ITA")).collect();
    let world = World::new(rows(&spec));
    world.source.state().reads_before_outage = Some(1);
    let s = world
        .run(RunLimits {
            page_rows: 4,
            ..RunLimits::default()
        })
        .await;
    assert_eq!(s.outcome, RunOutcome::Partial, "{s:?}");
    assert_eq!((s.rows_read, s.rows_written, s.rows_deleted), (4, 4, 4));
    assert!(s
        .error
        .as_deref()
        .unwrap_or("")
        .contains("reading the Snowflake snapshot"));
    assert_eq!(world.source.state().rows.len(), 5);
    world.assert_nothing_lost();
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_dropped_does_not_fail_the_run() {
    let world = World::new(rows(&[(1, "USA")]));
    world.source.state().fail_drops = true;
    let s = world.run(RunLimits::default()).await;
    assert_eq!(s.outcome, RunOutcome::Succeeded, "{s:?}");
    assert_eq!(world.source.state().snapshots.len(), 1);
}

#[tokio::test]
async fn a_newer_version_that_arrives_mid_run_survives_the_join_delete() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA")]));
    // Between the snapshot and the delete, id 1 gets a new version and an
    // identical copy of id 2 arrives: the first survives, the second's
    // content is in Postgres and goes with its twin.
    {
        let source = world.source.clone();
        let replicator = world.replicator(RunLimits::default());
        let deadline = Deadline::none();
        let run = replicator.run(Uuid::new_v4(), None, &deadline);
        tokio::pin!(run);
        loop {
            tokio::select! {
                biased;
                s = &mut run => { assert_eq!(s.outcome, RunOutcome::Succeeded); break; }
                () = tokio::task::yield_now() => {
                    let mut state = source.state();
                    if !state.snapshots.is_empty() && !state.rows.iter().any(|r| r.country.as_deref() == Some("CAN")) {
                        state.rows.push(SourceRow::new(Some(1), Some("CAN")));
                        state.rows.push(SourceRow::new(Some(2), Some("FRA")));
                    }
                }
            }
        }
    }
    assert_eq!(world.source.state().rows, rows(&[(1, "CAN")]));
}

/// Property tests: random datasets, limits and faults, including a crash
/// at a random await point (the run's future dropped mid-flight, as a
/// killed process leaves it; the fakes' state survives, as the services'
/// does).
mod properties {
    use super::*;
    use crate::testing::CrashAfter;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Fault {
        Crash {
            polls: usize,
        },
        SnowflakeReadDown,
        /// Page reads succeed this many times, then Snowflake is down.
        SnowflakeReadDownAfter(usize),
        SnowflakeDeleteDownAfter(usize),
        /// The snapshot cannot be dropped (it would die with the session).
        SnapshotDropFails,
        PostgresDownAfter(usize),
        PostgresTransient(usize),
        PostgresFatal,
        QueueDown,
        QueueShortReply(usize),
        /// The invocation's deadline passes this many milliseconds into
        /// the run (each write takes one).
        DeadlineAfter(u64),
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            3 => (0usize..60).prop_map(|polls| Fault::Crash { polls }),
            1 => Just(Fault::SnowflakeReadDown),
            1 => (0usize..4).prop_map(Fault::SnowflakeReadDownAfter),
            1 => (0usize..4).prop_map(Fault::SnowflakeDeleteDownAfter),
            1 => Just(Fault::SnapshotDropFails),
            1 => (0usize..6).prop_map(Fault::PostgresDownAfter),
            1 => (1usize..5).prop_map(Fault::PostgresTransient),
            1 => Just(Fault::PostgresFatal),
            1 => Just(Fault::QueueDown),
            1 => (0usize..4).prop_map(Fault::QueueShortReply),
            1 => (0u64..5).prop_map(Fault::DeadlineAfter),
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
        (1usize..40, 1usize..9, 1usize..6, 0usize..6).prop_map(
            |(max_rows, page, batch, failures)| RunLimits {
                max_rows_per_run: max_rows,
                page_rows: page,
                batch_size: batch,
                max_failures_per_run: failures,
                ..RunLimits::default()
            },
        )
    }

    impl World {
        fn apply(&self, fault: &Fault) {
            let mut source = self.source.state();
            let mut store = self.store.state();
            match fault {
                Fault::Crash { .. } => {}
                Fault::SnowflakeReadDown => source.read_down = true,
                Fault::SnowflakeReadDownAfter(n) => source.reads_before_outage = Some(*n),
                Fault::SnapshotDropFails => source.fail_drops = true,
                Fault::SnowflakeDeleteDownAfter(n) => source.deletes_before_outage = Some(*n),
                Fault::PostgresDownAfter(n) => store.statements_before_outage = Some(*n),
                Fault::PostgresTransient(n) => store.transient_failures_left = *n,
                Fault::PostgresFatal => store.fatal = true,
                Fault::QueueDown => *self.queue.down.lock().unwrap() = true,
                Fault::QueueShortReply(n) => *self.queue.answers_for.lock().unwrap() = Some(*n),
                Fault::DeadlineAfter(_) => {
                    store.write_delay = Some(std::time::Duration::from_millis(1))
                }
            }
        }

        fn heal(&self) {
            let mut source = self.source.state();
            source.read_down = false;
            source.reads_before_outage = None;
            source.fail_drops = false;
            source.fail_deletes = false;
            source.deletes_before_outage = None;
            let mut store = self.store.state();
            store.statements_before_outage = None;
            store.transient_failures_left = 0;
            store.write_delay = None;
            store.fatal = false;
            *self.queue.down.lock().unwrap() = false;
            *self.queue.answers_for.lock().unwrap() = None;
        }

        /// One run with a fault; None when the run crashed.
        async fn run_with(&self, limits: RunLimits, fault: &Fault) -> Option<RunSummary> {
            self.apply(fault);
            let replicator = self.replicator(limits);
            let deadline = match fault {
                Fault::DeadlineAfter(ms) => Deadline::after(
                    std::time::Duration::from_millis(*ms),
                    std::time::Duration::ZERO,
                ),
                _ => Deadline::none(),
            };
            let run = replicator.run(Uuid::new_v4(), None, &deadline);
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
            refuse_xxx in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                                .build()
                .unwrap();
            runtime.block_on(async {
                let world = World::new(rows.clone());
                if refuse_xxx {
                    world.store.state().refused.push("XXX".into());
                }
                for (limits, fault) in &faulty_runs {
                    if let Some(summary) = world.run_with(*limits, fault).await {
                        assert_balanced(&summary);
                    }
                    world.assert_nothing_lost();
                }
                // Heal: each run writes one version of an id.
                let mut runs = 0;
                while !world.source.state().rows.is_empty() {
                    runs += 1;
                    assert!(runs <= rows.len() + 1, "Snowflake does not empty");
                    let summary = world.run(RunLimits::default()).await;
                    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
                    assert_balanced(&summary);
                    world.assert_nothing_lost();
                }
                let store = world.store.state();
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

/// A run whose lock was lost (its connection ended and another run took
/// it) moves nothing more: the page it read stays in Snowflake, whole.
#[tokio::test]
async fn a_run_that_lost_its_lock_moves_nothing_more() {
    let world = World::new(vec![
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("US")),
    ]);
    world.store.state().lock_lost = true;
    let summary = world.run(RunLimits::default()).await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    assert!(
        summary
            .error
            .as_deref()
            .unwrap_or("")
            .contains("lost its lock"),
        "{summary:?}"
    );
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_enqueued,
            summary.rows_deleted
        ),
        (2, 0, 0, 0)
    );
    assert_eq!(summary.rows_deferred, 2);
    assert_eq!(world.source.state().rows.len(), 2, "both rows stay");
    assert!(world.queue.messages.lock().unwrap().is_empty());
    assert!(world.store.state().table.is_empty());
}
