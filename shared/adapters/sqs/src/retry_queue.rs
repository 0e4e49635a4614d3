//! The retry queue: one failed row per message (a `case` row, or a mapped
//! table's in schema version 2), sent in batches of ten.
//!
//! A row counts as owned by the queue only when SQS accepted its entry; a
//! failed entry or a failed call leaves the row in Snowflake.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::{send_message_batch, SQS_BATCH_LIMIT};
use countries_shared::failure::QueueError;
use countries_shared::model::mapped_message::MappedRetryMessage;
use countries_shared::model::message::RetryMessage;
use countries_shared::ports::RetryQueue;

/// The retry queue in SQS.
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

    async fn enqueue_mapped(&self, messages: &[MappedRetryMessage]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(messages.len());
        for batch in messages.chunks(SQS_BATCH_LIMIT) {
            results.extend(self.send_batch(batch).await);
        }
        results
    }
}

impl SqsRetryQueue {
    async fn send_batch<M: serde::Serialize>(&self, batch: &[M]) -> Vec<Result<(), QueueError>> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(index, message)| {
                serde_json::to_string(message)
                    .map_err(|e| {
                        QueueError::entry(
                            "SendMessageBatch",
                            format!("serialising the message: {e}"),
                        )
                    })
                    .and_then(|body| {
                        SendMessageBatchRequestEntry::builder()
                            .id(index.to_string())
                            .message_body(body)
                            .build()
                            .map_err(|e| QueueError::entry("SendMessageBatch", e.to_string()))
                    })
            })
            .collect();
        send_message_batch(&self.client, &self.queue_url, entries).await
    }
}
