//! Deleting a page's safe rows from the source table: the join against the
//! run's snapshot, one statement for a page without trouble.

use crate::case_run::{CaseRun, Run, Stop};
use crate::deadline::Deadline;
use crate::failure::SourceError;
use crate::ports::{IdMatch, Snapshot, Step, MAX_RANGES_PER_DELETE};
use crate::retry::retry;

impl CaseRun {
    /// Deletes the page's safe rows from the source table, by joining it
    /// against the snapshot: one statement for a page without trouble. It
    /// is started even near the deadline (it is bounded, and leaving rows
    /// the queue owns in Snowflake would enqueue them again next run); only
    /// its retries stop there.
    pub(super) async fn delete_safe_rows(
        &self,
        snapshot: &dyn Snapshot,
        run: &mut Run,
        deadline: &Deadline,
    ) -> Result<(), Stop> {
        for ids in [IdMatch::Equal, IdMatch::BothNull] {
            let ranges = run.page.safe_ranges(ids);
            for statement in ranges.chunks(MAX_RANGES_PER_DELETE) {
                let deleted: Result<u64, SourceError> =
                    retry(self.policy(), deadline, "Snowflake delete", async || {
                        snapshot.delete(statement, ids).await
                    })
                    .await;
                match deleted {
                    Ok(n) => run.summary.rows_deleted += usize::try_from(n).unwrap_or(usize::MAX),
                    Err(e) => {
                        // The rows are safe elsewhere: the next run reads them
                        // again, the upsert changes nothing, and the delete is
                        // done then.
                        run.summary.add_error(format!(
                            "deleting from Snowflake stopped; safe rows left for the next run: {e}"
                        ));
                        return Err(Stop::Source);
                    }
                }
                // Once per run: after the run's first delete.
                self.reached(run, Step::MidDelete);
            }
        }
        Ok(())
    }
}
