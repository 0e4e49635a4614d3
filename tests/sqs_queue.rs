//! The SQS retry queue against moto.

use countries_shared::model::message::FailureClass;
use countries_shared::model::message::FailureDetail;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::RetryQueue;
use countries_shared::sqs::retry_queue::SqsRetryQueue;
use testkit::{drain, TestEnv};
use uuid::Uuid;

fn message(i: i128) -> RetryMessage {
    RetryMessage::first_failure(
        SourceRow::new(Some(i), Some("X'Y")),
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: format!("row {i} refused"),
        },
        Uuid::new_v4(),
        chrono::Utc::now(),
    )
}

#[tokio::test]
async fn messages_are_sent_in_batches_of_ten_and_arrive_intact() {
    let env = TestEnv::new("sqs_send").await;
    let queue = SqsRetryQueue::new(env.sqs.clone(), env.vars["RETRY_QUEUE_URL"].clone());
    let sent: Vec<RetryMessage> = (0..23).map(message).collect();
    let results = queue.enqueue(&sent).await;
    assert_eq!(results.len(), 23);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let mut received = env.drain_retry_queue().await;
    received.sort_by_key(|m| m.record.country_id);
    assert_eq!(received, sent);
}

#[tokio::test]
async fn a_missing_queue_fails_every_message_and_says_why() {
    let env = TestEnv::new("sqs_missing").await;
    let url = format!(
        "{}/123456789012/no-such-queue",
        env.vars["AWS_ENDPOINT_URL"]
    );
    let queue = SqsRetryQueue::new(env.sqs.clone(), url.clone());
    let results = queue.enqueue(&[message(1), message(2)]).await;
    assert_eq!(results.len(), 2);
    for r in &results {
        let err = r.as_ref().expect_err("nothing can be accepted");
        assert!(err.to_string().contains("SendMessageBatch"), "{err}");
    }
    assert!(drain(&env.sqs, &env.vars["RETRY_QUEUE_URL"])
        .await
        .is_empty());
}

#[tokio::test]
async fn a_partly_refused_delete_counts_every_confirmed_delete() {
    use countries_shared::model::report::DeadLetter;
    use countries_shared::ports::DeadLetterQueue;
    use countries_shared::sqs::dead_letters::SqsDeadLetterQueue;
    let env = testkit::TestEnv::new("dlq_delete").await;
    let url = env.vars["DEAD_LETTER_QUEUE_URL"].clone();
    for i in 0..12 {
        env.sqs
            .send_message()
            .queue_url(&url)
            .message_body(format!("letter {i}"))
            .send()
            .await
            .unwrap();
    }
    let dlq = SqsDeadLetterQueue::new(env.sqs.clone(), url);
    let mut letters: Vec<DeadLetter> = Vec::new();
    while letters.len() < 12 {
        let batch = dlq.receive(10).await.unwrap();
        assert!(!batch.is_empty(), "received {} of 12", letters.len());
        letters.extend(batch);
    }
    // One receipt handle in the first batch of ten is not SQS's.
    letters[3].receipt_handle = "not-a-receipt-handle".into();
    let deleted = dlq.delete(&letters).await;
    assert_eq!(deleted.count, 11, "{deleted:?}");
    assert!(deleted.error.is_some());
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 1);
}

#[tokio::test]
async fn the_outage_announcement_is_kept_on_the_queue() {
    use countries_shared::ports::DeadLetterQueue;
    use countries_shared::sqs::dead_letters::SqsDeadLetterQueue;
    let env = testkit::TestEnv::new("dlq_tag").await;
    let dlq = SqsDeadLetterQueue::new(env.sqs.clone(), env.vars["DEAD_LETTER_QUEUE_URL"].clone());
    assert_eq!(dlq.outage_announced().await.unwrap(), None);
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T04:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    dlq.set_outage_announced(Some(at)).await.unwrap();
    // A new client (a cold start) sees it.
    let fresh = SqsDeadLetterQueue::new(env.sqs.clone(), env.vars["DEAD_LETTER_QUEUE_URL"].clone());
    assert_eq!(fresh.outage_announced().await.unwrap(), Some(at));
    fresh.set_outage_announced(None).await.unwrap();
    assert_eq!(dlq.outage_announced().await.unwrap(), None);
}
