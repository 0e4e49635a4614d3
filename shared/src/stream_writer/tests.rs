use super::*;
use crate::model::change::{pack, ChangeBatch};
use crate::model::message::FailureClass;
use crate::model::row::{validate, SourceRow};
use crate::testing::{MemoryQueue, MemoryStore};
use uuid::Uuid;

const BUCKETS: u32 = 2;

struct World {
    store: MemoryStore,
    queue: MemoryQueue,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            queue: MemoryQueue::default(),
        }
    }

    fn writer(&self) -> StreamWriter {
        StreamWriter {
            writers: Box::new(self.store.clone()),
            retry_queue: Box::new(self.queue.clone()),
            policy: RetryPolicy::immediate(3),
            buckets: BUCKETS,
        }
    }

    /// Delivers the bodies as one invocation; ids are "m0", "m1", …
    async fn deliver(&self, bodies: &[(String, Option<String>)]) -> StreamSummary {
        let ids: Vec<String> = (0..bodies.len()).map(|i| format!("m{i}")).collect();
        let deliveries: Vec<ChangeDelivery<'_>> = bodies
            .iter()
            .zip(&ids)
            .map(|((group, body), id)| ChangeDelivery {
                message_id: id,
                body: body.as_deref(),
                group: Some(group.as_str()),
            })
            .collect();
        self.writer().handle(&deliveries, &Deadline::none()).await
    }
}

fn rows(spec: &[(i32, &str)]) -> Vec<CountryRow> {
    spec.iter()
        .map(|(id, c)| validate(&SourceRow::new(Some(i128::from(*id)), Some(c))).unwrap())
        .collect()
}

fn bodies(batches: &[ChangeBatch]) -> Vec<(String, Option<String>)> {
    batches
        .iter()
        .map(|b| {
            (
                b.bucket.to_string(),
                Some(serde_json::to_string(b).unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn batches_are_written_and_nothing_comes_back() {
    let world = World::new();
    let batches = pack(
        Uuid::new_v4(),
        &rows(&[(1, "USA"), (2, "FRA"), (3, "DEU")]),
        BUCKETS,
        10_000,
    );
    let s = world.deliver(&bodies(&batches)).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!((s.messages, s.rows_written, s.rows_changed), (2, 3, 3));
    let table = world.store.state().table.clone();
    assert_eq!(table.get(&2).map(String::as_str), Some("FRA"));
    assert_eq!(table.len(), 3);
}

#[tokio::test]
async fn refused_rows_go_to_the_retry_queue_and_the_batch_is_done() {
    let world = World::new();
    world.store.state().refused.push("XXX".into());
    let batches = pack(
        Uuid::new_v4(),
        &rows(&[(2, "USA"), (4, "XXX"), (6, "FRA")]),
        BUCKETS,
        10_000,
    );
    let s = world.deliver(&bodies(&batches)).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!((s.rows_written, s.rows_enqueued), (2, 1));
    let queued = world.queue.messages.lock().unwrap().clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].record, SourceRow::new(Some(4), Some("XXX")));
    assert_eq!(queued[0].error.class, FailureClass::Rejected);
    assert_eq!(queued[0].run_id, batches[0].run_id);
}

#[tokio::test]
async fn a_malformed_batch_comes_back_and_holds_only_its_own_group() {
    let world = World::new();
    let good = pack(
        Uuid::new_v4(),
        &rows(&[(1, "USA"), (2, "FRA"), (3, "NZL")]),
        BUCKETS,
        10_000,
    );
    // Group 0 holds id 2; group 1 holds ids 1 and 3.
    let mut input = vec![("0".to_string(), Some("not json".to_string()))];
    input.extend(bodies(&good));
    let s = world.deliver(&input).await;
    assert_eq!(s.malformed, 1);
    // m0 is malformed; m1 (group 0, after it) comes back unwritten; m2
    // (group 1) is written.
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"], "{s:?}");
    let table = world.store.state().table.clone();
    assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
}

#[tokio::test]
async fn with_postgres_down_everything_comes_back_and_nothing_is_queued() {
    let world = World::new();
    world.store.state().down = true;
    let batches = pack(
        Uuid::new_v4(),
        &rows(&[(1, "USA"), (2, "FRA")]),
        BUCKETS,
        10_000,
    );
    let s = world.deliver(&bodies(&batches)).await;
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"]);
    assert!(world.queue.messages.lock().unwrap().is_empty());
    // Healed: the same deliveries come back and are written.
    world.store.state().down = false;
    let s = world.deliver(&bodies(&batches)).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!(world.store.state().table.len(), 2);
}

#[tokio::test]
async fn a_refused_row_the_queue_does_not_take_brings_its_batch_back() {
    let world = World::new();
    world.store.state().refused.push("XXX".into());
    *world.queue.down.lock().unwrap() = true;
    let batches = pack(
        Uuid::new_v4(),
        &rows(&[(2, "XXX"), (4, "USA")]),
        BUCKETS,
        10_000,
    );
    let s = world.deliver(&bodies(&batches)).await;
    assert_eq!(s.failed_message_ids, vec!["m0"], "{s:?}");
    // The valid row is written already; the rerun changes nothing for it.
    *world.queue.down.lock().unwrap() = false;
    let again = world.deliver(&bodies(&batches)).await;
    assert!(again.failed_message_ids.is_empty(), "{again:?}");
    assert_eq!(again.rows_changed, 0);
    assert_eq!(world.queue.messages.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn versions_of_an_id_are_written_in_publish_order_and_a_refused_one_waits_in_the_retry_queue()
{
    let world = World::new();
    let run = Uuid::new_v4();
    // Two publisher runs, each with one version of id 2 (group 0).
    let first = pack(run, &rows(&[(2, "USA")]), BUCKETS, 10_000);
    let second = pack(run, &rows(&[(2, "FRA")]), BUCKETS, 10_000);
    let mut input = bodies(&first);
    input.extend(bodies(&second));
    // Postgres refuses USA for now: the first batch is done (USA queued),
    // and the second writes FRA after it.
    world.store.state().refused.push("USA".into());
    let s = world.deliver(&input).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!(
        world.store.state().table.get(&2).map(String::as_str),
        Some("FRA")
    );
    assert_eq!(
        world.store.state().changes,
        vec![(2, "FRA".to_string())],
        "nothing written out of order"
    );
}
