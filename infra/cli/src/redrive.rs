//! Redrive: move dead letters back to the retry queue once their cause is
//! fixed, bodies unchanged.

use countries_shared::failure::QueueError;
use countries_sqs::{sdk_error, SQS_BATCH_LIMIT};

/// What a redrive did.
#[derive(Debug, Default)]
pub struct Redriven {
    /// Message ids now on the retry queue and gone from the dead-letter queue.
    pub moved: Vec<String>,
    /// (message id, why): left where they were, or copied but not deleted.
    pub failed: Vec<(String, String)>,
}

/// Moves up to `max` messages from one queue to another, bodies unchanged:
/// the operator's way to send dead letters through the retrier again once
/// the cause is fixed. Each message moves on its own: it is deleted from the
/// source only after the destination accepted it, and one that cannot move
/// does not stop the others (it reappears in the source after 60 seconds).
/// Only a receive that fails is an error.
pub async fn move_messages(
    client: &aws_sdk_sqs::Client,
    from_url: &str,
    to_url: &str,
    max: usize,
) -> Result<Redriven, QueueError> {
    let mut done = Redriven::default();
    while done.moved.len() + done.failed.len() < max {
        let left = max - done.moved.len() - done.failed.len();
        let batch = i32::try_from(left.min(SQS_BATCH_LIMIT)).unwrap_or(10);
        let received = client
            .receive_message()
            .queue_url(from_url)
            .max_number_of_messages(batch)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| QueueError::call("ReceiveMessage", sdk_error(&e)))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let (Some(id), Some(handle)) = (m.message_id, m.receipt_handle) else {
                continue;
            };
            let sent = client
                .send_message()
                .queue_url(to_url)
                .message_body(m.body.unwrap_or_default())
                .send()
                .await;
            if let Err(e) = sent {
                done.failed
                    .push((id, format!("not moved: {}", sdk_error(&e))));
                continue;
            }
            let deleted = client
                .delete_message()
                .queue_url(from_url)
                .receipt_handle(handle)
                .send()
                .await;
            match deleted {
                Ok(_) => done.moved.push(id),
                Err(e) => done.failed.push((
                    id,
                    format!(
                        "copied to the retry queue but not deleted from the dead-letter queue: {}",
                        sdk_error(&e)
                    ),
                )),
            }
        }
    }
    Ok(done)
}
