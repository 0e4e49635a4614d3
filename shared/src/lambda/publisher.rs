//! The `publisher` function (stream mode): on each scheduled event, runs
//! `case`'s own run (`crate::case_run`) with the changes queue as its
//! sink, looping for
//! `PUBLISH_LOOP_SECONDS`.

use crate::deadline::Deadline;
use crate::lambda::replicator::{emit_run_metrics, invocation_result};
use crate::ledger::RunSummary;
use crate::publisher::Publisher;
use crate::telemetry::metric;

/// What one invocation did: its runs, in order.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PublishOutcome {
    pub runs: Vec<RunSummary>,
}

/// Runs for the configured time; the invocation fails when its last run
/// did not succeed (rows stay in Snowflake for the next one).
pub async fn handle(
    publisher: &Publisher,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<PublishOutcome, lambda_runtime::Diagnostic> {
    let trigger_id = super::trigger_id(&event);
    let deadline = Deadline::from_epoch_ms(event.context.deadline, publisher.runs.deadline_margin);
    let mut runs = publisher.publish(trigger_id, &deadline).await;
    for summary in &runs {
        emit_run_metrics(metric::PUBLISHER, summary);
    }
    // The last run decides the invocation (a run that does not succeed
    // ends the loop, so it is the last).
    if let Some(last) = runs.pop() {
        runs.push(invocation_result(last)?);
    }
    Ok(PublishOutcome { runs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case_run::CaseRun;
    use crate::config::RunLimits;
    use crate::ledger::RunOutcome;
    use crate::model::row::SourceRow;
    use crate::ports::NoHook;
    use crate::retry::Backoff;
    use crate::testing::{MemoryQueue, MemorySource, MemoryStore};
    use std::time::Duration;

    /// The handler's loop, on a sink that stands for the changes queue (the
    /// changes-queue sink itself is tested with its adapter,
    /// `countries_sqs::changes_queue::sink`).
    fn publisher(source: &MemorySource, sink: &MemoryStore, loop_for: Duration) -> Publisher {
        Publisher {
            runs: CaseRun {
                source: Box::new(source.clone()),
                guard: Box::new(MemoryStore::default()),
                sinks: Box::new(sink.clone()),
                queue: Box::new(MemoryQueue::default()),
                limits: RunLimits::default(),
                backoff: Backoff::ZERO,
                steps: Box::new(NoHook),
                deadline_margin: None,
            },
            loop_for,
            idle_wait: Duration::from_millis(20),
        }
    }

    fn event() -> lambda_runtime::LambdaEvent<serde_json::Value> {
        lambda_runtime::LambdaEvent::new(
            serde_json::json!({"id": "evt-1"}),
            lambda_runtime::Context::default(),
        )
    }

    #[tokio::test]
    async fn one_run_per_invocation_by_default_and_an_empty_table_is_one_idle_run() {
        let source = MemorySource::with_rows(vec![SourceRow::new(Some(1), Some("USA"))]);
        let sink = MemoryStore::default();
        let p = publisher(&source, &sink, Duration::ZERO);
        let outcome = handle(&p, event()).await.unwrap();
        assert_eq!(outcome.runs.len(), 1);
        assert_eq!(outcome.runs[0].rows_written, 1);
        assert_eq!(outcome.runs[0].trigger_id.as_deref(), Some("evt-1"));
        let outcome = handle(&p, event()).await.unwrap();
        assert_eq!(outcome.runs.len(), 1);
        assert_eq!(outcome.runs[0].outcome, RunOutcome::Idle);
    }

    // On a paused clock: the row arrives 150 ms into a 400 ms loop on
    // virtual time, whatever the machine is doing.
    #[tokio::test(start_paused = true)]
    async fn looping_picks_up_rows_that_arrive_and_idle_looks_cost_no_run() {
        let source = MemorySource::with_rows(vec![SourceRow::new(Some(1), Some("USA"))]);
        let sink = MemoryStore::default();
        let p = publisher(&source, &sink, Duration::from_millis(400));
        let late = source.clone();
        let arrive = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            late.state().rows.push(SourceRow::new(Some(2), Some("FRA")));
        });
        let outcome = handle(&p, event()).await.unwrap();
        arrive.await.unwrap();
        let written: Vec<usize> = outcome.runs.iter().map(|r| r.rows_written).collect();
        assert_eq!(written, vec![1, 1], "two runs with rows, no idle ones");
        assert!(source.state().rows.is_empty());
        assert_eq!(sink.state().table.len(), 2);
    }

    #[tokio::test]
    async fn a_run_that_leaves_rows_behind_ends_the_loop_and_fails_the_invocation() {
        let source = MemorySource::with_rows(vec![SourceRow::new(Some(1), Some("USA"))]);
        let sink = MemoryStore::default();
        sink.state().transient_failures_left = usize::MAX;
        let p = publisher(&source, &sink, Duration::from_secs(30));
        let started = std::time::Instant::now();
        let err = handle(&p, event()).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the loop stopped"
        );
        assert_eq!(err.error_type, "RunPartial");
        assert!(
            err.error_message
                .contains("ended partial: 1 read, 0 written"),
            "{}",
            err.error_message
        );
        assert_eq!(source.state().rows.len(), 1);
    }
}
