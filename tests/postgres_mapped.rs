//! A mapped table's rows into a real PostgreSQL 15 (`countries_postgres::
//! mapped`): new rows by binary COPY; a chunk COPY refuses (keys present)
//! by the staged upsert, which changes only what differs; and the rows
//! Postgres or the encoder refuse (too long, NOT NULL, out of range)
//! isolated alone, each with what was wrong, while the rest are written.
//! The table run's sink (`PgTableSink`) reads a rotated password again from
//! its secret (Secrets Manager on moto) when Postgres refuses the old one;
//! the retrier's rows (`PgMappedRows`) plan a table again when its target's
//! type changed, where the old plan's binary COPY would be refused row by
//! row (`22P03`).

use std::time::Duration;

use chrono::DateTime;
use countries_postgres::catalog::target_columns;
use countries_postgres::mapped::{MappedTarget, MappedWriter, PgTableSink};
use countries_postgres::mapped_rows::PgMappedRows;
use countries_postgres::warm::PasswordSource;
use countries_shared::deadline::Deadline;
use countries_shared::failure::ErrorKind;
use countries_shared::model::columns::{match_columns, ColumnPlan, SourceColumn, TargetColumn};
use countries_shared::model::ident::Identifier;
use countries_shared::model::types::SourceType;
use countries_shared::model::value::{Decimal, Value};
use countries_shared::model::value_json::to_json;
use countries_shared::ports::{MappedRows, SinkOutcome, TableSink, WriteLimits};
use countries_shared::retry::RetryPolicy;
use countries_shared::sink::isolate::write_isolating;
use testkit::secret_role::SecretRole;
use testkit::TestEnv;

fn row(region: &str, order_no: i64, cents: i128, note: Option<&str>, qty: i64) -> Vec<Value> {
    vec![
        Value::Text(region.into()),
        Value::Int(order_no),
        Value::Decimal(Decimal::new(cents, 2).expect("a decimal")),
        note.map_or(Value::Null, |n| Value::Text(n.into())),
        Value::Int(qty),
        Value::TimestampTz(
            DateTime::parse_from_rfc3339("2026-12-03T10:00:00.123456789+02:00").expect("a time"),
        ),
    ]
}

#[tokio::test]
async fn copy_then_the_staged_upsert_with_refused_rows_alone() {
    let env = TestEnv::new("pg_mapped").await;
    let mut pg = env.postgres().await;
    pg.batch_execute(
        "CREATE TABLE orders (region text, order_no bigint, amount numeric(12,2), \
         note varchar(5) NOT NULL, qty smallint, placed_at timestamptz, \
         PRIMARY KEY (region, order_no))",
    )
    .await
    .expect("the table");
    let fixed = |precision, scale| SourceType::Fixed { precision, scale };
    let source: Vec<SourceColumn> = [
        ("REGION", SourceType::Text),
        ("ORDER_NO", fixed(18, 0)),
        ("AMOUNT", fixed(12, 2)),
        ("NOTE", SourceType::Text),
        ("QTY", fixed(38, 0)),
        ("PLACED_AT", SourceType::TimestampTz { scale: 9 }),
    ]
    .into_iter()
    .map(|(name, ty)| SourceColumn {
        name: name.to_string(),
        ty,
    })
    .collect();
    let columns = target_columns(&pg, "public", "orders")
        .await
        .expect("the catalog");
    let plan = match_columns("orders", &source, &columns, None, &[], &[]).expect("a plan");
    let ident = |s: &str| Identifier::parse(s).expect("a name");
    let target = MappedTarget::new(&ident("public"), &ident("orders"), &plan);
    let limits = WriteLimits {
        failure_budget: 100,
        policy: RetryPolicy::immediate(2),
    };
    let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);

    let first = [
        row("eu", 1, 1050, Some("a"), 1),
        row("eu", 2, 300, Some("b"), 2),
        row("us", 1, 100, Some("c"), 3),
    ];
    let refs: Vec<&[Value]> = first.iter().map(Vec::as_slice).collect();
    let mut writer = MappedWriter::new(&mut pg, &target);
    let outcome = write_isolating(&mut writer, &refs, limits, &deadline).await;
    assert_eq!(outcome.written, [0, 1, 2]);
    assert_eq!(outcome.changed, 3);
    assert!(outcome.rejected.is_empty() && outcome.stop.is_none());

    let second = [
        row("eu", 1, 1100, Some("a2"), 1),      // changed
        row("eu", 2, 300, Some("b"), 2),        // as it is
        row("us", 9, 100, Some("too long"), 1), // varchar(5)
        row("us", 10, 100, Some("ok"), 40_000), // smallint's range
        row("us", 11, 100, None, 1),            // NOT NULL
        row("us", 12, 250, Some("new"), 5),     // new
    ];
    let refs: Vec<&[Value]> = second.iter().map(Vec::as_slice).collect();
    let outcome = write_isolating(&mut writer, &refs, limits, &deadline).await;
    let mut written = outcome.written.clone();
    written.sort_unstable();
    assert_eq!(written, [0, 1, 5]);
    assert_eq!(outcome.changed, 2, "the unchanged row is not counted");
    let mut rejected: Vec<(usize, String)> = outcome
        .rejected
        .iter()
        .map(|(i, e)| {
            assert_eq!(e.kind, ErrorKind::RowLevel, "{e}");
            (*i, e.to_string())
        })
        .collect();
    rejected.sort();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected[0].1.contains("too long"), "{rejected:?}");
    assert!(
        rejected[1]
            .1
            .contains("40000 is out of the range of a int2 column"),
        "{rejected:?}"
    );
    assert!(rejected[2].1.contains("not-null"), "{rejected:?}");

    let again: Vec<&[Value]> = [0, 1, 5].iter().map(|&i| second[i].as_slice()).collect();
    let outcome = write_isolating(&mut writer, &again, limits, &deadline).await;
    assert_eq!(outcome.written.len(), 3);
    assert_eq!(outcome.changed, 0, "a replay changes nothing");

    let rows = pg
        .query(
            "SELECT region, order_no, amount::text, note, placed_at = '2026-12-03T08:00:00.123456Z' \
             FROM orders ORDER BY region, order_no",
            &[],
        )
        .await
        .expect("the rows");
    let seen: Vec<(String, i64, String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let want = |region: &str, n: i64, amount: &str, note: &str| {
        (
            region.to_string(),
            n,
            amount.to_string(),
            note.to_string(),
            true,
        )
    };
    assert_eq!(
        seen,
        [
            want("eu", 1, "11.00", "a2"),
            want("eu", 2, "3.00", "b"),
            want("us", 1, "1.00", "c"),
            want("us", 12, "2.50", "new"),
        ]
    );
}

/// The catalog of `notes` (id bigint, note text) and its plan for a source
/// of ID NUMBER(18,0) and NOTE text.
async fn notes_plan(pg: &tokio_postgres::Client) -> (Vec<TargetColumn>, Vec<ColumnPlan>) {
    let catalog = target_columns(pg, "public", "notes")
        .await
        .expect("the catalog");
    let id = SourceType::Fixed {
        precision: 18,
        scale: 0,
    };
    let source = [("ID", id), ("NOTE", SourceType::Text)].map(|(name, ty)| SourceColumn {
        name: name.to_string(),
        ty,
    });
    let plan = match_columns("notes", &source, &catalog, None, &[], &[]).expect("a plan");
    (catalog, plan)
}

/// The ids in `notes`, in order (as bigint, whatever the column's type).
async fn note_ids(pg: &tokio_postgres::Client) -> Vec<i64> {
    pg.query("SELECT id::bigint FROM notes ORDER BY id", &[])
        .await
        .expect("the rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Writes the row (id, "n<id>") through the sink.
async fn write_note(
    sink: &PgTableSink,
    id: i64,
    limits: WriteLimits,
    deadline: &Deadline,
) -> countries_shared::ports::SinkOutcome {
    let row = [Value::Int(id), Value::Text(format!("n{id}").into())];
    sink.write(&[row.as_slice()], limits, deadline).await
}

#[tokio::test]
async fn the_table_sink_reads_a_rotated_password_again_from_its_secret() {
    let env = TestEnv::new("mapped_rotate").await;
    let role = SecretRole::create(&env).await;
    let name = &role.name;
    let pg = env.postgres().await;
    pg.batch_execute(&format!(
        "CREATE TABLE notes (id bigint PRIMARY KEY, note text); \
         GRANT USAGE ON SCHEMA public TO {name}; GRANT SELECT, INSERT, UPDATE ON notes TO {name}"
    ))
    .await
    .expect("the table");
    let config = role.config(&env);
    let (_, plan) = notes_plan(&pg).await;
    let ident = |s: &str| Identifier::parse(s).expect("a name");
    let target = || MappedTarget::new(&ident("public"), &ident("notes"), &plan);
    let refresh = PasswordSource::from_config(&config).await;
    assert!(refresh.is_some(), "a secret ARN is configured");
    let sink = PgTableSink::with_password_source(config.clone(), target(), refresh);
    let without_secret = PgTableSink::new(config, target());
    let limits = WriteLimits {
        failure_budget: 10,
        policy: RetryPolicy::immediate(2),
    };
    let deadline = &Deadline::after(Duration::from_secs(60), Duration::ZERO);
    let first = write_note(&sink, 1, limits, deadline).await;
    assert_eq!(first.written, [0], "{:?}", first.stop);

    // The rotation: Postgres and the secret change, the role's sessions end.
    role.rotate("second-pass").await;
    role.admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
        ))
        .await
        .expect("end the sessions");
    // pg_terminate_backend only signals: wait until the session is gone, so
    // that the next write cannot go through it with the old password.
    for _ in 0..200 {
        let left: i64 = role
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[name],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The ended session shows at the next write at the latest: that write
    // stops (its rows deferred) and the one after reconnects.
    let mut second = write_note(&sink, 2, limits, deadline).await;
    if second.written.is_empty() {
        second = write_note(&sink, 2, limits, deadline).await;
    }
    assert_eq!(
        second.written,
        [0],
        "read the secret again: {:?}",
        second.stop
    );

    let refused = write_note(&without_secret, 3, limits, deadline).await;
    assert!(refused.written.is_empty());
    let stop = refused.stop.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        stop.contains("28P01") || stop.contains("password"),
        "{stop}"
    );
    assert!(
        !stop.contains("first-pass"),
        "no password in the error: {stop}"
    );
    assert_eq!(note_ids(&pg).await, [1, 2]);
}

/// The retrier's rows of a one-table mapping file whose table `name`
/// reads `S.{NAME}` into `public.{name}`, with `extra` lines.
fn retried_rows(env: &TestEnv, name: &str, extra: &str) -> PgMappedRows {
    let file = format!(
        "[[tables]]\nname = \"{name}\"\nsource = {{ schema = \"S\", table = \"{}\" }}\n\
         target = {{ schema = \"public\", table = \"{name}\" }}\nconsume = \"delete\"\n{extra}",
        name.to_ascii_uppercase()
    );
    let mappings =
        countries_shared::config::tables::parse_tables(&file, "tables.toml").expect("the mapping");
    PgMappedRows::new(env.config().postgres, mappings)
}

/// Writes `rows` of `table` as the retrier does, one attempt each.
async fn write_again(
    rows: &PgMappedRows,
    table: &str,
    batch: &[&serde_json::Map<String, serde_json::Value>],
) -> SinkOutcome {
    let limits = WriteLimits {
        failure_budget: usize::MAX,
        policy: RetryPolicy::immediate(1),
    };
    rows.write_rows(table, batch, limits, &Deadline::none())
        .await
        .expect("the table is known")
}

#[tokio::test]
async fn the_retriers_rows_plan_a_table_again_when_its_target_changed() {
    let env = TestEnv::new("mapped_rows_drift").await;
    let pg = env.postgres().await;
    pg.batch_execute("CREATE TABLE notes (id bigint PRIMARY KEY, note text)")
        .await
        .expect("the table");
    // One warm retrier: its plan of `notes` is kept between batches.
    let rows = retried_rows(&env, "notes", "");
    let write = |id: i64| {
        let row: serde_json::Map<String, serde_json::Value> = [
            ("ID".to_string(), to_json(&Value::Int(id))),
            (
                "NOTE".to_string(),
                to_json(&Value::Text(format!("n{id}").into())),
            ),
        ]
        .into_iter()
        .collect();
        let rows = &rows;
        async move { write_again(rows, "notes", &[&row]).await }
    };
    assert_eq!(write(1).await.written, [0]);

    // The key becomes an integer: an eight-byte bigint in binary COPY is
    // not an integer, and Postgres would refuse every row written with the
    // old plan. The retrier sees the change and plans the table again.
    pg.batch_execute("ALTER TABLE notes ALTER COLUMN id TYPE integer")
        .await
        .expect("the change");
    let outcome = write(2).await;
    assert_eq!(
        (outcome.written.as_slice(), outcome.rejected.len()),
        (&[0][..], 0),
        "{outcome:?}"
    );
    assert_eq!(note_ids(&pg).await, [1, 2]);
}

#[tokio::test]
async fn the_check_before_a_run_sees_a_changed_target_and_outlives_a_lost_connection() {
    let env = TestEnv::new("mapped_check").await;
    let pg = env.postgres().await;
    pg.batch_execute("CREATE TABLE notes (id bigint PRIMARY KEY, note text)")
        .await
        .expect("the table");
    let (catalog, plan) = notes_plan(&pg).await;
    let ident = |s: &str| Identifier::parse(s).expect("a name");
    let (schema, table) = (ident("public"), ident("notes"));
    let sink = |config| {
        PgTableSink::new(config, MappedTarget::new(&schema, &table, &plan)).planned_from(
            &schema,
            &table,
            catalog.clone(),
        )
    };
    let config = env.config().postgres;
    let deadline = &Deadline::after(Duration::from_secs(60), Duration::ZERO);
    let warm = sink(config.clone());
    let limits = WriteLimits {
        failure_budget: 10,
        policy: RetryPolicy::immediate(1),
    };
    assert_eq!(write_note(&warm, 1, limits, deadline).await.written, [0]);
    assert_eq!(warm.target_drift(deadline).await, None, "as planned");

    // The kept connection ends under the sink (an idle timeout, a restart):
    // the check opens another and answers.
    pg.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database()",
    )
    .await
    .expect("end the other sessions");
    assert_eq!(warm.target_drift(deadline).await, None, "checked again");

    pg.batch_execute("ALTER TABLE notes ALTER COLUMN note SET NOT NULL")
        .await
        .expect("the change");
    let drift = warm.target_drift(deadline).await.expect("a change");
    assert!(
        drift.contains("column note was text and is now text NOT NULL"),
        "{drift}"
    );

    // Unchecked is not unchanged: Postgres unreachable says so.
    let mut unreachable = config;
    unreachable.port = testkit::free_port();
    let why = sink(unreachable)
        .target_drift(deadline)
        .await
        .expect("a reason to plan again");
    assert!(why.contains("could not be read"), "{why}");
}

#[tokio::test]
async fn the_retriers_rows_pass_the_mappings_rules_before_the_write() {
    let env = TestEnv::new("mapped_rows_rules").await;
    let pg = env.postgres().await;
    pg.batch_execute("CREATE TABLE codes (id bigint PRIMARY KEY, country text)")
        .await
        .expect("the table");
    let rows = retried_rows(&env, "codes", "rules = { country = \"country_code\" }\n");
    let row = |id: i64, country: Option<&str>| -> serde_json::Map<String, serde_json::Value> {
        let mut row: serde_json::Map<String, serde_json::Value> =
            [("ID".to_string(), to_json(&Value::Int(id)))]
                .into_iter()
                .collect();
        if let Some(country) = country {
            row.insert("COUNTRY".into(), to_json(&Value::Text(country.into())));
        }
        row
    };
    let (good, bad, null, absent) = (
        row(1, Some(" usa ")),
        row(2, Some("U5A")),
        row(3, None),
        row(4, None),
    );
    let mut null = null;
    null.insert("COUNTRY".into(), to_json(&Value::Null));
    let outcome = write_again(&rows, "codes", &[&good, &bad, &null, &absent]).await;
    assert_eq!(outcome.written, [0], "{outcome:?}");
    let mut refused: Vec<(usize, String)> = outcome
        .rejected
        .iter()
        .map(|(i, e)| (*i, e.message.clone()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            (
                1,
                "country must be exactly three letters A-Z after trimming, got \"U5A\"".into()
            ),
            (2, "country is NULL".into()),
            (3, "country is NULL".into()),
        ]
    );
    let stored: Vec<(i64, String)> = pg
        .query("SELECT id, country FROM codes", &[])
        .await
        .expect("the rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored, [(1, "USA".to_string())], "written normalised");

    // A rule may not change a key: the rows come back, saying why.
    pg.batch_execute("CREATE TABLE keyed (code text PRIMARY KEY)")
        .await
        .expect("the table");
    let keyed: serde_json::Map<String, serde_json::Value> =
        [("CODE".to_string(), to_json(&Value::Text("usa".into())))]
            .into_iter()
            .collect();
    let keyed_rows = retried_rows(&env, "keyed", "rules = { code = \"country_code\" }\n");
    let outcome = write_again(&keyed_rows, "keyed", &[&keyed]).await;
    assert_eq!(outcome.deferred, [0]);
    let stop = outcome.stop.map(|e| e.to_string()).unwrap_or_default();
    assert!(stop.contains("code is a key column"), "{stop}");
}
