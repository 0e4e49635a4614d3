//! SQS: the [`retry_queue`] the replicator feeds, the [`visibility`] backoff
//! the retrier applies to it, the [`dead_letters`] the dlq-reporter reads,
//! and the [`changes_queue`] of stream mode.

pub mod changes_queue;
pub mod dead_letters;
pub mod retry_queue;
pub mod visibility;

/// SQS accepts at most ten entries per batch call.
pub const SQS_BATCH_LIMIT: usize = 10;

/// An SDK error with its whole context (the service's code and message),
/// on one line.
pub fn sdk_error<E: std::error::Error>(err: &E) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(err).to_string()
}

/// One `DeleteMessageBatch` call of at most ten receipt handles. `Err`:
/// the call failed (nothing was deleted); `Ok`: how many SQS confirmed, and
/// its first refusal (a message not deleted comes back after its
/// visibility timeout).
pub async fn delete_message_batch(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    receipt_handles: &[&str],
) -> Result<
    (usize, Option<countries_shared::failure::QueueError>),
    countries_shared::failure::QueueError,
> {
    use countries_shared::failure::QueueError;
    if receipt_handles.is_empty() {
        return Ok((0, None));
    }
    let entries = receipt_handles
        .iter()
        .enumerate()
        .map(|(i, handle)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*handle)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueueError::entry("DeleteMessageBatch", e.to_string()))?;
    let output = client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| QueueError::call("DeleteMessageBatch", sdk_error(&e)))?;
    let refused = output.failed().first().map(|failed| {
        QueueError::call(
            "DeleteMessageBatch",
            format!(
                "{} of {} deletes refused: {}",
                output.failed().len(),
                receipt_handles.len(),
                failed.message().unwrap_or(failed.code())
            ),
        )
    });
    Ok((output.successful().len(), refused))
}

/// One `SendMessageBatch` call of the entries that could be built (an
/// entry's id is its position in `entries`); a result per position:
/// accepted, refused (by the entry's fault, or SQS's), the call's error, or
/// the reason the entry could not be built.
pub(crate) async fn send_message_batch(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    entries: Vec<
        Result<
            aws_sdk_sqs::types::SendMessageBatchRequestEntry,
            countries_shared::failure::QueueError,
        >,
    >,
) -> Vec<Result<(), countries_shared::failure::QueueError>> {
    use countries_shared::failure::QueueError;
    let mut built = Vec::with_capacity(entries.len());
    let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry {
            Ok(entry) => {
                built.push(entry);
                // Provisional: replaced by what SQS says below.
                results.push(Err(QueueError::call(
                    "SendMessageBatch",
                    "no answer from SQS for this entry",
                )));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if built.is_empty() {
        return results;
    }
    let response = client
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(built))
        .send()
        .await;
    record_send_results(response, &mut results);
    results
}

/// Records what a `SendMessageBatch` call said about each entry in
/// `slots` (an entry's id is its index there): accepted, refused (by the
/// entry's fault, or SQS's), or, when the call itself failed, the call's
/// error for every entry not already failed for its own reason.
fn record_send_results<E: std::error::Error>(
    response: Result<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput, E>,
    slots: &mut [Result<(), countries_shared::failure::QueueError>],
) {
    use countries_shared::failure::QueueError;
    match response {
        Ok(output) => {
            for ok in output.successful() {
                if let Some(slot) = ok.id().parse::<usize>().ok().and_then(|i| slots.get_mut(i)) {
                    *slot = Ok(());
                }
            }
            for failed in output.failed() {
                if let Some(slot) = failed
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| slots.get_mut(i))
                {
                    let detail = format!(
                        "{}: {}",
                        failed.code(),
                        failed.message().unwrap_or("no message")
                    );
                    // SQS marks its own faults; anything else is the entry.
                    *slot = Err(if failed.sender_fault() {
                        QueueError::entry("SendMessageBatch", detail)
                    } else {
                        QueueError::call("SendMessageBatch", detail)
                    });
                }
            }
        }
        Err(e) => {
            let reason = sdk_error(&e);
            for slot in slots.iter_mut().filter(|r| r.is_err()) {
                *slot = Err(QueueError::call("SendMessageBatch", reason.clone()));
            }
        }
    }
}
