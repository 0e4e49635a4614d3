use super::*;
use crate::model::change::{pack, Groups};
use crate::model::message::FailureClass;
use crate::model::row::{validate, SourceRow};
use crate::testing::{change_bodies, deliver_changes, MemoryParking, MemoryQueue, MemoryStore};
use uuid::Uuid;

const BUCKETS: Groups = Groups::by_id(2);

struct World {
    store: MemoryStore,
    queue: MemoryQueue,
    parking: MemoryParking,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            queue: MemoryQueue::default(),
            parking: MemoryParking::default(),
        }
    }

    fn writer(&self) -> ChangeWriter {
        ChangeWriter {
            sinks: Box::new(self.store.clone()),
            retry_queue: Box::new(self.queue.clone()),
            policy: RetryPolicy::immediate(3),
            parking: Box::new(self.parking.clone()),
            last_receive: None,
        }
    }

    /// Delivers the bodies as one invocation; ids are "m0", "m1", …
    async fn deliver(&self, bodies: &[(String, Option<String>)]) -> StreamSummary {
        deliver_changes(&self.writer(), bodies).await
    }
}

/// Postgres down, and ids 1 and 2 packed: one batch per bucket.
fn postgres_down() -> (World, Vec<(String, Option<String>)>) {
    let world = World::new();
    world.store.state().down = true;
    let batches = pack(
        Uuid::new_v4(),
        &rows(&[(1, "USA"), (2, "FRA")]),
        BUCKETS,
        10_000,
    );
    (world, change_bodies(&batches))
}

fn rows(spec: &[(i32, &str)]) -> Vec<CountryRow> {
    spec.iter()
        .map(|(id, c)| validate(&SourceRow::new(Some(i128::from(*id)), Some(c))).unwrap())
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
    let s = world.deliver(&change_bodies(&batches)).await;
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
    let s = world.deliver(&change_bodies(&batches)).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!((s.rows_written, s.rows_enqueued), (2, 1));
    let queued = world.queue.messages.lock().unwrap().clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].record, SourceRow::new(Some(4), Some("XXX")));
    assert_eq!(queued[0].error.class, FailureClass::Rejected);
    assert_eq!(queued[0].run_id, batches[0].run_id);
}

/// A body that is not a batch in group 0, then ids 2 (group 0) and 1 and 3
/// (group 1), packed as the publisher packs them.
fn malformed_then_three_rows() -> Vec<(String, Option<String>)> {
    let good = pack(
        Uuid::new_v4(),
        &rows(&[(1, "USA"), (2, "FRA"), (3, "NZL")]),
        BUCKETS,
        10_000,
    );
    let mut input = vec![("0".to_string(), Some("not json".to_string()))];
    input.extend(change_bodies(&good));
    input
}

#[tokio::test]
async fn a_malformed_batch_is_parked_and_holds_nothing() {
    let world = World::new();
    let s = world.deliver(&malformed_then_three_rows()).await;
    assert_eq!(s.malformed, 1);
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!(world.store.state().table.len(), 3);
    assert_eq!(world.parking.parked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_batch_that_cannot_be_parked_comes_back_and_holds_only_its_own_group() {
    let world = World::new();
    *world.parking.down.lock().unwrap() = true;
    let s = world.deliver(&malformed_then_three_rows()).await;
    assert_eq!(s.malformed, 1);
    // m0 is malformed; m1 (group 0, after it) comes back unwritten; m2
    // (group 1) is written.
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"], "{s:?}");
    let table = world.store.state().table.clone();
    assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
}

#[tokio::test]
async fn with_postgres_down_everything_comes_back_and_nothing_is_queued() {
    let (world, bodies) = postgres_down();
    let s = world.deliver(&bodies).await;
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"]);
    assert!(world.queue.messages.lock().unwrap().is_empty());
    // Healed: the same deliveries come back and are written.
    world.store.state().down = false;
    let s = world.deliver(&bodies).await;
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
    let s = world.deliver(&change_bodies(&batches)).await;
    assert_eq!(s.failed_message_ids, vec!["m0"], "{s:?}");
    // The valid row is written already; the rerun changes nothing for it.
    *world.queue.down.lock().unwrap() = false;
    let again = world.deliver(&change_bodies(&batches)).await;
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
    let mut input = change_bodies(&first);
    input.extend(change_bodies(&second));
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

/// Two versions of an id in one invocation (two batches of its group) never
/// go in one statement: Postgres would skip the older one when it equals
/// what the row holds and apply the newer, or the reverse, depending on the
/// order inside the statement. Each batch goes on its own, in order.
#[tokio::test]
async fn two_versions_of_an_id_in_one_invocation_go_batch_by_batch() {
    for held in ["USA", "FRA"] {
        let world = World::new();
        world.store.state().table.insert(2, held.to_string());
        let run = Uuid::new_v4();
        let older = pack(run, &rows(&[(2, "USA"), (4, "DEU")]), BUCKETS, 10_000);
        let mut newer = pack(run, &rows(&[(2, "FRA")]), BUCKETS, 10_000);
        newer[0].seq = 1;
        let mut input = change_bodies(&older);
        input.extend(change_bodies(&newer));
        let s = world.deliver(&input).await;
        assert!(s.failed_message_ids.is_empty(), "{s:?}");
        let state = world.store.state();
        assert_eq!(
            state.table.get(&2).map(String::as_str),
            Some("FRA"),
            "held {held}"
        );
        assert_eq!(state.table.get(&4).map(String::as_str), Some("DEU"));
        assert_eq!(
            state.repeated_ids, 0,
            "held {held}: a statement held both versions"
        );
    }
}

/// Property: whatever the versions, faults and malformed messages, once
/// the queue is drained (failed deliveries come back first in their group,
/// as SQS FIFO does), every row of a valid batch is in Postgres or in the
/// retry queue, and Postgres saw each id's versions in publish order.
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Fault {
        None,
        PostgresDownAfter(usize),
        PostgresTransient(usize),
        QueueDown,
        QueueShortReply(usize),
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            Just(Fault::None),
            (0usize..4).prop_map(Fault::PostgresDownAfter),
            (1usize..6).prop_map(Fault::PostgresTransient),
            Just(Fault::QueueDown),
            (0usize..2).prop_map(Fault::QueueShortReply),
        ]
    }

    proptest! {
        #[test]
        fn no_row_is_lost_and_versions_keep_their_order(
            runs in prop::collection::vec(
                prop::collection::vec((0i32..6, prop::sample::select(vec!["USA", "FRA", "XXX", "NZL"])), 1..8),
                1..5,
            ),
            max_bytes in 40usize..200,
            malformed_at in prop::option::of(0usize..6),
            fault in fault(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let world = World::new();
                world.store.state().refused.push("XXX".into());
                // Each publisher run sends one version per id (as the
                // snapshot's planning guarantees), in order.
                let mut published: Vec<(i32, String)> = Vec::new();
                let mut pending: Vec<(String, Option<String>)> = Vec::new();
                for spec in &runs {
                    let mut seen = std::collections::HashSet::new();
                    let one_run: Vec<(i32, &str)> =
                        spec.iter().filter(|(id, _)| seen.insert(*id)).map(|(id, c)| (*id, *c)).collect();
                    published.extend(one_run.iter().map(|(id, c)| (*id, c.to_string())));
                    pending.extend(change_bodies(&pack(Uuid::new_v4(), &rows(&one_run), BUCKETS, max_bytes)));
                }
                if let Some(at) = malformed_at {
                    pending.insert(at.min(pending.len()), ("1".into(), Some("{\"v\":1}".into())));
                }
                {
                    let mut store = world.store.state();
                    match fault {
                        Fault::PostgresDownAfter(n) => store.statements_before_outage = Some(n),
                        Fault::PostgresTransient(n) => store.transient_failures_left = n,
                        _ => {}
                    }
                }
                match fault {
                    Fault::QueueDown => *world.queue.down.lock().unwrap() = true,
                    Fault::QueueShortReply(n) => *world.queue.answers_for.lock().unwrap() = Some(n),
                    _ => {}
                }
                let mut dead = 0;
                for round in 0..30 {
                    if pending.is_empty() {
                        break;
                    }
                    let s = world.deliver(&pending).await;
                    // SQS FIFO: what was listed comes back, in order; the
                    // rest is deleted. A message that failed 5 times would
                    // go to the dead-letter queue (none may).
                    let failed: std::collections::HashSet<usize> = s
                        .failed_message_ids
                        .iter()
                        .map(|id| id[1..].parse::<usize>().unwrap())
                        .collect();
                    let mut next = Vec::new();
                    for (i, message) in pending.into_iter().enumerate() {
                        if failed.contains(&i) {
                            if message.1.as_deref() == Some("{\"v\":1}") && round >= 4 {
                                dead += 1;
                                continue;
                            }
                            next.push(message);
                        }
                    }
                    pending = next;
                    if round == 0 {
                        let mut store = world.store.state();
                        store.statements_before_outage = None;
                        store.transient_failures_left = 0;
                        store.down = false;
                        drop(store);
                        *world.queue.down.lock().unwrap() = false;
                        *world.queue.answers_for.lock().unwrap() = None;
                    }
                }
                assert!(pending.is_empty(), "the queue does not drain: {pending:?}");
                // The malformed message is parked on its first delivery and
                // never comes back; nothing reaches the redrive limit.
                assert_eq!(dead, 0);
                assert_eq!(
                    world.parking.parked.lock().unwrap().len(),
                    usize::from(malformed_at.is_some())
                );
                let store = world.store.state();
                let queued = world.queue.messages.lock().unwrap().clone();
                for (id, country) in &published {
                    let in_queue = queued.iter().any(|m| {
                        m.record == SourceRow::new(Some(i128::from(*id)), Some(country))
                    });
                    let in_postgres = store.changes.iter().any(|(i, c)| i == id && c == country)
                        || store.table.get(id) == Some(country);
                    assert!(in_queue || in_postgres, "lost ({id}, {country})");
                    assert!(country != "XXX" || in_queue, "a refused row not queued: {id}");
                }
                // Per id, the versions Postgres took are in publish order.
                for id in 0..6 {
                    let order: Vec<&String> = published.iter().filter(|(i, _)| *i == id).map(|(_, c)| c).collect();
                    let mut cursor = 0;
                    for (_, c) in store.changes.iter().filter(|(i, _)| *i == id) {
                        let found = order[cursor..].iter().position(|o| *o == c);
                        assert!(found.is_some(), "id {id}: {c} written out of order: {:?} vs {order:?}", store.changes);
                        cursor += found.unwrap_or(0);
                    }
                    let last_valid = order.iter().rev().find(|c| c.as_str() != "XXX");
                    assert_eq!(store.table.get(&id), last_valid.copied(), "id {id}");
                }
            });
        }
    }
}

/// Delivers the bodies as one invocation, each on its `receive`th receive.
async fn deliver_received(
    writer: &ChangeWriter,
    bodies: &[(String, Option<String>)],
    receive: u32,
) -> StreamSummary {
    let ids: Vec<String> = (0..bodies.len()).map(|i| format!("m{i}")).collect();
    let deliveries: Vec<ChangeDelivery<'_>> = bodies
        .iter()
        .zip(&ids)
        .map(|((group, body), id)| ChangeDelivery {
            message_id: id,
            body: body.as_deref(),
            group: Some(group.as_str()),
            receive_count: Some(receive),
        })
        .collect();
    writer.handle(&deliveries, &Deadline::none()).await
}

#[tokio::test]
async fn a_batch_that_fails_on_its_last_receive_is_parked_with_its_error() {
    let (world, bodies) = postgres_down();
    let mut writer = world.writer();
    writer.last_receive = Some(3);
    // Before the last receive: both come back, nothing parked.
    let s = deliver_received(&writer, &bodies, 2).await;
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"]);
    assert!(world.parking.parked.lock().unwrap().is_empty());
    // On it: both parked, with why, and none listed (the redrive policy
    // would have moved them without the error).
    let s = deliver_received(&writer, &bodies, 3).await;
    assert!(s.failed_message_ids.is_empty(), "{s:?}");
    assert_eq!((s.parked, s.malformed), (2, 0));
    let parked = world.parking.parked.lock().unwrap().clone();
    assert_eq!(
        parked.iter().map(|p| p.2.clone()).collect::<Vec<_>>(),
        bodies
            .iter()
            .map(|b| b.1.clone().unwrap())
            .collect::<Vec<_>>(),
        "bodies unchanged"
    );
    let errors = world.parking.errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .all(|(e, n)| e.contains("connection refused") && *n == Some(3)),
        "{errors:?}"
    );
    // Parking down on the last receive: they come back, for the redrive
    // policy to move.
    *world.parking.down.lock().unwrap() = true;
    let s = deliver_received(&writer, &bodies, 4).await;
    assert_eq!(s.failed_message_ids, vec!["m0", "m1"]);
}

#[tokio::test]
async fn each_group_is_marked_with_its_batch_before_the_rows_are_written() {
    let world = World::new();
    let run = Uuid::new_v4();
    let batches = pack(
        run,
        &rows(&[(1, "USA"), (2, "FRA"), (3, "DEU")]),
        BUCKETS,
        10_000,
    );
    assert_eq!(
        batches
            .iter()
            .map(|b| (b.bucket, b.seq))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 1)]
    );
    // One at a time too (the fallback path marks each batch it writes).
    for one in change_bodies(&batches) {
        let s = world.deliver(&[one]).await;
        assert!(s.failed_message_ids.is_empty(), "{s:?}");
    }
    let marks = world.store.state().marks.clone();
    assert_eq!(
        marks.into_iter().collect::<Vec<_>>(),
        vec![((2, 1, 0), (run, 0)), ((2, 1, 1), (run, 1))]
    );
    // Postgres gone before the mark: nothing written, the batch comes back.
    let later = pack(Uuid::new_v4(), &rows(&[(4, "NLD")]), BUCKETS, 10_000);
    world.store.state().statements_before_outage = Some(0);
    let s = world.deliver(&change_bodies(&later)).await;
    assert_eq!(s.failed_message_ids, vec!["m0"]);
    assert!(!world.store.state().table.contains_key(&4));
}
