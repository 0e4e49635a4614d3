//! Decoding a column of any Snowflake type from its Arrow encoding into
//! [`Value`]s: the encodings real Snowflake sends, as its own connectors
//! decode them (snowflake-connector-python's `ArrowIterator` converters,
//! gosnowflake's `converter.go`, snowflake-jdbc's arrow converters, and the
//! live-checked emulation in snowflakedb/drivers' `sf_core`):
//!
//! - The field's metadata names the type (`logicalType`) and, for numbers,
//!   times and timestamps, its `scale` ([`source_type`]); the physical type
//!   varies.
//! - `FIXED` (`NUMBER(p, s)`): Int8, Int16, Int32, Int64 or Decimal128,
//!   chosen per batch by the values, not by `p`; the integer is unscaled.
//! - `REAL`: Float64. `BOOLEAN`: Boolean. `TEXT`, and `VARIANT`, `OBJECT`,
//!   `ARRAY` as JSON text: Utf8. `BINARY`: Binary. `DATE`: Date32 (days).
//! - `TIME`: Int32 (scale up to 4) or Int64, in units of 10^-scale s.
//! - `TIMESTAMP_NTZ` / `TIMESTAMP_LTZ`: Int64 in units of 10^-scale s since
//!   the epoch (scale up to 7), or a struct {`epoch` seconds, `fraction`
//!   nanoseconds} (scale 8, 9). NTZ is a wall clock read as UTC; LTZ an
//!   instant.
//! - `TIMESTAMP_TZ`: a struct {`epoch` in units of 10^-scale s, `timezone`}
//!   (scale up to 3) or {`epoch` seconds, `fraction` nanoseconds,
//!   `timezone`}; the epoch is the UTC instant, and `timezone` is the
//!   offset in minutes plus 1440.
//!
//! A column whose encoding is none of these stops the read
//! ([`SourceError::UnexpectedResult`]); a single value that cannot be a
//! value of its type (a fraction past a second, an offset past a day) is
//! that row's problem alone ([`BadValue`]).

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type, Int8Type};
use arrow_array::{Array, StructArray};
use arrow_schema::{DataType, Field};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};

use countries_shared::failure::SourceError;
use countries_shared::model::types::SourceType;
use countries_shared::model::value::{Decimal, Value};

#[cfg(test)]
mod tests;

/// One value Snowflake sent that is no value of its column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct BadValue {
    pub column: String,
    pub reason: String,
}

fn unexpected(field: &Field, detail: impl std::fmt::Display) -> SourceError {
    SourceError::UnexpectedResult {
        operation: "read",
        detail: format!("column {}: {detail}", field.name()),
    }
}

/// The type named by a field's metadata; a missing or unknown
/// `logicalType`, or a scale out of range, is an error naming the column.
pub fn source_type(field: &Field) -> Result<SourceType, SourceError> {
    let meta = field.metadata();
    let logical = meta
        .get("logicalType")
        .ok_or_else(|| unexpected(field, "no logicalType in the Arrow field's metadata"))?;
    let number = |key: &str, default: Option<u8>, max: u8| -> Result<u8, SourceError> {
        match meta.get(key) {
            Some(text) => text
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| unexpected(field, format!("{key} {text:?} is not 0 to {max}"))),
            None => default.ok_or_else(|| unexpected(field, format!("no {key} for {logical}"))),
        }
    };
    Ok(match logical.to_ascii_uppercase().as_str() {
        "FIXED" => SourceType::Fixed {
            precision: number("precision", Some(38), 38)?,
            scale: number("scale", None, 37)?,
        },
        "REAL" => SourceType::Real,
        "TEXT" => SourceType::Text,
        "BOOLEAN" => SourceType::Boolean,
        "DATE" => SourceType::Date,
        // A time or timestamp without a scale is nanoseconds, as the
        // Python connector assumes.
        "TIME" => SourceType::Time {
            scale: number("scale", Some(9), 9)?,
        },
        "TIMESTAMP_NTZ" => SourceType::TimestampNtz {
            scale: number("scale", Some(9), 9)?,
        },
        "TIMESTAMP_LTZ" => SourceType::TimestampLtz {
            scale: number("scale", Some(9), 9)?,
        },
        "TIMESTAMP_TZ" => SourceType::TimestampTz {
            scale: number("scale", Some(9), 9)?,
        },
        "BINARY" => SourceType::Binary,
        "VARIANT" | "OBJECT" | "ARRAY" => SourceType::SemiStructured,
        other => return Err(unexpected(field, format!("unsupported type {other}"))),
    })
}

/// Decodes one column: one entry per row, `Null` for a NULL.
pub fn decode_column(
    field: &Field,
    array: &dyn Array,
) -> Result<Vec<Result<Value, BadValue>>, SourceError> {
    let ty = source_type(field)?;
    let wrong = || {
        unexpected(
            field,
            format!("{ty:?} cannot arrive as Arrow {}", array.data_type()),
        )
    };
    let bad = |reason: String| BadValue {
        column: field.name().clone(),
        reason,
    };
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    match (ty, array.data_type()) {
        (SourceType::Fixed { scale, .. }, _) => {
            let unscaled = unscaled_integers(array).ok_or_else(wrong)?;
            if let DataType::Decimal128(_, s) = array.data_type() {
                if i16::from(*s) != i16::from(scale) {
                    return Err(unexpected(
                        field,
                        format!("Decimal128 of scale {s} for a column of scale {scale}"),
                    ));
                }
            }
            out.extend(unscaled.into_iter().map(|v| {
                match v {
                    None => Ok(Value::Null),
                    Some(v) if scale == 0 => i64::try_from(v)
                        .map(Value::Int)
                        .or_else(|_| decimal(v, 0))
                        .map_err(bad),
                    Some(v) => decimal(v, scale).map_err(bad),
                }
            }));
        }
        (SourceType::Real, DataType::Float64) => {
            let a = array.as_primitive::<arrow_array::types::Float64Type>();
            out.extend((0..n).map(|i| Ok(nullable(a, i, || Value::Float(a.value(i))))));
        }
        (SourceType::Boolean, DataType::Boolean) => {
            let a = array.as_boolean();
            out.extend((0..n).map(|i| Ok(nullable(a, i, || Value::Bool(a.value(i))))));
        }
        (SourceType::Text | SourceType::SemiStructured, _) => {
            // The `case` reader's text decoding; its error names its own
            // column, so this one says which column instead.
            let json = ty == SourceType::SemiStructured;
            crate::arrow::decode_texts(array, &mut out, |t| {
                Ok(match t {
                    None => Value::Null,
                    Some(t) if json => Value::Json(t.to_string()),
                    // Built from the borrowed text: a short one is kept
                    // inline, with no allocation.
                    Some(t) => Value::Text(t.into()),
                })
            })
            .map_err(|_| wrong())?;
        }
        (SourceType::Binary, DataType::Binary) => {
            let a = array.as_binary::<i32>();
            out.extend((0..n).map(|i| Ok(nullable(a, i, || Value::Bytes(a.value(i).to_vec())))));
        }
        (SourceType::Binary, DataType::LargeBinary) => {
            let a = array.as_binary::<i64>();
            out.extend((0..n).map(|i| Ok(nullable(a, i, || Value::Bytes(a.value(i).to_vec())))));
        }
        (SourceType::Date, DataType::Date32) => {
            let a = array.as_primitive::<Date32Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Ok(Value::Null)
                } else {
                    date(a.value(i)).map(Value::Date).map_err(bad)
                });
            }
        }
        (SourceType::Time { scale }, DataType::Int32 | DataType::Int64) => {
            let units = unscaled_integers(array).ok_or_else(wrong)?;
            out.extend(units.into_iter().map(|u| match u {
                None => Ok(Value::Null),
                Some(u) => time(u, scale).map(Value::Time).map_err(bad),
            }));
        }
        (
            SourceType::TimestampNtz { scale } | SourceType::TimestampLtz { scale },
            DataType::Int64,
        ) => {
            let a = array.as_primitive::<Int64Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Ok(Value::Null)
                } else {
                    let (seconds, nanos) = split_scaled(a.value(i), scale);
                    timestamp(ty, seconds, nanos, 0).map_err(bad)
                });
            }
        }
        (
            SourceType::TimestampNtz { .. }
            | SourceType::TimestampLtz { .. }
            | SourceType::TimestampTz { .. },
            DataType::Struct(_),
        ) => {
            let parts = StructParts::of(field, array.as_struct(), ty)?;
            for i in 0..n {
                out.push(if array.is_null(i) || parts.epoch.is_null(i) {
                    Ok(Value::Null)
                } else {
                    parts
                        .value(i, ty)
                        .and_then(|(s, ns, offset)| timestamp(ty, s, ns, offset))
                        .map_err(bad)
                });
            }
        }
        _ => return Err(wrong()),
    }
    Ok(out)
}

fn nullable<A: Array>(a: &A, i: usize, value: impl FnOnce() -> Value) -> Value {
    if a.is_null(i) {
        Value::Null
    } else {
        value()
    }
}

fn decimal(unscaled: i128, scale: u8) -> Result<Value, String> {
    Decimal::new(unscaled, scale)
        .map(Value::Decimal)
        .ok_or_else(|| format!("{unscaled} (scale {scale}) has more than 38 digits"))
}

/// The lowest and highest value of a `NUMBER(p, 0)` column's array:
/// `Some(None)` when every value is NULL, `None` for a column of any other
/// type (the join delete's pruning range, which only integers give).
pub fn integer_bounds(field: &Field, array: &dyn Array) -> Option<Option<(i128, i128)>> {
    fn bounds<T>(a: &arrow_array::PrimitiveArray<T>) -> Option<(i128, i128)>
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<i128>,
    {
        a.iter().flatten().map(Into::into).fold(None, |acc, v| {
            Some(acc.map_or((v, v), |(lo, hi): (i128, i128)| (lo.min(v), hi.max(v))))
        })
    }
    if !matches!(source_type(field), Ok(SourceType::Fixed { scale: 0, .. })) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Int8 => bounds(array.as_primitive::<Int8Type>()),
        DataType::Int16 => bounds(array.as_primitive::<Int16Type>()),
        DataType::Int32 => bounds(array.as_primitive::<Int32Type>()),
        DataType::Int64 => bounds(array.as_primitive::<Int64Type>()),
        DataType::Decimal128(_, 0) => bounds(array.as_primitive::<Decimal128Type>()),
        _ => return None,
    })
}

/// The integers of an Int8 to Int64 or Decimal128 column, widened.
fn unscaled_integers(array: &dyn Array) -> Option<Vec<Option<i128>>> {
    fn widen<T>(a: &arrow_array::PrimitiveArray<T>) -> Vec<Option<i128>>
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<i128>,
    {
        a.iter().map(|v| v.map(Into::into)).collect()
    }
    Some(match array.data_type() {
        DataType::Int8 => widen(array.as_primitive::<Int8Type>()),
        DataType::Int16 => widen(array.as_primitive::<Int16Type>()),
        DataType::Int32 => widen(array.as_primitive::<Int32Type>()),
        DataType::Int64 => widen(array.as_primitive::<Int64Type>()),
        DataType::Decimal128(_, _) => widen(array.as_primitive::<Decimal128Type>()),
        _ => return None,
    })
}

fn date(days: i32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
        .ok_or_else(|| format!("{days} days from 1970-01-01 is no date"))
}

/// 10^exp for the scales Snowflake uses (0 to 9).
fn pow10(exp: u8) -> i64 {
    10_i64.pow(u32::from(exp))
}

/// Units of 10^-scale s into whole seconds and nanoseconds, the
/// nanoseconds never negative (-1 ms is -1 s + 999,000,000 ns).
fn split_scaled(units: i64, scale: u8) -> (i64, u32) {
    let per_second = pow10(scale);
    let nanos = units.rem_euclid(per_second) * pow10(9 - scale);
    // rem_euclid by at most 10^9 leaves at most 10^9 - 1: it fits.
    (
        units.div_euclid(per_second),
        u32::try_from(nanos).unwrap_or(0),
    )
}

fn time(units: i128, scale: u8) -> Result<NaiveTime, String> {
    let units = i64::try_from(units).map_err(|_| format!("{units} is no time of day"))?;
    let (seconds, nanos) = split_scaled(units, scale);
    u32::try_from(seconds)
        .ok()
        .and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, nanos))
        .ok_or_else(|| format!("{units} (scale {scale}) is no time of day"))
}

/// A timestamp value of type `ty`, from the UTC instant and, for
/// `TIMESTAMP_TZ`, the offset in minutes.
fn timestamp(
    ty: SourceType,
    seconds: i64,
    nanos: u32,
    offset_minutes: i32,
) -> Result<Value, String> {
    let instant = DateTime::<Utc>::from_timestamp(seconds, nanos)
        .ok_or_else(|| format!("{seconds} s {nanos} ns from the epoch is no timestamp"))?;
    Ok(match ty {
        SourceType::TimestampNtz { .. } => Value::Timestamp(instant.naive_utc()),
        SourceType::TimestampLtz { .. } => Value::TimestampTz(instant.fixed_offset()),
        _ => {
            let offset = FixedOffset::east_opt(offset_minutes * 60)
                .ok_or_else(|| format!("an offset of {offset_minutes} minutes is no time zone"))?;
            Value::TimestampTz(instant.with_timezone(&offset))
        }
    })
}

/// The children of a timestamp struct, found by name.
struct StructParts<'a> {
    epoch: &'a arrow_array::PrimitiveArray<Int64Type>,
    fraction: Option<&'a arrow_array::PrimitiveArray<Int32Type>>,
    timezone: Option<&'a arrow_array::PrimitiveArray<Int32Type>>,
    scale: u8,
}

impl<'a> StructParts<'a> {
    fn of(field: &Field, s: &'a StructArray, ty: SourceType) -> Result<Self, SourceError> {
        let child = |name: &str| s.column_by_name(name);
        let epoch = child("epoch")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| unexpected(field, "a timestamp struct without an Int64 epoch"))?;
        let int32 = |name: &str| -> Result<Option<&'a arrow_array::PrimitiveArray<Int32Type>>, SourceError> {
            match child(name) {
                None => Ok(None),
                Some(c) => c
                    .as_primitive_opt::<Int32Type>()
                    .map(Some)
                    .ok_or_else(|| unexpected(field, format!("a timestamp struct whose {name} is not Int32"))),
            }
        };
        let (fraction, timezone) = (int32("fraction")?, int32("timezone")?);
        let scale = match ty {
            SourceType::TimestampNtz { scale }
            | SourceType::TimestampLtz { scale }
            | SourceType::TimestampTz { scale } => scale,
            _ => 9,
        };
        let is_tz = matches!(ty, SourceType::TimestampTz { .. });
        let shape_ok = match (is_tz, fraction.is_some(), timezone.is_some()) {
            // NTZ/LTZ: {epoch, fraction}; TZ: {epoch, timezone} or all three.
            (false, true, false) | (true, _, true) => true,
            _ => false,
        };
        if !shape_ok
            || s.num_columns()
                != 1 + usize::from(fraction.is_some()) + usize::from(timezone.is_some())
        {
            return Err(unexpected(
                field,
                format!("a timestamp struct of fields {:?}", s.column_names()),
            ));
        }
        Ok(Self {
            epoch,
            fraction,
            timezone,
            scale,
        })
    }

    /// Seconds, nanoseconds and offset minutes of row `i`.
    fn value(&self, i: usize, ty: SourceType) -> Result<(i64, u32, i32), String> {
        let epoch = self.epoch.value(i);
        let (seconds, nanos) = match self.fraction {
            Some(fraction) => {
                let f = fraction.value(i);
                let nanos = u32::try_from(f)
                    .ok()
                    .filter(|f| *f < 1_000_000_000)
                    .ok_or_else(|| format!("a fraction of {f} ns is not within a second"))?;
                (epoch, nanos)
            }
            // The two-field TIMESTAMP_TZ: the epoch carries the scale.
            None => split_scaled(epoch, self.scale),
        };
        let offset = match (ty, self.timezone) {
            (SourceType::TimestampTz { .. }, Some(tz)) => {
                let index = tz.value(i);
                // Widened: a corrupt index near i32::MIN must not overflow.
                let minutes = i64::from(index) - 1440;
                if minutes.abs() >= 1440 {
                    return Err(format!("time zone index {index} is no offset"));
                }
                i32::try_from(minutes)
                    .map_err(|_| format!("time zone index {index} is no offset"))?
            }
            _ => 0,
        };
        Ok((seconds, nanos, offset))
    }
}
