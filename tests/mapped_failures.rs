//! Failed rows of a mapped table (version-2 retry messages) through the
//! dead-letter path against the real services: the dlq-reporter stores them
//! in the failure report with their table and their rows as exact tagged
//! JSON (38 digits, a NUL, a value Snowflake's decoder refused), mails them
//! in the same digest as a `case` row, `countries failures` lists them, and
//! `countries replay` writes the readable one once the cause is fixed and
//! the mapping file is given; without the file, or for the unreadable
//! value, the row stays in the report, saying why.

use countries_shared::deadline::Deadline;
use countries_shared::model::mapped_message::MappedRetryMessage;
use countries_shared::model::message::{FailureClass, FailureDetail, RetryMessage};
use countries_shared::model::row::SourceRow;
use countries_shared::model::value::{Decimal, Value};
use testkit::{run_binary, TestEnv};
use uuid::Uuid;

const DIGITS_38: i128 = 12_345_678_901_234_567_890_123_456_789_012_345_678;

fn detail(sqlstate: &str, message: &str) -> FailureDetail {
    FailureDetail {
        class: FailureClass::Rejected,
        sqlstate: Some(sqlstate.into()),
        message: message.into(),
    }
}

#[tokio::test]
async fn a_mapped_row_reaches_the_report_exactly_beside_a_case_row() {
    let env = TestEnv::new("mapped_report").await;
    let columns = ["REGION", "AMOUNT", "NOTE", "SHIPPED"].map(String::from);
    let cells = [
        Ok(Value::Text("eu".into())),
        Ok(Value::Decimal(
            Decimal::new(DIGITS_38, 2).expect("38 digits"),
        )),
        Ok(Value::Text("a\0b".into())),
        Err("epoch 1e20 is out of range".to_string()),
    ];
    let mapped = MappedRetryMessage::first_failure(
        "orders",
        &columns,
        &cells,
        detail("22001", "value too long for type character varying(5)"),
        Uuid::new_v4(),
        chrono::Utc::now(),
    );
    // A row that can be replayed once the cause is fixed.
    let fixable = MappedRetryMessage::first_failure(
        "orders",
        &columns,
        &[
            Ok(Value::Text("us".into())),
            Ok(Value::Decimal(
                Decimal::new(DIGITS_38, 2).expect("38 digits"),
            )),
            Ok(Value::Text("a longer note".into())),
            Ok(Value::Date(
                chrono::NaiveDate::from_ymd_opt(2026, 12, 3).expect("a date"),
            )),
        ],
        detail("22001", "value too long for type character varying(5)"),
        Uuid::new_v4(),
        chrono::Utc::now(),
    );
    let case = RetryMessage::first_failure(
        SourceRow::new(Some(5), Some("USA")),
        detail("23514", "was refused"),
        Uuid::new_v4(),
        chrono::Utc::now(),
    );
    for body in [
        serde_json::to_string(&mapped).expect("a body"),
        serde_json::to_string(&fixable).expect("a body"),
        serde_json::to_string(&case).expect("a body"),
    ] {
        env.sqs
            .send_message()
            .queue_url(&env.vars["DEAD_LETTER_QUEUE_URL"])
            .message_body(body)
            .send()
            .await
            .expect("sending to the dead-letter queue");
    }

    let report = dlq_reporter::build(&env.reporter_config())
        .await
        .run(Uuid::new_v4(), &Deadline::none())
        .await;
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!((report.messages, report.deleted), (3, 3), "{report:?}");

    let pg = env.postgres().await;
    let row = pg
        .query_one(
            "SELECT table_name, record_key, country_id IS NULL, error_class, sqlstate, \
             row_data->'AMOUNT'->>'decimal', row_data->'NOTE'->>'text_hex', \
             row_data->'SHIPPED'->>'unreadable', row_data->>'REGION' \
             FROM failure_report WHERE table_name <> 'case' AND row_data->>'REGION' = 'eu'",
            &[],
        )
        .await
        .expect("the mapped row, stored once");
    assert_eq!(row.get::<_, String>(0), "orders");
    assert_eq!(row.get::<_, String>(1), mapped.record_key());
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "rejected");
    assert_eq!(row.get::<_, String>(4), "22001");
    assert_eq!(
        row.get::<_, String>(5),
        "123456789012345678901234567890123456.78",
        "every digit"
    );
    assert_eq!(row.get::<_, String>(6), "610062", "the NUL, as hex");
    assert_eq!(row.get::<_, String>(7), "epoch 1e20 is out of range");
    assert_eq!(row.get::<_, String>(8), "eu");
    let case_rows: i64 = pg
        .query_one(
            "SELECT count(*) FROM failure_report WHERE table_name = 'case' AND country_id = 5",
            &[],
        )
        .await
        .expect("the case row")
        .get(0);
    assert_eq!(case_rows, 1);

    let emails = env.sent_emails().await;
    assert_eq!(emails.len(), 1, "one digest for both");
    let email = mail_parser::MessageParser::default()
        .parse(emails[0].as_bytes())
        .expect("a MIME message");
    let body = email.body_text(0).unwrap_or_default().to_string();
    assert!(
        body.contains("[orders]") && body.contains("22001"),
        "{body}"
    );

    let shown = run_binary("countries", &["failures"], &env.vars);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("[orders]")
            && text.contains("22001")
            && text.contains(r#"{"NOTE": {"text_hex": "610062"}"#),
        "{text}"
    );

    // Without the mapping file the target is unknown: kept, saying so.
    let replay = run_binary("countries", &["replay"], &env.vars);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(4), "{text}");
    assert!(text.contains("replayed and resolved: 1"), "{text}");
    assert!(
        text.contains("table orders is not in the mapping file (TABLES_FILE)"),
        "{text}"
    );
    assert_eq!(env.postgres_rows().await, vec![(5, "USA".to_string())]);

    // The cause fixed: a note column wide enough.
    pg.batch_execute(
        "CREATE TABLE orders (region text PRIMARY KEY, amount numeric, note varchar(20), \
         shipped date)",
    )
    .await
    .expect("the target table");
    // A mapping file that lists case's own Postgres table beside `orders`
    // is refused, as the retrier refuses it: nothing is replayed, not even
    // the `orders` row the right file replays below.
    let clash = std::env::temp_dir().join(format!("{}-clash.toml", env.name));
    let orders_entry =
        std::fs::read_to_string(testkit::orders::tables_file(&env)).expect("the orders mapping");
    std::fs::write(
        &clash,
        format!(
            "{orders_entry}[[tables]]\nname = \"mirror\"\n\
             source = {{ schema = \"PUBLIC\", table = \"MIRROR\" }}\n\
             target = {{ schema = \"public\", table = \"case\" }}\nconsume = \"delete\"\n"
        ),
    )
    .expect("the mapping file");
    let mut vars = env.vars.clone();
    vars.insert("TABLES_FILE".into(), clash.display().to_string());
    let refused = run_binary("countries", &["replay"], &vars);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "table mirror: this is the case table (public.case: it writes case's Postgres table)"
        ),
        "{text}"
    );
    let still_failed: i64 = pg
        .query_one(
            "SELECT count(*) FROM failure_report WHERE resolved_at IS NULL",
            &[],
        )
        .await
        .expect("the count")
        .get(0);
    assert_eq!(still_failed, 2, "nothing replayed");

    // With the right file, the readable row is written exactly; the one
    // Snowflake sent unreadable stays, saying why.
    let file = testkit::orders::tables_file(&env);
    vars = env.vars.clone();
    vars.insert("TABLES_FILE".into(), file.display().to_string());
    let replay = run_binary("countries", &["replay"], &vars);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(4), "{text}");
    assert!(text.contains("replayed and resolved: 1"), "{text}");
    assert!(
        text.contains("column SHIPPED: Snowflake sent a value that could not be read"),
        "{text}"
    );
    let written: Vec<(String, String, String, String)> = pg
        .query(
            "SELECT region, amount::text, note, shipped::text FROM orders",
            &[],
        )
        .await
        .expect("the rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        written,
        [(
            "us".to_string(),
            "123456789012345678901234567890123456.78".to_string(),
            "a longer note".to_string(),
            "2026-12-03".to_string()
        )]
    );
    let unresolved: Vec<String> = pg
        .query(
            "SELECT row_data->>'REGION' FROM failure_report WHERE resolved_at IS NULL",
            &[],
        )
        .await
        .expect("the rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unresolved, ["eu"], "only the unreadable row is left");
}
