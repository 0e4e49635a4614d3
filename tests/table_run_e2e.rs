//! The replicator's handler with a mapping file (`TABLES_FILE`) against the
//! real services: `case` and a ten-column mapped table run in the same
//! invocation, at once. The mapped table is prepared at its first run
//! (discovery of both sides, the plan) and kept by the warm process; its
//! snapshot with row hashes (fakesnow), the COPY and staged upsert
//! (PostgreSQL 15), failures as version-2 messages on the retry queue (moto
//! SQS), and the join delete. Each table has its own lock and ledger rows; a
//! bad row of one never holds the other back; a second invocation writes
//! what the first held back, and a third finds both tables empty.

use countries_shared::lambda::replicator::{handle, Response};
use countries_shared::ledger::RunOutcome;
use countries_shared::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
use countries_shared::model::row::SourceRow;
use countries_shared::table_run::set::TableRuns;
use lambda_runtime::{Context, LambdaEvent};
use testkit::orders::{tables_file, POSTGRES_ORDERS, SNOWFLAKE_ORDERS};
use testkit::{drain, TestEnv};

fn order(region: &str, no: &str, amount: &str, note: &str) -> String {
    format!(
        "SELECT {region}, {no}, {amount}, 1.5::FLOAT, {note}, TRUE, '2026-12-03'::DATE, \
         '2026-12-03 10:00:00.123456789'::TIMESTAMP_NTZ, PARSE_JSON('{{\"a\":[1,2]}}'), \
         TO_BINARY('00FF', 'HEX')"
    )
}

async fn invoke(tables: &TableRuns) -> Result<Response, String> {
    let event = LambdaEvent::new(serde_json::json!({"id": "evt"}), Context::default());
    handle(tables, None, event)
        .await
        .map_err(|e| format!("{}: {}", e.error_type, e.error_message))
}

#[tokio::test]
async fn a_mapped_table_and_case_replicate_side_by_side() {
    let env = TestEnv::new("table_run").await;
    let admin = env.admin();
    admin
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    let rows = [
        order("'eu'", "1", "10.5", "'a'"),
        order("'eu'", "1", "10.5", "'a'"), // an identical copy
        order("'eu'", "1", "11.0", "'b'"), // a second version: next run
        order("'eu'", "2", "123456789012345678901234567.123456789", "'c'"),
        order("'us'", "1", "1", "'too long'"), // varchar(5): refused
        order("NULL", "7", "1", "'no key'"),   // invalid
        order("'us'", "2", "2", "'d'"),
    ];
    admin
        .execute(&format!("INSERT INTO ORDERS {}", rows.join(" UNION ALL ")))
        .await
        .expect("the rows");
    env.postgres()
        .await
        .batch_execute(POSTGRES_ORDERS)
        .await
        .expect("the Postgres table");
    env.load(&[
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("invalid")),
    ])
    .await;

    // The function's own wiring, from its configuration: `case` from the
    // variables, `orders` from TABLES_FILE, prepared at its first run.
    let file = tables_file(&env);
    let config = env.config_with(&[
        ("TABLES_FILE", file.to_str().expect("a path")),
        // Three rows of ten columns a page: a mapped page holds as many
        // cells as a `case` page of 15 rows.
        ("SNOWFLAKE_PAGE_ROWS", "15"),
    ]);
    let tables = replicator::build(&config)
        .await
        .expect("the replicator's wiring");
    let response = invoke(&tables).await.expect("both runs succeed");
    let (case_summary, summary) = (response.case, response.tables[0].clone());
    assert_eq!(summary.table.as_deref(), Some("orders"));
    assert_eq!(summary.trigger_id.as_deref(), Some("evt"));
    assert_eq!(
        case_summary.outcome,
        RunOutcome::Succeeded,
        "{case_summary:?}"
    );
    assert_eq!(
        (case_summary.rows_written, case_summary.rows_enqueued),
        (1, 1)
    );
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.unaccounted(), 0);
    assert_eq!(summary.rows_enqueued, 2, "{summary:?}");
    assert_eq!((summary.rows_invalid, summary.rows_rejected), (1, 1));
    // count, snapshot, three pages read and their deletes, drop: a handful
    // whatever the rows.
    assert!(
        (6..=12).contains(&summary.snowflake_statements),
        "{summary:?}"
    );

    let pg = env.postgres().await;
    let written: Vec<(String, i64, String, String, String)> = pg
        .query(
            "SELECT region, order_no, amount::text, note, \
             format('%s|%s|%s|%s|%s', rate, paid, shipped_on, placed_at, payload::text || encode(signature, 'hex')) \
             FROM orders ORDER BY region, order_no",
            &[],
        )
        .await
        .expect("the rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let row = |region: &str, no: i64, amount: &str, note: &str| {
        (
            region.to_string(),
            no,
            amount.to_string(),
            note.to_string(),
            "1.5|t|2026-12-03|2026-12-03 10:00:00.123456|{\"a\": [1, 2]}00ff".to_string(),
        )
    };
    // Which of the two versions of (eu, 1) goes first is the snapshot's
    // order (key, then row hash), as with `case`: Snowflake has no order of
    // arrival to go by. The other is the next run's.
    let first_version = written[0].3.clone();
    let (now, later) = if first_version == "a" {
        (row("eu", 1, "10.500000000", "a"), "b")
    } else {
        (row("eu", 1, "11.000000000", "b"), "a")
    };
    // Version "a" has an identical copy: it goes with "a", written and
    // deleted in the same run; the other version waits, counted as left.
    let copies = usize::from(later == "a");
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_deferred,
            summary.rows_deferred_duplicates
        ),
        (7, 4 - copies, 1 + copies, 1 + copies),
        "{summary:?}"
    );
    assert_eq!(
        written,
        [
            now,
            row("eu", 2, "123456789012345678901234567.123456789", "c"),
            row("us", 2, "2.000000000", "d"),
        ]
    );

    let mut messages: Vec<(String, String)> = Vec::new();
    for body in drain(&env.sqs, &env.vars["RETRY_QUEUE_URL"]).await {
        match parse_any_retry_message(Some(&body)).expect("a retry message") {
            AnyRetryMessage::Mapped(m) => {
                assert_eq!(m.table, "orders");
                assert_eq!(m.row.len(), 10, "every copied column");
                messages.push((m.error.class.as_str().to_string(), m.error.message));
            }
            AnyRetryMessage::Case(m) => assert_eq!(m.record.country.as_deref(), Some("invalid")),
        }
    }
    messages.sort();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], ("invalid".into(), "region is NULL".into()));
    assert_eq!(messages[1].0, "rejected");
    assert!(
        messages[1].1.contains("character varying(5)"),
        "{messages:?}"
    );

    let ledger: Vec<(String, String)> = pg
        .query(
            "SELECT table_name, outcome FROM replication_run ORDER BY table_name",
            &[],
        )
        .await
        .expect("the ledger")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        ledger,
        [
            ("case".to_string(), "succeeded".to_string()),
            ("orders".to_string(), "succeeded".to_string())
        ]
    );

    // The held-back version is the next invocation's (the table prepared
    // once, kept by the warm process); then both tables are empty.
    let again = invoke(&tables).await.expect("the second invocation").tables[0].clone();
    // Read: the held-back version, and its identical copy when it is "a"
    // (a copy waits with its twin, and goes with it).
    assert_eq!(
        (again.rows_read, again.rows_written, again.rows_deleted),
        (1 + copies, 1 + copies, 1 + copies),
        "{again:?}"
    );
    let note: String = pg
        .query_one(
            "SELECT note FROM orders WHERE region = 'eu' AND order_no = 1",
            &[],
        )
        .await
        .expect("the row")
        .get(0);
    assert_eq!(note, later, "the version held back");
    let idle = invoke(&tables).await.expect("the third invocation");
    assert_eq!(idle.tables[0].outcome, RunOutcome::Idle, "{idle:?}");
    assert_eq!(idle.case.outcome, RunOutcome::Idle);
}

#[tokio::test]
async fn a_refused_row_is_written_by_the_retrier_once_the_cause_is_fixed() {
    let env = TestEnv::new("table_retry").await;
    env.admin()
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    env.admin()
        .execute(&format!(
            "INSERT INTO ORDERS {} UNION ALL {}",
            order("'eu'", "1", "1", "'ok'"),
            order("'eu'", "2", "2", "'too long'")
        ))
        .await
        .expect("the rows");
    let pg = env.postgres().await;
    pg.batch_execute(POSTGRES_ORDERS)
        .await
        .expect("the Postgres table");
    let file = tables_file(&env);
    let file = file.to_str().expect("a path");
    let config = env.config_with(&[("TABLES_FILE", file)]);
    let tables = replicator::build(&config)
        .await
        .expect("the replicator's wiring");
    let response = invoke(&tables).await.expect("the run");
    assert_eq!(
        (
            response.tables[0].rows_written,
            response.tables[0].rows_enqueued
        ),
        (1, 1)
    );

    // The cause is fixed (a wider column); the retrier, reading the same
    // mapping file, writes the row from its version-2 message.
    pg.batch_execute("ALTER TABLE orders ALTER COLUMN note TYPE varchar(20)")
        .await
        .expect("the fix");
    let mut vars = env.vars.clone();
    vars.insert("TABLES_FILE".into(), file.to_string());
    let retrier = retrier::build(
        &countries_shared::config::RetrierConfig::from_vars(
            countries_shared::config::Env::from_map(vars),
        )
        .expect("the retrier's config"),
    )
    .await;
    let source = countries_ops::event_source::LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["RETRY_QUEUE_URL"].clone(),
        batch_size: 10,
    };
    let drive = source
        .drain(&retrier, std::time::Duration::from_secs(60))
        .await
        .expect("the retry queue empties");
    assert_eq!((drive.succeeded, drive.failed), (1, 0), "{drive:?}");
    let notes: Vec<String> = pg
        .query("SELECT note FROM orders ORDER BY order_no", &[])
        .await
        .expect("the rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(notes, ["ok", "too long"]);
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 0);
}

#[tokio::test]
async fn a_warm_process_plans_a_table_again_when_its_target_changed() {
    let env = TestEnv::new("table_drift").await;
    let admin = env.admin();
    admin
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    admin
        .execute(&format!(
            "INSERT INTO ORDERS {}",
            order("'eu'", "1", "1", "'a'")
        ))
        .await
        .expect("a row");
    let pg = env.postgres().await;
    pg.batch_execute(POSTGRES_ORDERS)
        .await
        .expect("the Postgres table");
    let file = tables_file(&env);
    let config = env.config_with(&[("TABLES_FILE", file.to_str().expect("a path"))]);
    let tables = replicator::build(&config)
        .await
        .expect("the replicator's wiring");
    let first = invoke(&tables).await.expect("the first run");
    assert_eq!(first.tables[0].rows_written, 1, "{first:?}");

    // A column added on both sides while the process is warm: the next run
    // sees the target changed, plans the table again and copies it.
    admin
        .execute("ALTER TABLE ORDERS ADD COLUMN EXTRA INTEGER")
        .await
        .expect("the Snowflake column");
    pg.batch_execute("ALTER TABLE orders ADD COLUMN extra integer")
        .await
        .expect("the Postgres column");
    admin
        .execute(
            "INSERT INTO ORDERS SELECT 'eu', 2, 2, 1.5::FLOAT, 'b', TRUE, '2026-12-03'::DATE, \
             '2026-12-03 10:00:00'::TIMESTAMP_NTZ, PARSE_JSON('{}'), TO_BINARY('00', 'HEX'), 42",
        )
        .await
        .expect("a row with the new column");
    let second = invoke(&tables).await.expect("the second run");
    assert_eq!(
        (second.tables[0].outcome, second.tables[0].rows_written),
        (RunOutcome::Succeeded, 1),
        "{second:?}"
    );
    let extra: Option<i32> = pg
        .query_one("SELECT extra FROM orders WHERE order_no = 2", &[])
        .await
        .expect("the row")
        .get(0);
    assert_eq!(
        extra,
        Some(42),
        "the new column is copied without a cold start"
    );

    // A column of the plan dropped from the target (the source keeps it):
    // planned again without it, where the old plan's COPY would name a
    // column that is gone and fail the run.
    pg.batch_execute("ALTER TABLE orders DROP COLUMN note")
        .await
        .expect("the drop");
    admin
        .execute(&format!(
            "INSERT INTO ORDERS {}, 7",
            order("'eu'", "3", "3", "'c'")
        ))
        .await
        .expect("a third row");
    let third = invoke(&tables).await.expect("the third run");
    assert_eq!(
        (third.tables[0].outcome, third.tables[0].rows_written),
        (RunOutcome::Succeeded, 1),
        "{third:?}"
    );
    let written: i64 = pg
        .query_one("SELECT count(*) FROM orders WHERE extra = 7", &[])
        .await
        .expect("the count")
        .get(0);
    assert_eq!(written, 1);
    assert!(testkit::orders::snowflake_orders(&env).await.is_empty());
}
