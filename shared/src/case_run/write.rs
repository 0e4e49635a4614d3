//! Writing one planned chunk to the run's sink, and sorting its rows by
//! what became of them: written (safe to delete), refused (bound for the
//! retry queue) or deferred (left in Snowflake).

use chrono::Utc;

use crate::case_run::plan::{ChunkPlan, Failure};
use crate::case_run::{CaseRun, Run};
use crate::deadline::Deadline;
use crate::failure::WriteError;
use crate::model::message::{FailureDetail, RetryMessage};
use crate::model::row::CountryRow;
use crate::ports::WriteLimits;

impl CaseRun {
    /// Writes one planned chunk and sorts its rows: written (safe),
    /// refused (bound for the queue) or deferred (left in Snowflake).
    pub(super) async fn write_chunk(&self, run: &mut Run, plan: ChunkPlan, deadline: &Deadline) {
        let Run {
            summary,
            sink,
            progress,
            page,
            failures,
            ..
        } = run;
        // Invalid rows need no Postgres: they are queued even after the
        // writes stopped.
        summary.rows_invalid += plan.failures.len();
        progress.failures_seen += plan.failures.len();
        failures.extend(plan.failures);
        summary.rows_deferred += plan.conflicting_duplicates;
        summary.rows_deferred_duplicates += plan.conflicting_duplicates;
        if progress.writes_stopped {
            summary.rows_deferred += plan.valid.iter().map(|p| 1 + p.also.len()).sum::<usize>();
            return;
        }

        let budget_left = self
            .limits
            .max_failures_per_run
            .saturating_sub(progress.failures_seen);
        let refs: Vec<&CountryRow> = plan.valid.iter().map(|p| &p.row).collect();
        let limits = WriteLimits {
            failure_budget: budget_left,
            policy: self.policy(),
        };
        let result = sink.write(&refs, limits, deadline).await;
        drop(refs);
        summary.rows_changed += usize::try_from(result.changed).unwrap_or(usize::MAX);
        let mut outcome: Vec<Option<Result<(), WriteError>>> = vec![None; plan.valid.len()];
        for i in result.written {
            outcome[i] = Some(Ok(()));
        }
        for (i, error) in result.rejected {
            outcome[i] = Some(Err(error));
        }
        for (planned, outcome) in plan.valid.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => {
                    summary.rows_written += 1 + planned.also.len();
                    page.mark_safe(planned.number, &planned.row.source);
                    for (number, row) in &planned.also {
                        page.mark_safe(*number, row);
                    }
                }
                Some(Err(error)) => {
                    summary.rows_rejected += 1;
                    progress.failures_seen += 1;
                    // Identical copies go with the message; another
                    // spelling of the row stays for the next run.
                    let (copies, variants): (Vec<_>, Vec<_>) = planned
                        .also
                        .into_iter()
                        .partition(|(_, r)| *r == planned.row.source);
                    summary.rows_deferred += variants.len();
                    let mut numbers = vec![planned.number];
                    numbers.extend(copies.into_iter().map(|(n, _)| n));
                    failures.push(Failure {
                        message: RetryMessage::first_failure(
                            planned.row.source,
                            FailureDetail::of_write(&error),
                            summary.run_id,
                            Utc::now(),
                        ),
                        numbers,
                    });
                }
                None => summary.rows_deferred += 1 + planned.also.len(),
            }
        }
        if let Some(error) = result.stop {
            summary.add_error(format!(
                "writing to {} stopped: {error}",
                summary.sink.target()
            ));
            progress.writes_stopped = true;
        }
    }
}
