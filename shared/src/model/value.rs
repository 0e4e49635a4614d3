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
use compact_str::CompactString;

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
    /// Kept inline up to 24 bytes (a country code, a region, a short
    /// note), so a page's short texts cost no allocation of their own.
    Text(CompactString),
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

/// Whether two rows are the same row as read, as Snowflake's hash of a row
/// tells rows apart: a float by its bits (a NaN is the same as itself, and
/// `-0.0` is not `0.0`), a zoned timestamp by its instant and its offset;
/// every other value by `==`.
pub fn same_row(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::TimestampTz(x), Value::TimestampTz(y)) => x == y && x.offset() == y.offset(),
            (x, y) => x == y,
        })
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

/// Decoded rows of a mapped table's snapshot (a chunk of a page: see
/// [`EncodedPage`]): their cells in one vector, row after row
/// (`width` cells a row), the rows numbered from `first` in the run
/// snapshot. A cell the decoder refused holds NULL and is listed with why
/// in `unread`: its row is a row-level failure, its other values kept for
/// the failure report. One vector, not one a row: a row costs its cells
/// (32 bytes each) and nothing more, and the writer takes its rows as
/// slices of it, never copied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TablePage {
    first: u64,
    width: usize,
    rows: usize,
    cells: Vec<Value>,
    /// (row index, column index, why), in row order.
    unread: Vec<(usize, usize, String)>,
    /// Cells a rule rewrote, as read: (row index, column index, value),
    /// in row order ([`Self::keep_read`]).
    read_as: Vec<(usize, usize, Value)>,
}

impl TablePage {
    /// An empty page of rows of `width` cells, the first numbered `first`,
    /// with room for `rows` rows.
    pub fn new(first: u64, width: usize, rows: usize) -> Self {
        Self {
            first,
            width,
            rows: 0,
            cells: Vec::with_capacity(rows.saturating_mul(width)),
            unread: Vec::new(),
            read_as: Vec::new(),
        }
    }

    /// Appends the next row: `width` cells, each decoded or refused with
    /// why (missing cells are NULL, extra ones ignored).
    pub fn push_row(&mut self, cells: impl IntoIterator<Item = Result<Value, String>>) {
        let row = self.rows;
        let mut cells = cells.into_iter();
        for column in 0..self.width {
            match cells.next() {
                Some(Ok(value)) => self.cells.push(value),
                Some(Err(why)) => {
                    self.unread.push((row, column, why));
                    self.cells.push(Value::Null);
                }
                None => self.cells.push(Value::Null),
            }
        }
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// Cells a row.
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The snapshot number of row `i`.
    pub fn number(&self, i: usize) -> u64 {
        self.first + i as u64
    }

    /// Row `i`'s cells (a refused cell is NULL here).
    pub fn row(&self, i: usize) -> &[Value] {
        &self.cells[i * self.width..(i + 1) * self.width]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [Value] {
        &mut self.cells[i * self.width..(i + 1) * self.width]
    }

    /// Keeps row `i`'s cells as `read` before a rule rewrote them (rows in
    /// order), so that its failure carries the row as read.
    pub fn keep_read(&mut self, i: usize, read: Vec<Value>) {
        let start = i * self.width;
        for (column, value) in read.into_iter().enumerate() {
            if self.cells.get(start + column) != Some(&value) {
                self.read_as.push((i, column, value));
            }
        }
    }

    /// Row `i`'s refused cells: (column index, why).
    pub fn unread(&self, i: usize) -> impl Iterator<Item = (usize, &str)> {
        let from = self.unread.partition_point(|(row, _, _)| *row < i);
        self.unread[from..]
            .iter()
            .take_while(move |(row, _, _)| *row == i)
            .map(|(_, column, why)| (*column, why.as_str()))
    }

    /// The key columns of row `i` that are NULL (a refused cell is not).
    pub fn null_keys<'a>(
        &'a self,
        i: usize,
        key_positions: &'a [usize],
    ) -> impl Iterator<Item = usize> + 'a {
        let row = self.row(i);
        key_positions.iter().copied().filter(move |&k| {
            matches!(row.get(k), Some(Value::Null)) && !self.unread(i).any(|(c, _)| c == k)
        })
    }

    /// Whether a key column of row `i` is NULL (such a row is deleted by the
    /// NULL-safe statement); a refused cell is not NULL.
    pub fn key_null(&self, i: usize, key_positions: &[usize]) -> bool {
        self.null_keys(i, key_positions).next().is_some()
    }

    /// Whether row `i` is `cells` as read, with the same values refused for
    /// the same reasons (`unread`: column, why): a copy of it, as
    /// Snowflake's hash of a row tells rows apart ([`same_row`]).
    pub fn is_copy_of<'a>(
        &self,
        i: usize,
        cells: &[Value],
        unread: impl IntoIterator<Item = (usize, &'a str)>,
    ) -> bool {
        if !same_row(cells, self.row(i)) {
            return false;
        }
        let (mut ours, mut theirs) = (self.unread(i), unread.into_iter());
        loop {
            match (ours.next(), theirs.next()) {
                (None, None) => return true,
                (Some((c, why)), Some((d, reason))) if c == d && why == reason => {}
                _ => return false,
            }
        }
    }

    /// Row `i` as the failure report keeps it: each cell as read (before
    /// any rule rewrote it), or refused with why.
    pub fn cells(&self, i: usize) -> Vec<Result<Value, String>> {
        let mut cells: Vec<Result<Value, String>> = self.row(i).iter().cloned().map(Ok).collect();
        let from = self.read_as.partition_point(|(row, _, _)| *row < i);
        for (_, column, value) in self.read_as[from..]
            .iter()
            .take_while(|(row, _, _)| *row == i)
        {
            if let Some(cell) = cells.get_mut(*column) {
                *cell = Ok(value.clone());
            }
        }
        for (column, why) in self.unread(i) {
            if let Some(cell) = cells.get_mut(column) {
                *cell = Err(why.to_string());
            }
        }
        cells
    }
}

/// A page of a snapshot as the source sent it, decoded a chunk at a time.
/// A run holds a page from its read to its delete, and reads the next one
/// meanwhile: kept encoded (Arrow: a few bytes a value), two pages cost a
/// fraction of their decoded cells (32 bytes each), and only the chunk in
/// hand is decoded.
pub trait EncodedPage: Send + Sync {
    /// How many rows the page holds.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rows `rows` (indexes into this page) decoded, numbered from the
    /// snapshot number of the first.
    fn decode(&self, rows: std::ops::Range<usize>) -> TablePage;
}

/// A decoded page serves as an encoded one (the in-memory adapters).
impl EncodedPage for TablePage {
    fn len(&self) -> usize {
        TablePage::len(self)
    }
    fn decode(&self, rows: std::ops::Range<usize>) -> TablePage {
        let rows = rows.start.min(self.len())..rows.end.min(self.len());
        let mut page = TablePage::new(self.number(rows.start), self.width(), rows.len());
        for i in rows {
            page.push_row(self.cells(i));
        }
        page
    }
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
    fn a_page_keeps_rows_in_one_vector_and_refused_cells_apart() {
        let mut page = TablePage::new(7, 2, 3);
        page.push_row([Ok(Value::Int(1)), Ok(Value::Text("a".into()))]);
        page.push_row([Ok(Value::Null), Err("column NOTE: not UTF-8".to_string())]);
        page.push_row([Err("column ID: out of range".to_string()), Ok(Value::Null)]);
        page.push_row([Ok(Value::Int(4))]);
        assert_eq!(page.len(), 4);
        assert_eq!(page.number(3), 10);
        assert_eq!(page.row(0), [Value::Int(1), Value::Text("a".into())]);
        assert_eq!(
            page.row(3),
            [Value::Int(4), Value::Null],
            "a missing cell is NULL"
        );
        assert_eq!(page.unread(0).count(), 0);
        assert_eq!(
            page.unread(1).collect::<Vec<_>>(),
            [(1, "column NOTE: not UTF-8")]
        );
        assert_eq!(
            page.cells(2),
            [Err("column ID: out of range".to_string()), Ok(Value::Null)]
        );
        assert!(page.key_null(1, &[0]));
        assert!(!page.key_null(2, &[0]), "a refused key cell is not NULL");
        assert!(!page.key_null(0, &[0]) && page.key_null(3, &[1]));
    }

    #[test]
    fn the_same_row_is_the_same_bits() {
        let nan = [Value::Int(1), Value::Float(f64::NAN)];
        assert!(same_row(&nan, &nan.clone()), "a NaN is itself");
        assert!(!same_row(&[Value::Float(0.0)], &[Value::Float(-0.0)]));
        let at = |offset_hours: i32| {
            let offset = FixedOffset::east_opt(offset_hours * 3600).unwrap();
            Value::TimestampTz(
                chrono::DateTime::from_timestamp(1_700_000_000, 0)
                    .unwrap()
                    .with_timezone(&offset),
            )
        };
        assert_eq!(at(0), at(2), "one instant to ==");
        assert!(!same_row(&[at(0)], &[at(2)]), "but not the same row");
        assert!(same_row(&[at(2)], &[at(2)]));
        assert!(!same_row(&[Value::Null], &[Value::Null, Value::Null]));
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
