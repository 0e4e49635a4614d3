//! The end of a page's move: its failed rows sent to the retry queue, then
//! its safe rows deleted from Snowflake (the join on key and row hash).

use super::{Failure, TableReplicator, TableRun};
use crate::deadline::Deadline;
use crate::ledger::RunSummary;
use crate::model::mapped_message::MappedRetryMessage;
use crate::page::Page;
use crate::ports::{IdMatch, RowNumbers, Step, TableSnapshot, MAX_RANGES_PER_DELETE};
use crate::retry::retry;

impl TableReplicator {
    /// Sends the page's failures to the retry queue: a row the queue took
    /// is safe to delete; one it did not stays in Snowflake (deferred).
    /// Once the run's failure budget (in rows, copies included) is spent,
    /// nothing more is sent, and near the deadline nothing is: a call cut
    /// short by the timeout could leave messages whose rows the next run
    /// sends again. Says, per failure, whether it was sent.
    pub(super) async fn enqueue(
        &self,
        failures: Vec<Failure>,
        page: &mut Page,
        summary: &mut RunSummary,
        deadline: &Deadline,
    ) -> Vec<bool> {
        let mut sent_flags = vec![false; failures.len()];
        if failures.is_empty() {
            return sent_flags;
        }
        if deadline.is_near() {
            let left: usize = failures.iter().map(|f| f.numbers.len()).sum();
            summary.rows_deferred += left;
            summary.add_error(format!(
                "deadline: the retry queue was not called; {left} failed rows of table {} stay in Snowflake",
                self.name
            ));
            return sent_flags;
        }
        let mut budget = self
            .limits
            .max_failures_per_run
            .saturating_sub(summary.rows_enqueued);
        // A message goes while the budget lasts, with all its copies: a
        // row with more copies than the budget must not block the rest.
        let within = failures
            .iter()
            .take_while(|f| {
                let fits = budget > 0;
                budget = budget.saturating_sub(f.numbers.len());
                fits
            })
            .count();
        let (sent, over) = failures.split_at(within);
        let over: usize = over.iter().map(|f| f.numbers.len()).sum();
        if over > 0 {
            summary.rows_deferred += over;
            summary.add_error(format!(
                "circuit breaker: more than {} failed rows in this run; {over} stay in Snowflake",
                self.limits.max_failures_per_run,
            ));
        }
        if sent.is_empty() {
            return sent_flags;
        }
        let messages: Vec<MappedRetryMessage> = sent.iter().map(|f| f.message.clone()).collect();
        let results = self.queue.enqueue_mapped(&messages).await;
        let mut refused = 0;
        for (k, (failure, result)) in sent
            .iter()
            .zip(results.iter().map(Some).chain(std::iter::repeat(None)))
            .enumerate()
        {
            match result {
                Some(Ok(())) => {
                    sent_flags[k] = true;
                    summary.rows_enqueued += failure.numbers.len();
                    for &number in &failure.numbers {
                        page.mark_safe_keyed(number, failure.key_null);
                    }
                }
                Some(Err(_)) | None => refused += failure.numbers.len(),
            }
        }
        if refused > 0 {
            summary.rows_deferred += refused;
            let first = results.iter().find_map(|r| r.as_ref().err());
            summary.add_error(format!(
                "the retry queue did not take {refused} failed rows of table {}; they stay in Snowflake{}",
                self.name,
                first.map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
        sent_flags
    }

    /// Deletes the page's safe rows; false when Snowflake failed (the safe
    /// rows are read again next run, rewritten as no-ops and deleted then).
    pub(super) async fn delete_safe(
        &self,
        snapshot: &dyn TableSnapshot,
        page: &Page,
        run: &mut TableRun<'_>,
    ) -> bool {
        let deadline = run.deadline;
        for keys in [IdMatch::Equal, IdMatch::BothNull] {
            let ranges: Vec<RowNumbers> = page.safe_ranges(keys);
            for statement in ranges.chunks(MAX_RANGES_PER_DELETE) {
                let deleted = retry(self.policy(), deadline, "Snowflake delete", async || {
                    snapshot.delete(statement, keys).await
                })
                .await;
                match deleted {
                    Ok(n) => {
                        run.summary.rows_deleted += usize::try_from(n).unwrap_or(usize::MAX);
                        run.reached(Step::MidDelete);
                    }
                    Err(e) => {
                        run.summary.add_error(format!(
                            "deleting from table {} stopped; safe rows left for the next run: {e}",
                            self.name
                        ));
                        return false;
                    }
                }
            }
        }
        true
    }
}
