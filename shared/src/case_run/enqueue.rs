//! Sending a page's failed rows to the retry queue, under the run's
//! circuit breaker.

use crate::case_run::{CaseRun, Run};
use crate::deadline::Deadline;
use crate::failure::QueueError;
use crate::model::message::RetryMessage;

impl CaseRun {
    /// Sends a page's failed rows to the retry queue, within what is left of
    /// `MAX_FAILURES_PER_RUN`; the ones SQS accepted become safe to delete,
    /// the others stay in Snowflake.
    pub(super) async fn enqueue(&self, run: &mut Run, deadline: &Deadline) {
        let mut failures = std::mem::take(&mut run.failures);
        let Run {
            summary,
            progress,
            page,
            ..
        } = run;
        if failures.is_empty() {
            return;
        }
        if deadline.is_near() {
            let left: usize = failures.iter().map(|f| f.numbers.len()).sum();
            summary.rows_deferred += left;
            summary.add_error(format!(
                "deadline: the retry queue was not called; {left} failed rows are left in Snowflake"
            ));
            return;
        }
        // Failures of earlier pages already used part of the budget.
        let earlier = progress.failures_seen - failures.len();
        let allowed = self.limits.max_failures_per_run.saturating_sub(earlier);
        if failures.len() > allowed {
            let over: usize = failures.drain(allowed..).map(|f| f.numbers.len()).sum();
            summary.rows_deferred += over;
            if !progress.breaker_tripped {
                progress.breaker_tripped = true;
                summary.add_error(format!(
                    "circuit breaker: more than MAX_FAILURES_PER_RUN={} rows failed; the rest stay in Snowflake",
                    self.limits.max_failures_per_run
                ));
            }
        }
        if failures.is_empty() {
            return;
        }
        let messages: Vec<RetryMessage> = failures.iter().map(|f| f.message.clone()).collect();
        let results = self.queue.enqueue(&messages).await;
        // A queue that answers for fewer messages than it was given leaves
        // the rest unconfirmed: they stay in Snowflake.
        let results = results.into_iter().chain(std::iter::repeat_with(|| {
            Err(QueueError::call(
                "SendMessageBatch",
                "the queue gave no result for this message",
            ))
        }));
        let mut first_error = None;
        for (failure, result) in failures.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    summary.rows_enqueued += failure.numbers.len();
                    for number in &failure.numbers {
                        page.mark_safe(*number, &failure.message.record);
                    }
                }
                Err(e) => {
                    summary.rows_deferred += failure.numbers.len();
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            summary.add_error(format!("some failed rows stay in Snowflake: {e}"));
        }
    }
}
