//! The dlq-reporter's use case: turn what sits in the dead-letter queues
//! into a durable failure report (Postgres) and one digest email (SES). The
//! retry queue's dead letters are one record each; stream mode's changes
//! dead-letter queue holds whole batches, a record per row.
//!
//! Order of a run, so that nothing is lost between the queues, the table
//! and the email:
//! 1. take up to `REPORT_MAX_MESSAGES` messages from the DLQs, the retry
//!    queue's first, as many as one email holds (they stay invisible, not
//!    deleted);
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
use crate::dlq_reporter::digest::{compose_digest, csv_line_bytes};
use crate::failure::WriteError;
use crate::model::report::{DeadLetter, FailureEntry, LetterQueue};
use crate::ports::{DeadLetterQueue, FailureStore, Mailer, Stored};

pub struct Reporter {
    pub dlq: Box<dyn DeadLetterQueue>,
    /// Stream mode's changes dead-letter queue (None in batch mode).
    pub changes_dlq: Option<Box<dyn DeadLetterQueue>>,
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
        let mut letters = Vec::new();
        // Each letter's CSV bytes, measured once as it is taken.
        let mut sizes = Vec::new();
        self.receive(
            self.dlq.as_ref(),
            LetterQueue::Retry,
            deadline,
            &mut letters,
            &mut sizes,
            &mut summary,
        )
        .await;
        if let Some(changes) = &self.changes_dlq {
            self.receive(
                changes.as_ref(),
                LetterQueue::Changes,
                deadline,
                &mut letters,
                &mut sizes,
                &mut summary,
            )
            .await;
        }
        // One email has a size limit: what does not fit waits for the next
        // run (the messages reappear after their visibility timeout).
        let fitting = letters_that_fit(&sizes, self.csv_budget());
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
        let mut entries: Vec<FailureEntry> = Vec::new();
        // The retry path's body, kept when an entry must be stored escaped.
        let mut bodies: Vec<Option<&str>> = Vec::new();
        for letter in &letters {
            let of_letter = FailureEntry::of_dead_letter(letter, now);
            let body = match letter.queue {
                LetterQueue::Retry => letter.body.as_deref(),
                LetterQueue::Changes => None,
            };
            bodies.extend(std::iter::repeat_n(body, of_letter.len()));
            entries.extend(of_letter);
        }
        let stored = match self
            .store(report_run_id, &bodies, &mut entries, &mut summary)
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
        let (retry, changes): (Vec<DeadLetter>, Vec<DeadLetter>) = letters
            .into_iter()
            .partition(|l| l.queue == LetterQueue::Retry);
        let total = retry.len() + changes.len();
        let mut deleted = self.dlq.delete(&retry).await;
        if let (Some(dlq), false) = (&self.changes_dlq, changes.is_empty()) {
            let more = dlq.delete(&changes).await;
            deleted.count += more.count;
            deleted.error = deleted.error.or(more.error);
        }
        summary.deleted = deleted.count;
        if let Some(e) = deleted.error {
            summary.error = Some(format!(
                "deleting from the dead-letter queue: {e} ({} of {} deleted; the rest come back and are not emailed again)",
                deleted.count,
                total
            ));
        }
        summary
    }

    /// Takes distinct dead letters from `dlq` until `letters` holds
    /// `max_messages` or one email's worth (`sizes`, each letter's CSV bytes,
    /// kept beside `letters`), stopping early when the deadline is near.
    async fn receive(
        &self,
        dlq: &dyn DeadLetterQueue,
        queue: LetterQueue,
        deadline: &Deadline,
        letters: &mut Vec<DeadLetter>,
        sizes: &mut Vec<usize>,
        summary: &mut ReportSummary,
    ) {
        let mut position: HashMap<String, usize> = HashMap::new();
        let now = Utc::now();
        while letters.len() < self.max_messages && sizes.iter().sum::<usize>() <= self.csv_budget()
        {
            if deadline.is_near() {
                tracing::warn!("deadline near: no more dead letters taken in this run");
                summary.stopped_for_deadline = true;
                break;
            }
            let batch = match dlq
                .receive((self.max_messages - letters.len()).min(10))
                .await
            {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(e) => {
                    let which = match queue {
                        LetterQueue::Retry => "the dead-letter queue",
                        LetterQueue::Changes => "the changes dead-letter queue",
                    };
                    summary.error = Some(format!("reading {which}: {e}"));
                    break;
                }
            };
            for mut letter in batch {
                letter.queue = queue;
                // A standard queue can deliver a message twice: keep one, with
                // the newest receipt handle (the one a delete must use).
                match position.get(&letter.message_id) {
                    Some(&at) => letters[at] = letter,
                    None => {
                        sizes.push(email_bytes(&letter, now));
                        position.insert(letter.message_id.clone(), letters.len());
                        letters.push(letter);
                    }
                }
            }
        }
    }

    /// What the CSV attachment may take of one email's bound.
    fn csv_budget(&self) -> usize {
        MAX_EMAIL_RECORD_BYTES.saturating_sub(self.email_rows * BODY_LINE_BYTES)
    }

    /// Stores every entry; one the store refuses is stored again in escaped
    /// form, so that one bad record never blocks the report. Returns, per
    /// entry, what storing it did.
    async fn store(
        &self,
        report_run_id: Uuid,
        bodies: &[Option<&str>],
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
                    let escaped = entries[i].escaped(bodies[i], &refusal.to_string());
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

/// What a letter's records add to the CSV attachment, exactly.
fn email_bytes(letter: &DeadLetter, now: chrono::DateTime<Utc>) -> usize {
    FailureEntry::of_dead_letter(letter, now)
        .iter()
        .map(csv_line_bytes)
        .sum()
}

/// A shown record's line in the text body plus its row in the HTML body, at
/// most (fields cut to 160 characters, markup escaped): the bodies list
/// `REPORT_EMAIL_ROWS` records, and take that much of the bound.
const BODY_LINE_BYTES: usize = 4_096;

/// How many letters, from the first, fit in one email (the first always
/// does: a changes batch of the largest size makes some 7 MB of CSV).
fn letters_that_fit(sizes: &[usize], budget: usize) -> usize {
    let mut used = 0;
    for (i, size) in sizes.iter().enumerate() {
        if i > 0 && used + size > budget {
            return i;
        }
        used += size;
    }
    sizes.len()
}
