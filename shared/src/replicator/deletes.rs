//! Deleting from Snowflake exactly the rows that are safe elsewhere, a
//! statement's worth at a time, as they become safe.

use crate::deadline::Deadline;
use crate::failure::SourceError;
use crate::ledger::RunSummary;
use crate::model::row::SourceRow;
use crate::ports::{RowSource, Step, StepHook};
use crate::retry::{retry, RetryPolicy};

/// Safe rows waiting for their DELETE; flushed whenever a statement's worth
/// has gathered, so memory stays bounded whatever the batch size.
pub(crate) struct PendingDeletes {
    rows: Vec<SourceRow>,
    statement_rows: usize,
    statements: usize,
    /// Set once a delete failed: the rest of the run deletes nothing (the
    /// rows stay safe in Snowflake, and the next run deletes them).
    stopped: bool,
}

impl PendingDeletes {
    pub(crate) fn new(statement_rows: usize) -> Self {
        Self {
            rows: Vec::new(),
            statement_rows: statement_rows.max(1),
            statements: 0,
            stopped: false,
        }
    }

    /// A row that is now safe: committed in Postgres or accepted by SQS.
    pub(crate) fn push(&mut self, row: SourceRow) {
        self.rows.push(row);
    }

    pub(crate) fn extend(&mut self, rows: impl IntoIterator<Item = SourceRow>) {
        self.rows.extend(rows);
    }

    /// Deletes pending rows, a statement's worth at a time (all of them when
    /// `everything`). When Snowflake refuses, the rows are safe elsewhere:
    /// the next run reads them again, the upsert changes nothing, and the
    /// delete is retried then.
    pub(crate) async fn flush(
        &mut self,
        source: &dyn RowSource,
        policy: RetryPolicy,
        steps: &dyn StepHook,
        deadline: &Deadline,
        summary: &mut RunSummary,
        everything: bool,
    ) {
        while !self.stopped
            && (self.rows.len() >= self.statement_rows || (everything && !self.rows.is_empty()))
        {
            // The final flush (`everything`) is bounded (less than a
            // statement's worth of written rows, and the rows SQS accepted)
            // and runs even near the deadline: leaving rows the queue owns in
            // Snowflake would enqueue them again next run.
            if deadline.is_near() && !everything {
                summary.add_error(format!(
                    "deadline: {} safe rows not deleted; the next run deletes them",
                    self.rows.len()
                ));
                self.stopped = true;
                break;
            }
            let take = self.statement_rows.min(self.rows.len());
            let chunk: Vec<SourceRow> = self.rows.drain(..take).collect();
            let deleted: Result<u64, SourceError> =
                retry(policy, deadline, "Snowflake delete", async || {
                    source.delete_rows(&chunk).await
                })
                .await;
            match deleted {
                Ok(n) => summary.rows_deleted += usize::try_from(n).unwrap_or(usize::MAX),
                Err(e) => {
                    summary.add_error(format!(
                        "deleting from Snowflake stopped; safe rows left for the next run: {e}"
                    ));
                    self.rows.clear();
                    self.stopped = true;
                    return;
                }
            }
            self.statements += 1;
            if self.statements == 1 {
                steps.reached(Step::MidDelete);
            }
        }
        if self.stopped {
            self.rows.clear();
        }
    }
}
