//! A dead-letter queue, as the dlq-reporter reads it (the retry queue's, and
//! stream mode's changes one): receive (messages stay hidden for one run,
//! with their message attributes), then delete only what is stored and
//! emailed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{sdk_error, SQS_BATCH_LIMIT};
use countries_shared::failure::QueueError;
use countries_shared::model::report::{DeadLetter, LetterQueue};
use countries_shared::ports::{DeadLetterQueue, Deleted};

/// The queue tag that records an announced failure-report outage.
pub const OUTAGE_TAG: &str = "countries-report-outage-announced";

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
            // A parked batch says why in its message attributes.
            .message_attribute_names("All")
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
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value.string_value?)))
                    .collect();
                Some(DeadLetter {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body,
                    receive_count,
                    attributes,
                    // The reporter says which queue it read.
                    queue: LetterQueue::Retry,
                })
            })
            .collect())
    }

    async fn delete(&self, letters: &[DeadLetter]) -> Deleted {
        let mut deleted = Deleted::default();
        // Each batch on its own: a batch that fails does not stop the others,
        // and every confirmed delete is counted.
        for chunk in letters.chunks(SQS_BATCH_LIMIT) {
            let (count, error) = self.delete_batch(chunk).await;
            deleted.count += count;
            if deleted.error.is_none() {
                deleted.error = error;
            }
        }
        deleted
    }

    async fn outage_announced(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        let output = self
            .client
            .list_queue_tags()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(|e| QueueError::call("ListQueueTags", sdk_error(&e)))?;
        Ok(output
            .tags()
            .and_then(|tags| tags.get(OUTAGE_TAG))
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc)))
    }

    async fn set_outage_announced(&self, at: Option<DateTime<Utc>>) -> Result<(), QueueError> {
        match at {
            Some(at) => self
                .client
                .tag_queue()
                .queue_url(&self.queue_url)
                .tags(OUTAGE_TAG, at.to_rfc3339())
                .send()
                .await
                .map(drop)
                .map_err(|e| QueueError::call("TagQueue", sdk_error(&e))),
            None => self
                .client
                .untag_queue()
                .queue_url(&self.queue_url)
                .tag_keys(OUTAGE_TAG)
                .send()
                .await
                .map(drop)
                .map_err(|e| QueueError::call("UntagQueue", sdk_error(&e))),
        }
    }
}

impl SqsDeadLetterQueue {
    /// Deletes at most ten messages; returns how many SQS confirmed, and
    /// the first failure.
    async fn delete_batch(&self, chunk: &[DeadLetter]) -> (usize, Option<QueueError>) {
        let handles: Vec<&str> = chunk.iter().map(|l| l.receipt_handle.as_str()).collect();
        crate::delete_message_batch(&self.client, &self.queue_url, &handles)
            .await
            .unwrap_or_else(|e| (0, Some(e)))
    }
}
