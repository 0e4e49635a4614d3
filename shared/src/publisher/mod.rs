//! Stream mode's publisher: `case`'s own run ([`crate::case_run`]), with
//! the changes queue as its sink instead of Postgres (the sink is
//! `countries_sqs::changes_queue::sink`, where its tests with a publisher
//! run are), and the loop of one invocation.
//!
//! The run takes the same run guard as the replicator's run of `case`
//! (the same lock and ledger, so the two modes never hold a snapshot at
//! once, and `countries status` sees both). Like the replicator's: the
//! snapshot, invalid rows to the retry queue, the circuit breaker, and the
//! join delete of exactly the rows that are safe, so a row leaves Snowflake
//! only once the queue holds it.

use std::time::Duration;

// Tokio's clock: the same as the system's in Lambda, and one a test can
// pause and move on.
use tokio::time::Instant;

use uuid::Uuid;

use crate::case_run::CaseRun;
use crate::deadline::Deadline;
use crate::ledger::{RunOutcome, RunSummary};

/// The publisher function's use case: runs, one after another, for
/// `loop_for` (one run when it is zero).
pub struct Publisher {
    /// A replicator whose sinks are the changes queue's
    /// (`countries_sqs::changes_queue::sink::ChangesQueueSinks`).
    pub runs: CaseRun,
    pub loop_for: Duration,
    /// Between looks at an empty table.
    pub idle_wait: Duration,
}

impl Publisher {
    /// Runs until `loop_for` has passed, the deadline is near, or a run
    /// does not succeed (the invocation then fails, so alarms see it).
    /// While looping, an empty table is seen by a metadata `COUNT(*)` and
    /// costs no run and no ledger row; an invocation that found nothing
    /// records one idle run, so the ledger shows the publisher is alive.
    pub async fn publish(
        &self,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> Vec<RunSummary> {
        let until = Instant::now() + self.loop_for;
        let looping = !self.loop_for.is_zero();
        let mut runs: Vec<RunSummary> = Vec::new();
        loop {
            let empty =
                looping && matches!(self.runs.source.count_rows(None, deadline).await, Ok(0));
            let mut wait = empty;
            if !empty {
                let summary = self
                    .runs
                    .run(Uuid::new_v4(), trigger_id.clone(), deadline)
                    .await;
                summary.log();
                let stop = !summary.outcome.is_success();
                // Another run holds the lock: look again after a pause.
                wait = matches!(summary.outcome, RunOutcome::Skipped | RunOutcome::Idle);
                runs.push(summary);
                if stop {
                    break;
                }
            }
            if Instant::now() >= until || deadline.is_near() {
                break;
            }
            if wait {
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(self.idle_wait.min(left)).await;
            }
        }
        if runs.is_empty() {
            let summary = self.runs.run(Uuid::new_v4(), trigger_id, deadline).await;
            summary.log();
            runs.push(summary);
        }
        runs
    }
}
