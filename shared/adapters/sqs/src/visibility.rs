//! Backoff between receives of a retry message that failed again: its
//! visibility timeout is stretched, so that five receives do not pass in
//! seconds while an operator fixes the cause.

use std::time::Duration;

use async_trait::async_trait;

use crate::sdk_error;
use countries_shared::failure::QueueError;
use countries_shared::ports::VisibilityDelay;

/// SQS caps a visibility timeout at 12 hours.
pub const MAX_VISIBILITY_SECONDS: i32 = 43_200;

/// Stretches visibility timeouts on the retry queue.
pub struct SqsVisibilityDelay {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsVisibilityDelay {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl VisibilityDelay for SqsVisibilityDelay {
    async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), QueueError> {
        let seconds = i32::try_from(wait.as_secs())
            .unwrap_or(i32::MAX)
            .min(MAX_VISIBILITY_SECONDS);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| QueueError::call("ChangeMessageVisibility", sdk_error(&e)))
    }
}
