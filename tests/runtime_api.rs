//! The functions (batch mode's three, stream mode's two) under an implementation of the Lambda runtime API
//! that this project did not write: `cargo lambda watch` (PyPI
//! `cargo-lambda`, installed by `make test`) serves the runtime API and the
//! invoke API; the real function binaries poll it, as they do in Lambda, and
//! work against the local stack.

use countries_shared::model::message::{FailureClass, FailureDetail, RetryMessage};
use countries_shared::model::row::SourceRow;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::runtime::{invoke, start};

use testkit::{workspace_binary, TestEnv};

const SCHEDULED_EVENT: &str = include_str!("../infra/local/events/scheduled-event.json");

fn retry_body(id: i128, country: &str) -> String {
    serde_json::to_string(&RetryMessage::first_failure(
        SourceRow::new(Some(id), Some(country)),
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: "was refused".into(),
        },
        uuid::Uuid::new_v4(),
        chrono::Utc::now(),
    ))
    .expect("a message")
}

fn sqs_record(id: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "messageId": id,
        "receiptHandle": format!("rh-{id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1764300000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1764300000001"
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:retry",
        "awsRegion": "us-east-1"
    })
}

#[tokio::test]
async fn the_functions_work_under_cargo_lambdas_runtime_api() {
    let env = TestEnv::new("runtime_api").await;
    env.postgres()
        .await
        .batch_execute(r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#)
        .await
        .expect("a CHECK constraint");

    // The replicator, with a real EventBridge scheduled event.
    env.load(&[
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("fra")),
    ])
    .await;
    let replicator = start(&env, "replicator").await;
    let summary = invoke(&replicator, SCHEDULED_EVENT).await;
    assert_eq!(summary["outcome"], "succeeded", "{summary:#}");
    assert_eq!(summary["rows_written"], 2, "{summary:#}");
    assert_eq!(env.postgres_rows().await.len(), 2);
    drop(replicator);

    // The retrier, with a real SQS event: one malformed record and one
    // Postgres refuses are listed, exactly those two.
    let event = serde_json::json!({
        "Records": [
            sqs_record("ok", &retry_body(3, "DEU")),
            sqs_record("malformed", "{not json"),
            sqs_record("refused", &retry_body(4, "ATL")),
            sqs_record("ok-too", &retry_body(5, "ITA")),
        ]
    });
    let retrier = start(&env, "retrier").await;
    let response = invoke(&retrier, &event.to_string()).await;
    let mut failed: Vec<String> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures: {response:#}"))
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["malformed", "refused"], "{response:#}");
    assert_eq!(env.postgres_rows().await.len(), 4);
    drop(retrier);

    // The dlq-reporter, with a scheduled event: the email arrives.
    env.sqs
        .send_message()
        .queue_url(&env.vars["DEAD_LETTER_QUEUE_URL"])
        .message_body(retry_body(6, "ATL"))
        .send()
        .await
        .expect("a dead letter");
    let reporter = start(&env, "dlq-reporter").await;
    let report = invoke(&reporter, SCHEDULED_EVENT).await;
    assert_eq!(report["messages"], 1, "{report:#}");
    assert_eq!(report["emailed"], true, "{report:#}");
    assert_eq!(env.sent_emails().await.len(), 1, "the digest arrived");
}

/// Stream mode's two binaries: the publisher with a scheduled event (its
/// runs in the response, the batches on the FIFO changes queue), then the
/// writer with a FIFO SQS event built from those messages (group in the
/// `MessageGroupId` attribute), plus one body that is not a batch (parked
/// in the changes dead-letter queue).
#[tokio::test]
async fn stream_modes_functions_work_under_cargo_lambdas_runtime_api() {
    let mut env = TestEnv::new("runtime_stream").await;
    env.add_changes_queue(30, 5).await;
    env.load(&[
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("fra")),
        SourceRow::new(Some(3), Some("U2A")),
    ])
    .await;
    let publisher = start(&env, "publisher").await;
    let outcome = invoke(&publisher, SCHEDULED_EVENT).await;
    assert_eq!(outcome["runs"][0]["outcome"], "succeeded", "{outcome:#}");
    assert_eq!(outcome["runs"][0]["sink"], "changes_queue", "{outcome:#}");
    assert_eq!(outcome["runs"][0]["rows_written"], 2, "{outcome:#}");
    assert_eq!(outcome["runs"][0]["rows_enqueued"], 1, "{outcome:#}");
    drop(publisher);

    let received = env
        .sqs
        .receive_message()
        .queue_url(&env.vars["CHANGES_QUEUE_URL"])
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 2, "ids 1 and 2 are in two buckets of four");
    let mut records: Vec<serde_json::Value> = received
        .iter()
        .map(|m| {
            let mut record = sqs_record(
                m.message_id.as_deref().unwrap_or_default(),
                m.body.as_deref().unwrap_or_default(),
            );
            let group = m
                .attributes
                .as_ref()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                })
                .cloned()
                .expect("a FIFO message has a group");
            record["attributes"]["MessageGroupId"] = group.into();
            record
        })
        .collect();
    let mut foreign = sqs_record("foreign", "{\"v\":1}");
    foreign["attributes"]["MessageGroupId"] = "9".into();
    records.push(foreign);
    let writer = start(&env, "writer").await;
    let response = invoke(
        &writer,
        &serde_json::json!({ "Records": records }).to_string(),
    )
    .await;
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures: {response:#}"))
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    assert!(failed.is_empty(), "parked, not listed: {response:#}");
    assert_eq!(env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await, 1);
    assert_eq!(
        env.postgres_rows().await,
        vec![(1, "USA".to_string()), (2, "FRA".to_string())]
    );
}

/// A runtime API without the extensions API (as some emulators are): the
/// graceful-shutdown hook cannot register, and the function must start all
/// the same and ask for its first invocation.
#[tokio::test]
async fn a_function_starts_where_the_extensions_api_is_missing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new("no_extensions").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (asked, mut asked_rx) = tokio::sync::mpsc::channel::<String>(8);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = asked.send(line.clone()).await;
                if line.contains("/runtime/invocation/next") {
                    // Hold the long poll open, as the runtime API does.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    let _ = socket
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    let mut function = Command::new(workspace_binary("retrier"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env.vars)
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "retrier")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the retrier");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|l: &String| l.contains("/runtime/invocation/next"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, asked_rx.recv()).await {
            Ok(Some(line)) => seen.push(line),
            _ => break,
        }
    }
    let _ = function.kill();
    let _ = function.wait();
    assert!(
        seen.iter().any(|l| l.contains("/extension/register")),
        "it tried to register the hook: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("/runtime/invocation/next")),
        "it never asked for an invocation: {seen:?}"
    );
}
