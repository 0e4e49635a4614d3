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
