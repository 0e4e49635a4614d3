//! The `replicator` function: one run of each table (`case` first, then
//! the tables of `TABLES_FILE`) per scheduled event, all at once.

use std::time::Duration;

use serde::Serialize;

use crate::config::tables::CASE;
use crate::deadline::Deadline;
use crate::ledger::{RunOutcome, RunSummary};
use crate::table_run::set::TableRuns;
use crate::telemetry::metric;

/// What an invocation answers: `case`'s run summary at the top, as ever,
/// and each mapped table's under `tables` (left out when there is none).
#[derive(Debug, Serialize)]
pub struct Response {
    #[serde(flatten)]
    pub case: RunSummary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<RunSummary>,
}

/// One run of every table per scheduled event. The event's content does
/// not matter (EventBridge Scheduler may send `{}` or a full scheduled
/// event); its `id`, when present, is kept as the trigger id for
/// correlation. The tables run concurrently, each under its own lock: a
/// slow or failing one never holds another back. `tables` holds `case`
/// first (`crate::config::ReplicatorConfig::case_table`).
pub async fn handle(
    tables: &TableRuns,
    margin: Option<Duration>,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<Response, lambda_runtime::Diagnostic> {
    let trigger_id = super::trigger_id(&event);
    let deadline = Deadline::from_epoch_ms(event.context.deadline, margin);
    let mut summaries = tables.run_all(trigger_id, &deadline).await.into_iter();
    let Some(case) = summaries.next() else {
        return Err(super::failure(
            "NoTable",
            "the replicator has no table to run (the case table comes first)",
        ));
    };
    let tables: Vec<RunSummary> = summaries.collect();
    for summary in std::iter::once(&case).chain(&tables) {
        summary.log();
        emit_run_metrics(metric::REPLICATOR, summary);
    }
    response_result(Response { case, tables })
}

/// A run's metrics (the publisher's runs emit the same, under its name),
/// with its table as a dimension (`case` for `case`'s runs, the
/// publisher's too).
pub fn emit_run_metrics(function: &str, summary: &RunSummary) {
    let count = |n: usize| n as f64;
    crate::telemetry::emit_table_metrics(
        function,
        summary.table.as_deref().unwrap_or(CASE),
        &[
            (metric::ROWS_READ, count(summary.rows_read)),
            (metric::ROWS_WRITTEN, count(summary.rows_written)),
            (metric::ROWS_ENQUEUED, count(summary.rows_enqueued)),
            // Held-back duplicate versions are normal: not counted here.
            (
                metric::ROWS_DEFERRED,
                count(summary.rows_deferred_for_trouble()),
            ),
            (metric::ROWS_DELETED, count(summary.rows_deleted)),
            (
                metric::RUNS_FAILED_OR_PARTIAL,
                count(usize::from(!summary.outcome.is_success())),
            ),
            (
                metric::SNOWFLAKE_STATEMENTS,
                count(summary.snowflake_statements),
            ),
        ],
    );
}

/// The invocation succeeds when the run did; otherwise it fails with the
/// summary in its message, so that alarms see it.
pub fn invocation_result(summary: RunSummary) -> Result<RunSummary, lambda_runtime::Diagnostic> {
    match summary.outcome {
        RunOutcome::Succeeded | RunOutcome::Skipped | RunOutcome::Idle => Ok(summary),
        // Rows stay in Snowflake for the next run.
        RunOutcome::Partial => Err(super::failure("RunPartial", RunFailed(summary))),
        RunOutcome::Failed | RunOutcome::Running => {
            Err(super::failure("RunFailed", RunFailed(summary)))
        }
    }
}

/// The same for an invocation of several runs: it fails with the first
/// failed run's summary, and names the others that failed.
fn response_result(response: Response) -> Result<Response, lambda_runtime::Diagnostic> {
    let failed: Vec<&RunSummary> = std::iter::once(&response.case)
        .chain(&response.tables)
        .filter(|s| {
            !matches!(
                s.outcome,
                RunOutcome::Succeeded | RunOutcome::Skipped | RunOutcome::Idle
            )
        })
        .collect();
    let Some(first) = failed.first() else {
        return Ok(response);
    };
    let Err(mut failure) = invocation_result((*first).clone()) else {
        return Ok(response);
    };
    if failed.len() > 1 {
        let others: Vec<String> = failed[1..]
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.table.as_deref().unwrap_or(CASE),
                    s.outcome.as_str()
                )
            })
            .collect();
        failure.error_message.push_str(&format!(
            " (and {} more: {})",
            others.len(),
            others.join(", ")
        ));
    }
    Err(failure)
}

/// A run that left rows behind or could not start. The Lambda invocation
/// fails, so that alarms see it; the summary is in the error message, the
/// log line and the ledger.
#[derive(Debug, thiserror::Error)]
#[error("{} run {} of table {} ended {}: {} read, {} written, {} enqueued, {} deferred, {} deleted; {}",
    .0.sink.function(), .0.run_id, .0.table.as_deref().unwrap_or(CASE), .0.outcome.as_str(), .0.rows_read, .0.rows_written, .0.rows_enqueued,
    .0.rows_deferred, .0.rows_deleted, .0.error.as_deref().unwrap_or("no error text"))]
pub struct RunFailed(pub RunSummary);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tables::{parse_tables, TableMapping};
    use crate::table_run::set::TablePlanner;
    use crate::table_run::tests::{load, replicator, MemoryTable, MemoryTarget};
    use crate::table_run::TableReplicator;
    use crate::testing::MemoryQueue;

    /// Prepares `case` over in-memory adapters; any other table cannot be
    /// prepared (its target lacks a column).
    struct Planner {
        table: MemoryTable,
        target: MemoryTarget,
    }

    #[async_trait::async_trait]
    impl TablePlanner for Planner {
        async fn prepare(
            &self,
            mapping: &TableMapping,
            _: &Deadline,
        ) -> Result<TableReplicator, Vec<String>> {
            if mapping.name != "case" {
                return Err(vec![format!("table {}: column x is missing", mapping.name)]);
            }
            let mut run = replicator(&self.table, &self.target, &MemoryQueue::default());
            run.name = mapping.name.clone();
            Ok(run)
        }
    }

    /// `case` (one row in Snowflake), then the tables of `file`.
    fn tables(target: &MemoryTarget, file: Option<&str>) -> (TableRuns, MemoryTable) {
        let table = MemoryTable::default();
        load(&table, &[(Some(1), "USA")]);
        let mut mappings = parse_tables(CASE_FILE, "case").unwrap();
        if let Some(file) = file {
            mappings.extend(parse_tables(file, "tables.toml").unwrap());
        }
        let planner = Planner {
            table: table.clone(),
            target: target.clone(),
        };
        (TableRuns::new(mappings, Box::new(planner)), table)
    }

    const CASE_FILE: &str = "[[tables]]\nname = \"case\"\nsource = { schema = \"S\", table = \"case\" }\n\
                             target = { schema = \"public\", table = \"case\" }\nconsume = \"delete\"\n";

    /// One invocation of `runs` with `payload`, under `context`.
    async fn invoke(
        runs: &TableRuns,
        payload: serde_json::Value,
        context: lambda_runtime::Context,
    ) -> Result<Response, lambda_runtime::Diagnostic> {
        handle(
            runs,
            None,
            lambda_runtime::LambdaEvent::new(payload, context),
        )
        .await
    }

    #[tokio::test]
    async fn the_handler_fails_the_invocation_when_rows_are_left_behind() {
        let target = MemoryTarget::default();
        *target.down.lock().unwrap() = true;
        let (runs, _) = tables(&target, None);
        let payload = serde_json::json!({"id": "evt-1", "detail-type": "Scheduled Event"});
        let err = invoke(&runs, payload, Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "RunPartial");
        let err = err.error_message;
        assert!(
            err.contains("partial") && err.contains("1 deferred"),
            "{err}"
        );

        let (runs, _) = tables(&MemoryTarget::default(), None);
        let payload = serde_json::json!({"id": "evt-2"});
        let response = invoke(&runs, payload, Default::default()).await.unwrap();
        assert_eq!(response.case.trigger_id.as_deref(), Some("evt-2"));
        assert_eq!(response.case.rows_written, 1);
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json["rows_written"], 1,
            "case's summary at the top, as ever"
        );
        assert!(json.get("tables").is_none());
    }

    #[tokio::test]
    async fn a_short_deadline_from_the_context_defers_the_rows_and_fails_the_invocation() {
        let (runs, table) = tables(&MemoryTarget::default(), None);
        let mut context = lambda_runtime::Context::default();
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        // One second left; the default margin is two seconds.
        context.deadline = now_ms + 1_000;
        let err = invoke(&runs, serde_json::json!({}), context)
            .await
            .unwrap_err()
            .error_message;
        assert!(err.contains("partial") && err.contains("deadline"), "{err}");
        assert_eq!(
            table.rows.lock().unwrap().len(),
            1,
            "the row stays in Snowflake"
        );
    }

    #[tokio::test]
    async fn a_table_that_cannot_be_prepared_fails_the_invocation_but_not_case() {
        let file = "[[tables]]\nname = \"orders\"\nsource = { schema = \"S\", table = \"O\" }\n\
                    target = { schema = \"public\", table = \"orders\" }\nconsume = \"delete\"\n";
        let target = MemoryTarget::default();
        let (runs, _) = tables(&target, Some(file));
        let err = invoke(&runs, serde_json::json!({}), Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "RunFailed");
        assert!(
            err.error_message.contains("of table orders ended failed")
                && err.error_message.contains("column x is missing"),
            "{}",
            err.error_message
        );
        assert_eq!(
            target.current.lock().unwrap().len(),
            1,
            "case's row was written all the same"
        );
    }

    #[tokio::test]
    async fn with_no_table_the_invocation_fails_saying_so() {
        let runs = TableRuns::none();
        let err = invoke(&runs, serde_json::json!({}), Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "NoTable");
    }
}
