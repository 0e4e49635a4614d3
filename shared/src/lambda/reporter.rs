//! The `dlq-reporter` function: one report per scheduled event.

use uuid::Uuid;

use crate::config::ReporterConfig;
use crate::postgres::failure_report::PostgresFailureReport;
use crate::reporter::{ReportSummary, Reporter};
use crate::ses::SesMailer;
use crate::sqs::dead_letters::SqsDeadLetterQueue;

/// The production wiring: the dead-letter queue, the failure report table
/// and SES, from the configuration.
pub async fn build(config: &ReporterConfig) -> Reporter {
    let aws = crate::aws::sdk_config().await;
    Reporter {
        dlq: Box::new(SqsDeadLetterQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.dead_letter_queue_url.clone(),
        )),
        store: Box::new(PostgresFailureReport::new(config.postgres.clone())),
        mailer: Box::new(SesMailer::new(
            aws_sdk_sesv2::Client::new(&aws),
            config.sender.clone(),
            config.recipients.clone(),
        )),
        max_messages: config.max_messages,
        email_rows: config.email_rows,
    }
}

/// One report per scheduled event. Fails the invocation when anything is
/// left for the next run, so that alarms see it.
pub async fn handle(
    reporter: &Reporter,
    _event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<ReportSummary, lambda_runtime::Error> {
    let summary = reporter.run(Uuid::new_v4()).await;
    crate::telemetry::emit_metrics(
        "dlq-reporter",
        &[
            ("DeadLettersReported", summary.messages as f64),
            ("DeadLettersDeleted", summary.deleted as f64),
        ],
    );
    let fields = (
        summary.messages,
        summary.stored_new.map(|n| n as i64).unwrap_or(-1),
        summary.emailed,
        summary.deleted,
    );
    match &summary.error {
        None => {
            tracing::info!(report_run_id = %summary.report_run_id, messages = fields.0, stored_new = fields.1, emailed = fields.2, deleted = fields.3, "dlq report finished");
            Ok(summary)
        }
        Some(e) => {
            tracing::error!(report_run_id = %summary.report_run_id, messages = fields.0, stored_new = fields.1, emailed = fields.2, deleted = fields.3, error = %e, "dlq report incomplete");
            Err(format!("dlq report {} incomplete: {e}", summary.report_run_id).into())
        }
    }
}
