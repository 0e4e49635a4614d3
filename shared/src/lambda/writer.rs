//! The `writer` function (stream mode): one batch of changes-queue
//! messages per invocation, answered with a partial batch response
//! (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::deadline::Deadline;
use crate::telemetry::metric;
use crate::writer::{ChangeDelivery, ChangeWriter, StreamSummary};

/// The function's use case and its deadline margin.
pub struct WriterFunction {
    pub writer: ChangeWriter,
    pub deadline_margin: Option<std::time::Duration>,
}

/// Lists exactly the messages that must come back. A FIFO event carries
/// each message's group in its `MessageGroupId` attribute.
pub async fn handle(
    function: &WriterFunction,
    event: lambda_runtime::LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Diagnostic> {
    let records = &event.payload.records;
    let deliveries: Vec<ChangeDelivery<'_>> = records
        .iter()
        .map(|record| ChangeDelivery {
            message_id: record.message_id.as_deref().unwrap_or(""),
            body: record.body.as_deref(),
            group: record.attributes.get("MessageGroupId").map(String::as_str),
            receive_count: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok()),
        })
        .collect();
    let deadline = Deadline::from_epoch_ms(event.context.deadline, function.deadline_margin);
    let summary: StreamSummary = function.writer.handle(&deliveries, &deadline).await;
    tracing::info!(
        messages = summary.messages,
        rows_written = summary.rows_written,
        rows_changed = summary.rows_changed,
        rows_enqueued = summary.rows_enqueued,
        malformed = summary.malformed,
        parked = summary.parked,
        returned = summary.failed_message_ids.len(),
        "changes written"
    );
    crate::telemetry::emit_metrics(
        metric::WRITER,
        &[
            (metric::ROWS_WRITTEN, summary.rows_written as f64),
            (metric::ROWS_ENQUEUED, summary.rows_enqueued as f64),
            (
                metric::BATCHES_RETURNED,
                summary.failed_message_ids.len() as f64,
            ),
        ],
    );
    let mut response = SqsBatchResponse::default();
    for message_id in summary.failed_message_ids {
        response.add_failure(message_id);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::{pack, Groups};
    use crate::model::row::{validate, SourceRow};
    use crate::retry::RetryPolicy;
    use crate::testing::{MemoryParking, MemoryQueue, MemoryStore};
    use aws_lambda_events::event::sqs::SqsMessage;

    fn message(id: &str, group: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_string());
        m.body = Some(body.to_string());
        m.attributes.insert("MessageGroupId".into(), group.into());
        m
    }

    /// A malformed message first, then a batch of its group, then another
    /// group's; the parking queue up or down.
    async fn deliver(parking: &MemoryParking) -> (Vec<String>, Vec<i32>) {
        let store = MemoryStore::default();
        let function = WriterFunction {
            writer: ChangeWriter {
                sinks: Box::new(store.clone()),
                retry_queue: Box::new(MemoryQueue::default()),
                policy: RetryPolicy::immediate(1),
                parking: Box::new(parking.clone()),
                last_receive: None,
            },
            deadline_margin: None,
        };
        let rows: Vec<_> = [(1, "USA"), (2, "FRA"), (3, "DEU")]
            .iter()
            .map(|(id, c)| validate(&SourceRow::new(Some(*id), Some(c))).unwrap())
            .collect();
        let batches = pack(uuid::Uuid::nil(), &rows, Groups::by_id(2), 10_000);
        let body = |i: usize| serde_json::to_string(&batches[i]).unwrap();
        // Bucket 0 holds id 2, bucket 1 ids 1 and 3.
        let mut event = SqsEvent::default();
        event.records = vec![
            message("bad", "1", "{not json"),
            message("later-in-1", "1", &body(1)),
            message("in-0", "0", &body(0)),
        ];
        let response = handle(
            &function,
            lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
        )
        .await
        .unwrap();
        let ids = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let written = store.state().table.keys().copied().collect();
        (ids, written)
    }

    #[tokio::test]
    async fn a_malformed_message_is_parked_and_its_group_goes_on() {
        let parking = MemoryParking::default();
        let (listed, written) = deliver(&parking).await;
        assert!(listed.is_empty(), "{listed:?}");
        assert_eq!(written, vec![1, 2, 3]);
        let parked = parking.parked.lock().unwrap().clone();
        assert_eq!(
            parked,
            vec![("bad".to_string(), "1".to_string(), "{not json".to_string())]
        );
    }

    #[tokio::test]
    async fn when_parking_fails_the_malformed_message_and_the_rest_of_its_group_come_back() {
        let parking = MemoryParking::default();
        *parking.down.lock().unwrap() = true;
        let (listed, written) = deliver(&parking).await;
        assert_eq!(listed, vec!["bad", "later-in-1"]);
        assert_eq!(written, vec![2]);
    }
}
