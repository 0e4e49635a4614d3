//! A typed value of a column of any table: what a row is made of once it
//! has left Snowflake's Arrow encoding, and before it takes Postgres's.
//!
//! Each variant keeps what the source holds exactly: a `NUMBER(38, s)` as
//! its unscaled 128-bit integer and its scale (38 digits, where a 28-digit
//! decimal type would round), a timestamp to the nanosecond, a
//! `TIMESTAMP_TZ` with its offset. What a target column can keep of it (a
//! Postgres timestamp keeps microseconds, a `timestamptz` the instant but
//! not the offset) is the writer's business, not this type's.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

/// The largest unscaled value of a `NUMBER(38, s)`: 38 nines.
pub const MAX_DECIMAL_UNSCALED: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A `NUMBER(p, 0)` that fits 64 bits.
    Int(i64),
    /// A `NUMBER(p, s)` exactly: `unscaled / 10^scale`, up to 38 digits.
    Decimal(Decimal),
    /// `FLOAT` (a double): NaN and the infinities included.
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// To the nanosecond.
    Time(NaiveTime),
    /// `TIMESTAMP_NTZ`, to the nanosecond, no zone.
    Timestamp(NaiveDateTime),
    /// `TIMESTAMP_LTZ` and `TIMESTAMP_TZ`: the instant and the offset it was
    /// given with (UTC for `LTZ`).
    TimestampTz(DateTime<FixedOffset>),
    /// `VARIANT`, `OBJECT`, `ARRAY`: the JSON text Snowflake sends.
    Json(String),
}

/// An exact decimal: `unscaled / 10^scale`. Packed to 8-byte alignment: an
/// `i128` would align the struct, and with it every [`Value`] of a page, to
/// 16 bytes, making a cell 48 bytes instead of 32. Its fields are read by
/// value (it is `Copy`), never borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(8))]
pub struct Decimal {
    pub unscaled: i128,
    /// 0 to 37 (Snowflake's scale); never negative.
    pub scale: u8,
}

impl Decimal {
    /// `None` when the value has more than 38 digits or the scale is over 37.
    pub fn new(unscaled: i128, scale: u8) -> Option<Self> {
        (unscaled.unsigned_abs() <= MAX_DECIMAL_UNSCALED.unsigned_abs() && scale <= 37)
            .then_some(Self { unscaled, scale })
    }
}

impl std::fmt::Display for Decimal {
    /// Plain decimal notation, every digit kept: `-0.05`, `123.450`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// One snapshot row of a mapped table: its number in the run snapshot, its
/// copied columns (each decoded, or refused alone with why: the row is then
/// a row-level failure, its other values kept for the failure report), and
/// whether a key column is NULL (such a row is deleted by the NULL-safe
/// statement).
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub number: u64,
    pub cells: Vec<Result<Value, String>>,
    pub key_null: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_of_a_page_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Value>(), 32);
        assert_eq!(std::mem::size_of::<Result<Value, String>>(), 32);
    }

    #[test]
    fn a_decimal_prints_every_digit_of_its_scale() {
        let d = |u: i128, s: u8| Decimal::new(u, s).unwrap().to_string();
        assert_eq!(d(12345, 2), "123.45");
        assert_eq!(d(-5, 2), "-0.05");
        assert_eq!(d(0, 3), "0.000");
        assert_eq!(d(7, 0), "7");
        assert_eq!(
            d(MAX_DECIMAL_UNSCALED, 37),
            "9.9999999999999999999999999999999999999"
        );
        assert_eq!(d(-MAX_DECIMAL_UNSCALED, 0), format!("-{}", "9".repeat(38)));
    }

    #[test]
    fn more_than_38_digits_or_a_scale_over_37_is_no_decimal() {
        assert!(Decimal::new(MAX_DECIMAL_UNSCALED + 1, 0).is_none());
        assert!(Decimal::new(-MAX_DECIMAL_UNSCALED - 1, 0).is_none());
        assert!(Decimal::new(1, 38).is_none());
        assert!(Decimal::new(i128::MIN, 0).is_none());
    }
}
