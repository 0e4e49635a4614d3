//! The replicator and the publisher binaries kept warm (one process, several
//! invocations through cargo lambda's runtime API, as Lambda keeps them)
//! against the Snowflake protocol fake: each survives a long statement, a
//! failed chunk, an expired session, a lost reply and a lost session; no
//! row is lost, and the next run moves rows in the session it kept. The
//! replicator does so for `case`, and for the ten-column mapped `orders`
//! (its own Snowflake session, pages read ahead while the previous page's
//! delete runs on that session).

use std::time::Duration;

use countries_ops::event_source::LocalEventSource;
use countries_shared::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
use serde_json::{json, Value};
use testkit::orders::{
    create_orders, draw_orders, load_orders, lost_orders, orders_written_twice, snowflake_orders,
    tables_file, Order, REFUSED_NOTE,
};
use testkit::runtime::{invoke, start, UnderRuntime};
use testkit::snowflake_fake::SnowflakeFake;
use testkit::{SplitMix, TestEnv};

const SCHEDULED_EVENT: &str = include_str!("../infra/local/events/scheduled-event.json");
const ROWS: usize = 9_000;
const READ: &str = "\"_RN\" FROM \"COUNTRIES_RUN_";
const SNAPSHOT: &str = "CREATE OR REPLACE TEMPORARY";

/// A private fake (pages of 1,000 arrive as 200 inline and chunks of 500),
/// a test slice on it with runs of 3,000 rows, and `ROWS` rows in `case`.
async fn world(prefix: &str) -> (SnowflakeFake, TestEnv) {
    let fake = SnowflakeFake::start(500, 200).await;
    let mut env = TestEnv::on_snowflake(prefix, Some(&fake.url)).await;
    for (k, v) in [
        ("MAX_ROWS_PER_RUN", "3000"),
        ("SNOWFLAKE_PAGE_ROWS", "1000"),
        ("BATCH_SIZE", "500"),
    ] {
        env.vars.insert(k.into(), v.into());
    }
    env.load_generated(ROWS).await;
    fake.reset().await;
    (fake, env)
}

/// One run's outcome, or the error type of an invocation that failed.
type Outcome = fn(&Value) -> String;

/// `case`'s run's outcome (the publisher's, the replicator's without
/// tables), or the error type of an invocation that failed.
fn outcome(payload: &Value) -> String {
    let run = if payload["runs"].is_array() {
        &payload["runs"][0]
    } else {
        payload
    };
    run["outcome"]
        .as_str()
        .or_else(|| payload["errorType"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// The mapped table's run's outcome, or the error type of an invocation
/// that failed (`case` is empty: its runs are idle).
fn table_outcome(payload: &Value) -> String {
    payload["tables"][0]["outcome"]
        .as_str()
        .or_else(|| payload["errorType"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// The protocol's awkward paths, one invocation each, then runs until the
/// table is empty: the first two succeed, the one that lost its session
/// ends partial, and the last finds the table empty.
async fn runs_through_the_protocol(
    fake: &SnowflakeFake,
    function: &UnderRuntime,
    outcome: Outcome,
) {
    let mut outcomes = Vec::new();
    // A snapshot that outlives Snowflake's hold, and a chunk that fails once.
    fake.faults(json!([
        {"route": "query", "sql_contains": SNAPSHOT, "action": "async", "polls": 2},
        {"route": "chunk", "action": "status", "status": 403},
    ]))
    .await;
    outcomes.push(outcome(&invoke(function, SCHEDULED_EVENT).await));
    // The session token expires mid-run (renewed, snapshot kept), and a
    // delete's reply is lost after Snowflake ran it (sent again).
    fake.faults(json!([
        {"route": "query", "sql_contains": READ, "action": "session_expired", "skip": 1},
        {"route": "query", "sql_contains": "DELETE FROM", "action": "status", "status": 503, "when": "after"},
    ]))
    .await;
    outcomes.push(outcome(&invoke(function, SCHEDULED_EVENT).await));
    // The master token is lost mid-run: a new session, the snapshot gone.
    fake.faults(json!([
        {"route": "query", "sql_contains": READ, "action": "master_expired", "skip": 1},
    ]))
    .await;
    outcomes.push(outcome(&invoke(function, SCHEDULED_EVENT).await));
    // The next runs start fresh in the new session and empty the table.
    for _ in 0..8 {
        let last = outcome(&invoke(function, SCHEDULED_EVENT).await);
        outcomes.push(last.clone());
        if last == "idle" {
            break;
        }
    }
    assert_eq!(
        &outcomes[..3],
        ["succeeded", "succeeded", "RunPartial"],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("idle"),
        "{outcomes:?}"
    );
}

/// The fake's log shows each awkward path met once; `logins` counts the
/// sessions the process opened (one per table's client, and one more for
/// the session that was lost).
async fn assert_the_protocol_was_met(fake: &SnowflakeFake, logins: usize) {
    let log = fake.log().await;
    let count = |route: &str| log.iter().filter(|r| r["route"] == route).count();
    assert!(count("result") >= 3, "the long snapshot was polled");
    assert_eq!(
        count("token"),
        2,
        "the expired session renewed, the lost one tried once before a new login"
    );
    assert_eq!(
        count("login"),
        logins,
        "the warm process kept its sessions across invocations, but for the lost one"
    );
    assert_eq!(
        log.iter()
            .filter(|r| r["route"] == "chunk" && r["status"] == 403)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_warm_replicator_survives_the_real_protocol_and_moves_every_row() {
    let (fake, env) = world("warm_rep").await;
    let replicator = start(&env, "replicator").await;
    runs_through_the_protocol(&fake, &replicator, outcome).await;
    // Before the test's own reads log in beside the function.
    assert_the_protocol_was_met(&fake, 2).await;
    // `case`'s deletes name its table as ever (unqualified: the session's
    // schema) and prune by the literal range of the ids read.
    let log = fake.log().await;
    let deletes: Vec<&str> = log
        .iter()
        .filter_map(|r| r["sql"].as_str())
        .filter(|sql| sql.starts_with("DELETE FROM"))
        .collect();
    assert!(!deletes.is_empty());
    assert!(
        deletes
            .iter()
            .all(|sql| sql.starts_with("DELETE FROM \"case\" AS c")
                && sql.contains("c.\"COUNTRY_ID\" BETWEEN ")),
        "{deletes:?}"
    );
    assert_eq!(
        env.postgres_rows().await.len(),
        ROWS,
        "every row in Postgres"
    );
    assert!(
        env.snowflake_rows().await.is_empty(),
        "and none left behind"
    );
}

#[tokio::test]
async fn a_warm_publisher_survives_the_real_protocol_and_publishes_every_row() {
    let (fake, mut env) = world("warm_pub").await;
    env.add_changes_queue(30, 5).await;
    let publisher = start(&env, "publisher").await;
    runs_through_the_protocol(&fake, &publisher, outcome).await;
    assert_the_protocol_was_met(&fake, 2).await;
    assert!(env.snowflake_rows().await.is_empty(), "every row published");
    // The writers drain what was published: every row reaches Postgres.
    let writer = writer::build(&env.writer_config()).await;
    LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["CHANGES_QUEUE_URL"].clone(),
        batch_size: 10,
    }
    .drain_parallel(&writer, 2, Duration::from_secs(60))
    .await
    .expect("the changes queue empties");
    assert_eq!(
        env.postgres_rows().await.len(),
        ROWS,
        "every row in Postgres"
    );
}

/// `orders` through the protocol's awkward paths in a warm replicator: its
/// pages of 200 rows arrive as 50 inline and chunks of 100, and the next
/// page is read while the previous one is deleted on the same session.
/// Every drawn row (invalid keys, notes Postgres refuses, identical copies,
/// later versions) ends in Postgres once, on the retry queue, or stays in
/// Snowflake, and the last run empties the table.
#[tokio::test]
async fn a_warm_replicator_moves_a_mapped_table_through_the_real_protocol() {
    const ORDERS: usize = 1_300;
    let fake = SnowflakeFake::start(100, 50).await;
    let mut env = TestEnv::on_snowflake("warm_map", Some(&fake.url)).await;
    create_orders(&env).await;
    let drawn = draw_orders(&mut SplitMix::new(0x5EED_0D0E), ORDERS);
    load_orders(&env, &drawn).await;
    let file = tables_file(&env);
    for (k, v) in [
        // Three runs of two pages each, before the held-back versions.
        ("MAX_ROWS_PER_RUN", "400"),
        // A page of ten columns holds a fifth of these rows: 200.
        ("SNOWFLAKE_PAGE_ROWS", "1000"),
        ("BATCH_SIZE", "100"),
        ("TABLES_FILE", file.to_str().expect("a path")),
    ] {
        env.vars.insert(k.into(), v.into());
    }
    fake.reset().await;
    let replicator = start(&env, "replicator").await;
    runs_through_the_protocol(&fake, &replicator, table_outcome).await;
    // `case`'s client and the table's, and the table's new session.
    assert_the_protocol_was_met(&fake, 3).await;

    let mut queued = Vec::new();
    for body in testkit::drain(&env.sqs, &env.vars["RETRY_QUEUE_URL"]).await {
        match parse_any_retry_message(Some(&body)) {
            Ok(AnyRetryMessage::Mapped(message)) => queued.push(
                Order::from_message(&message)
                    .unwrap_or_else(|| panic!("not an orders row: {message:?}")),
            ),
            other => panic!("not a message of orders ({other:?}): {body}"),
        }
    }
    assert!(
        queued.iter().any(|o| o.region.is_none())
            && queued
                .iter()
                .any(|o| o.note.as_deref() == Some(REFUSED_NOTE)),
        "the invalid and refused rows were queued: {}",
        queued.len()
    );
    assert_eq!(
        lost_orders(&env, &drawn, &queued).await,
        Vec::<String>::new()
    );
    assert_eq!(orders_written_twice(&env).await, Vec::<String>::new());
    assert!(snowflake_orders(&env).await.is_empty(), "none left behind");
}
