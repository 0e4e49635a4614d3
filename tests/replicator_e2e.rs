//! The whole replicator function's run of `case` (the general table run,
//! `case` as its built-in mapping) against the real services: Postgres 15,
//! the Snowflake emulator and moto's SQS. Each test checks the invariant:
//! every row read from Snowflake is in Postgres, in the retry queue, or
//! still in Snowflake.

use std::sync::Arc;

use countries_shared::config::ReplicatorConfig;
use countries_shared::lambda::replicator::handle;
use countries_shared::ledger::RunOutcome;
use countries_shared::ledger::RunSummary;
use countries_shared::model::message::FailureClass;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::validate;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::{NoHook, Step, StepHook};
use countries_shared::table_run::set::TableRuns;
use lambda_runtime::{Context, LambdaEvent};
use testkit::{run_binary, PgCluster, TestEnv};

const SCHEDULED_EVENT: &str = include_str!("../infra/local/events/scheduled-event.json");

/// The function's own wiring: `case` (and the tables of `TABLES_FILE`),
/// each prepared at its first run and kept by the next invocations.
async fn replicator(config: &ReplicatorConfig) -> TableRuns {
    replicator::build(config)
        .await
        .expect("the replicator's wiring")
}

async fn invoke(runs: &TableRuns) -> Result<RunSummary, String> {
    let payload: serde_json::Value = serde_json::from_str(SCHEDULED_EVENT).unwrap();
    handle(runs, None, LambdaEvent::new(payload, Context::default()))
        .await
        .map(|response| response.case)
        .map_err(|e| format!("{}: {}", e.error_type, e.error_message))
}

fn rows(spec: &[(Option<i128>, Option<&str>)]) -> Vec<SourceRow> {
    spec.iter().map(|(id, c)| SourceRow::new(*id, *c)).collect()
}

/// Every original row is in Postgres (validated form, or replaced by a later
/// version of its id that is also in `original`), queued, or in Snowflake.
async fn assert_nothing_lost(env: &TestEnv, original: &[SourceRow], queued: &[RetryMessage]) {
    let lost = testkit::lost_rows(env, original, queued).await;
    assert!(lost.is_empty(), "lost {lost:?}");
}

fn sample() -> Vec<SourceRow> {
    rows(&[
        (Some(1), Some("USA")),
        (Some(2), Some("can")),
        (Some(3), Some(" MEX ")),
        (Some(4), Some("BRA")),
        (Some(5), Some("US")),
        (Some(6), None),
        (None, Some("IND")),
        (Some(7), Some("O'B")),
        (Some(8), Some("D3U")),
        (Some(9), Some("KOR")),
        (Some(9), Some("PRK")),
    ])
}

#[tokio::test]
async fn a_run_moves_valid_rows_queues_invalid_ones_and_a_replay_changes_nothing() {
    let env = TestEnv::new("e2e_run").await;
    let input = sample();
    env.load(&input).await;
    let config = env.config();
    let replicator = replicator(&config).await;

    let first = invoke(&replicator).await.expect("first run");
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:?}");
    assert_eq!(first.rows_read, 11);
    assert_eq!(
        (first.rows_written, first.rows_invalid, first.rows_enqueued),
        (5, 5, 5)
    );
    assert_eq!(
        (first.rows_deferred, first.rows_deferred_duplicates),
        (1, 1)
    );
    assert_eq!(first.rows_deleted, 10);
    // Count, snapshot, one (short) page, its delete and the delete of the
    // queued row without an id, drop: no statement per row.
    assert_eq!(first.snowflake_statements, 6, "{first:?}");
    assert_eq!(
        first.trigger_id.as_deref(),
        Some("5a3f0b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
    );

    let queued = env.drain_retry_queue().await;
    assert_eq!(queued.len(), 5);
    assert!(queued
        .iter()
        .all(|m| m.error.class == FailureClass::Invalid && m.attempt == 1));
    assert!(queued.iter().all(|m| m.run_id == first.run_id));
    // One version of id 9 is written; the other (which goes first is the
    // snapshot's order: the key, then the row hash) waits in Snowflake.
    let written = env.postgres_rows().await;
    let (first_9, other_9) = if written.contains(&(9, "KOR".into())) {
        ("KOR", "PRK")
    } else {
        ("PRK", "KOR")
    };
    assert_eq!(
        written,
        vec![
            (1, "USA".into()),
            (2, "CAN".into()),
            (3, "MEX".into()),
            (4, "BRA".into()),
            (9, first_9.into())
        ]
    );
    assert_eq!(
        env.snowflake_rows().await,
        rows(&[(Some(9), Some(other_9))])
    );
    assert_nothing_lost(&env, &input, &queued).await;

    let second = invoke(&replicator).await.expect("second run");
    assert_eq!((second.rows_read, second.rows_changed), (1, 1));
    assert!(env.snowflake_rows().await.is_empty());
    assert!(env.postgres_rows().await.contains(&(9, other_9.into())));

    // The same rows arrive again: the upsert changes nothing.
    let valid_again = rows(&[
        (Some(1), Some("USA")),
        (Some(2), Some("can")),
        (Some(9), Some(other_9)),
    ]);
    env.load(&valid_again).await;
    let replay = invoke(&replicator).await.expect("replay");
    assert_eq!(replay.outcome, RunOutcome::Succeeded);
    assert_eq!(
        (replay.rows_written, replay.rows_changed),
        (3, 0),
        "{replay:?}"
    );
    assert!(env.snowflake_rows().await.is_empty());
    assert!(env.drain_retry_queue().await.is_empty());

    let ledger = testkit::ledger_outcomes(&env).await;
    assert_eq!(ledger, vec!["succeeded"; 3]);
}

#[tokio::test]
async fn rows_postgres_refuses_go_to_the_queue_with_their_sqlstate() {
    let env = TestEnv::new("e2e_check").await;
    env.postgres()
        .await
        .batch_execute(r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#)
        .await
        .unwrap();
    let input: Vec<SourceRow> = (0..200)
        .map(|i| SourceRow::new(Some(i), Some(if i % 50 == 7 { "ATL" } else { "NZL" })))
        .collect();
    env.load(&input).await;
    let config = env.config_with(&[("BATCH_SIZE", "64")]);
    let summary = invoke(&replicator(&config).await).await.expect("run");
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!((summary.rows_written, summary.rows_rejected), (196, 4));
    let queued = env.drain_retry_queue().await;
    assert_eq!(queued.len(), 4);
    for m in &queued {
        assert_eq!(m.error.class, FailureClass::Rejected);
        assert_eq!(m.error.sqlstate.as_deref(), Some("23514"));
        assert!(
            m.error.message.contains("no_atlantis"),
            "{}",
            m.error.message
        );
        assert_eq!(m.record.country.as_deref(), Some("ATL"));
    }
    assert!(env.snowflake_rows().await.is_empty());
    assert_nothing_lost(&env, &input, &queued).await;
}

#[tokio::test]
async fn an_empty_source_makes_an_idle_run_of_one_metadata_statement() {
    let env = TestEnv::new("e2e_idle").await;
    let config = env.config();
    let summary = invoke(&replicator(&config).await)
        .await
        .expect("an idle run is a successful invocation");
    assert_eq!(summary.outcome, RunOutcome::Idle, "{summary:?}");
    assert_eq!((summary.rows_read, summary.snowflake_statements), (0, 1));
    let ledger = env
        .postgres()
        .await
        .query_one(
            "SELECT outcome, snowflake_statements FROM replication_run WHERE run_id = $1",
            &[&summary.run_id],
        )
        .await
        .expect("the idle run is in the ledger");
    assert_eq!(ledger.get::<_, String>(0), "idle");
    assert_eq!(ledger.get::<_, i64>(1), 1);
}

/// One invocation in a process of its own, which `COUNTRIES_CRASH_AT` kills.
fn run_crashable(vars: &std::collections::HashMap<String, String>) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replicate-once"))
        .env_clear()
        .envs(vars)
        .output()
        .expect("running replicate-once")
}

/// Kills the real process at a step boundary, then runs again.
async fn crash_then_rerun(crash_at: &str) {
    let env = TestEnv::new(&format!("e2e_crash_{crash_at}")).await;
    let input = sample();
    env.load(&input).await;

    let mut vars = env.vars.clone();
    vars.insert("COUNTRIES_CRASH_AT".into(), crash_at.into());
    // Small pages, so that `mid_delete` falls between two range deletes.
    vars.insert("SNOWFLAKE_PAGE_ROWS".into(), "3".into());
    let crashed = run_crashable(&vars);
    assert!(
        !crashed.status.success(),
        "the process should have been killed"
    );
    assert!(
        String::from_utf8_lossy(&crashed.stderr).contains(&format!("crashing at {crash_at}")),
        "{}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    if crash_at == "mid_delete" {
        let left = env.snowflake_rows().await.len();
        assert!(
            left > 1 && left < input.len(),
            "crashed between deletes: {left} left"
        );
    }
    let mut queued = env.drain_retry_queue().await;
    assert_nothing_lost(&env, &input, &queued).await;

    let written_before_rerun = env.postgres_rows().await;
    let rerun = run_crashable(&env.vars);
    assert!(
        rerun.status.success(),
        "rerun after a crash at {crash_at}: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let summary: RunSummary = serde_json::from_slice(&rerun.stdout).expect("summary JSON");
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    queued.extend(env.drain_retry_queue().await);
    assert_nothing_lost(&env, &input, &queued).await;
    // Nothing was written twice: whatever the crashed run committed, the
    // rerun left unchanged; it changed only what was not there yet.
    let after = env.postgres_rows().await;
    let new_or_changed = after
        .iter()
        .filter(|row| !written_before_rerun.contains(row))
        .count();
    assert_eq!(
        summary.rows_changed, new_or_changed,
        "{crash_at}: {summary:?}"
    );
    // Only the held-back duplicate version may remain for the next run.
    let left = env.snowflake_rows().await;
    assert!(left.len() <= 1, "{left:?}");
    let outcomes = testkit::ledger_outcomes(&env).await;
    assert_eq!(
        outcomes,
        vec!["running", "succeeded"],
        "the crashed run stays visible"
    );
}

#[tokio::test]
async fn a_crash_between_write_and_delete_loses_nothing_and_writes_nothing_twice() {
    crash_then_rerun("after_write").await;
}

#[tokio::test]
async fn a_crash_at_every_other_step_boundary_loses_nothing() {
    for point in [
        "after_snapshot",
        "after_read",
        "mid_write",
        "after_enqueue",
        "mid_delete",
        "before_drop",
        "before_ledger",
    ] {
        crash_then_rerun(point).await;
    }
}

/// Stops the private Postgres cluster right after the snapshot, as an
/// outage in the middle of a run would.
struct OutageAfterSnapshot(Arc<PgCluster>);

impl StepHook for OutageAfterSnapshot {
    fn reached(&self, step: Step) {
        if step == Step::AfterSnapshot {
            self.0.stop_server();
        }
    }
}

#[tokio::test]
async fn a_postgres_outage_mid_run_defers_every_row_and_deletes_nothing() {
    let env = TestEnv::new("e2e_outage").await;
    let cluster = Arc::new(PgCluster::start(None));
    cluster.create_app_database("countries").await;
    let input = sample();
    env.load(&input).await;
    let config = env.config_with(&[
        ("PGPORT", &cluster.port.to_string()),
        ("PGDATABASE", "countries"),
        ("PGCONNECT_TIMEOUT", "2"),
    ]);
    let mut runs = replicator(&config).await;
    runs.steps = Box::new(OutageAfterSnapshot(cluster.clone()));
    let err = invoke(&runs).await.expect_err("the invocation must fail");
    assert!(
        err.contains("partial") && err.contains("6 deferred"),
        "{err}"
    );
    // Invalid rows do not need Postgres: they were queued and deleted. Every
    // valid row stays in Snowflake.
    let queued = env.drain_retry_queue().await;
    assert_eq!(queued.len(), 5);
    let valid_left = env.snowflake_rows().await;
    assert_eq!(valid_left.len(), 6, "{valid_left:?}");
    assert!(valid_left.iter().all(|r| validate(r).is_ok()));
    assert_nothing_lost(&env, &input, &queued).await;

    // Postgres is back: the next run (of the same warm process) moves
    // everything.
    cluster.start_server();
    runs.steps = Box::new(NoHook);
    let summary = invoke(&runs).await.expect("run after the outage");
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(
        env.snowflake_rows().await.len(),
        1,
        "only the held-back duplicate"
    );
}

#[tokio::test]
async fn an_unreachable_snowflake_fails_the_run_before_anything_moves() {
    let env = TestEnv::new("e2e_sf_down").await;
    env.load(&sample()).await;
    let port = testkit::closed_port();
    let config = env.config_with(&[(
        "SNOWFLAKE_ENDPOINT_URL",
        &format!("http://127.0.0.1:{port}"),
    )]);
    // Unreachable at start only postpones the check to the first run (an
    // init failing on it would crash-loop), which fails.
    let err = invoke(&replicator(&config).await)
        .await
        .expect_err("must fail");
    assert!(err.contains("failed") && err.contains("Snowflake"), "{err}");
    assert!(env.postgres_rows().await.is_empty());
    assert_eq!(env.snowflake_rows().await.len(), sample().len());
}

#[tokio::test]
async fn two_runs_at_once_never_process_the_same_rows() {
    let env = TestEnv::new("e2e_overlap").await;
    let input: Vec<SourceRow> = (0..3000)
        .map(|i| SourceRow::new(Some(i), Some("CHL")))
        .collect();
    env.load(&input).await;
    let config = env.config_with(&[("BATCH_SIZE", "100")]);
    let (a, b) = (replicator(&config).await, replicator(&config).await);
    let (ra, rb) = tokio::join!(invoke(&a), invoke(&b));
    let (ra, rb) = (ra.expect("run a"), rb.expect("run b"));
    let outcomes = [ra.outcome, rb.outcome];
    assert!(outcomes.contains(&RunOutcome::Succeeded), "{outcomes:?}");
    // Either one ran while the other was skipped, or they ran one after the
    // other; never both over the same rows.
    assert_eq!(ra.rows_read + rb.rows_read, 3000, "{ra:?} {rb:?}");
    assert!(env.snowflake_rows().await.is_empty());
    assert_eq!(env.postgres_rows().await.len(), 3000);
}

#[tokio::test]
async fn a_run_that_finds_another_in_progress_exits_at_once() {
    let env = TestEnv::new("e2e_locked").await;
    env.load(&sample()).await;
    let holder = env.postgres().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtext('countries-replicator:public.case'))",
            &[],
        )
        .await
        .unwrap();
    let summary = invoke(&replicator(&env.config()).await)
        .await
        .expect("skipped is not an error");
    assert_eq!(summary.outcome, RunOutcome::Skipped);
    assert_eq!(summary.rows_read, 0);
    assert_eq!(env.snowflake_rows().await.len(), sample().len());
}

#[tokio::test]
async fn bad_configuration_stops_the_function_and_names_every_variable() {
    let env = TestEnv::new("e2e_config").await;
    let mut vars = env.vars.clone();
    vars.remove("PGHOST");
    vars.insert("BATCH_SIZE".into(), "lots".into());
    vars.insert("PGSSLMODE".into(), "sometimes".into());
    vars.insert("SNOWFLAKE_PASSWORD".into(), "pw-must-not-leak".into());
    for binary in ["replicator", "countries"] {
        let args: &[&str] = if binary == "countries" {
            &["replicate"]
        } else {
            &[]
        };
        let out = run_binary(binary, args, &vars);
        assert!(!out.status.success(), "{binary} started with a bad config");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for var in ["PGHOST", "BATCH_SIZE", "PGSSLMODE"] {
            assert!(
                stderr.contains(var),
                "{binary}: {var} not named in: {stderr}"
            );
        }
        assert!(
            !stderr.contains("pw-must-not-leak"),
            "{binary} leaked a secret: {stderr}"
        );
    }
}
