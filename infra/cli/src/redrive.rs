//! Redrive: move dead letters back to the retry queue once their cause is
//! fixed, bodies unchanged.

use countries_shared::failure::QueueError;
use countries_shared::sqs::{sdk_error, SQS_BATCH_LIMIT};

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
            .map_err(|e| QueueError::call("ReceiveMessage", sdk_error(&e)))?;
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
                .map_err(|e| QueueError::call("SendMessage", sdk_error(&e)))?;
            client
                .delete_message()
                .queue_url(from_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|e| QueueError::call("DeleteMessage", sdk_error(&e)))?;
            moved.push(id);
        }
    }
    Ok(moved)
}
