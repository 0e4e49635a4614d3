//! The dlq-reporter's use case: turn what sits in the dead-letter queue into
//! a durable failure report (Postgres) and one digest email (SES).
//!
//! Order of a run, so that nothing is lost between the queue, the table and
//! the email:
//! 1. take up to `REPORT_MAX_MESSAGES` messages from the DLQ (they stay
//!    invisible, not deleted);
//! 2. store them in `failure_report` (idempotent on the message id);
//! 3. send one digest email ([`digest`]); when step 2 failed the email says so;
//! 4. delete the messages only if the report is stored and SES accepted the
//!    email. Otherwise they reappear and the next run tries again.

pub mod digest;
#[cfg(test)]
mod tests;

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::model::report::{DeadLetter, FailureEntry};
use crate::ports::{DeadLetterQueue, FailureStore, Mailer};
use crate::reporter::digest::compose_digest;

pub struct Reporter {
    pub dlq: Box<dyn DeadLetterQueue>,
    pub store: Box<dyn FailureStore>,
    pub mailer: Box<dyn Mailer>,
    pub max_messages: usize,
    pub email_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    pub report_run_id: Uuid,
    pub messages: usize,
    /// New rows in the failure report; None when storing failed.
    pub stored_new: Option<u64>,
    pub emailed: bool,
    pub deleted: usize,
    pub error: Option<String>,
}

impl Reporter {
    pub async fn run(&self, report_run_id: Uuid) -> ReportSummary {
        let mut summary = ReportSummary {
            report_run_id,
            messages: 0,
            stored_new: None,
            emailed: false,
            deleted: 0,
            error: None,
        };
        let mut letters: Vec<DeadLetter> = Vec::new();
        while letters.len() < self.max_messages {
            match self
                .dlq
                .receive((self.max_messages - letters.len()).min(10))
                .await
            {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => letters.extend(batch),
                Err(e) => {
                    summary.error = Some(format!("reading the dead-letter queue: {e}"));
                    break;
                }
            }
        }
        // The same message can come twice from a standard queue.
        let mut seen = std::collections::HashSet::new();
        letters.retain(|l| seen.insert(l.message_id.clone()));
        summary.messages = letters.len();
        if letters.is_empty() {
            return summary;
        }

        let now = Utc::now();
        let entries: Vec<FailureEntry> = letters
            .iter()
            .map(|l| FailureEntry::from_dead_letter(l, now))
            .collect();
        let stored = self
            .store
            .store(report_run_id, &entries)
            .await
            .map_err(|e| e.to_string());
        summary.stored_new = stored.as_ref().ok().copied();
        let digest = compose_digest(&entries, &stored, report_run_id, self.email_rows, now);
        match self.mailer.send(&digest).await {
            Ok(()) => summary.emailed = true,
            Err(e) => {
                summary.error = Some(e.to_string());
                return summary;
            }
        }
        match stored {
            Ok(_) => match self.dlq.delete(&letters).await {
                Ok(n) => summary.deleted = n,
                Err(e) => summary.error = Some(format!("deleting from the dead-letter queue: {e}")),
            },
            Err(e) => {
                summary.error = Some(format!(
                    "failure report not stored ({e}); the messages stay in the dead-letter queue"
                ))
            }
        }
        summary
    }
}
