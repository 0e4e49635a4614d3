//! The `dlq-reporter` function's wiring: the dead-letter queues, the
//! failure report table (the container's warm connection) and SES. The
//! handler is `countries_shared::lambda::dlq_reporter`, the use case
//! `countries_shared::dlq_reporter`.

use countries_postgres::failure_report::PostgresFailureReport;
use countries_postgres::warm::PasswordSource;
use countries_ses::SesMailer;
use countries_shared::config::ReporterConfig;
use countries_shared::dlq_reporter::Reporter;
use countries_shared::ports::DeadLetterQueue;
use countries_sqs::dead_letters::SqsDeadLetterQueue;

/// The production wiring.
pub async fn build(config: &ReporterConfig) -> Reporter {
    let aws = countries_shared::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    Reporter {
        dlq: Box::new(SqsDeadLetterQueue::new(
            sqs.clone(),
            config.dead_letter_queue_url.clone(),
        )),
        changes_dlq: config.changes_dead_letter_queue_url.as_ref().map(
            |url| -> Box<dyn DeadLetterQueue> {
                Box::new(SqsDeadLetterQueue::new(sqs.clone(), url.clone()))
            },
        ),
        store: Box::new(PostgresFailureReport::with_password_source(
            config.postgres.clone(),
            PasswordSource::from_config(&config.postgres).await,
        )),
        mailer: Box::new(SesMailer::new(
            aws_sdk_sesv2::Client::new(&aws),
            config.sender.clone(),
            config.recipients.clone(),
        )),
        max_messages: config.max_messages,
        email_rows: config.email_rows,
        deadline_margin: config.deadline_margin,
    }
}
