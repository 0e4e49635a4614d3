//! The changes-queue sink behind a publisher run, on the in-memory
//! adapters of the other ports: packing by bucket, partial acceptance,
//! an outage, the shared run lock, and what the writer makes of it.

use std::sync::Arc;

use uuid::Uuid;

use super::ChangesQueueSinks;
use countries_shared::case_run::CaseRun;
use countries_shared::config::RunLimits;
use countries_shared::deadline::Deadline;
use countries_shared::ledger::{RunOutcome, RunSummary, SinkKind};
use countries_shared::model::change::Groups;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::NoHook;
use countries_shared::retry::Backoff;
use countries_shared::testing::{
    change_bodies, deliver_changes, MemoryChanges, MemoryQueue, MemorySource, MemoryStore,
};
use countries_shared::writer::ChangeWriter;

const BUCKETS: Groups = Groups {
    buckets: 4,
    block: 2,
};

struct World {
    source: MemorySource,
    ledger: MemoryStore,
    changes: MemoryChanges,
    retry_queue: MemoryQueue,
}

impl World {
    fn new(rows: Vec<SourceRow>) -> Self {
        Self {
            source: MemorySource::with_rows(rows),
            ledger: MemoryStore::default(),
            changes: MemoryChanges::default(),
            retry_queue: MemoryQueue::default(),
        }
    }

    /// A publisher run: the replicator's, with the changes-queue sink.
    fn publisher_run(&self, limits: RunLimits) -> CaseRun {
        CaseRun {
            source: Box::new(self.source.clone()),
            guard: Box::new(self.ledger.clone()),
            sinks: Box::new(ChangesQueueSinks {
                queue: Arc::new(self.changes.clone()),
                groups: BUCKETS,
            }),
            queue: Box::new(self.retry_queue.clone()),
            limits,
            backoff: Backoff::ZERO,
            steps: Box::new(NoHook),
            deadline_margin: None,
        }
    }

    async fn publish(&self, limits: RunLimits) -> RunSummary {
        self.publisher_run(limits)
            .run(Uuid::new_v4(), None, &Deadline::none())
            .await
    }

    fn published_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .changes
            .state()
            .batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|r| r.0))
            .collect();
        ids.sort_unstable();
        ids
    }
}

fn rows(spec: &[(i128, &str)]) -> Vec<SourceRow> {
    spec.iter()
        .map(|(id, c)| SourceRow::new(Some(*id), Some(c)))
        .collect()
}

fn small_chunks() -> RunLimits {
    RunLimits {
        batch_size: 3,
        ..RunLimits::default()
    }
}

#[tokio::test]
async fn valid_rows_go_to_the_changes_queue_by_bucket_invalid_ones_to_the_retry_queue() {
    let world = World::new(rows(&[
        (1, "USA"),
        (2, "FRA"),
        (3, "US"),
        (4, "DEU"),
        (5, "GBR"),
        (6, "ESP"),
    ]));
    let summary = world.publish(small_chunks()).await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.sink, SinkKind::ChangesQueue);
    assert_eq!((summary.rows_written, summary.rows_enqueued), (5, 1));
    assert_eq!(world.published_ids(), vec![1, 2, 4, 5, 6]);
    for batch in &world.changes.state().batches {
        for row in &batch.rows {
            assert_eq!(BUCKETS.bucket_of(row.0), batch.bucket, "{batch:?}");
        }
    }
    let queued = world.retry_queue.messages.lock().unwrap().clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].record, SourceRow::new(Some(3), Some("US")));
    assert!(world.source.state().rows.is_empty(), "every row is safe");
    // The lock and the ledger are the replica's: nothing was written there.
    let ledger = world.ledger.state();
    assert!(ledger.table.is_empty());
    let recorded = ledger.ledger.last().expect("the run is in the ledger");
    assert_eq!(recorded.sink, SinkKind::ChangesQueue);
    assert!(!ledger.locked, "the lock is released");
}

#[tokio::test]
async fn with_the_changes_queue_down_only_the_queued_invalid_rows_leave_snowflake() {
    let world = World::new(rows(&[(1, "USA"), (2, "FRA"), (3, "US")]));
    world.changes.state().down = true;
    let summary = world.publish(small_chunks()).await;
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:?}");
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains("writing to the changes queue stopped") && !error.contains("Postgres"),
        "the run's error speaks of its sink: {error}"
    );
    assert_eq!(summary.rows_written, 0);
    assert_eq!(
        world.source.state().rows,
        rows(&[(1, "USA"), (2, "FRA")]),
        "the valid rows stay in Snowflake for the next run"
    );
    world.changes.state().down = false;
    let again = world.publish(small_chunks()).await;
    assert_eq!(again.outcome, RunOutcome::Succeeded, "{again:?}");
    assert_eq!(world.published_ids(), vec![1, 2]);
    assert!(world.source.state().rows.is_empty());
}

#[tokio::test]
async fn a_chunk_the_queue_took_in_part_is_sent_again_and_its_accepted_batches_deduplicated() {
    // Ids 1..=8 over 4 buckets: one chunk of 8 rows packs 4 batches.
    let spec: Vec<(i128, &str)> = (1..=8).map(|i| (i, "USA")).collect();
    let world = World::new(rows(&spec));
    world.changes.state().refuse_bucket = Some((2, 1));
    let summary = world
        .publish(RunLimits {
            batch_size: 8,
            ..RunLimits::default()
        })
        .await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    let state = world.changes.state();
    assert_eq!(state.calls, 2, "the chunk was sent twice");
    assert_eq!(
        state.batches.len(),
        4,
        "each bucket's batch is on the queue once"
    );
    drop(state);
    assert_eq!(world.published_ids(), (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_publisher_run_waits_for_a_replicator_run_on_the_same_lock() {
    let world = World::new(rows(&[(1, "USA")]));
    world.ledger.state().locked = true;
    let summary = world.publish(small_chunks()).await;
    assert_eq!(summary.outcome, RunOutcome::Skipped);
    assert_eq!(world.changes.state().calls, 0);
    assert_eq!(world.source.state().rows.len(), 1);
}

/// The whole stream path in memory: what the publisher sends, delivered
/// to the stream writer bucket by bucket, ends in the replica.
#[tokio::test]
async fn what_the_publisher_sends_the_writer_writes() {
    let spec: Vec<(i128, &str)> = (1..=50).map(|i| (i, "NLD")).collect();
    let world = World::new(rows(&spec));
    let summary = world.publish(small_chunks()).await;
    assert_eq!(summary.rows_written, 50, "{summary:?}");
    let replica = MemoryStore::default();
    let writer = ChangeWriter {
        sinks: Box::new(replica.clone()),
        retry_queue: Box::new(MemoryQueue::default()),
        policy: countries_shared::retry::RetryPolicy::immediate(3),
        parking: Box::new(countries_shared::testing::MemoryParking::default()),
        last_receive: None,
    };
    let batches = world.changes.state().batches.clone();
    let written = deliver_changes(&writer, &change_bodies(&batches)).await;
    assert!(written.failed_message_ids.is_empty(), "{written:?}");
    assert_eq!(written.rows_written, 50);
    assert_eq!(replica.state().table.len(), 50);
}

/// The publisher function names its runs by their sink: an invocation that
/// leaves rows behind says "publisher run", not "replicator run".
#[tokio::test]
async fn the_publisher_function_names_a_failed_run_by_its_sink() {
    use countries_shared::publisher::Publisher;
    let world = World::new(rows(&[(1, "USA")]));
    world.changes.state().down = true;
    let function = Publisher {
        runs: world.publisher_run(small_chunks()),
        loop_for: std::time::Duration::ZERO,
        idle_wait: std::time::Duration::ZERO,
    };
    let event = lambda_runtime::LambdaEvent::new(
        serde_json::json!({"id": "evt-1"}),
        lambda_runtime::Context::default(),
    );
    let err = countries_shared::lambda::publisher::handle(&function, event)
        .await
        .expect_err("the row stayed in Snowflake");
    assert_eq!(err.error_type, "RunPartial");
    assert!(
        err.error_message.starts_with("publisher run")
            && err
                .error_message
                .contains("writing to the changes queue stopped"),
        "{}",
        err.error_message
    );
    assert_eq!(world.source.state().rows.len(), 1);
}
