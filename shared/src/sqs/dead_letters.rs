//! The dead-letter queue, as the dlq-reporter reads it: receive (messages
//! stay hidden for one run), then delete only what is stored and emailed.

use async_trait::async_trait;

use crate::failure::QueueError;
use crate::model::report::DeadLetter;
use crate::ports::DeadLetterQueue;
use crate::sqs::{sdk_error, SQS_BATCH_LIMIT};

/// The dead-letter queue in SQS.
pub struct SqsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// Seconds a received message stays hidden: long enough for one run.
    visibility_timeout: i32,
}

impl SqsDeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            visibility_timeout: 900,
        }
    }

    /// How long received messages stay hidden (900 s by default: longer than
    /// a run, so that an unfinished run's messages return for the next one).
    pub fn with_visibility_timeout(mut self, seconds: i32) -> Self {
        self.visibility_timeout = seconds;
        self
    }
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let max = i32::try_from(max.clamp(1, SQS_BATCH_LIMIT)).unwrap_or(10);
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .visibility_timeout(self.visibility_timeout)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| QueueError::call("ReceiveMessage", sdk_error(&e)))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|c| c.parse().ok());
                Some(DeadLetter {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body,
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, letters: &[DeadLetter]) -> Result<usize, QueueError> {
        let mut deleted = 0;
        for chunk in letters.chunks(SQS_BATCH_LIMIT) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&l.receipt_handle)
                        .build()
                })
                .collect();
            let entries =
                entries.map_err(|e| QueueError::entry("DeleteMessageBatch", e.to_string()))?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::call("DeleteMessageBatch", sdk_error(&e)))?;
            deleted += output.successful().len();
            if let Some(failed) = output.failed().first() {
                return Err(QueueError::call(
                    "DeleteMessageBatch",
                    format!(
                        "{} of {} deletes refused: {}",
                        output.failed().len(),
                        chunk.len(),
                        failed.message().unwrap_or(failed.code())
                    ),
                ));
            }
        }
        Ok(deleted)
    }
}
