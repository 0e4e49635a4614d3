//! Typed values into a real PostgreSQL 15 by binary COPY, one column of
//! each mapped type: what Postgres stores is read back as text and compared
//! with what the README's type mapping promises (exact numerics to 38
//! digits, microseconds kept, instants kept), and a value a column cannot
//! take is refused alone; and a target table read from the catalog and
//! matched to its source's columns.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use countries_postgres::catalog::target_columns;
use countries_postgres::values::PgValue;
use countries_shared::model::columns::{match_columns, SourceColumn};
use countries_shared::model::types::{SourceType, TargetType};
use countries_shared::model::value::{Decimal, Value, MAX_DECIMAL_UNSCALED};
use testkit::{pg_connect, TestEnv};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

const COLUMNS: [(&str, &str, Type); 14] = [
    ("i2", "smallint", Type::INT2),
    ("i4", "integer", Type::INT4),
    ("i8", "bigint", Type::INT8),
    ("n", "numeric", Type::NUMERIC),
    ("f", "double precision", Type::FLOAT8),
    ("t", "text", Type::TEXT),
    ("v", "varchar(5)", Type::VARCHAR),
    ("b", "boolean", Type::BOOL),
    ("d", "date", Type::DATE),
    ("tm", "time", Type::TIME),
    ("ts", "timestamp", Type::TIMESTAMP),
    ("tz", "timestamptz", Type::TIMESTAMPTZ),
    ("j", "jsonb", Type::JSONB),
    ("by", "bytea", Type::BYTEA),
];

fn decimal(unscaled: i128, scale: u8) -> Value {
    Value::Decimal(Decimal::new(unscaled, scale).expect("at most 38 digits"))
}

fn ts(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("a timestamp")
}

async fn copy_rows(
    client: &tokio_postgres::Client,
    rows: &[Vec<Value>],
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in("COPY typed FROM STDIN (FORMAT binary)")
        .await?;
    let types: Vec<Type> = COLUMNS.iter().map(|(_, _, t)| t.clone()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for row in rows {
        let values: Vec<PgValue<'_>> = row.iter().map(PgValue).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await
}

async fn stored(client: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _, _)| format!("{name}::text"))
        .collect();
    client
        .query(
            &format!(
                "SELECT {} FROM typed ORDER BY i4 NULLS LAST",
                columns.join(", ")
            ),
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|row| (0..COLUMNS.len()).map(|i| row.get(i)).collect())
        .collect()
}

/// A database of its own with the table `typed`, one column per mapped
/// type, on a session in UTC (so that timestamptz reads back in UTC).
async fn typed_table(prefix: &str) -> (TestEnv, tokio_postgres::Client) {
    let env = TestEnv::new(prefix).await;
    let client = pg_connect(&env.vars).await;
    let definitions: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    client
        .batch_execute(&format!(
            "SET TIME ZONE 'UTC'; CREATE TABLE typed ({})",
            definitions.join(", ")
        ))
        .await
        .expect("the table");
    (env, client)
}

#[tokio::test]
async fn every_mapped_type_goes_in_by_binary_copy_as_the_mapping_promises() {
    let (_env, client) = typed_table("pg_values").await;
    let zoned = DateTime::parse_from_str(
        "2021-01-01 05:30:00.123456789 +05:30",
        "%Y-%m-%d %H:%M:%S%.f %:z",
    )
    .expect("a zoned timestamp");
    let full = vec![
        Value::Int(-32768),
        Value::Int(1),
        Value::Int(i64::MAX),
        decimal(MAX_DECIMAL_UNSCALED, 0),
        Value::Float(f64::NAN),
        Value::Text("naïve, \"quoted\"".into()),
        Value::Text("abcde".into()),
        Value::Bool(true),
        Value::Date(NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date")),
        Value::Time(NaiveTime::from_hms_nano_opt(12, 34, 56, 789_123_456).expect("a time")),
        Value::Timestamp(ts("2021-01-01 00:00:00.123456789")),
        Value::TimestampTz(zoned),
        Value::Json(r#"{"a":[1,2],"b":null}"#.into()),
        Value::Bytes(vec![0, 255, 16]),
    ];
    let mut second = vec![Value::Null; COLUMNS.len()];
    second[1] = Value::Int(2);
    second[3] = decimal(-MAX_DECIMAL_UNSCALED, 37);
    second[4] = Value::Float(f64::NEG_INFINITY);
    let mut third = vec![Value::Null; COLUMNS.len()];
    third[1] = Value::Int(3);
    third[3] = decimal(-5, 2);
    third[2] = decimal(i128::from(i64::MIN), 0);
    // Before 2000 the nanoseconds are floored too, not moved up a microsecond.
    third[10] = Value::Timestamp(ts("1999-12-31 23:59:59.999999999"));
    let copied = copy_rows(&client, &[full, second, third])
        .await
        .expect("copy");
    assert_eq!(copied, 3);

    let text = |s: &str| Some(s.to_string());
    let rows = stored(&client).await;
    assert_eq!(
        rows[0],
        vec![
            text("-32768"),
            text("1"),
            text("9223372036854775807"),
            text(&"9".repeat(38)),
            text("NaN"),
            text("naïve, \"quoted\""),
            text("abcde"),
            text("true"),
            text("9999-12-31"),
            // Microseconds kept, the nanoseconds truncated.
            text("12:34:56.789123"),
            text("2021-01-01 00:00:00.123456"),
            // The instant kept; the offset is not (shown in the session's UTC).
            text("2021-01-01 00:00:00.123456+00"),
            text(r#"{"a": [1, 2], "b": null}"#),
            text("\\x00ff10"),
        ]
    );
    assert_eq!(rows[1][3], text("-9.9999999999999999999999999999999999999"));
    assert_eq!(rows[1][4], text("-Infinity"));
    assert_eq!(rows[1][0], None, "NULL stays NULL");
    assert_eq!(rows[2][3], text("-0.05"));
    assert_eq!(rows[2][2], text("-9223372036854775808"));
    assert_eq!(rows[2][10], text("1999-12-31 23:59:59.999999"));
    // Exact: Postgres's own parse of the text gives the same number.
    let exact: bool = client
        .query_one(
            "SELECT n = $1::text::numeric FROM typed WHERE i4 = 2",
            &[&"-9.9999999999999999999999999999999999999"],
        )
        .await
        .expect("compare")
        .get(0);
    assert!(exact);
}

#[tokio::test]
async fn a_value_its_column_cannot_take_is_refused_alone_with_what_was_wrong() {
    let (_env, client) = typed_table("pg_values_bad").await;
    let row = |i2: Value, v: Value, j: Value| {
        let mut row = vec![Value::Null; COLUMNS.len()];
        row[0] = i2;
        row[6] = v;
        row[12] = j;
        row
    };
    // Out of smallint's range: refused before it is sent, naming the column type.
    let err = copy_rows(
        &client,
        &[row(Value::Int(40_000), Value::Null, Value::Null)],
    )
    .await
    .expect_err("out of range");
    let detail = format!("{err:?}");
    assert!(
        detail.contains("40000 is out of the range of a int2 column"),
        "{detail}"
    );
    // Too long for varchar(5), and JSON that is not: Postgres's own refusals,
    // with their SQLSTATE (row-level: the sink isolates such a row).
    for (bad, state) in [
        (
            row(Value::Null, Value::Text("toolong".into()), Value::Null),
            "22001",
        ),
        (
            row(Value::Null, Value::Null, Value::Json("{not json".into())),
            "22P02",
        ),
    ] {
        let err = copy_rows(&client, &[bad]).await.expect_err(state);
        assert_eq!(err.code().map(|c| c.code()), Some(state), "{err:?}");
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM typed", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "a refused COPY writes nothing");
}

#[tokio::test]
async fn a_target_table_is_read_from_the_catalog_and_matched_to_its_source() {
    let env = TestEnv::new("pg_catalog").await;
    let client = pg_connect(&env.vars).await;
    client
        .batch_execute(
            r#"CREATE TABLE orders (
                 region text NOT NULL,
                 id bigint NOT NULL,
                 amount numeric(38, 2),
                 "Placed" timestamptz,
                 note varchar(20),
                 loaded_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (region, id));
               ALTER TABLE orders DROP COLUMN note;"#,
        )
        .await
        .expect("the table");
    let columns = target_columns(&client, "public", "orders")
        .await
        .expect("catalog");
    let described: Vec<(&str, &str, bool, bool, bool)> = columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.type_name.as_str(),
                c.not_null,
                c.key,
                c.has_default,
            )
        })
        .collect();
    assert_eq!(
        described,
        vec![
            ("region", "text", true, true, false),
            ("id", "int8", true, true, false),
            ("amount", "numeric", false, false, false),
            ("Placed", "timestamptz", false, false, false),
            ("loaded_at", "timestamptz", true, false, true),
        ],
        "in order, the dropped column left out, a composite key"
    );
    let source = [
        ("REGION", SourceType::Text),
        (
            "ID",
            SourceType::Fixed {
                precision: 18,
                scale: 0,
            },
        ),
        (
            "AMOUNT",
            SourceType::Fixed {
                precision: 38,
                scale: 2,
            },
        ),
        ("Placed", SourceType::TimestampTz { scale: 9 }),
    ]
    .map(|(name, ty)| SourceColumn {
        name: name.into(),
        ty,
    });
    let plan = match_columns("orders", &source, &columns, None, &[], &[]).expect("a valid mapping");
    let planned: Vec<(&str, TargetType, bool)> = plan
        .iter()
        .map(|p| (p.target.as_str(), p.target_type, p.key))
        .collect();
    assert_eq!(
        planned,
        vec![
            ("region", TargetType::Text, true),
            ("id", TargetType::Bigint, true),
            ("amount", TargetType::Numeric, false),
            ("Placed", TargetType::Timestamptz, false),
        ],
        "loaded_at keeps its default"
    );
    let missing = target_columns(&client, "public", "no_such_table")
        .await
        .expect("catalog");
    let problems = match_columns("no_such_table", &source, &missing, None, &[], &[]).unwrap_err();
    assert!(problems[0].contains("does not exist"), "{problems:?}");
}
