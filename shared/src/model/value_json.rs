//! A [`Value`] as JSON, for the messages and the failure report of tables
//! other than `case`, and back: exact both ways.
//!
//! JSON holds `null`, booleans, 64-bit integers and text free of NUL as
//! themselves. Everything else is an object of one tagged field, so that
//! nothing is lost in a queue, a report or a spreadsheet and every value
//! comes back as the same type:
//!
//! - `{"decimal": "-123.450"}`: every digit and the scale (38 digits do not
//!   survive a JSON number in most readers);
//! - `{"float": 1.5}`, and `{"float": "NaN"}`, `"Infinity"`, `"-Infinity"`;
//! - `{"text_hex": "6100"}`: text holding a NUL character (Postgres's
//!   `jsonb`, where the report keeps rows, cannot hold one);
//! - `{"bytes_hex": "00ff10"}`;
//! - `{"date": "2026-01-31"}`, `{"time": "12:34:56.789123456"}`,
//!   `{"timestamp": "2021-01-01T00:00:00.123456789"}`,
//!   `{"timestamptz": "2021-01-01T05:30:00.123+05:30"}` (RFC 3339, the
//!   offset kept), to the nanosecond;
//! - `{"json": "{\"a\":1}"}`: a `VARIANT`'s text exactly as Snowflake sent it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{json, Map, Value as Json};

use crate::model::value::{Decimal, Value};

/// The JSON of a value.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Decimal(d) => json!({ "decimal": d.to_string() }),
        Value::Float(f) if f.is_finite() => json!({ "float": f }),
        Value::Float(f) if f.is_nan() => json!({ "float": "NaN" }),
        Value::Float(f) if *f > 0.0 => json!({ "float": "Infinity" }),
        Value::Float(_) => json!({ "float": "-Infinity" }),
        Value::Text(t) if t.contains('\0') => json!({ "text_hex": hex(t.as_bytes()) }),
        Value::Text(t) => json!(t.as_str()),
        Value::Bytes(b) => json!({ "bytes_hex": hex(b) }),
        Value::Date(d) => json!({ "date": d.format("%Y-%m-%d").to_string() }),
        Value::Time(t) => json!({ "time": t.format("%H:%M:%S%.f").to_string() }),
        Value::Timestamp(t) => json!({ "timestamp": t.format("%Y-%m-%dT%H:%M:%S%.f").to_string() }),
        Value::TimestampTz(t) => json!({ "timestamptz": t.to_rfc3339() }),
        Value::Json(j) => json!({ "json": j }),
    }
}

/// The value of its JSON; `Err` says what is not a value.
pub fn from_json(json: &Json) -> Result<Value, String> {
    match json {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("{n} is not a 64-bit integer (a decimal or a float is tagged)")),
        Json::String(s) => Ok(Value::Text(s.as_str().into())),
        Json::Object(map) => tagged(map),
        Json::Array(_) => Err("an array is not a value (a VARIANT is tagged \"json\")".into()),
    }
}

fn tagged(map: &Map<String, Json>) -> Result<Value, String> {
    let mut fields = map.iter();
    let (Some((tag, inner)), None) = (fields.next(), fields.next()) else {
        return Err(format!("a tagged value has one field, not {}", map.len()));
    };
    let text = || {
        inner
            .as_str()
            .ok_or_else(|| format!("the {tag} of a value must be a string"))
    };
    let bad = |what: &str| format!("{what:?} is not a {tag}");
    match tag.as_str() {
        "decimal" => decimal(text()?).ok_or_else(|| bad(text().unwrap_or(""))),
        "float" => match inner {
            Json::Number(n) => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| bad(&n.to_string())),
            Json::String(s) => match s.as_str() {
                "NaN" => Ok(Value::Float(f64::NAN)),
                "Infinity" => Ok(Value::Float(f64::INFINITY)),
                "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
                other => Err(bad(other)),
            },
            other => Err(bad(&other.to_string())),
        },
        "text_hex" => {
            let bytes = unhex(text()?).ok_or_else(|| bad(text().unwrap_or("")))?;
            String::from_utf8(bytes)
                .map(|t| Value::Text(t.into()))
                .map_err(|_| "text_hex is not UTF-8".to_string())
        }
        "bytes_hex" => unhex(text()?)
            .map(Value::Bytes)
            .ok_or_else(|| bad(text().unwrap_or(""))),
        "date" => NaiveDate::parse_from_str(text()?, "%Y-%m-%d")
            .map(Value::Date)
            .map_err(|_| bad(text().unwrap_or(""))),
        "time" => NaiveTime::parse_from_str(text()?, "%H:%M:%S%.f")
            .map(Value::Time)
            .map_err(|_| bad(text().unwrap_or(""))),
        "timestamp" => NaiveDateTime::parse_from_str(text()?, "%Y-%m-%dT%H:%M:%S%.f")
            .map(Value::Timestamp)
            .map_err(|_| bad(text().unwrap_or(""))),
        "timestamptz" => DateTime::parse_from_rfc3339(text()?)
            .map(Value::TimestampTz)
            .map_err(|_| bad(text().unwrap_or(""))),
        "json" => Ok(Value::Json(text()?.to_string())),
        other => Err(format!("unknown value tag {other:?}")),
    }
}

/// `-123.450` into its unscaled integer and scale.
fn decimal(text: &str) -> Option<Value> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = u8::try_from(fraction.len()).ok()?;
    let unscaled: i128 = format!("{whole}{fraction}").parse().ok()?;
    Decimal::new(sign * unscaled, scale).map(Value::Decimal)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(value: &Value) -> Value {
        // Through text, as a queue or a report keeps it.
        let text = to_json(value).to_string();
        from_json(&serde_json::from_str(&text).expect("JSON")).expect("a value")
    }

    #[test]
    fn what_json_cannot_hold_is_tagged_and_comes_back() {
        let zoned =
            DateTime::parse_from_rfc3339("2021-01-01T05:30:00.123456789+05:30").expect("tz");
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Decimal(
                Decimal::new(-99_999_999_999_999_999_999_999_999_999_999_999_999, 37)
                    .expect("38 digits"),
            ),
            Value::Decimal(Decimal::new(-5, 2).expect("decimal")),
            Value::Decimal(Decimal::new(0, 3).expect("decimal")),
            Value::Float(-0.5),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Text("=HYPERLINK(\"x\")".into()),
            Value::Text("a\0b".into()),
            Value::Bytes(vec![0, 255, 16]),
            Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).expect("date")),
            Value::Time(NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).expect("time")),
            Value::Timestamp(
                NaiveDateTime::parse_from_str(
                    "1969-12-31 23:59:59.000000001",
                    "%Y-%m-%d %H:%M:%S%.f",
                )
                .expect("ts"),
            ),
            Value::TimestampTz(zoned),
            Value::Json(r#"{"b":1, "a":[2]}"#.into()),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v, "{}", to_json(v));
        }
        assert!(matches!(round_trip(&Value::Float(f64::NAN)), Value::Float(x) if x.is_nan()));
        let Value::TimestampTz(back) = round_trip(&Value::TimestampTz(zoned)) else {
            panic!("a zoned timestamp")
        };
        assert_eq!(back.offset(), zoned.offset(), "the offset is kept");
        assert!(!to_json(&Value::Text("a\0b".into()))
            .to_string()
            .contains("\\u0000"));
    }

    #[test]
    fn json_that_is_no_value_says_why() {
        let cases = [
            (json!(1.5), "not a 64-bit integer"),
            (json!([1]), "an array is not a value"),
            (json!({"decimal": "1e5"}), "is not a decimal"),
            (json!({"decimal": "1.2", "float": 1}), "one field, not 2"),
            (json!({"bytes_hex": "0g"}), "is not a bytes_hex"),
            (json!({"date": "2026-02-30"}), "is not a date"),
            (json!({"uuid": "x"}), "unknown value tag"),
            (json!({"float": "nan"}), "is not a float"),
        ];
        for (json, expected) in cases {
            let err = from_json(&json).expect_err(expected);
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    proptest! {
        #[test]
        fn decimals_and_text_round_trip(unscaled in -MAX..=MAX, scale in 0u8..=37, text in ".*") {
            let d = Value::Decimal(Decimal::new(unscaled, scale).expect("in range"));
            prop_assert_eq!(round_trip(&d), d);
            let t = Value::Text(text.into());
            prop_assert_eq!(round_trip(&t), t);
        }
    }

    const MAX: i128 = crate::model::value::MAX_DECIMAL_UNSCALED;
}
