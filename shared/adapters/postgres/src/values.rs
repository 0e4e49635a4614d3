//! Writing a [`Value`] into a Postgres column, in the binary format that
//! COPY and prepared statements use ([`PgValue`]), for the mappings of a
//! Snowflake type to a Postgres one:
//!
//! - `NUMBER(p, 0)` into `smallint`, `integer`, `bigint` (a value out of the
//!   column's range is refused) or `numeric`; `NUMBER(p, s)` into
//!   `numeric`, written exactly in Postgres's own base-10000 binary form (38
//!   digits: no 28-digit decimal type in between).
//! - `FLOAT` into `double precision`; text into `text`, `varchar(n)` (its
//!   length, and a NUL character, are Postgres's to refuse); `BOOLEAN` into
//!   `boolean`, `DATE` into `date`, `BINARY` into `bytea`;
//!   `VARIANT`/`OBJECT`/`ARRAY` into `jsonb` (Postgres parses it).
//! - `TIME`, `TIMESTAMP_NTZ` into `time`, `timestamp`, and `TIMESTAMP_LTZ`,
//!   `TIMESTAMP_TZ` into `timestamptz`: Postgres keeps microseconds (the
//!   nanoseconds are truncated, towards the past also before 2000), and
//!   `timestamptz` the instant, not the offset.
//!
//! A value that its column's type cannot take is an error of that value
//! alone (the row is refused, the others go on); which Snowflake type may
//! go into which column is checked once, before any row.

use std::error::Error;

use chrono::Timelike;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use countries_shared::model::value::{Decimal, Value};

type ToSqlError = Box<dyn Error + Sync + Send>;

/// A value as Postgres takes it in a column of type `ty`.
#[derive(Debug)]
pub struct PgValue<'a>(pub &'a Value);

/// The column types a [`PgValue`] can be written into.
pub const WRITABLE_TYPES: [Type; 14] = [
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::NUMERIC,
    Type::FLOAT8,
    Type::TEXT,
    Type::VARCHAR,
    Type::BYTEA,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::JSONB,
];

/// A value its column cannot take, found before it is sent: a row-level
/// failure of its row alone (told apart from a broken connection by its
/// type, as `tokio_postgres` gives it as the error's source).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueRefused(pub String);

/// Whether a `tokio_postgres` error is a [`ValueRefused`].
pub fn is_value_refused(err: &tokio_postgres::Error) -> bool {
    Error::source(err).is_some_and(|s| s.downcast_ref::<ValueRefused>().is_some())
}

fn refused(value: &Value, ty: &Type) -> ToSqlError {
    Box::new(ValueRefused(format!(
        "a {} value cannot go into a {ty} column",
        kind(value)
    )))
}

/// The value's kind, for errors: a value of the wrong kind is not shown
/// (it may be anything); an integer out of range is, being a number.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Decimal(_) => "decimal",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bytes(_) => "binary",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "zoned timestamp",
        Value::Json(_) => "JSON",
    }
}

fn integer<T: TryFrom<i128>>(value: &Value, ty: &Type) -> Result<T, ToSqlError> {
    let wide = match value {
        Value::Int(i) => i128::from(*i),
        Value::Decimal(d) if d.scale == 0 => d.unscaled,
        other => return Err(refused(other, ty)),
    };
    T::try_from(wide).map_err(|_| -> ToSqlError {
        Box::new(ValueRefused(format!(
            "{wide} is out of the range of a {ty} column"
        )))
    })
}

impl ToSql for PgValue<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, ToSqlError> {
        let value = self.0;
        match (value, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (_, &Type::INT2) => integer::<i16>(value, ty)?.to_sql(ty, out),
            (_, &Type::INT4) => integer::<i32>(value, ty)?.to_sql(ty, out),
            (_, &Type::INT8) => integer::<i64>(value, ty)?.to_sql(ty, out),
            (Value::Int(i), &Type::NUMERIC) => {
                write_numeric(
                    Decimal {
                        unscaled: i128::from(*i),
                        scale: 0,
                    },
                    out,
                );
                Ok(IsNull::No)
            }
            (Value::Decimal(d), &Type::NUMERIC) => {
                write_numeric(*d, out);
                Ok(IsNull::No)
            }
            (Value::Float(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Value::Text(t), &Type::TEXT | &Type::VARCHAR) => t.as_str().to_sql(ty, out),
            (Value::Bytes(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (Value::Date(d), &Type::DATE) => d.to_sql(ty, out),
            (Value::Time(t), &Type::TIME) => t.to_sql(ty, out),
            (Value::Timestamp(t), &Type::TIMESTAMP) => to_microseconds(*t).to_sql(ty, out),
            (Value::TimestampTz(t), &Type::TIMESTAMPTZ) => to_microseconds(*t).to_sql(ty, out),
            (Value::Json(j), &Type::JSONB) => {
                // jsonb's binary form: a version byte, then the text
                // (Postgres parses and checks it).
                out.extend_from_slice(&[1]);
                out.extend_from_slice(j.as_bytes());
                Ok(IsNull::No)
            }
            (other, _) => Err(refused(other, ty)),
        }
    }

    fn accepts(ty: &Type) -> bool {
        WRITABLE_TYPES.contains(ty)
    }

    to_sql_checked!();
}

/// The time with its nanoseconds floored to microseconds. postgres-types
/// drops them towards 2000-01-01, Postgres's epoch: before it, that is
/// towards the future (`1999-12-31 23:59:59.999999999` would become the
/// next year).
fn to_microseconds<T: Timelike + Copy>(t: T) -> T {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// Postgres's binary `numeric`: the number of base-10000 digits, the
/// weight of the first (in groups of four decimal digits from the point),
/// the sign, the display scale, then the digits.
fn write_numeric(d: Decimal, out: &mut bytes::BytesMut) {
    let scale = usize::from(d.scale);
    // The decimal digits, at least one before the point.
    let digits = format!("{:0>width$}", d.unscaled.unsigned_abs(), width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    // Aligned on the point: the whole part padded on the left, the
    // fraction on the right, to whole groups of four.
    let whole = format!("{}{whole}", "0".repeat((4 - whole.len() % 4) % 4));
    let fraction = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0_i16, |n, b| n * 10 + i16::from(b - b'0')))
            .collect()
    };
    let mut groups = group(&whole);
    // At most 38 digits: ten groups before the point, the weight fits.
    let mut weight = i16::try_from(groups.len()).unwrap_or(i16::MAX) - 1;
    groups.extend(group(&fraction));
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= i16::try_from(leading).unwrap_or(0);
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.unscaled < 0 && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let header = [
        i16::try_from(groups.len()).unwrap_or(0),
        weight,
        // The sign is a bit pattern, not a number.
        sign as i16,
        i16::from(d.scale),
    ];
    for n in header.iter().chain(groups.iter()) {
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: i128, scale: u8) -> Vec<i16> {
        let mut out = bytes::BytesMut::new();
        write_numeric(Decimal { unscaled, scale }, &mut out);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numeric_digits_are_base_10000_groups_aligned_on_the_point() {
        // 123.45: groups 0123 . 4500, weight 0, dscale 2.
        assert_eq!(numeric(12345, 2), vec![2, 0, 0, 2, 123, 4500]);
        // -0.05: group 0500 after the point, weight -1.
        assert_eq!(numeric(-5, 2), vec![1, -1, 0x4000, 2, 500]);
        // 10000: one group 1 of weight 1 (trailing zero groups dropped).
        assert_eq!(numeric(10_000, 0), vec![1, 1, 0, 0, 1]);
        // Zero keeps its display scale and has no digits, and no sign.
        assert_eq!(numeric(0, 3), vec![0, 0, 0, 3]);
        assert_eq!(numeric(-0, 0), vec![0, 0, 0, 0]);
    }

    #[test]
    fn a_value_a_column_cannot_take_is_that_values_error() {
        let mut out = bytes::BytesMut::new();
        let big = Value::Int(70_000);
        let refusal = |value: &Value, ty: &Type| -> String {
            let mut out = bytes::BytesMut::new();
            match PgValue(value).to_sql(ty, &mut out) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{value:?} went into {ty}"),
            }
        };
        let err = refusal(&big, &Type::INT2);
        assert_eq!(err, "70000 is out of the range of a int2 column");
        let text = Value::Text("secret".into());
        let err = refusal(&text, &Type::INT4);
        assert_eq!(
            err, "a text value cannot go into a int4 column",
            "never the value itself"
        );
        let fraction = Value::Decimal(Decimal {
            unscaled: 15,
            scale: 1,
        });
        assert_eq!(
            refusal(&fraction, &Type::INT8),
            "a decimal value cannot go into a int8 column"
        );
        assert!(matches!(
            PgValue(&Value::Null).to_sql(&Type::INT2, &mut out),
            Ok(IsNull::Yes)
        ));
    }
}
