//! The SQS retry queue: one failed row per message, sent in batches of ten.
//!
//! A row counts as owned by the queue only when SQS accepted its entry; a
//! failed entry or a failed call leaves the row in Snowflake.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::model::RetryMessage;

/// SQS accepts at most ten entries per `SendMessageBatch`.
pub const SQS_BATCH_LIMIT: usize = 10;

#[derive(Debug, Clone, thiserror::Error)]
#[error("retry queue refused the message: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait RetryQueue: Send + Sync {
    /// Sends the messages; the result has one entry per message, in order.
    async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>>;
}

pub struct SqsRetryQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRetryQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl RetryQueue for SqsRetryQueue {
    async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(messages.len());
        for batch in messages.chunks(SQS_BATCH_LIMIT) {
            results.extend(self.send_batch(batch).await);
        }
        results
    }
}

impl SqsRetryQueue {
    async fn send_batch(&self, batch: &[RetryMessage]) -> Vec<Result<(), QueueError>> {
        let mut entries = Vec::with_capacity(batch.len());
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            let entry = serde_json::to_string(message)
                .map_err(|e| QueueError(format!("serialising the message: {e}")))
                .and_then(|body| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError(e.to_string()))
                });
            match entry {
                Ok(entry) => {
                    entries.push(entry);
                    // Provisional: replaced by what SQS says below.
                    results.push(Err(QueueError("no answer from SQS for this entry".into())));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if entries.is_empty() {
            return results;
        }
        let response = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match response {
            Ok(output) => {
                for ok in output.successful() {
                    if let Some(slot) = ok
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| results.get_mut(i))
                    {
                        *slot = Ok(());
                    }
                }
                for failed in output.failed() {
                    if let Some(slot) = failed
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| results.get_mut(i))
                    {
                        *slot = Err(QueueError(format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        )));
                    }
                }
            }
            Err(e) => {
                let reason = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                for slot in results.iter_mut().filter(|r| r.is_err()) {
                    *slot = Err(QueueError(format!("SendMessageBatch failed: {reason}")));
                }
            }
        }
        results
    }
}

/// Moves up to `max` messages from one queue to another, bodies unchanged:
/// the operator's way to send dead letters through the retrier again once
/// the cause is fixed. Each message is deleted from the source only after
/// the destination accepted it. Returns the ids of the moved messages.
pub async fn move_messages(
    client: &aws_sdk_sqs::Client,
    from_url: &str,
    to_url: &str,
    max: usize,
) -> Result<Vec<String>, QueueError> {
    let fail = |e: &dyn std::error::Error| QueueError(e.to_string());
    let mut moved = Vec::new();
    while moved.len() < max {
        let batch = i32::try_from((max - moved.len()).min(SQS_BATCH_LIMIT)).unwrap_or(10);
        let received = client
            .receive_message()
            .queue_url(from_url)
            .max_number_of_messages(batch)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let (Some(id), Some(handle)) = (m.message_id, m.receipt_handle) else {
                continue;
            };
            client
                .send_message()
                .queue_url(to_url)
                .message_body(m.body.unwrap_or_default())
                .send()
                .await
                .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
            client
                .delete_message()
                .queue_url(from_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|e| fail(&e))?;
            moved.push(id);
        }
    }
    Ok(moved)
}
