//! A local stand-in for Lambda's SQS event source mapping, for the local
//! stack, the demo and the tests: receive a batch, invoke a function's real
//! handler (the retrier's, or stream mode's writer's) with a real
//! `SqsEvent`, delete what the response does not list.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use countries_shared::failure::QueueError;
use countries_shared::lambda;
use countries_shared::lambda::writer::WriterFunction;
use countries_shared::retrier::Retrier;
use countries_sqs::{delete_message_batch, sdk_error};
use lambda_runtime::{Diagnostic, LambdaEvent};

/// A function an SQS event source mapping invokes.
pub trait SqsHandler: Sync {
    fn invoke(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> impl Future<Output = Result<SqsBatchResponse, Diagnostic>>;
}

impl SqsHandler for Retrier {
    fn invoke(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> impl Future<Output = Result<SqsBatchResponse, Diagnostic>> {
        lambda::retrier::handle(self, event)
    }
}

impl SqsHandler for WriterFunction {
    fn invoke(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> impl Future<Output = Result<SqsBatchResponse, Diagnostic>> {
        lambda::writer::handle(self, event)
    }
}

/// Drives the retrier the way Lambda's SQS event source mapping does, for
/// the local stack and the tests: receive a batch, invoke the handler with a
/// real `SqsEvent` built from the received messages, delete the messages the
/// response does not list, and leave the listed ones to reappear after their
/// visibility timeout (the queue's redrive policy then moves them to the
/// dead-letter queue).
pub struct LocalEventSource {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub batch_size: i32,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct DriveSummary {
    pub invocations: usize,
    pub messages: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// From the start to the end of the last poll that received messages:
    /// the time the work took, without the empty polls that end a drain.
    pub busy_seconds: f64,
}

/// The lock that serialises the receives of one queue in this process.
fn receive_lock(queue_url: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    locks.entry(queue_url.to_string()).or_default().clone()
}

impl LocalEventSource {
    /// One poll: at most `batch_size` messages, one handler invocation.
    /// Returns None when nothing was received.
    pub async fn poll_once<H: SqsHandler>(
        &self,
        handler: &H,
    ) -> Result<Option<(usize, usize)>, QueueError> {
        // One receive of a queue at a time, as SQS serves them: moto reads
        // a FIFO queue's in-flight groups before it marks what it hands out,
        // so two receives at once could both take one group's messages and
        // write its versions out of order (SQS never does).
        let lock = receive_lock(&self.queue_url);
        let receiving = lock.lock().await;
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size.clamp(1, 10))
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| QueueError::call("ReceiveMessage", sdk_error(&e)))?;
        drop(receiving);
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(None);
        }
        let arn = self.queue_arn().await.unwrap_or_default();
        let mut event = SqsEvent::default();
        for m in &messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.md5_of_body = m.md5_of_body.clone();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(arn.clone());
            if let Some(attributes) = &m.attributes {
                for (k, v) in attributes {
                    record.attributes.insert(k.as_str().to_string(), v.clone());
                }
            }
            event.records.push(record);
        }
        let response = handler
            .invoke(LambdaEvent::new(event, lambda_runtime::Context::default()))
            .await
            // An error from the whole handler fails the whole batch, as in Lambda.
            .unwrap_or_else(|_| {
                let mut all = SqsBatchResponse::default();
                for m in &messages {
                    all.add_failure(m.message_id.clone().unwrap_or_default());
                }
                all
            });
        let failed: std::collections::HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        // One DeleteMessageBatch per poll, as the event source mapping does.
        let handles: Vec<&str> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id.as_deref().unwrap_or("")))
            .filter_map(|m| m.receipt_handle.as_deref())
            .collect();
        // A message not deleted comes back after its visibility timeout and
        // is handled again (at least once, as in Lambda).
        let (succeeded, _refused) =
            delete_message_batch(&self.client, &self.queue_url, &handles).await?;
        Ok(Some((messages.len(), succeeded)))
    }

    async fn queue_arn(&self) -> Option<String> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .ok()?
            .attributes?
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .cloned()
    }

    /// Messages on the queue, visible or in flight.
    pub async fn depth(&self) -> Result<usize, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| QueueError::call("GetQueueAttributes", sdk_error(&e)))?
            .attributes
            .unwrap_or_default();
        let count = |a: A| {
            attributes
                .get(&a)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        Ok(count(A::ApproximateNumberOfMessages) + count(A::ApproximateNumberOfMessagesNotVisible))
    }

    /// Polls until the queue is empty (every message written, or moved to
    /// the dead-letter queue), or until `timeout`.
    pub async fn drain<H: SqsHandler>(
        &self,
        handler: &H,
        timeout: Duration,
    ) -> Result<DriveSummary, QueueError> {
        self.follow(handler, Duration::ZERO, timeout).await
    }

    /// Polls for at least `keep_polling` (an event source mapping is always
    /// on), then until the queue is empty, or until `timeout`.
    pub async fn follow<H: SqsHandler>(
        &self,
        handler: &H,
        keep_polling: Duration,
        timeout: Duration,
    ) -> Result<DriveSummary, QueueError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout.max(keep_polling);
        let mut summary = DriveSummary::default();
        loop {
            if let Some((received, succeeded)) = self.poll_once(handler).await? {
                summary.invocations += 1;
                summary.messages += received;
                summary.succeeded += succeeded;
                summary.failed += received - succeeded;
                summary.busy_seconds = started.elapsed().as_secs_f64();
            } else if started.elapsed() >= keep_polling && self.depth().await? == 0 {
                return Ok(summary);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QueueError::call(
                    "drain",
                    format!(
                        "the queue still holds {} messages after {timeout:?}",
                        self.depth().await.unwrap_or(0)
                    ),
                ));
            }
        }
    }
}

impl LocalEventSource {
    /// `workers` concurrent pollers, as the event source mapping runs up to
    /// `MaximumConcurrency` invocations at once; on a FIFO queue each
    /// message group is with one poller at a time. Returns their summaries
    /// added up.
    pub async fn drain_parallel<H: SqsHandler>(
        &self,
        handler: &H,
        workers: usize,
        timeout: Duration,
    ) -> Result<DriveSummary, QueueError> {
        self.follow_parallel(handler, workers, Duration::ZERO, timeout)
            .await
    }

    /// [`Self::follow`] with `workers` pollers at once.
    pub async fn follow_parallel<H: SqsHandler>(
        &self,
        handler: &H,
        workers: usize,
        keep_polling: Duration,
        timeout: Duration,
    ) -> Result<DriveSummary, QueueError> {
        let pollers = (0..workers.max(1)).map(|_| self.follow(handler, keep_polling, timeout));
        let mut total = DriveSummary::default();
        for result in futures::future::join_all(pollers).await {
            let one = result?;
            total.invocations += one.invocations;
            total.messages += one.messages;
            total.succeeded += one.succeeded;
            total.failed += one.failed;
            total.busy_seconds = total.busy_seconds.max(one.busy_seconds);
        }
        Ok(total)
    }
}
