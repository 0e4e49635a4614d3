//! The SQS retry queue against moto.

use countries_shared::model::message::FailureClass;
use countries_shared::model::message::FailureDetail;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::RetryQueue;
use countries_sqs::retry_queue::SqsRetryQueue;
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
    use countries_sqs::dead_letters::SqsDeadLetterQueue;
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
    use countries_sqs::dead_letters::SqsDeadLetterQueue;
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

mod changes {
    //! The changes queue of stream mode (a FIFO queue) against moto.

    use std::collections::BTreeMap;

    use aws_sdk_sqs::types::MessageSystemAttributeName;
    use countries_shared::model::change::{pack, parse_change_batch, ChangeBatch, Groups};
    use countries_shared::model::row::{validate, CountryRow, SourceRow};
    use countries_shared::ports::ChangeQueue;
    use countries_sqs::changes_queue::SqsChangesQueue;
    use testkit::TestEnv;
    use uuid::Uuid;

    const BUCKETS: Groups = Groups::by_id(3);

    /// The changes queue as the template declares it.
    async fn fifo_queue(env: &TestEnv) -> String {
        testkit::create_changes_queues(&env.sqs, &env.name, 5, 30)
            .await
            .0
    }

    fn rows(n: i32) -> Vec<CountryRow> {
        (0..n)
            .map(|i| validate(&SourceRow::new(Some(i128::from(i)), Some("NOR"))).unwrap())
            .collect()
    }

    /// Every message, as (message group, batch), in the order received.
    async fn receive_all(env: &TestEnv, url: &str) -> Vec<(String, ChangeBatch)> {
        let mut out = Vec::new();
        loop {
            let received = env
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .send()
                .await
                .expect("receive");
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_default();
                parse_change_batch(m.body()).expect("a valid batch");
                let batch: ChangeBatch =
                    serde_json::from_str(m.body().unwrap_or_default()).expect("a batch");
                env.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
                out.push((group, batch));
            }
        }
    }

    #[tokio::test]
    async fn batches_arrive_in_their_bucket_group_in_publish_order() {
        let env = TestEnv::new("changes_fifo").await;
        let url = fifo_queue(&env).await;
        // Small messages, so that each bucket needs several.
        let batches = pack(Uuid::new_v4(), &rows(40), BUCKETS, 120);
        assert!(
            batches.len() > 2 * BUCKETS.buckets as usize,
            "{} batches",
            batches.len()
        );
        let queue = SqsChangesQueue::new(env.sqs.clone(), url.clone());
        let results = queue.publish(&batches).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let received = receive_all(&env, &url).await;
        assert_eq!(received.len(), batches.len());
        let mut per_group: BTreeMap<String, Vec<ChangeBatch>> = BTreeMap::new();
        for (group, batch) in received {
            assert_eq!(
                group,
                batch.bucket.to_string(),
                "the bucket is the message group"
            );
            per_group.entry(group).or_default().push(batch);
        }
        for (group, got) in per_group {
            let sent: Vec<ChangeBatch> = batches
                .iter()
                .filter(|b| b.bucket.to_string() == group)
                .cloned()
                .collect();
            assert_eq!(got, sent, "bucket {group} in publish order");
        }
    }

    #[tokio::test]
    async fn a_missing_queue_fails_every_batch_and_sends_nothing_after_a_failure() {
        let env = TestEnv::new("changes_missing").await;
        let url = format!(
            "{}/123456789012/no-such-queue.fifo",
            env.vars["AWS_ENDPOINT_URL"]
        );
        let batches = pack(Uuid::new_v4(), &rows(20), BUCKETS, 120);
        let results = SqsChangesQueue::new(env.sqs.clone(), url)
            .publish(&batches)
            .await;
        assert_eq!(results.len(), batches.len());
        let errors: Vec<String> = results
            .iter()
            .map(|r| r.as_ref().expect_err("nothing can be accepted").to_string())
            .collect();
        // The first batch of each bucket was tried; the later ones were not
        // sent after it failed.
        assert!(
            errors.iter().all(|e| e.contains("SendMessageBatch")),
            "{errors:?}"
        );
        assert_eq!(
            errors
                .iter()
                .filter(|e| e.contains("was not accepted"))
                .count(),
            batches.len() - BUCKETS.buckets as usize,
            "{errors:?}"
        );
    }
}

/// The test kit's queues are template.yaml's: made from its definitions,
/// not from a second list of attributes.
#[tokio::test]
async fn the_test_queues_are_the_templates_queues() {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let env = TestEnv::new("template_queues").await;
    let attributes = |url: String| {
        let sqs = env.sqs.clone();
        async move {
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(A::All)
                .send()
                .await
                .expect("queue attributes")
                .attributes
                .unwrap_or_default()
        }
    };
    let retry = attributes(env.vars["RETRY_QUEUE_URL"].clone()).await;
    assert_eq!(retry[&A::MessageRetentionPeriod], "345600");
    assert_eq!(retry[&A::SqsManagedSseEnabled], "true");
    let redrive: serde_json::Value =
        serde_json::from_str(&retry[&A::RedrivePolicy]).expect("a redrive policy");
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!("{}-retry-dlq", env.name))),
        "{redrive}"
    );
    let dlq = attributes(env.vars["DEAD_LETTER_QUEUE_URL"].clone()).await;
    assert_eq!(dlq[&A::MessageRetentionPeriod], "1209600");

    let (changes, _) = testkit::create_changes_queues(&env.sqs, &env.name, 7, 30).await;
    let changes = attributes(changes).await;
    assert_eq!(changes[&A::FifoQueue], "true");
    assert_eq!(changes[&A::DeduplicationScope], "messageGroup");
    assert_eq!(changes[&A::FifoThroughputLimit], "perMessageGroupId");
    assert_eq!(
        changes[&A::VisibilityTimeout],
        "30",
        "the test's own timeout"
    );
    assert!(
        changes[&A::RedrivePolicy].contains('7'),
        "the test's own redrive count"
    );
}
