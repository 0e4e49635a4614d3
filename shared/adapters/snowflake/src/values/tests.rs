//! Every encoding of every type, built as Snowflake sends it (the field's
//! metadata and the physical type), decoded; and the encodings that must
//! stop a read or refuse one value.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int16Array,
    Int32Array, Int64Array, Int8Array, StringArray, StructArray,
};
use arrow_schema::{DataType, Field};
use chrono::{NaiveDate, NaiveDateTime};

use super::*;

fn field(name: &str, data_type: DataType, meta: &[(&str, &str)]) -> Field {
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Field::new(name, data_type, true).with_metadata(meta)
}

fn decode(field: &Field, array: ArrayRef) -> Vec<Result<Value, BadValue>> {
    decode_column(field, array.as_ref()).expect("a known encoding")
}

fn values(field: &Field, array: ArrayRef) -> Vec<Value> {
    decode(field, array)
        .into_iter()
        .map(|v| v.expect("a valid value"))
        .collect()
}

fn ts(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("a timestamp")
}

fn tz(text: &str) -> Value {
    Value::TimestampTz(
        DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f %:z").expect("a zoned timestamp"),
    )
}

fn fixed(scale: &str) -> Vec<(&'static str, String)> {
    vec![
        ("logicalType", "FIXED".into()),
        ("precision", "38".into()),
        ("scale", scale.into()),
    ]
}

fn meta<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn a_number_arrives_as_any_integer_width_or_decimal128_and_keeps_every_digit() {
    let m = fixed("0");
    let f = |t: DataType| field("N", t, &meta(&m));
    assert_eq!(
        values(
            &f(DataType::Int8),
            Arc::new(Int8Array::from(vec![Some(-7), None]))
        ),
        vec![Value::Int(-7), Value::Null]
    );
    assert_eq!(
        values(&f(DataType::Int16), Arc::new(Int16Array::from(vec![300]))),
        vec![Value::Int(300)]
    );
    assert_eq!(
        values(
            &f(DataType::Int64),
            Arc::new(Int64Array::from(vec![i64::MIN]))
        ),
        vec![Value::Int(i64::MIN)]
    );
    // 38 nines: past 64 bits, kept exactly.
    let big = Decimal128Array::from(vec![Some(MAX38), Some(-5)])
        .with_precision_and_scale(38, 0)
        .expect("a decimal type");
    assert_eq!(
        values(&f(DataType::Decimal128(38, 0)), Arc::new(big)),
        vec![
            Value::Decimal(Decimal::new(MAX38, 0).expect("38 digits")),
            Value::Int(-5)
        ]
    );
}

const MAX38: i128 = countries_shared::model::value::MAX_DECIMAL_UNSCALED;

#[test]
fn a_scaled_number_is_its_unscaled_integer_over_ten_to_the_scale() {
    let m = fixed("2");
    let ints = field("PRICE", DataType::Int32, &meta(&m));
    let got = values(&ints, Arc::new(Int32Array::from(vec![12345, -5])));
    let shown: Vec<String> = got
        .iter()
        .map(|v| match v {
            Value::Decimal(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(shown, vec!["123.45", "-0.05"]);
    let dec = field("PRICE", DataType::Decimal128(38, 2), &meta(&m));
    let array = Decimal128Array::from(vec![12345])
        .with_precision_and_scale(38, 2)
        .expect("decimal");
    assert_eq!(
        values(&dec, Arc::new(array)),
        vec![Value::Decimal(Decimal {
            unscaled: 12345,
            scale: 2
        })]
    );
    // A Decimal128 whose own scale disagrees with the column's stops the read.
    let odd = Decimal128Array::from(vec![1])
        .with_precision_and_scale(38, 3)
        .expect("decimal");
    let err = decode_column(
        &field("PRICE", DataType::Decimal128(38, 3), &meta(&m)),
        &odd,
    )
    .unwrap_err();
    assert!(err.to_string().contains("column PRICE"), "{err}");
}

#[test]
fn floats_booleans_text_json_and_binary_arrive_as_themselves() {
    let real = field("F", DataType::Float64, &[("logicalType", "REAL")]);
    let got = values(
        &real,
        Arc::new(Float64Array::from(vec![f64::INFINITY, -1.5])),
    );
    assert_eq!(got, vec![Value::Float(f64::INFINITY), Value::Float(-1.5)]);
    let nan = values(&real, Arc::new(Float64Array::from(vec![f64::NAN])));
    assert!(matches!(nan[0], Value::Float(x) if x.is_nan()));
    let boolean = field("B", DataType::Boolean, &[("logicalType", "BOOLEAN")]);
    assert_eq!(
        values(
            &boolean,
            Arc::new(BooleanArray::from(vec![Some(true), None]))
        ),
        vec![Value::Bool(true), Value::Null]
    );
    let text = field(
        "T",
        DataType::Utf8,
        &[("logicalType", "TEXT"), ("charLength", "16")],
    );
    assert_eq!(
        values(
            &text,
            Arc::new(StringArray::from(vec![Some("naïve\0"), None]))
        ),
        vec![Value::Text("naïve\0".into()), Value::Null]
    );
    for logical in ["VARIANT", "OBJECT", "ARRAY"] {
        let json = field("J", DataType::Utf8, &[("logicalType", logical)]);
        assert_eq!(
            values(&json, Arc::new(StringArray::from(vec![r#"{"a":[1,2]}"#]))),
            vec![Value::Json(r#"{"a":[1,2]}"#.into())]
        );
    }
    let binary = field("BIN", DataType::Binary, &[("logicalType", "BINARY")]);
    let bytes: Vec<Option<&[u8]>> = vec![Some(&[0, 255, 16]), None];
    assert_eq!(
        values(&binary, Arc::new(BinaryArray::from(bytes))),
        vec![Value::Bytes(vec![0, 255, 16]), Value::Null]
    );
}

#[test]
fn dates_are_days_from_1970_and_times_are_scaled_units_from_midnight() {
    let date = field("D", DataType::Date32, &[("logicalType", "DATE")]);
    let got = values(&date, Arc::new(Date32Array::from(vec![0, -1, 2_932_896])));
    let day = |y, m, d| Value::Date(NaiveDate::from_ymd_opt(y, m, d).expect("a date"));
    assert_eq!(
        got,
        vec![day(1970, 1, 1), day(1969, 12, 31), day(9999, 12, 31)]
    );
    // TIME(3) as Int32 milliseconds, TIME(9) as Int64 nanoseconds.
    let t3 = field(
        "T",
        DataType::Int32,
        &[("logicalType", "TIME"), ("scale", "3")],
    );
    let t9 = field(
        "T",
        DataType::Int64,
        &[("logicalType", "TIME"), ("scale", "9")],
    );
    let time =
        |h, m, s, ns| Value::Time(NaiveTime::from_hms_nano_opt(h, m, s, ns).expect("a time"));
    assert_eq!(
        values(&t3, Arc::new(Int32Array::from(vec![45_296_789]))),
        vec![time(12, 34, 56, 789_000_000)]
    );
    assert_eq!(
        values(&t9, Arc::new(Int64Array::from(vec![86_399_999_999_999]))),
        vec![time(23, 59, 59, 999_999_999)]
    );
    // A time past midnight is that value's problem, not the column's.
    let past = decode(&t3, Arc::new(Int32Array::from(vec![86_400_000, 1])));
    assert!(past[0].as_ref().is_err_and(|e| e.column == "T"), "{past:?}");
    assert!(past[1].is_ok());
}

#[test]
fn ntz_and_ltz_are_scaled_int64_up_to_scale_7_and_a_struct_beyond() {
    let ntz3 = field(
        "TS",
        DataType::Int64,
        &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "3")],
    );
    assert_eq!(
        values(
            &ntz3,
            Arc::new(Int64Array::from(vec![1_609_459_200_123, -1]))
        ),
        vec![
            Value::Timestamp(ts("2021-01-01 00:00:00.123")),
            // One millisecond before the epoch: the fraction stays positive.
            Value::Timestamp(ts("1969-12-31 23:59:59.999")),
        ]
    );
    let parts = |epoch: Vec<Option<i64>>, fraction: Vec<Option<i32>>| -> ArrayRef {
        Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("epoch", DataType::Int64, true)),
                Arc::new(Int64Array::from(epoch)) as ArrayRef,
            ),
            (
                Arc::new(Field::new("fraction", DataType::Int32, true)),
                Arc::new(Int32Array::from(fraction)) as ArrayRef,
            ),
        ]))
    };
    let struct_type = parts(vec![], vec![]).data_type().clone();
    let ntz9 = field(
        "TS",
        struct_type.clone(),
        &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")],
    );
    assert_eq!(
        values(
            &ntz9,
            parts(
                vec![Some(1_609_459_200), None],
                vec![Some(123_456_789), None]
            )
        ),
        vec![
            Value::Timestamp(ts("2021-01-01 00:00:00.123456789")),
            Value::Null
        ]
    );
    let ltz9 = field(
        "TS",
        struct_type,
        &[("logicalType", "TIMESTAMP_LTZ"), ("scale", "9")],
    );
    assert_eq!(
        values(&ltz9, parts(vec![Some(0)], vec![Some(5)])),
        vec![tz("1970-01-01 00:00:00.000000005 +00:00")]
    );
    let over = decode(&ntz9, parts(vec![Some(0)], vec![Some(1_000_000_000)]));
    assert!(
        over[0]
            .as_ref()
            .is_err_and(|e| e.reason.contains("within a second")),
        "{over:?}"
    );
}

fn tz_struct(epoch: i64, fraction: Option<i32>, timezone: i32) -> ArrayRef {
    let mut children: Vec<(Arc<Field>, ArrayRef)> = vec![(
        Arc::new(Field::new("epoch", DataType::Int64, true)),
        Arc::new(Int64Array::from(vec![epoch])),
    )];
    if let Some(f) = fraction {
        children.push((
            Arc::new(Field::new("fraction", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![f])),
        ));
    }
    children.push((
        Arc::new(Field::new("timezone", DataType::Int32, true)),
        Arc::new(Int32Array::from(vec![timezone])),
    ));
    Arc::new(StructArray::from(children))
}

#[test]
fn tz_is_a_two_field_struct_up_to_scale_3_and_three_fields_beyond_with_the_offset_plus_1440() {
    // TIMESTAMP_TZ(3): the epoch in milliseconds, +05:30 is 1440 + 330.
    let two = tz_struct(1_609_459_200_123, None, 1770);
    let f3 = field(
        "TZ",
        two.data_type().clone(),
        &[
            ("logicalType", "TIMESTAMP_TZ"),
            ("scale", "3"),
            ("byteLength", "8"),
        ],
    );
    let got = values(&f3, two);
    assert_eq!(got, vec![tz("2021-01-01 05:30:00.123 +05:30")]);
    // Equality of zoned timestamps is of instants: the offset on its own.
    let Value::TimestampTz(kept) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(kept.offset().local_minus_utc(), 330 * 60);
    // TIMESTAMP_TZ(9): seconds, nanoseconds, -08:00 is 1440 - 480.
    let three = tz_struct(1_609_459_200, Some(999_999_999), 960);
    let f9 = field(
        "TZ",
        three.data_type().clone(),
        &[
            ("logicalType", "TIMESTAMP_TZ"),
            ("scale", "9"),
            ("byteLength", "16"),
        ],
    );
    assert_eq!(
        values(&f9, three),
        vec![tz("2020-12-31 16:00:00.999999999 -08:00")]
    );
    let bad = decode(&f9, tz_struct(0, Some(0), 2880));
    assert!(
        bad[0]
            .as_ref()
            .is_err_and(|e| e.reason.contains("no offset")),
        "{bad:?}"
    );
}

#[test]
fn an_encoding_snowflake_never_sends_stops_the_read_naming_the_column() {
    let cases: Vec<(Field, ArrayRef, &str)> = vec![
        (
            field("X", DataType::Utf8, &[]),
            Arc::new(StringArray::from(vec!["a"])),
            "no logicalType",
        ),
        (
            field("X", DataType::Utf8, &[("logicalType", "GEOGRAPHY")]),
            Arc::new(StringArray::from(vec!["a"])),
            "unsupported type GEOGRAPHY",
        ),
        (
            field("X", DataType::Int32, &[("logicalType", "DATE")]),
            Arc::new(Int32Array::from(vec![1])),
            "cannot arrive as Arrow Int32",
        ),
        (
            field("X", DataType::Utf8, &meta(&fixed("0"))),
            Arc::new(StringArray::from(vec!["1"])),
            "cannot arrive as Arrow Utf8",
        ),
        (
            field(
                "X",
                DataType::Int64,
                &[("logicalType", "FIXED"), ("precision", "38")],
            ),
            Arc::new(Int64Array::from(vec![1])),
            "no scale for FIXED",
        ),
        (
            field(
                "X",
                DataType::Int64,
                &[("logicalType", "TIME"), ("scale", "12")],
            ),
            Arc::new(Int64Array::from(vec![1])),
            "scale \"12\" is not 0 to 9",
        ),
        (
            field(
                "X",
                DataType::Int64,
                &[("logicalType", "TIMESTAMP_TZ"), ("scale", "3")],
            ),
            Arc::new(Int64Array::from(vec![1])),
            "cannot arrive as Arrow Int64",
        ),
        (
            field(
                "X",
                tz_struct(0, Some(0), 1440).data_type().clone(),
                &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")],
            ),
            tz_struct(0, Some(0), 1440),
            "a timestamp struct of fields",
        ),
    ];
    for (f, array, expected) in cases {
        let err = decode_column(&f, array.as_ref())
            .expect_err(expected)
            .to_string();
        assert!(
            err.contains("column X") && err.contains(expected),
            "{expected}: {err}"
        );
    }
}
