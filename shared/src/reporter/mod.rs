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

use std::collections::HashMap;

use crate::deadline::Deadline;
use crate::failure::WriteError;
use crate::model::report::{DeadLetter, FailureEntry, RAW_BODY_LIMIT};
use crate::ports::{DeadLetterQueue, FailureStore, Mailer, Stored};
use crate::reporter::digest::compose_digest;

pub struct Reporter {
    pub dlq: Box<dyn DeadLetterQueue>,
    pub store: Box<dyn FailureStore>,
    pub mailer: Box<dyn Mailer>,
    pub max_messages: usize,
    pub email_rows: usize,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    pub report_run_id: Uuid,
    /// Distinct dead letters taken from the queue.
    pub messages: usize,
    /// New rows in the failure report; None when storing failed.
    pub stored_new: Option<u64>,
    /// Of the messages, stored in escaped form (a value Postgres refused).
    pub stored_escaped: usize,
    /// Records the digest announced (the others were announced before).
    pub emailed_records: usize,
    pub emailed: bool,
    pub deleted: usize,
    /// Messages received but left for the next run: they did not fit in
    /// one email.
    pub left_for_next_run: usize,
    /// The deadline stopped the run from taking more dead letters.
    pub stopped_for_deadline: bool,
    pub error: Option<String>,
}

impl Reporter {
    /// One report. `deadline`: stop taking work when it is near.
    pub async fn run(&self, report_run_id: Uuid, deadline: &Deadline) -> ReportSummary {
        let mut summary = ReportSummary {
            report_run_id,
            messages: 0,
            stored_new: None,
            stored_escaped: 0,
            emailed_records: 0,
            emailed: false,
            deleted: 0,
            left_for_next_run: 0,
            stopped_for_deadline: false,
            error: None,
        };
        let mut letters = self.receive(deadline, &mut summary).await;
        // One email has a size limit: what does not fit waits for the next
        // run (the messages reappear after their visibility timeout).
        let fitting = letters_that_fit(&letters, MAX_EMAIL_RECORD_BYTES);
        summary.left_for_next_run = letters.len() - fitting;
        letters.truncate(fitting);
        summary.messages = letters.len();
        let mut summary = self.report(report_run_id, letters, summary).await;
        // Anything left for the next run fails the invocation, so that the
        // alarms see a dead-letter queue that does not drain.
        if summary.error.is_none()
            && (summary.left_for_next_run > 0 || summary.stopped_for_deadline)
        {
            summary.error = Some(format!(
                "dead letters left for the next run: {}",
                if summary.stopped_for_deadline {
                    "the invocation's deadline was near".to_string()
                } else {
                    format!("{} did not fit in one email", summary.left_for_next_run)
                }
            ));
        }
        summary
    }

    /// Stores, emails and deletes the letters taken.
    async fn report(
        &self,
        report_run_id: Uuid,
        letters: Vec<DeadLetter>,
        mut summary: ReportSummary,
    ) -> ReportSummary {
        if letters.is_empty() {
            return summary;
        }

        let now = Utc::now();
        let mut entries: Vec<FailureEntry> = letters
            .iter()
            .map(|l| FailureEntry::from_dead_letter(l, now))
            .collect();
        let stored = match self
            .store(report_run_id, &letters, &mut entries, &mut summary)
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                self.announce_outage(&entries, &e, report_run_id, now, &mut summary)
                    .await;
                return summary;
            }
        };
        // The report is stored: an outage announced earlier is over.
        if let Err(e) = self.dlq.set_outage_announced(None).await {
            tracing::warn!(error = %e, "could not clear the outage announcement");
        }

        // Each record is emailed once: not again when its dead letter comes
        // back because an earlier run could not delete it.
        let to_email: Vec<FailureEntry> = entries
            .iter()
            .zip(&stored)
            .filter(|(_, s)| !s.emailed)
            .map(|(e, _)| e.clone())
            .collect();
        if !to_email.is_empty() {
            let digest = compose_digest(&to_email, &Ok(()), report_run_id, self.email_rows, now);
            if let Err(e) = self.mailer.send(&digest).await {
                summary.error = Some(e.to_string());
                return summary;
            }
            summary.emailed = true;
            summary.emailed_records = to_email.len();
            let ids: Vec<String> = to_email.iter().map(|e| e.message_id.clone()).collect();
            if let Err(e) = self.store.mark_emailed(report_run_id, &ids).await {
                // The letters are deleted below all the same: a record left
                // unmarked is at worst mailed once more by a replay of it.
                tracing::warn!(error = %e, "could not record which records were emailed");
            }
        }
        let deleted = self.dlq.delete(&letters).await;
        summary.deleted = deleted.count;
        if let Some(e) = deleted.error {
            summary.error = Some(format!(
                "deleting from the dead-letter queue: {e} ({} of {} deleted; the rest come back and are not emailed again)",
                deleted.count,
                letters.len()
            ));
        }
        summary
    }

    /// Takes up to `max_messages` distinct dead letters, stopping early when
    /// the deadline is near.
    async fn receive(&self, deadline: &Deadline, summary: &mut ReportSummary) -> Vec<DeadLetter> {
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        while letters.len() < self.max_messages {
            if deadline.is_near() {
                tracing::warn!("deadline near: no more dead letters taken in this run");
                summary.stopped_for_deadline = true;
                break;
            }
            let batch = match self
                .dlq
                .receive((self.max_messages - letters.len()).min(10))
                .await
            {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(e) => {
                    summary.error = Some(format!("reading the dead-letter queue: {e}"));
                    break;
                }
            };
            for letter in batch {
                // A standard queue can deliver a message twice: keep one, with
                // the newest receipt handle (the one a delete must use).
                match position.get(&letter.message_id) {
                    Some(&at) => letters[at] = letter,
                    None => {
                        position.insert(letter.message_id.clone(), letters.len());
                        letters.push(letter);
                    }
                }
            }
        }
        letters
    }

    /// Stores every entry; one the store refuses is stored again in escaped
    /// form, so that one bad record never blocks the report. Returns, per
    /// entry, what storing it did.
    async fn store(
        &self,
        report_run_id: Uuid,
        letters: &[DeadLetter],
        entries: &mut [FailureEntry],
        summary: &mut ReportSummary,
    ) -> Result<Vec<Stored>, WriteError> {
        let results = self.store.store(report_run_id, entries).await?;
        let mut stored = Vec::with_capacity(entries.len());
        let mut new = 0;
        for (i, result) in results.into_iter().enumerate() {
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(refusal) => {
                    let escaped =
                        entries[i].escaped(letters[i].body.as_deref(), &refusal.to_string());
                    tracing::warn!(message_id = %entries[i].message_id, error = %refusal, "failure report refused the record; storing it escaped");
                    let again = self
                        .store
                        .store(report_run_id, std::slice::from_ref(&escaped))
                        .await?;
                    let outcome = match again.into_iter().next() {
                        Some(Ok(outcome)) => outcome,
                        Some(Err(e)) => return Err(e.context("storing an escaped record")),
                        None => return Err(WriteError::fatal("the store gave no result")),
                    };
                    entries[i] = escaped;
                    summary.stored_escaped += 1;
                    outcome
                }
            };
            new += u64::from(outcome.new);
            stored.push(outcome);
        }
        summary.stored_new = Some(new);
        Ok(stored)
    }

    /// The report could not be stored at all: say so by email once per
    /// outage, and keep every dead letter for the next run.
    async fn announce_outage(
        &self,
        entries: &[FailureEntry],
        error: &WriteError,
        report_run_id: Uuid,
        now: chrono::DateTime<Utc>,
        summary: &mut ReportSummary,
    ) {
        let stored_error = format!(
            "failure report not stored ({error}); the messages stay in the dead-letter queue"
        );
        match self.dlq.outage_announced().await {
            // An announcement a day old is announced again: the tag may have
            // outlived its outage (a run that emptied the queue never stored
            // anything, and a failed untag only warns).
            Ok(Some(since)) if now - since < OUTAGE_REANNOUNCE_AFTER => {
                tracing::warn!(announced_at = %since, "failure report still not stored; the outage was announced already");
                summary.error = Some(stored_error);
                return;
            }
            Ok(_) => {}
            // Better a second email than silence.
            Err(e) => tracing::warn!(error = %e, "could not read the outage announcement"),
        }
        let digest = compose_digest(
            entries,
            &Err(error.to_string()),
            report_run_id,
            self.email_rows,
            now,
        );
        match self.mailer.send(&digest).await {
            Ok(()) => {
                summary.emailed = true;
                summary.emailed_records = entries.len();
                if let Err(e) = self.dlq.set_outage_announced(Some(now)).await {
                    tracing::warn!(error = %e, "could not record the outage announcement");
                }
                summary.error = Some(stored_error);
            }
            Err(e) => summary.error = Some(format!("{stored_error}; {e}")),
        }
    }
}

/// How long one "failure report not stored" announcement covers.
pub const OUTAGE_REANNOUNCE_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// The records of one email (body and CSV attachment) stay well under SES
/// v2's 40 MB message limit.
pub const MAX_EMAIL_RECORD_BYTES: usize = 10 * 1024 * 1024;

/// How many letters, from the first, fit in one email: each counts with
/// its body (what its line and CSV row carry at most).
fn letters_that_fit(letters: &[DeadLetter], budget: usize) -> usize {
    let mut used = 0;
    for (i, letter) in letters.iter().enumerate() {
        // The CSV row and the text line each carry at most the (cut) body
        // and the record's fields.
        let size = 2
            * (512
                + letter
                    .body
                    .as_deref()
                    .map_or(0, str::len)
                    .min(RAW_BODY_LIMIT * 4));
        if i > 0 && used + size > budget {
            return i;
        }
        used += size;
    }
    letters.len()
}
