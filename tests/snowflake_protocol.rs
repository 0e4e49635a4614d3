//! The Snowflake source against the protocol fake (`infra/local/snowflake_fake.py`):
//! the paths real Snowflake takes and the emulator never does. Long
//! statements, chunked results in every encoding, failed and short chunks,
//! ended sessions, hung requests, throttling, session settings and tags,
//! the check at start, and a snapshot whose drop failed dropped before the
//! next run's (a mapped table's, as `case`'s). Each test has its own fake, so its faults and
//! its request log are its own.

use std::time::{Duration, Instant};

use countries_shared::deadline::Deadline;
use countries_shared::failure::{Classify, ErrorKind, SourceError};
use countries_shared::ports::{collect_rows, RowSource, Snapshot};
use countries_snowflake::client::build_api_with;
use countries_snowflake::SnowflakeSource;
use serde_json::{json, Value};
use snowflake_api::Timeouts;
use testkit::snowflake_fake::SnowflakeFake;
use testkit::TestEnv;
use uuid::Uuid;

/// The page statement's text, to aim a fault at reads.
const READ: &str = "\"_RN\" FROM \"COUNTRIES_RUN_";
const SNAPSHOT: &str = "CREATE OR REPLACE TEMPORARY";

/// A fake, a test slice on it, and `rows` rows (ids 1..=rows) in `case`.
async fn world(chunk_rows: usize, inline_rows: usize, rows: usize) -> (SnowflakeFake, TestEnv) {
    let fake = SnowflakeFake::start(chunk_rows, inline_rows).await;
    let env = TestEnv::on_snowflake("sfp", Some(&fake.url)).await;
    if rows > 0 {
        env.load_generated(rows).await;
    }
    fake.reset().await;
    (fake, env)
}

fn ids(rows: &[countries_shared::model::row::SourceRow]) -> Vec<i128> {
    rows.iter().filter_map(|r| r.country_id).collect()
}

async fn read_page(snapshot: &dyn Snapshot, n: u64) -> Result<Vec<i128>, SourceError> {
    let rows = collect_rows(snapshot.read(1..=n).await?)?;
    Ok(ids(&rows))
}

fn param<'a>(request: &'a Value, name: &str) -> &'a str {
    request["query"][name].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_long_statement_is_polled_to_its_result_under_one_request_id() {
    let (fake, env) = world(0, 0, 300).await;
    fake.faults(json!([
        {"route": "query", "sql_contains": SNAPSHOT, "action": "async", "polls": 3},
        {"route": "query", "sql_contains": READ, "action": "async", "polls": 1, "code": "333333"},
    ]))
    .await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 1_000, &Deadline::none())
        .await
        .expect("the snapshot, once it finished");
    let read = read_page(&*snapshot, 1_000).await.expect("the page");
    assert_eq!(read, (1..=300).collect::<Vec<i128>>());

    let log = fake.log().await;
    let snapshot_id = log
        .iter()
        .find(|r| r["route"] == "query" && r["sql"].as_str().unwrap_or("").contains(SNAPSHOT))
        .map(|r| param(r, "requestId").to_string())
        .expect("the snapshot statement was sent");
    let polls: Vec<&Value> = log.iter().filter(|r| r["route"] == "result").collect();
    assert_eq!(
        polls.len(),
        4 + 2,
        "3 + 1 polls of the snapshot, 1 + 1 of the read"
    );
    assert!(
        polls[..4]
            .iter()
            .all(|p| param(p, "requestId") == snapshot_id),
        "polls keep the statement's request id: {polls:?}"
    );
    assert!(polls.iter().all(|p| p["method"] == "GET"));
}

#[tokio::test]
async fn a_statement_still_running_at_the_deadline_is_aborted_and_transient() {
    let (fake, env) = world(0, 0, 10).await;
    fake.faults(json!([
        {"route": "query", "sql_contains": SNAPSHOT, "action": "async", "polls": -1},
    ]))
    .await;
    let source = env.source();
    let started = Instant::now();
    // 4 s left, a 2 s margin: the statement is given up 3 s from now.
    let deadline = Deadline::after(Duration::from_secs(4), Duration::from_secs(2));
    let err = source
        .snapshot(Uuid::new_v4(), 100, &deadline)
        .await
        .err()
        .expect("a statement that never ends");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("aborted"), "{err}");
    let log = fake.log().await;
    let sent = log
        .iter()
        .find(|r| r["route"] == "query")
        .expect("the statement");
    let aborts: Vec<&Value> = log.iter().filter(|r| r["route"] == "abort").collect();
    assert_eq!(aborts.len(), 1, "{log:?}");
    assert_eq!(
        aborts[0]["body"]["requestId"].as_str(),
        Some(param(sent, "requestId")),
        "the abort names the statement's request id"
    );
}

#[tokio::test]
async fn chunked_pages_arrive_whole_and_in_order_in_every_encoding() {
    let (fake, env) = world(2_500, 1_000, 12_000).await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 20_000, &Deadline::none())
        .await
        .unwrap();
    let expected: Vec<i128> = (1..=12_000).collect();
    for gzip in ["header", "magic", "none"] {
        for keys in ["chunkHeaders", "qrmk"] {
            fake.settings(json!({"gzip": gzip, "keys": keys})).await;
            fake.reset().await;
            let read = read_page(&*snapshot, 20_000).await.unwrap();
            assert_eq!(read, expected, "gzip {gzip}, keys {keys}");
            let chunks = fake.requests("chunk").await;
            assert_eq!(
                chunks.len(),
                5,
                "11,000 rows past the inline 1,000 in 2,500s"
            );
            assert!(
                chunks
                    .iter()
                    .all(|c| c["status"] == 200 && !c["key_header"].is_null()),
                "every chunk fetched with its key: {chunks:?}"
            );
        }
    }
    // Every row in the chunks, none inline, and a result that says 0 returned.
    fake.faults(json!([
        {"route": "query", "sql_contains": READ, "action": "chunks", "returned_zero": true, "chunk_rows": 5_000},
    ]))
    .await;
    assert_eq!(read_page(&*snapshot, 20_000).await.unwrap(), expected);
}

#[tokio::test]
async fn a_failed_or_slow_chunk_is_retried_and_a_short_one_is_refused() {
    let (fake, env) = world(1_000, 500, 4_000).await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 10_000, &Deadline::none())
        .await
        .unwrap();
    fake.faults(json!([
        {"route": "chunk", "action": "status", "status": 403, "skip": 1},
        {"route": "chunk", "action": "slow", "ms": 300},
    ]))
    .await;
    let read = read_page(&*snapshot, 10_000).await.expect("the page");
    assert_eq!(read, (1..=4_000).collect::<Vec<i128>>());
    let chunks = fake.requests("chunk").await;
    assert_eq!(
        chunks.len(),
        4 + 1,
        "four chunks, one of them twice: {chunks:?}"
    );
    assert_eq!(chunks.iter().filter(|c| c["status"] == 403).count(), 1);

    fake.faults(json!([
        {"route": "query", "sql_contains": READ, "action": "chunks", "drop_rows": 7},
    ]))
    .await;
    let err = read_page(&*snapshot, 10_000)
        .await
        .expect_err("a chunk with fewer rows than it says");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("rowCount"), "{err}");
}

#[tokio::test]
async fn an_expired_session_is_renewed_and_keeps_the_snapshot() {
    let (fake, env) = world(0, 0, 50).await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 100, &Deadline::none())
        .await
        .unwrap();
    fake.reset().await;
    fake.faults(json!([
        {"route": "query", "sql_contains": READ, "action": "session_expired"},
    ]))
    .await;
    let read = read_page(&*snapshot, 100)
        .await
        .expect("read after renewal");
    assert_eq!(read.len(), 50);
    assert_eq!(fake.requests("token").await.len(), 1, "renewed once");
    assert!(fake.requests("login").await.is_empty(), "no new login");
}

#[tokio::test]
async fn a_lost_master_token_starts_a_new_session_and_the_run_starts_fresh() {
    let (fake, env) = world(0, 0, 50).await;
    let source = env.source();
    for code in ["390114", "390113", "390115"] {
        let snapshot = source
            .snapshot(Uuid::new_v4(), 100, &Deadline::none())
            .await
            .unwrap();
        fake.faults(json!([
            {"route": "query", "sql_contains": READ, "action": "master_expired", "code": code},
        ]))
        .await;
        let err = read_page(&*snapshot, 100)
            .await
            .expect_err("the snapshot went with its session");
        assert!(
            matches!(err, SourceError::SnapshotLost { .. }),
            "{code}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Transient);
        // Nothing to drop: it went with the session.
        snapshot
            .drop_snapshot()
            .await
            .expect("a lost snapshot drops as done");
        // The next run: a new snapshot in the new session reads everything.
        let fresh = source
            .snapshot(Uuid::new_v4(), 100, &Deadline::none())
            .await
            .expect("a new snapshot");
        assert_eq!(read_page(&*fresh, 100).await.unwrap().len(), 50, "{code}");
    }
    assert_eq!(
        fake.requests("login").await.len(),
        4,
        "the first login and one per lost session"
    );
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_sent_again_as_a_retry() {
    let (fake, env) = world(0, 0, 5).await;
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(1),
        attempts: 3,
        backoff: Duration::from_millis(100),
    };
    let config = env.config().snowflake;
    let source = SnowflakeSource::with_api(
        build_api_with(&config, "test", timeouts).unwrap(),
        &config,
        "test",
    )
    .unwrap();
    source.check(&Deadline::none()).await.unwrap();
    fake.reset().await;
    fake.faults(json!([
        {"route": "query", "sql_contains": "COUNT(*)", "action": "hang", "seconds": 4},
    ]))
    .await;
    assert_eq!(source.count_rows(None, &Deadline::none()).await.unwrap(), 5);
    let sent = fake.requests("query").await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(param(&sent[0], "requestId"), param(&sent[1], "requestId"));
    assert_ne!(
        param(&sent[0], "request_guid"),
        param(&sent[1], "request_guid")
    );
    assert_eq!(param(&sent[1], "retryCount"), "1");
    assert_eq!(param(&sent[1], "retryReason"), "0", "a timeout");
    assert!(!param(&sent[1], "clientStartTime").is_empty());
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_with_the_drivers_protocol() {
    let (fake, env) = world(0, 0, 5).await;
    let source = env.source();
    source.check(&Deadline::none()).await.unwrap();
    fake.reset().await;
    fake.faults(json!([
        {"route": "query", "action": "status", "status": 429, "retry_after": 1},
        {"route": "query", "action": "status", "status": 503, "when": "after"},
    ]))
    .await;
    let started = Instant::now();
    assert_eq!(source.count_rows(None, &Deadline::none()).await.unwrap(), 5);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let sent = fake.requests("query").await;
    let reasons: Vec<&str> = sent.iter().map(|r| param(r, "retryReason")).collect();
    assert_eq!(reasons, vec!["", "429", "503"], "{sent:?}");
}

#[tokio::test]
async fn every_login_sets_the_session_and_every_statement_is_tagged() {
    let (fake, env) = world(0, 0, 5).await;
    let source = env.source();
    let run = Uuid::new_v4();
    source
        .count_rows(Some(run), &Deadline::none())
        .await
        .unwrap();
    let login = fake.requests("login").await;
    let params = &login[0]["body"]["data"]["SESSION_PARAMETERS"];
    assert_eq!(
        params["QUOTED_IDENTIFIERS_IGNORE_CASE"],
        json!(false),
        "{params}"
    );
    assert_eq!(params["AUTOCOMMIT"], json!(true));
    // 90 % of the function's timeout (FUNCTION_TIMEOUT_SECONDS, 300 by default).
    assert_eq!(params["STATEMENT_TIMEOUT_IN_SECONDS"], json!(270));
    assert_eq!(params["LOCK_TIMEOUT"], json!(270));
    assert_eq!(params["QUERY_TAG"], json!("countries/test"));
    let count = fake
        .requests("query")
        .await
        .into_iter()
        .find(|r| r["sql"].as_str().unwrap_or("").contains("COUNT(*)"))
        .expect("the count");
    assert_eq!(
        count["body"]["parameters"]["QUERY_TAG"],
        json!(format!("countries/test/run={run}"))
    );
    assert_eq!(count["body"]["asyncExec"], json!(false));
}

#[tokio::test]
async fn the_check_at_start_names_the_variable_to_change() {
    let env = TestEnv::new("sf_check").await;
    for (var, value) in [
        ("SNOWFLAKE_ID_COLUMN", "country_id"),
        ("SNOWFLAKE_COUNTRY_COLUMN", "Country"),
        ("SNOWFLAKE_TABLE", "countries"),
    ] {
        let config = env.config_with(&[(var, value)]).snowflake;
        let source = SnowflakeSource::connect(&config, "test").unwrap();
        let err = source
            .check(&Deadline::none())
            .await
            .expect_err("a name that is not there");
        assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
        assert!(err.to_string().contains(var), "{var}: {err}");
        // A run stops at the same check, before anything is read.
        let err = source
            .count_rows(None, &Deadline::none())
            .await
            .expect_err("the run checks first");
        assert!(err.to_string().contains(var), "{err}");
    }
    env.source()
        .check(&Deadline::none())
        .await
        .expect("the configured names exist");
}

/// `countries real-smoke` (what `make real-smoke` runs against a real
/// account), here against the stack's fake: every step passes and every
/// statement's query id is logged.
#[tokio::test]
async fn the_real_account_smoke_test_runs_its_steps_and_logs_query_ids() {
    let env = TestEnv::new("sf_smoke").await;
    let out = testkit::run_binary(
        "countries",
        &["real-smoke", "--table", "COUNTRIES_SMOKE"],
        &env.vars,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("real-smoke: passed"), "{stdout}");
    for step in ["snapshot", "read the page", "join delete", "count again"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    let logged = format!("{stdout}{stderr}");
    assert!(
        logged.matches("query_id").count() >= 6,
        "every statement's query id: {logged}"
    );
    assert!(
        env.admin()
            .execute("SELECT COUNT(*) FROM \"COUNTRIES_SMOKE\"")
            .await
            .is_err(),
        "the scratch table is dropped"
    );
}

#[tokio::test]
async fn a_snapshot_whose_drop_failed_is_dropped_before_the_next_one() {
    use countries_shared::ports::TableSource as _;
    use countries_snowflake::discovery::TableName;
    use countries_snowflake::mapped::sql::MappedTable;
    let (fake, env) = world(0, 0, 5).await;
    let config = env.config().snowflake;
    let columns = [config.id_column.as_str(), config.country_column.as_str()].map(String::from);
    let table = MappedTable::new(
        &TableName {
            database: None,
            schema: Some(&config.schema),
            table: config.table.as_str(),
        },
        &columns[..1],
        &columns,
    );
    let source = env.source();
    let mapped = source.mapped(table);
    let deadline = Deadline::none();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let snapshot = mapped
        .snapshot(first, 100, &deadline)
        .await
        .expect("a snapshot");
    fake.faults(json!([
        {"route": "query", "sql_contains": "DROP TABLE", "action": "status", "status": 400},
    ]))
    .await;
    snapshot
        .drop_snapshot()
        .await
        .expect_err("the drop is refused");
    drop(snapshot);
    // The next run's snapshot drops the first one's before it is made.
    let next = mapped
        .snapshot(second, 100, &deadline)
        .await
        .expect("the next snapshot");
    next.drop_snapshot().await.expect("its drop");
    let name = |run: Uuid| format!("COUNTRIES_RUN_{}", run.simple()).to_ascii_uppercase();
    let statements: Vec<String> = fake
        .requests("query")
        .await
        .iter()
        .map(|r| r["sql"].as_str().unwrap_or_default().to_string())
        .filter(|sql| sql.contains("COUNTRIES_RUN_"))
        .collect();
    let is = |sql: &String, what: &str, run: Uuid| sql.contains(what) && sql.contains(&name(run));
    let made_second = statements
        .iter()
        .position(|sql| is(sql, "CREATE OR REPLACE", second))
        .expect("the second snapshot");
    // The refused drop (the fake logs it too), then the one before the
    // second snapshot.
    let drops_of_first = statements[..made_second]
        .iter()
        .filter(|sql| is(sql, "DROP TABLE", first))
        .count();
    assert_eq!(drops_of_first, 2, "{statements:#?}");
    assert!(
        statements[made_second..]
            .iter()
            .any(|sql| is(sql, "DROP TABLE", second)),
        "{statements:#?}"
    );
}
