//! A run over a mapped table against the real services, beside a run of
//! `case`: discovery of both sides, the plan, the snapshot with row hashes
//! (fakesnow), the COPY and staged upsert (PostgreSQL 15), failures as
//! version-2 messages on the retry queue (moto SQS), and the join delete.
//! Each table has its own lock and its own ledger rows; a bad row of one
//! never holds the other back; a second run writes what the first held
//! back, and a third finds the table empty.

use std::time::Duration;

use countries_postgres::catalog::target_columns;
use countries_postgres::mapped::{MappedTarget, PgTableSink};
use countries_postgres::run_guard::PostgresRunGuard;
use countries_shared::config::RunLimits;
use countries_shared::deadline::Deadline;
use countries_shared::ledger::RunOutcome;
use countries_shared::model::columns::{declared_columns, match_columns};
use countries_shared::model::ident::Identifier;
use countries_shared::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
use countries_shared::model::row::SourceRow;
use countries_shared::retry::Backoff;
use countries_shared::table_run::TableReplicator;
use countries_snowflake::discovery::TableName;
use countries_snowflake::mapped::sql::MappedTable;
use countries_sqs::retry_queue::SqsRetryQueue;
use testkit::{drain, TestEnv};
use uuid::Uuid;

const SNOWFLAKE_ORDERS: &str = "CREATE TABLE ORDERS (REGION VARCHAR, ORDER_NO NUMBER(18,0), \
    AMOUNT NUMBER(38,9), RATE FLOAT, NOTE VARCHAR, PAID BOOLEAN, SHIPPED_ON DATE, \
    PLACED_AT TIMESTAMP_NTZ, PAYLOAD VARIANT, SIGNATURE BINARY)";

const POSTGRES_ORDERS: &str = "CREATE TABLE orders (region text, order_no bigint, \
    amount numeric, rate double precision, note varchar(5), paid boolean, shipped_on date, \
    placed_at timestamp, payload jsonb, signature bytea, PRIMARY KEY (region, order_no))";

fn order(region: &str, no: &str, amount: &str, note: &str) -> String {
    format!(
        "SELECT {region}, {no}, {amount}, 1.5::FLOAT, {note}, TRUE, '2026-12-03'::DATE, \
         '2026-12-03 10:00:00.123456789'::TIMESTAMP_NTZ, PARSE_JSON('{{\"a\":[1,2]}}'), \
         TO_BINARY('00FF', 'HEX')"
    )
}

async fn orders_replicator(env: &TestEnv) -> TableReplicator {
    let config = env.config();
    let source = env.source();
    let described = source
        .describe(
            &TableName {
                database: None,
                schema: "PUBLIC",
                table: "ORDERS",
            },
            &Deadline::after(Duration::from_secs(30), Duration::ZERO),
        )
        .await
        .expect("the source's columns");
    let pairs: Vec<(String, String)> = described
        .into_iter()
        .map(|c| (c.name, c.declared))
        .collect();
    let pg = env.postgres().await;
    let target = target_columns(&pg, "public", "orders")
        .await
        .expect("the target's columns");
    let (source_columns, problems) = declared_columns("orders", &pairs, &target, None);
    assert!(problems.is_empty(), "{problems:?}");
    let plan = match_columns("orders", &source_columns, &target, None, &[]).expect("a plan");
    let columns: Vec<String> = plan.iter().map(|c| c.source.clone()).collect();
    let keys: Vec<String> = plan
        .iter()
        .filter(|c| c.key)
        .map(|c| c.source.clone())
        .collect();
    let key_positions = plan
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect();
    let table = MappedTable::new(
        &TableName {
            database: None,
            schema: "PUBLIC",
            table: "ORDERS",
        },
        &keys,
        &columns,
    );
    let ident = |s: &str| Identifier::parse(s).expect("a name");
    let sink = PgTableSink::new(
        config.postgres.clone(),
        MappedTarget::new(&ident("public"), &ident("orders"), &plan),
    );
    TableReplicator {
        name: "orders".into(),
        columns,
        key_positions,
        source: Box::new(source.mapped(table)),
        guard: Box::new(PostgresRunGuard::for_table(
            config.postgres.clone(),
            "orders",
        )),
        sink: Box::new(sink),
        queue: Box::new(SqsRetryQueue::new(
            env.sqs.clone(),
            env.vars["RETRY_QUEUE_URL"].clone(),
        )),
        limits: RunLimits {
            page_rows: 3,
            ..RunLimits::default()
        },
        backoff: Backoff::ZERO,
    }
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

    let orders = orders_replicator(&env).await;
    let case = replicator::build(&env.config())
        .await
        .expect("the case replicator");
    let no_deadline = Deadline::none();
    let (summary, case_summary) = tokio::join!(
        orders.run(Uuid::new_v4(), None, &no_deadline),
        case.run(Uuid::new_v4(), None, &no_deadline),
    );
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
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_enqueued
        ),
        (7, 3, 2),
        "{summary:?}"
    );
    assert_eq!((summary.rows_invalid, summary.rows_rejected), (1, 1));
    assert_eq!(summary.rows_deferred_duplicates, 2);

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
    assert_eq!(
        messages[0],
        ("invalid".into(), "key column REGION is NULL".into())
    );
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

    // The held-back version is the next run's; then the table is empty.
    let again = orders.run(Uuid::new_v4(), None, &Deadline::none()).await;
    // Read: the held-back version, and its identical copy when it is "a"
    // (a copy waits with its twin, and leaves with it by the join delete).
    let copies = usize::from(later == "a");
    assert_eq!(
        (again.rows_read, again.rows_written, again.rows_deleted),
        (1 + copies, 1, 1 + copies),
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
    let idle = orders.run(Uuid::new_v4(), None, &Deadline::none()).await;
    assert_eq!(idle.outcome, RunOutcome::Idle, "{idle:?}");
}
