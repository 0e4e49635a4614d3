use std::time::Duration;

use super::*;
use crate::deadline::Deadline;
use crate::model::message::{FailureClass, FailureDetail, RetryMessage};
use crate::model::row::SourceRow;
use crate::testing::{MemoryDelays, MemoryStore};

fn retrier(pool: &MemoryStore, delays: &MemoryDelays) -> Retrier {
    Retrier {
        mapped: None,
        sinks: Box::new(pool.clone()),
        policy: RetryPolicy::immediate(2),
        delay: Some(Box::new(delays.clone())),
        retry_backoff: Backoff {
            first: Duration::from_secs(30),
            max: Duration::from_secs(600),
        },
        deadline_margin: None,
    }
}

fn body(id: Option<i128>, country: Option<&str>) -> String {
    serde_json::to_string(&RetryMessage::first_failure(
        SourceRow::new(id, country),
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: "check".into(),
        },
        uuid::Uuid::nil(),
        chrono::Utc::now(),
    ))
    .unwrap()
}

/// A delivery as the event source hands it over.
struct Message {
    id: String,
    handle: String,
    body: Option<String>,
    receive_count: u32,
}

fn sqs_message(id: &str, body: Option<String>, receive_count: u32) -> Message {
    Message {
        id: id.to_string(),
        handle: format!("rh-{id}"),
        body,
        receive_count,
    }
}

/// The messages as the event source hands them to the retrier.
fn deliveries(messages: &[Message]) -> Vec<Delivery<'_>> {
    messages
        .iter()
        .map(|m| Delivery {
            message_id: &m.id,
            receipt_handle: Some(&m.handle),
            body: m.body.as_deref(),
            receive_count: m.receive_count,
        })
        .collect()
}

/// The message ids the batch lists as failed, sorted.
async fn run(retrier: &Retrier, messages: Vec<Message>) -> Vec<String> {
    let deliveries = deliveries(&messages);
    let mut ids = retrier
        .handle_batch(&deliveries, &Deadline::none())
        .await
        .failed_message_ids;
    ids.sort();
    ids
}

#[tokio::test]
async fn the_response_lists_exactly_the_messages_that_failed() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    pool.state().refused.push("ATL".into());
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("ok-1", Some(body(Some(1), Some("usa"))), 1),
            sqs_message("refused", Some(body(Some(2), Some("ATL"))), 3),
            sqs_message("not-json", Some("{{{".into()), 1),
            sqs_message("empty", None, 1),
            sqs_message("v2", Some(r#"{"schema_version":2}"#.into()), 1),
            sqs_message("invalid", Some(body(Some(3), Some("U1A"))), 1),
            sqs_message("ok-2", Some(body(Some(4), Some("FRA"))), 1),
        ],
    )
    .await;
    assert_eq!(
        failed,
        vec!["empty", "invalid", "not-json", "refused", "v2"]
    );
    let state = pool.state();
    assert_eq!(state.table.get(&1).map(String::as_str), Some("USA"));
    assert_eq!(state.table.get(&4).map(String::as_str), Some("FRA"));
    // Backoff: 30 s doubled per receive; the refused one was received 3 times.
    let delays = delays.0.lock().unwrap();
    assert!(delays.contains(&("rh-refused".into(), Duration::from_secs(120))));
    assert_eq!(delays.len(), 5);
}

#[tokio::test]
async fn an_outage_lists_every_message_and_writes_nothing() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    pool.state().down = true;
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("a", Some(body(Some(1), Some("USA"))), 1),
            sqs_message("b", Some(body(Some(2), Some("FRA"))), 1),
        ],
    )
    .await;
    assert_eq!(failed, vec!["a", "b"]);
    assert!(pool.state().table.is_empty());
}

#[tokio::test]
async fn duplicate_deliveries_are_harmless_and_versions_are_written_in_order() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("first", Some(body(Some(1), Some("USA"))), 1),
            sqs_message("same-again", Some(body(Some(1), Some("USA"))), 2),
            sqs_message("other-version", Some(body(Some(1), Some("CAN"))), 1),
        ],
    )
    .await;
    assert!(
        failed.is_empty(),
        "no delivery listed because of another: {failed:?}"
    );
    let state = pool.state();
    assert_eq!(state.statements, 2, "one statement per round of versions");
    assert_eq!(
        state.changes,
        vec![(1, "USA".to_string()), (1, "CAN".to_string())],
        "versions applied in queue order"
    );
    assert_eq!(state.table.get(&1).map(String::as_str), Some("CAN"));
}

#[tokio::test]
async fn five_versions_of_one_id_in_one_batch_all_succeed_and_the_last_wins() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    let versions = ["AAA", "BBB", "AAA", "CCC", "DDD"];
    let messages = versions
        .iter()
        .enumerate()
        .map(|(i, c)| sqs_message(&format!("v{i}"), Some(body(Some(7), Some(c))), 1))
        .collect();
    let failed = run(&retrier(&pool, &delays), messages).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(delays.0.lock().unwrap().is_empty(), "nothing backed off");
    assert_eq!(pool.state().table.get(&7).map(String::as_str), Some("DDD"));
}

#[tokio::test]
async fn a_panic_is_contained() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    pool.state().panic_on = Some("BUG".into());
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("a", Some(body(Some(1), Some("USA"))), 1),
            sqs_message("b", Some(body(Some(2), Some("BUG"))), 1),
        ],
    )
    .await;
    assert_eq!(
        failed,
        vec!["a", "b"],
        "the whole write panicked; both come back"
    );
}

#[tokio::test]
async fn near_the_deadline_nothing_is_written_and_every_message_comes_back() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    let messages = [
        sqs_message("a", Some(body(Some(1), Some("USA"))), 1),
        sqs_message("b", Some(body(Some(2), Some("FRA"))), 1),
    ];
    let deliveries = deliveries(&messages);
    let near = Deadline::after(Duration::from_secs(1), Duration::from_secs(5));
    let outcome = retrier(&pool, &delays)
        .handle_batch(&deliveries, &near)
        .await;
    assert_eq!(outcome.failed_message_ids, vec!["a", "b"]);
    assert_eq!(pool.state().statements, 0, "nothing started");
}

#[tokio::test]
async fn a_refused_version_superseded_by_a_newer_one_in_the_batch_is_done() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    pool.state().refused.push("ATL".into());
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("old", Some(body(Some(1), Some("ATL"))), 1),
            sqs_message("new", Some(body(Some(1), Some("USA"))), 1),
            sqs_message("alone", Some(body(Some(2), Some("ATL"))), 1),
        ],
    )
    .await;
    // The refused old version would overwrite the newer one if it came back
    // and succeeded later; a refused version with no newer one comes back.
    assert_eq!(failed, vec!["alone"]);
    assert_eq!(pool.state().table.get(&1).map(String::as_str), Some("USA"));
}

#[tokio::test]
async fn after_a_round_cannot_finish_newer_versions_wait() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    // Every write fails for a transient reason (more than the retries).
    pool.state().transient_failures_left = usize::MAX;
    let failed = run(
        &retrier(&pool, &delays),
        vec![
            sqs_message("v1", Some(body(Some(1), Some("AAA"))), 1),
            sqs_message("v2", Some(body(Some(1), Some("BBB"))), 1),
        ],
    )
    .await;
    assert_eq!(failed, vec!["v1", "v2"]);
    assert_eq!(
        pool.state().statements,
        2,
        "round two never started (two attempts of round one)"
    );
}

/// Mapped tables in memory: `orders` refuses a note "refused" (a CHECK);
/// any other table is unknown.
#[derive(Clone, Default)]
struct MemoryMappedRows {
    written: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

#[async_trait::async_trait]
impl MappedRows for MemoryMappedRows {
    async fn write_rows(
        &self,
        table: &str,
        rows: &[&serde_json::Map<String, serde_json::Value>],
        _: WriteLimits,
        _: &Deadline,
    ) -> Result<crate::ports::SinkOutcome, String> {
        if table != "orders" {
            return Err(format!(
                "table {table} is not in the mapping file (TABLES_FILE)"
            ));
        }
        let mut outcome = crate::ports::SinkOutcome::default();
        for (i, row) in rows.iter().enumerate() {
            if row["NOTE"] == "refused" {
                outcome.rejected.push((
                    i,
                    crate::failure::WriteError {
                        kind: ErrorKind::RowLevel,
                        sqlstate: Some("23514".into()),
                        message: "check".into(),
                    },
                ));
            } else {
                self.written
                    .lock()
                    .unwrap()
                    .push(serde_json::Value::Object((*row).clone()));
                outcome.written.push(i);
            }
        }
        Ok(outcome)
    }
}

fn mapped_body(table: &str, note: &str) -> String {
    use crate::model::mapped_message::MappedRetryMessage;
    use crate::model::value::Value;
    serde_json::to_string(&MappedRetryMessage::first_failure(
        table,
        &["ID".to_string(), "NOTE".to_string()],
        &[Ok(Value::Int(1)), Ok(Value::Text(note.into()))],
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: "check".into(),
        },
        uuid::Uuid::nil(),
        chrono::Utc::now(),
    ))
    .unwrap()
}

#[tokio::test]
async fn mapped_rows_are_written_by_table_and_only_their_failures_come_back() {
    let (pool, delays) = (MemoryStore::default(), MemoryDelays::default());
    let rows = MemoryMappedRows::default();
    let mut retrier = retrier(&pool, &delays);
    let bodies = [
        body(Some(1), Some("USA")),
        mapped_body("orders", "fine"),
        mapped_body("orders", "refused"),
        mapped_body("elsewhere", "fine"),
    ];
    let deliveries: Vec<Delivery<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| Delivery {
            message_id: ["m0", "m1", "m2", "m3"][i],
            receipt_handle: None,
            body: Some(b),
            receive_count: 1,
        })
        .collect();

    // Without mapped tables, their rows come back, saying why.
    let verdicts = retrier.process(&deliveries, &Deadline::none()).await;
    assert!(matches!(verdicts[0], Verdict::Written));
    assert!(
        matches!(&verdicts[1], Verdict::Retry(RetryReason::Unwritable(why)) if why.contains("TABLES_FILE")),
        "{:?}",
        verdicts[1]
    );

    retrier.mapped = Some(Box::new(rows.clone()));
    let outcome = retrier.handle_batch(&deliveries, &Deadline::none()).await;
    assert_eq!(outcome.failed_message_ids, ["m2", "m3"]);
    assert_eq!(rows.written.lock().unwrap().len(), 1);
    assert_eq!(rows.written.lock().unwrap()[0]["NOTE"], "fine");
}
