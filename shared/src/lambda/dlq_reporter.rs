//! The `dlq-reporter` function: one report per scheduled event.

use uuid::Uuid;

use crate::deadline::Deadline;
use crate::dlq_reporter::{ReportSummary, Reporter};
use crate::telemetry::metric;

/// One report per scheduled event. Fails the invocation when anything is
/// left for the next run, so that alarms see it.
pub async fn handle(
    reporter: &Reporter,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<ReportSummary, lambda_runtime::Diagnostic> {
    let deadline = Deadline::from_epoch_ms(event.context.deadline, reporter.deadline_margin);
    let summary = reporter.run(Uuid::new_v4(), &deadline).await;
    crate::telemetry::emit_metrics(
        metric::REPORTER,
        &[
            (metric::DEAD_LETTERS_REPORTED, summary.messages as f64),
            (metric::DEAD_LETTERS_DELETED, summary.deleted as f64),
        ],
    );
    let s = &summary;
    macro_rules! report_event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                report_run_id = %s.report_run_id,
                messages = s.messages,
                // Absent when the report could not be stored.
                stored_new = s.stored_new,
                stored_escaped = s.stored_escaped,
                emailed = s.emailed,
                emailed_records = s.emailed_records,
                deleted = s.deleted,
                left_for_next_run = s.left_for_next_run,
                error = s.error.as_deref().unwrap_or(""),
                $message
            )
        };
    }
    match &summary.error {
        None => {
            report_event!(info, "dlq report finished");
            Ok(summary)
        }
        Some(e) => {
            report_event!(error, "dlq report incomplete");
            Err(super::failure(
                "ReportIncomplete",
                format!("dlq report {} incomplete: {e}", summary.report_run_id),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::DeadLetter;
    use crate::testing::{MemoryDeadLetters, MemoryFailureStore, MemoryMailer};

    #[tokio::test]
    async fn a_short_deadline_from_the_context_takes_no_dead_letter() {
        let dlq = MemoryDeadLetters::default();
        dlq.waiting.lock().unwrap().push(DeadLetter {
            message_id: "m1".into(),
            receipt_handle: "rh".into(),
            body: Some("not json".into()),
            receive_count: Some(5),
            attributes: Default::default(),
            queue: Default::default(),
        });
        let mail = MemoryMailer::default();
        let reporter = Reporter {
            dlq: Box::new(dlq.clone()),
            changes_dlq: None,
            store: Box::new(MemoryFailureStore::default()),
            mailer: Box::new(mail.clone()),
            max_messages: 10,
            email_rows: 10,
            deadline_margin: None,
        };
        let mut context = lambda_runtime::Context::default();
        context.deadline = chrono::Utc::now().timestamp_millis() as u64 + 500;
        let err = handle(
            &reporter,
            lambda_runtime::LambdaEvent::new(serde_json::json!({}), context),
        )
        .await
        .unwrap_err();
        // Dead letters left for the next run fail the invocation: alarms see it.
        assert_eq!(err.error_type, "ReportIncomplete");
        assert!(err.error_message.contains("deadline"), "{err:?}");
        assert_eq!(
            dlq.waiting.lock().unwrap().len(),
            1,
            "left for the next run"
        );
        assert!(mail.sent.lock().unwrap().is_empty());
    }
}
