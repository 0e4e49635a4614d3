//! The changes queue of stream mode (a FIFO queue): batches of rows, one
//! message group per bucket of ids; and its dead-letter queue, where the
//! writer parks a message it can never write. The publisher's sink over it
//! is [`sink`].
//!
//! Order per bucket is the point, so each `SendMessageBatch` call carries at
//! most one message per bucket (a call may accept one entry and refuse the
//! next, which would put a later batch of the bucket ahead of an earlier
//! one), and once a batch of a bucket failed, the later batches of that
//! bucket are not sent: they fail too, and their rows stay in Snowflake for
//! the next run, in order.

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

pub mod sink;

use crate::{send_message_batch, SQS_BATCH_LIMIT};
use countries_shared::failure::QueueError;
use countries_shared::model::change::{deduplication_id, parked_attribute, ChangeBatch};
use countries_shared::model::text::one_line;
use countries_shared::ports::{ChangeParking, ChangeQueue, Parked};

/// SQS's limit on the bodies of one batch call together.
const CALL_PAYLOAD_LIMIT: usize = 262_144;

/// The changes queue in SQS.
pub struct SqsChangesQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsChangesQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl ChangeQueue for SqsChangesQueue {
    async fn publish(&self, batches: &[ChangeBatch]) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Option<Result<(), QueueError>>> = vec![None; batches.len()];
        let mut failed_buckets: HashSet<u32> = HashSet::new();
        let mut next = 0;
        while next < batches.len() {
            // One call: the next batches in order, one per bucket, within
            // SQS's entry and payload limits.
            let mut call: Vec<(usize, String)> = Vec::new();
            let mut buckets_in_call = HashSet::new();
            let mut payload = 0;
            let mut index = next;
            while index < batches.len() && call.len() < SQS_BATCH_LIMIT {
                let batch = &batches[index];
                if results[index].is_some() {
                    index += 1;
                    continue;
                }
                if failed_buckets.contains(&batch.bucket) {
                    results[index] = Some(Err(QueueError::call(
                        "SendMessageBatch",
                        format!(
                            "an earlier batch of bucket {} was not accepted",
                            batch.bucket
                        ),
                    )));
                    index += 1;
                    continue;
                }
                if buckets_in_call.contains(&batch.bucket) {
                    break;
                }
                let body = match serde_json::to_string(batch) {
                    Ok(body) => body,
                    Err(e) => {
                        results[index] = Some(Err(QueueError::entry(
                            "SendMessageBatch",
                            format!("serialising the batch: {e}"),
                        )));
                        failed_buckets.insert(batch.bucket);
                        index += 1;
                        continue;
                    }
                };
                if !call.is_empty() && payload + body.len() > CALL_PAYLOAD_LIMIT {
                    break;
                }
                payload += body.len();
                buckets_in_call.insert(batch.bucket);
                call.push((index, body));
                index += 1;
            }
            while next < batches.len() && results[next].is_some() {
                next += 1;
            }
            if call.is_empty() {
                continue;
            }
            for (index, result) in self.send(batches, call).await {
                if result.is_err() {
                    failed_buckets.insert(batches[index].bucket);
                }
                results[index] = Some(result);
            }
            while next < batches.len() && results[next].is_some() {
                next += 1;
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(QueueError::call(
                        "SendMessageBatch",
                        "the batch was not sent",
                    ))
                })
            })
            .collect()
    }
}

impl SqsChangesQueue {
    /// One `SendMessageBatch` call; a result per entry.
    async fn send(
        &self,
        batches: &[ChangeBatch],
        call: Vec<(usize, String)>,
    ) -> Vec<(usize, Result<(), QueueError>)> {
        let indices: Vec<usize> = call.iter().map(|(index, _)| *index).collect();
        let entries = call
            .into_iter()
            .enumerate()
            .map(|(position, (index, body))| {
                let batch = &batches[index];
                SendMessageBatchRequestEntry::builder()
                    .id(position.to_string())
                    .message_body(body)
                    .message_group_id(batch.bucket.to_string())
                    .message_deduplication_id(deduplication_id(batch))
                    .build()
                    .map_err(|e| QueueError::entry("SendMessageBatch", e.to_string()))
            })
            .collect();
        let results = send_message_batch(&self.client, &self.queue_url, entries).await;
        indices.into_iter().zip(results).collect()
    }
}

/// The changes queue's dead-letter queue (FIFO), where the writer parks a
/// message that is not a valid batch, or a batch it gives up on, with why
/// ([`parked_attribute`]).
pub struct SqsChangeParking {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsChangeParking {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl ChangeParking for SqsChangeParking {
    async fn park(&self, parked: &Parked<'_>) -> Result<(), QueueError> {
        // SQS refuses an empty body or attribute value, and ids over 128
        // characters.
        let non_empty = |value: String, fallback: &str| {
            if value.is_empty() {
                fallback.to_string()
            } else {
                value
            }
        };
        let body = non_empty(parked.body.to_string(), "(empty body)");
        let dedup = non_empty(parked.message_id.chars().take(128).collect(), "unknown");
        let group = non_empty(parked.group.chars().take(128).collect(), "unknown");
        let text = |value: String| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| QueueError::call("SendMessage", e.to_string()))
        };
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(dedup)
            .message_attributes(
                parked_attribute::ERROR,
                text(non_empty(
                    one_line(parked.error, parked_attribute::ERROR_LIMIT),
                    "unknown",
                ))?,
            )
            .message_attributes(
                parked_attribute::MESSAGE_ID,
                text(non_empty(parked.message_id.to_string(), "unknown"))?,
            );
        if let Some(count) = parked.receive_count {
            request = request.message_attributes(
                parked_attribute::RECEIVE_COUNT,
                MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(count.to_string())
                    .build()
                    .map_err(|e| QueueError::call("SendMessage", e.to_string()))?,
            );
        }
        request
            .send()
            .await
            .map(drop)
            .map_err(|e| QueueError::call("SendMessage", crate::sdk_error(&e)))
    }
}
