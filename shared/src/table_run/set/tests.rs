//! The mapped tables' runs kept across invocations of one warm process: a
//! prepared table is reused, and prepared again after its target changed or
//! a run failed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::config::tables::parse_tables;
use crate::table_run::tests::{load, replicator, MemoryTable, MemoryTarget};
use crate::testing::{MemoryQueue, MemoryStore};

/// Prepares runs over shared in-memory adapters and counts how often; a
/// preparation reads the target again, so the drift it saw is gone.
#[derive(Clone, Default)]
struct CountingPlanner {
    table: MemoryTable,
    target: MemoryTarget,
    queue: MemoryQueue,
    store: MemoryStore,
    prepared: Arc<Mutex<usize>>,
}

#[async_trait]
impl TablePlanner for CountingPlanner {
    async fn prepare(
        &self,
        _: &TableMapping,
        _: &Deadline,
    ) -> Result<TableReplicator, Vec<String>> {
        *self.prepared.lock().unwrap() += 1;
        *self.target.drift.lock().unwrap() = None;
        if self
            .table
            .rows
            .lock()
            .unwrap()
            .iter()
            .any(|(_, n)| n == "unpreparable")
        {
            return Err(vec!["table notes: column x is missing".into()]);
        }
        let mut run = replicator(&self.table, &self.target, &self.queue);
        run.guard = Box::new(self.store.clone());
        Ok(run)
    }

    fn guard(&self, _: &TableMapping) -> Option<Box<dyn RunGuard>> {
        Some(Box::new(self.store.clone()))
    }
}

#[tokio::test]
async fn a_table_that_cannot_be_prepared_leaves_a_failed_run_in_the_ledger() {
    let planner = CountingPlanner::default();
    let tables = runs(&planner);
    load(&planner.table, &[(Some(1), "unpreparable")]);
    let summary = tables.run_all(None, &Deadline::none()).await.remove(0);
    assert_eq!(summary.outcome, RunOutcome::Failed);
    // Recorded running, then finished failed, as any run is.
    let ledger = planner.store.state().ledger.clone();
    let outcomes: Vec<RunOutcome> = ledger.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [RunOutcome::Running, RunOutcome::Failed]);
    assert_eq!(ledger[1].table.as_deref(), Some("notes"));
    assert!(
        ledger[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("column x is missing")),
        "{ledger:?}"
    );
}

fn runs(planner: &CountingPlanner) -> TableRuns {
    let file = "[[tables]]\nname = \"notes\"\nsource = { schema = \"S\", table = \"NOTES\" }\n\
                target = { schema = \"public\", table = \"notes\" }\nconsume = \"delete\"\n";
    let mappings = parse_tables(file, "tables.toml").unwrap();
    TableRuns::new(mappings, Box::new(planner.clone()))
}

#[tokio::test]
async fn a_table_is_planned_once_and_again_when_its_target_changed_or_its_run_failed() {
    let planner = CountingPlanner::default();
    let tables = runs(&planner);
    let prepared = || *planner.prepared.lock().unwrap();
    let run = || async { tables.run_all(None, &Deadline::none()).await.remove(0) };

    load(&planner.table, &[(Some(1), "a")]);
    assert_eq!(run().await.outcome, RunOutcome::Succeeded);
    load(&planner.table, &[(Some(2), "b")]);
    assert_eq!(run().await.outcome, RunOutcome::Succeeded);
    assert_eq!(prepared(), 1, "the warm process keeps its plan");

    // The target changed between invocations: planned again before writing.
    *planner.target.drift.lock().unwrap() = Some("table notes: column note was dropped".into());
    load(&planner.table, &[(Some(3), "c")]);
    let summary = run().await;
    assert_eq!(
        (summary.outcome, summary.rows_written),
        (RunOutcome::Succeeded, 1)
    );
    assert_eq!(prepared(), 2);

    // A failed run (Postgres refusing the run lock) drops the plan too.
    planner.store.state().down = true;
    load(&planner.table, &[(Some(4), "d")]);
    assert_eq!(run().await.outcome, RunOutcome::Failed);
    planner.store.state().down = false;
    let summary = run().await;
    assert_eq!(
        (summary.outcome, summary.rows_written),
        (RunOutcome::Succeeded, 1)
    );
    assert_eq!(prepared(), 3);
    assert_eq!(
        planner.target.current.lock().unwrap().len(),
        4,
        "every row reached the target: {:?}",
        planner.target.current.lock().unwrap()
    );
    assert!(planner.table.rows.lock().unwrap().is_empty());
}
