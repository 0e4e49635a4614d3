//! The `retrier` function: one batch of the retry queue per invocation,
//! answered with a partial batch response (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use crate::deadline::Deadline;
use crate::retrier::{Delivery, Retrier};
use crate::telemetry::metric;

/// How often SQS delivered the message, this time included.
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// Lists exactly the messages that must come back.
pub async fn handle(
    retrier: &Retrier,
    event: lambda_runtime::LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Diagnostic> {
    let records = &event.payload.records;
    let deliveries: Vec<Delivery<'_>> = records
        .iter()
        .map(|record| Delivery {
            message_id: record.message_id.as_deref().unwrap_or(""),
            receipt_handle: record.receipt_handle.as_deref(),
            body: record.body.as_deref(),
            receive_count: receive_count(record),
        })
        .collect();
    let deadline = Deadline::from_epoch_ms(event.context.deadline, retrier.deadline_margin);
    let outcome = retrier.handle_batch(&deliveries, &deadline).await;
    crate::telemetry::emit_metrics(
        metric::RETRIER,
        &[
            (metric::RECORDS_WRITTEN, outcome.summary.written as f64),
            (metric::RECORDS_FAILED, outcome.summary.failed as f64),
        ],
    );
    let mut response = SqsBatchResponse::default();
    for message_id in outcome.failed_message_ids {
        response.add_failure(message_id);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Backoff, RetryPolicy};
    use crate::testing::{MemoryDelays, MemoryStore};

    fn message(id: &str, body: &str, receive_count: u32) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_string());
        m.receipt_handle = Some(format!("rh-{id}"));
        m.body = Some(body.to_string());
        m.attributes
            .insert("ApproximateReceiveCount".into(), receive_count.to_string());
        m
    }

    #[tokio::test]
    async fn the_response_lists_the_failed_message_ids_and_backs_them_off() {
        let delays = MemoryDelays::default();
        let retrier = Retrier {
            mapped: None,
            sinks: Box::new(MemoryStore::default()),
            policy: RetryPolicy::immediate(1),
            delay: Some(Box::new(delays.clone())),
            retry_backoff: Backoff {
                first: std::time::Duration::from_secs(30),
                max: std::time::Duration::from_secs(600),
            },
            deadline_margin: None,
        };
        let mut event = SqsEvent::default();
        event.records = vec![message("bad", "{{{", 3), message("empty", " ", 1)];
        let response = handle(
            &retrier,
            lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
        )
        .await
        .unwrap();
        let ids: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, vec!["bad", "empty"]);
        let delays = delays.0.lock().unwrap();
        assert!(delays.contains(&("rh-bad".into(), std::time::Duration::from_secs(120))));
    }

    #[tokio::test]
    async fn a_short_deadline_from_the_context_lists_every_message_unwritten() {
        let store = MemoryStore::default();
        let retrier = Retrier {
            mapped: None,
            sinks: Box::new(store.clone()),
            policy: RetryPolicy::immediate(1),
            delay: None,
            retry_backoff: Backoff::ZERO,
            deadline_margin: None,
        };
        let body = r#"{"schema_version":1,"record":{"country_id":1,"country":"USA"},"error":{"class":"rejected","message":"x"},"run_id":"00000000-0000-0000-0000-000000000000","first_failed_at":"2026-11-24T06:00:00Z","attempt":1}"#;
        let mut event = SqsEvent::default();
        event.records = vec![message("ok", body, 1)];
        let mut context = lambda_runtime::Context::default();
        // Half a second left; the default margin is two seconds.
        context.deadline = chrono::Utc::now().timestamp_millis() as u64 + 500;
        let response = handle(&retrier, lambda_runtime::LambdaEvent::new(event, context))
            .await
            .unwrap();
        assert_eq!(response.batch_item_failures.len(), 1);
        assert!(store.state().table.is_empty(), "nothing written");
    }
}
