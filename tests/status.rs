//! `countries status` against the local stack, in each state an on-call
//! engineer meets: healthy, dead letters waiting, overdue, Postgres down.

use countries_shared::model::row::SourceRow;
use testkit::{closed_port, run_binary, TestEnv};

fn status(env: &TestEnv, extra: &[(&str, String)]) -> (i32, serde_json::Value) {
    let mut vars = env.vars.clone();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.clone());
    }
    let out = run_binary("countries", &["status", "--json"], &vars);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

async fn one_good_run(env: &TestEnv) {
    env.load(&[SourceRow::new(Some(1), Some("USA"))]).await;
    let out = run_binary("countries", &["replicate"], &env.vars);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn healthy_then_dead_letters_waiting() {
    let env = TestEnv::new("status_ok").await;
    one_good_run(&env).await;
    let (code, s) = status(&env, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["health"], "healthy");
    assert_eq!(s["snowflake_backlog"]["value"], 0);
    assert_eq!(s["runs"]["value"]["last"][0]["outcome"], "succeeded");
    assert_eq!(s["runs"]["value"]["last"][0]["rows_written"], 1);

    env.sqs
        .send_message()
        .queue_url(&env.vars["DEAD_LETTER_QUEUE_URL"])
        .message_body("a dead letter")
        .send()
        .await
        .unwrap();
    let (code, s) = status(&env, &[]);
    assert_eq!(code, 1, "{s:#}");
    assert_eq!(s["health"], "degraded");
    assert_eq!(s["dead_letter_queue"]["value"]["visible"], 1);
}

#[tokio::test]
async fn no_successful_run_in_the_window_is_down() {
    let env = TestEnv::new("status_overdue").await;
    env.postgres()
        .await
        .batch_execute(
            "INSERT INTO replication_run (run_id, started_at, finished_at, outcome) \
             VALUES (gen_random_uuid(), now() - interval '3 hours', now() - interval '3 hours', 'succeeded'), \
                    (gen_random_uuid(), now() - interval '2 hours', NULL, 'running')",
        )
        .await
        .unwrap();
    let (code, s) = status(&env, &[]);
    assert_eq!(code, 2, "{s:#}");
    assert_eq!(s["runs"]["value"]["overdue"], true);
    assert_eq!(
        s["runs"]["value"]["last"][0]["outcome"], "crashed",
        "a run left running is marked as crashed"
    );
}

#[tokio::test]
async fn postgres_down_is_reported_and_the_rest_still_shown() {
    let env = TestEnv::new("status_pg_down").await;
    one_good_run(&env).await;
    let (code, s) = status(
        &env,
        &[
            ("PGPORT", closed_port().to_string()),
            ("PGCONNECT_TIMEOUT", "2".to_string()),
        ],
    );
    assert_eq!(code, 2, "{s:#}");
    assert_eq!(s["runs"]["state"], "unreachable");
    assert_eq!(s["unresolved_failures"]["state"], "unreachable");
    assert_eq!(
        s["snowflake_backlog"]["state"], "ok",
        "Snowflake is still shown"
    );
    assert_eq!(
        s["retry_queue"]["state"], "ok",
        "the queues are still shown"
    );
    let reasons = s["reasons"].to_string();
    assert!(reasons.contains("Postgres cannot be reached"), "{reasons}");
}
