//! The `writer` function's wiring (stream mode): Postgres (the container's
//! warm connection), the retry queue for refused rows and the changes
//! dead-letter queue for batches given up. The handler is
//! `countries_shared::lambda::writer`, the use case
//! `countries_shared::writer`.

use countries_postgres::sink::pool::PostgresStore;
use countries_postgres::warm::PasswordSource;
use countries_shared::config::WriterConfig;
use countries_shared::lambda::writer::WriterFunction;
use countries_shared::retry::RetryPolicy;
use countries_shared::writer::ChangeWriter;
use countries_sqs::changes_queue::SqsChangeParking;
use countries_sqs::retry_queue::SqsRetryQueue;

/// The production wiring.
pub async fn build(config: &WriterConfig) -> WriterFunction {
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    WriterFunction {
        writer: ChangeWriter {
            sinks: Box::new(PostgresStore::with_password_source(
                config.postgres.clone(),
                PasswordSource::from_config(&config.postgres).await,
            )),
            retry_queue: Box::new(SqsRetryQueue::new(
                sqs.clone(),
                config.retry_queue_url.clone(),
            )),
            policy: RetryPolicy::new(config.write_attempts),
            parking: Box::new(SqsChangeParking::new(
                sqs,
                config.changes_dead_letter_queue_url.clone(),
            )),
            last_receive: Some(config.changes_max_receive_count),
        },
        deadline_margin: config.deadline_margin,
    }
}
