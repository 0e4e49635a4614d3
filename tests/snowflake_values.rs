//! Typed columns read from the Snowflake emulator (fakesnow's server mode)
//! through the product's client, and decoded by
//! `countries_snowflake::values`: the encodings fakesnow sends (integers
//! or Decimal128 for NUMBER, structs for timestamps, Int64 nanoseconds for
//! TIME, Utf8 for VARIANT). The encodings only real Snowflake sends are
//! covered by the decoder's unit tests, built as its connectors read them.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use countries_shared::model::value::{Decimal, Value};
use countries_snowflake::values::decode_column;
use snowflake_api::QueryResult;
use testkit::TestEnv;

fn ts(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("a timestamp")
}

#[tokio::test]
async fn every_type_fakesnow_sends_decodes_to_its_value() {
    let env = TestEnv::new("sf_values").await;
    let admin = env.admin();
    admin
        .execute(
            "CREATE TABLE typed (k NUMBER(38,0), price NUMBER(10,2), big NUMBER(38,0), f FLOAT, \
             t VARCHAR, b BOOLEAN, d DATE, tm TIME, ntz TIMESTAMP_NTZ, v VARIANT, bin BINARY)",
        )
        .await
        .expect("the table");
    admin
        .execute(
            "INSERT INTO typed SELECT 1, 123.45, 12345678901234567, 'NaN'::FLOAT, 'naïve', TRUE, \
             '2026-01-31'::DATE, '12:34:56.789'::TIME, '2021-01-01 00:00:00.123456'::TIMESTAMP_NTZ, \
             PARSE_JSON('{\"a\":[1,2]}'), TO_BINARY('00FF10', 'HEX')",
        )
        .await
        .expect("a typed row");
    // NULLs, but not in the timestamp: fakesnow sends a NULL timestamp as a
    // struct whose non-nullable children hold nulls, which an Arrow reader
    // refuses (the Python connector reads it as 1970-01-01).
    admin
        .execute("INSERT INTO typed (k, ntz) VALUES (2, '2000-01-01 00:00:00'::TIMESTAMP_NTZ)")
        .await
        .expect("a row of NULLs");
    let QueryResult::Arrow(batches) = admin
        .execute("SELECT k, price, big, f, t, b, d, tm, ntz, v, bin FROM typed ORDER BY k")
        .await
        .expect("select")
    else {
        panic!("expected Arrow rows")
    };
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for batch in &batches {
        let schema = batch.schema();
        let columns: Vec<Vec<Value>> = (0..batch.num_columns())
            .map(|i| {
                decode_column(schema.field(i), batch.column(i).as_ref())
                    .unwrap_or_else(|e| panic!("column {i}: {e}"))
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|e| panic!("{e}")))
                    .collect()
            })
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c[r].clone()).collect());
        }
    }
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!(first[0], Value::Int(1));
    assert_eq!(
        first[1],
        Value::Decimal(Decimal {
            unscaled: 12345,
            scale: 2
        })
    );
    assert_eq!(first[2], Value::Int(12_345_678_901_234_567));
    assert!(
        matches!(first[3], Value::Float(x) if x.is_nan()),
        "{:?}",
        first[3]
    );
    assert_eq!(first[4], Value::Text("naïve".into()));
    assert_eq!(first[5], Value::Bool(true));
    assert_eq!(
        first[6],
        Value::Date(NaiveDate::from_ymd_opt(2026, 1, 31).expect("date"))
    );
    assert_eq!(
        first[7],
        Value::Time(NaiveTime::from_hms_milli_opt(12, 34, 56, 789).expect("time"))
    );
    assert_eq!(first[8], Value::Timestamp(ts("2021-01-01 00:00:00.123456")));
    let Value::Json(json) = &first[9] else {
        panic!("{:?}", first[9])
    };
    let parsed: serde_json::Value = serde_json::from_str(json).expect("JSON text");
    assert_eq!(parsed, serde_json::json!({"a": [1, 2]}));
    assert_eq!(first[10], Value::Bytes(vec![0, 255, 16]));
    assert_eq!(rows[1][8], Value::Timestamp(ts("2000-01-01 00:00:00")));
    for (i, v) in rows[1].iter().enumerate().skip(1).filter(|(i, _)| *i != 8) {
        assert_eq!(*v, Value::Null, "column {i}");
    }
}
