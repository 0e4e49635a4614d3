//! Stream mode against the real services: the publisher (Snowflake snapshot
//! → FIFO changes queue in moto), then writers driven the way Lambda's event
//! source mapping drives them, several at once, into Postgres; refused and
//! invalid rows on the retry queue in today's format.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use countries_ops::event_source::{DriveSummary, LocalEventSource};
use countries_shared::lambda;
use countries_shared::lambda::publisher::PublishOutcome;
use countries_shared::ledger::{RunOutcome, SinkKind};
use countries_shared::model::message::FailureClass;
use countries_shared::model::row::SourceRow;
use lambda_runtime::{Context, LambdaEvent};
use testkit::TestEnv;

const CHECK: &str = r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#;

fn rows(spec: &[(i128, &str)]) -> Vec<SourceRow> {
    spec.iter()
        .map(|(id, c)| SourceRow::new(Some(*id), Some(c)))
        .collect()
}

/// A test's stack with a changes queue: a batch listed by a writer comes
/// back after a second.
async fn stream_env(prefix: &str) -> TestEnv {
    stream_env_with(prefix, 1).await
}

/// With the changes queue's visibility timeout: a batch that comes back is
/// visible again after it, and so is one whose invocation outlasts it.
async fn stream_env_with(prefix: &str, visibility_timeout: u32) -> TestEnv {
    let mut env = TestEnv::new(prefix).await;
    env.add_changes_queue(visibility_timeout, 50).await;
    env
}

async fn publish(env: &TestEnv) -> PublishOutcome {
    let publisher = publisher::build(&env.publisher_config())
        .await
        .expect("publisher");
    let event = LambdaEvent::new(serde_json::json!({"id": "evt"}), Context::default());
    lambda::publisher::handle(&publisher, event)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the publisher failed: {}: {}",
                e.error_type, e.error_message
            )
        })
}

fn changes_source(env: &TestEnv) -> LocalEventSource {
    LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["CHANGES_QUEUE_URL"].clone(),
        batch_size: 10,
    }
}

async fn drive_writers(env: &TestEnv, writers: usize) -> DriveSummary {
    let writer = writer::build(&env.writer_config()).await;
    changes_source(env)
        .drain_parallel(&writer, writers, Duration::from_secs(60))
        .await
        .expect("the changes queue empties")
}

#[tokio::test]
async fn the_publisher_and_parallel_writers_move_every_row_and_queue_the_failures() {
    let env = stream_env("stream_e2e").await;
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    let mut source: Vec<SourceRow> = (1..=300)
        .map(|id| SourceRow::new(Some(id), Some(["USA", "fra", " DEU "][id as usize % 3])))
        .collect();
    source.extend(rows(&[(301, "ATL"), (302, "U2A"), (303, "")]));
    source.push(SourceRow::new(None, Some("IND")));
    env.load(&source).await;

    let outcome = publish(&env).await;
    assert_eq!(outcome.runs.len(), 1, "one run: PUBLISH_LOOP_SECONDS is 0");
    let run = &outcome.runs[0];
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(run.sink, SinkKind::ChangesQueue);
    // 301 valid rows published (ATL is valid; Postgres refuses it later),
    // 3 invalid ones queued for the retry path.
    assert_eq!((run.rows_written, run.rows_enqueued), (301, 3), "{run:?}");
    assert!(env.snowflake_rows().await.is_empty(), "every row is safe");
    let batches = env.depth("CHANGES_QUEUE_URL").await;
    assert!(
        (1..=8).contains(&batches),
        "compact batches: {batches} messages for 301 rows in 4 buckets"
    );

    let driven = drive_writers(&env, 3).await;
    assert_eq!(driven.failed, 0, "{driven:?}");
    assert_eq!(driven.messages, batches);
    let postgres = env.postgres_rows().await;
    assert_eq!(postgres.len(), 300);
    assert_eq!(postgres[0], (1, "FRA".to_string()));
    assert_eq!(postgres[1], (2, "DEU".to_string()));
    assert!(!postgres.iter().any(|(id, _)| *id == 301));

    // The retry path gets today's messages: three invalid, one refused.
    let mut queued = env.drain_retry_queue().await;
    queued.sort_by_key(|m| m.record.country_id);
    let classes: Vec<(Option<i128>, FailureClass)> = queued
        .iter()
        .map(|m| (m.record.country_id, m.error.class))
        .collect();
    assert_eq!(
        classes,
        vec![
            (None, FailureClass::Invalid),
            (Some(301), FailureClass::Rejected),
            (Some(302), FailureClass::Invalid),
            (Some(303), FailureClass::Invalid),
        ]
    );
    assert_eq!(
        queued[1].error.sqlstate.as_deref(),
        Some("23514"),
        "{:?}",
        queued[1]
    );
    let ledger: Vec<String> = env
        .postgres()
        .await
        .query("SELECT sink FROM replication_run", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ledger, vec!["changes_queue".to_string()]);
}

/// Versions of an id published by successive runs reach Postgres in the
/// order they were published, whatever the writers' parallelism: each
/// bucket is one message group, and a group is with one writer at a time.
#[tokio::test]
async fn versions_reach_postgres_in_publish_order_with_four_writers() {
    // A group is with one writer only while its messages are invisible: an
    // invocation that outlasts the visibility timeout hands the group's later
    // messages to another writer, in SQS as in moto (hence the template's
    // timeout of six function timeouts). 1 s was shorter than a slow CI
    // machine's invocation; nothing comes back in this test, so 30 s costs
    // nothing.
    let env = stream_env_with("stream_order", 30).await;
    let ids: Vec<i128> = (1..=40).collect();
    for version in ["ZZZ", "MMM", "AAA", "QQQ"] {
        let wave: Vec<SourceRow> = ids
            .iter()
            .map(|id| SourceRow::new(Some(*id), Some(version)))
            .collect();
        env.load(&wave).await;
        let outcome = publish(&env).await;
        assert_eq!(outcome.runs[0].rows_written, ids.len(), "{outcome:?}");
    }
    drive_writers(&env, 4).await;
    let postgres = env.postgres_rows().await;
    assert_eq!(postgres.len(), ids.len());
    assert!(
        postgres.iter().all(|(_, c)| c == "QQQ"),
        "the last version published wins: {postgres:?}"
    );
}

/// Postgres unreachable under the writers: every batch comes back, nothing
/// is deleted from the changes queue, and a writer with Postgres back
/// writes them all.
#[tokio::test]
async fn with_postgres_down_under_the_writers_every_batch_comes_back() {
    let env = stream_env("stream_pg_down").await;
    let source: Vec<SourceRow> = (1..=50)
        .map(|id| SourceRow::new(Some(id), Some("NZL")))
        .collect();
    env.load(&source).await;
    publish(&env).await;
    let batches = env.depth("CHANGES_QUEUE_URL").await;

    let mut down = env.vars.clone();
    down.insert("PGPORT".into(), testkit::closed_port().to_string());
    down.insert("PGCONNECT_TIMEOUT".into(), "1".into());
    let config = countries_shared::config::WriterConfig::from_vars(
        countries_shared::config::Env::from_map(down),
    )
    .expect("writer config");
    let writer = writer::build(&config).await;
    let (received, succeeded) = changes_source(&env)
        .poll_once(&writer)
        .await
        .expect("receive")
        .expect("batches");
    assert_eq!((received, succeeded), (batches.min(10), 0));
    assert!(env.postgres_rows().await.is_empty());
    assert_eq!(
        env.depth("CHANGES_QUEUE_URL").await,
        batches,
        "none deleted"
    );

    drive_writers(&env, 2).await;
    assert_eq!(env.postgres_rows().await.len(), 50);
    assert_eq!(env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await, 0);
}

/// A body that is not a batch is parked in the changes dead-letter queue
/// on its first delivery: its group, and the good batches received with it,
/// go on at once.
#[tokio::test]
async fn a_malformed_message_is_parked_in_the_dead_letter_queue_and_holds_nothing() {
    let env = stream_env("stream_malformed").await;
    // Blocks of two ids: one batch in each of the four buckets.
    env.load(&rows(&[(1, "USA"), (2, "FRA"), (4, "DEU"), (6, "GBR")]))
        .await;
    // A foreign message in bucket 1's group, ahead of the publisher's.
    env.sqs
        .send_message()
        .queue_url(&env.vars["CHANGES_QUEUE_URL"])
        .message_body("{\"not\": \"a batch\"}")
        .message_group_id("1")
        .message_deduplication_id("foreign")
        .send()
        .await
        .expect("send");
    publish(&env).await;
    let writer = writer::build(&env.writer_config()).await;
    let (received, succeeded) = changes_source(&env)
        .poll_once(&writer)
        .await
        .expect("poll")
        .expect("messages");
    assert_eq!((received, succeeded), (5, 5), "nothing comes back");
    let written: Vec<i32> = env.postgres_rows().await.iter().map(|r| r.0).collect();
    assert_eq!(written, vec![1, 2, 4, 6]);
    assert_eq!(env.depth("CHANGES_QUEUE_URL").await, 0);
    let parked = testkit::drain(&env.sqs, &env.vars["CHANGES_DEAD_LETTER_QUEUE_URL"]).await;
    assert_eq!(
        parked,
        vec!["{\"not\": \"a batch\"}".to_string()],
        "parked as it was"
    );
}

/// The writer through its real handler with a FIFO event as Lambda sends
/// it: the group comes from the `MessageGroupId` attribute.
#[tokio::test]
async fn the_writer_handler_reads_the_group_from_a_fifo_event() {
    let env = stream_env("stream_event").await;
    let writer = writer::build(&env.writer_config()).await;
    let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
        {"messageId": "m1", "body": "{\"v\":1,\"run_id\":\"00000000-0000-0000-0000-000000000000\",\"bucket\":1,\"buckets\":4,\"rows\":[[5,\"USA\"]]}",
         "attributes": {"MessageGroupId": "1", "ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"},
        {"messageId": "m2", "body": "{\"v\":1,\"run_id\":\"00000000-0000-0000-0000-000000000000\",\"bucket\":1,\"buckets\":4,\"rows\":[[6,\"FRA\"]]}",
         "attributes": {"MessageGroupId": "1", "ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}
    ]}))
    .expect("an SQS event");
    let response = lambda::writer::handle(&writer, LambdaEvent::new(event, Context::default()))
        .await
        .expect("a response");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // Id 5 is in bucket 1 of 4; id 6 is in bucket 2, so m2 is not a valid
    // batch: parked in the changes dead-letter queue, not listed.
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(env.postgres_rows().await, vec![(5, "USA".to_string())]);
    assert_eq!(env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await, 1);
}
