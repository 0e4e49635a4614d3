//! The tables of a deployment, run together by the replicator: `case` (its
//! built-in mapping, `crate::config::ReplicatorConfig::case_table`) and
//! those of `TABLES_FILE`, each prepared once per warm process (both sides
//! discovered and matched, [`TablePlanner`]) and kept while it holds. A
//! table is prepared again when it could not be prepared yet (say
//! Snowflake unreachable or a column missing), after a run that failed, and
//! when its target table changed since or cannot be checked (before each
//! run, [`crate::ports::TableSink::target_drift`]), so that a warm process
//! does not write with a plan its target no longer matches. (A change on
//! the source side alone is seen when it fails a run, or at a cold start.)
//! All run concurrently, each under its own lock and deadline, so that a
//! slow or failing table never holds another back. Their runs tell a
//! [`StepHook`] of the steps they reach ([`NoHook`] in the Lambda
//! function; a test's fault injector, aimed at some tables).

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::tables::TableMapping;
use crate::deadline::Deadline;
use crate::ledger::{RunOutcome, RunSummary};
use crate::ports::{NoHook, RunGuard, StepHook};
use crate::table_run::TableReplicator;

/// Prepares a mapped table's runs: discovers both sides, matches the
/// columns and builds the run over the real adapters (the replicator
/// function's wiring).
#[async_trait]
pub trait TablePlanner: Send + Sync {
    /// `Err` lists every problem, each naming the table (and column).
    async fn prepare(
        &self,
        mapping: &TableMapping,
        deadline: &Deadline,
    ) -> Result<TableReplicator, Vec<String>>;

    /// The table's run guard, which needs no plan: a table that cannot be
    /// prepared still leaves a `failed` run in the ledger, so that
    /// `countries status` sees it. None: no ledger (tests of other things).
    fn guard(&self, _mapping: &TableMapping) -> Option<Box<dyn RunGuard>> {
        None
    }
}

/// The mapped tables, each with its run once prepared.
pub struct TableRuns {
    tables: Vec<(TableMapping, Mutex<Option<TableReplicator>>)>,
    planner: Box<dyn TablePlanner>,
    /// Told of the steps each run reaches (of the tables `observed`
    /// chooses).
    pub steps: Box<dyn StepHook>,
    /// Whose runs `steps` hears: every table's unless [`Self::observe`]
    /// chose.
    observed: Box<dyn Fn(&TableMapping) -> bool + Send + Sync>,
}

impl TableRuns {
    pub fn new(mappings: Vec<TableMapping>, planner: Box<dyn TablePlanner>) -> Self {
        Self {
            tables: mappings
                .into_iter()
                .map(|m| (m, Mutex::new(None)))
                .collect(),
            planner,
            steps: Box::new(NoHook),
            observed: Box::new(|_| true),
        }
    }

    /// `steps` hears the runs of the tables `tables` chooses alone (a test
    /// aims its faults at one table's runs).
    pub fn observe(
        &mut self,
        steps: Box<dyn StepHook>,
        tables: impl Fn(&TableMapping) -> bool + Send + Sync + 'static,
    ) {
        self.steps = steps;
        self.observed = Box::new(tables);
    }

    /// No table at all.
    pub fn none() -> Self {
        Self::new(Vec::new(), Box::new(NoPlanner))
    }

    /// Whether there is no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// One run of every table, concurrently; a summary each, in the
    /// order given (`case` first in the function). A table not prepared has a `failed` summary saying why.
    pub async fn run_all(
        &self,
        trigger_id: Option<String>,
        deadline: &Deadline,
    ) -> Vec<RunSummary> {
        let runs = self.tables.iter().map(|(mapping, slot)| {
            let trigger_id = trigger_id.clone();
            async move {
                let run_id = Uuid::new_v4();
                // Held for the run: one run of a table at a time.
                let mut slot = slot.lock().await;
                let mut kept = slot.take();
                if let Some(table) = &kept {
                    if let Some(why) = table.sink.target_drift(deadline).await {
                        tracing::warn!(table = %mapping.name, %why, "planning the table again before its run");
                        kept = None;
                    }
                }
                let table = match kept {
                    Some(table) => table,
                    None => match self.planner.prepare(mapping, deadline).await {
                        Ok(table) => table,
                        Err(problems) => {
                            let summary = unprepared(mapping, run_id, trigger_id, &problems);
                            return self.record(mapping, summary).await;
                        }
                    },
                };
                let summary = table
                    .run_observed(run_id, trigger_id, deadline, self.hook(mapping))
                    .await;
                // A failed run's plan is not kept: whatever stopped it (a
                // source column gone, a target refused), the next run reads
                // both sides again.
                if summary.outcome != RunOutcome::Failed {
                    *slot = Some(table);
                }
                summary
            }
        });
        futures::future::join_all(runs).await
    }
}

impl TableRuns {
    /// Records the run of a table that could not be prepared under its
    /// guard (its lock, its ledger row); another run holding the lock
    /// records its own.
    async fn record(&self, mapping: &TableMapping, mut summary: RunSummary) -> RunSummary {
        let Some(guard) = self.planner.guard(mapping) else {
            return summary;
        };
        let mut started = RunSummary::new(summary.run_id, summary.trigger_id.clone());
        started.table = summary.table.clone();
        started.started_at = summary.started_at;
        match guard.open_run(&started).await {
            Ok(Some(mut run)) => {
                if let Err(e) = run.finish(&summary).await {
                    summary.add_error(format!("ledger not updated: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => summary.add_error(format!("ledger not updated: {e}")),
        }
        summary
    }

    /// The hook `mapping`'s runs tell of their steps.
    fn hook(&self, mapping: &TableMapping) -> &dyn StepHook {
        if (self.observed)(mapping) {
            &*self.steps
        } else {
            &NoHook
        }
    }
}

/// The `failed` summary of a table that could not be prepared.
fn unprepared(
    mapping: &TableMapping,
    run_id: Uuid,
    trigger_id: Option<String>,
    problems: &[String],
) -> RunSummary {
    let mut summary = RunSummary::new(run_id, trigger_id);
    summary.table = Some(mapping.name.clone());
    summary.outcome = RunOutcome::Failed;
    summary.add_error(format!(
        "table {} cannot be prepared (tried again next run): {}",
        mapping.name,
        problems.join("; ")
    ));
    summary.finished_at = Some(Utc::now());
    summary
}

/// The planner of an empty set: never asked.
struct NoPlanner;

#[async_trait]
impl TablePlanner for NoPlanner {
    async fn prepare(
        &self,
        mapping: &TableMapping,
        _: &Deadline,
    ) -> Result<TableReplicator, Vec<String>> {
        Err(vec![format!("table {}: no planner", mapping.name)])
    }
}

#[cfg(test)]
mod tests;
