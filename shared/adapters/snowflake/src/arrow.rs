//! Decoding Snowflake's Arrow results into rows, a chunk at a time.
//!
//! Snowflake sends `NUMBER(38,0)` as the smallest integer that fits each
//! chunk, or as `Decimal128(38,0)`, and text as `Utf8`, `LargeUtf8` or
//! `Utf8View`; all of them are accepted. Anything else is an unexpected
//! result, found before any row is handed out.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use countries_shared::failure::SourceError;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::SourceRows;

/// Arrow record batches, decoded a chunk at a time.
pub struct ArrowRows {
    batches: std::collections::VecDeque<RecordBatch>,
    offset: usize,
    remaining: usize,
}

impl ArrowRows {
    /// Checks every batch's column types first, so that a wrong schema stops
    /// the run before anything is written.
    pub fn new(batches: Vec<RecordBatch>) -> Result<Self, SourceError> {
        for batch in &batches {
            check_schema(batch)?;
        }
        let remaining = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(Self {
            batches: batches.into(),
            offset: 0,
            remaining,
        })
    }
}

impl ArrowRows {
    /// A page of a run snapshot: `(country_id, country, _RN)`. The row
    /// numbers must run from `first` without a gap (the replicator derives
    /// each row's number from its position); they are checked, then dropped.
    /// The batches are put in order of their first number first:
    /// `snowflake-api` appends the part of a result Snowflake sends inline
    /// (its first chunk) after the chunks it downloads.
    pub fn numbered(batches: Vec<RecordBatch>, first: u64) -> Result<Self, SourceError> {
        let unexpected = |detail: String| SourceError::UnexpectedResult {
            operation: "read",
            detail,
        };
        let mut numbered = Vec::with_capacity(batches.len());
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            if batch.num_columns() != 3 {
                return Err(unexpected(format!(
                    "expected 3 columns (id, country, row number), got {}",
                    batch.num_columns()
                )));
            }
            let mut numbers = Vec::with_capacity(batch.num_rows());
            decode_ids(batch.column(2).as_ref(), &mut numbers)?;
            let Some(Some(start)) = numbers.first().copied() else {
                return Err(unexpected("a snapshot row without a row number".into()));
            };
            numbered.push((start, numbers, batch));
        }
        numbered.sort_by_key(|(start, _, _)| *start);
        let mut expected = i128::from(first);
        let mut rows = Vec::with_capacity(numbered.len());
        for (_, numbers, batch) in numbered {
            for number in numbers {
                if number != Some(expected) {
                    let got = number.map_or_else(|| "none".to_string(), |n| n.to_string());
                    return Err(unexpected(format!(
                        "snapshot row number {got} where {expected} was due: the page has a gap"
                    )));
                }
                expected += 1;
            }
            rows.push(
                batch
                    .project(&[0, 1])
                    .map_err(|e| unexpected(e.to_string()))?,
            );
        }
        Self::new(rows)
    }
}

impl SourceRows for ArrowRows {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn next_chunk(&mut self, max: usize) -> Result<Vec<SourceRow>, SourceError> {
        let mut out = Vec::with_capacity(max.min(self.remaining));
        while out.len() < max {
            let Some(batch) = self.batches.front() else {
                break;
            };
            let take = (max - out.len()).min(batch.num_rows() - self.offset);
            decode_batch(&batch.slice(self.offset, take), &mut out)?;
            self.offset += take;
            if self.offset >= batch.num_rows() {
                // Each batch is freed as soon as it is decoded.
                self.batches.pop_front();
                self.offset = 0;
            }
        }
        self.remaining -= out.len();
        Ok(out)
    }
}

fn check_schema(batch: &RecordBatch) -> Result<(), SourceError> {
    let unexpected = |detail: String| SourceError::UnexpectedResult {
        operation: "read",
        detail,
    };
    if batch.num_columns() != 2 {
        return Err(unexpected(format!(
            "expected 2 columns, got {}",
            batch.num_columns()
        )));
    }
    match batch.column(0).data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, 0) => {}
        other => {
            return Err(unexpected(format!(
                "country_id has Arrow type {other}, expected an integer or Decimal128(_, 0)"
            )))
        }
    }
    match batch.column(1).data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        other => Err(unexpected(format!(
            "country has Arrow type {other}, expected text"
        ))),
    }
}

/// Decodes one Arrow batch of `(country_id, country)` into rows.
pub fn decode_batch(batch: &RecordBatch, out: &mut Vec<SourceRow>) -> Result<(), SourceError> {
    if batch.num_columns() != 2 {
        return Err(SourceError::UnexpectedResult {
            operation: "read",
            detail: format!("expected 2 columns, got {}", batch.num_columns()),
        });
    }
    let mut ids = Vec::with_capacity(batch.num_rows());
    decode_ids(batch.column(0).as_ref(), &mut ids)?;
    let mut countries = Vec::with_capacity(batch.num_rows());
    decode_texts(batch.column(1).as_ref(), &mut countries, owned)?;
    out.extend(
        ids.into_iter()
            .zip(countries)
            .map(|(country_id, country)| SourceRow {
                country_id,
                country,
            }),
    );
    Ok(())
}

/// Snowflake sends `NUMBER(38,0)` as the smallest integer that fits each
/// chunk, or as `Decimal128(38,0)`; all of them are accepted.
pub(crate) fn decode_ids(
    column: &dyn Array,
    out: &mut Vec<Option<i128>>,
) -> Result<(), SourceError> {
    macro_rules! ints {
        ($t:ty) => {
            out.extend(
                column
                    .as_primitive::<$t>()
                    .iter()
                    .map(|v| v.map(i128::from)),
            )
        };
    }
    match column.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Decimal128(_, 0) => out.extend(column.as_primitive::<Decimal128Type>().iter()),
        other => {
            return Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!(
                    "country_id has Arrow type {other}, expected an integer or Decimal128(_, 0)"
                ),
            })
        }
    }
    Ok(())
}

/// Each value as an owned `String` (NULL: `None`).
pub(crate) fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_string)
}

/// A text column's values, each made by `make` from the borrowed text (or
/// `None` for NULL), appended to `out`: Snowflake sends text as `Utf8`,
/// `LargeUtf8` or `Utf8View`.
pub(crate) fn decode_texts<T>(
    column: &dyn Array,
    out: &mut Vec<T>,
    make: impl Fn(Option<&str>) -> T,
) -> Result<(), SourceError> {
    match column.data_type() {
        DataType::Utf8 => out.extend(column.as_string::<i32>().iter().map(make)),
        DataType::LargeUtf8 => out.extend(column.as_string::<i64>().iter().map(make)),
        DataType::Utf8View => out.extend(column.as_string_view().iter().map(make)),
        other => {
            return Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!("country has Arrow type {other}, expected text"),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Decimal128Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray,
        StringArray, StringViewArray,
    };
    use countries_shared::failure::Classify;
    use std::sync::Arc as StdArc;

    fn batch(ids: arrow_array::ArrayRef, texts: arrow_array::ArrayRef) -> RecordBatch {
        RecordBatch::try_from_iter([("COUNTRY_ID", ids), ("COUNTRY", texts)]).unwrap()
    }

    #[test]
    fn every_integer_width_and_decimal_decodes_to_the_same_rows() {
        let texts: arrow_array::ArrayRef = StdArc::new(StringArray::from(vec![Some("USA"), None]));
        let widths: Vec<arrow_array::ArrayRef> = vec![
            StdArc::new(Int8Array::from(vec![Some(1), None])),
            StdArc::new(Int16Array::from(vec![Some(1), None])),
            StdArc::new(Int32Array::from(vec![Some(1), None])),
            StdArc::new(Int64Array::from(vec![Some(1), None])),
            StdArc::new(
                Decimal128Array::from(vec![Some(1), None])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
        ];
        for ids in widths {
            let kind = ids.data_type().clone();
            let mut rows = Vec::new();
            decode_batch(&batch(ids, texts.clone()), &mut rows).unwrap();
            assert_eq!(
                rows,
                vec![
                    SourceRow::new(Some(1), Some("USA")),
                    SourceRow::new(None, None)
                ],
                "{kind}"
            );
        }
    }

    #[test]
    fn arrow_rows_come_out_in_chunks_across_batches() {
        let make = |ids: Vec<i32>| {
            let texts: Vec<&str> = ids.iter().map(|_| "USA").collect();
            batch(
                StdArc::new(Int32Array::from(ids)),
                StdArc::new(StringArray::from(texts)),
            )
        };
        let mut rows = ArrowRows::new(vec![make(vec![1, 2, 3]), make(vec![4, 5])]).unwrap();
        assert_eq!(rows.remaining(), 5);
        let ids = |chunk: Vec<SourceRow>| {
            chunk
                .iter()
                .map(|r| r.country_id.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(rows.next_chunk(2).unwrap()), vec![1, 2]);
        assert_eq!(ids(rows.next_chunk(2).unwrap()), vec![3, 4]);
        assert_eq!(rows.remaining(), 1);
        assert_eq!(ids(rows.next_chunk(2).unwrap()), vec![5]);
        assert!(rows.next_chunk(2).unwrap().is_empty());
    }

    fn numbered_batch(numbers: std::ops::Range<i64>) -> RecordBatch {
        let n = (numbers.end - numbers.start) as usize;
        RecordBatch::try_from_iter([
            (
                "COUNTRY_ID",
                StdArc::new(Int64Array::from_iter_values(numbers.clone())) as arrow_array::ArrayRef,
            ),
            (
                "COUNTRY",
                StdArc::new(StringArray::from_iter_values(std::iter::repeat_n("USA", n))) as _,
            ),
            (
                "_RN",
                StdArc::new(Int64Array::from_iter_values(numbers)) as _,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_page_whose_first_chunk_comes_last_is_put_in_order() {
        // As snowflake-api hands a chunked result over: downloaded chunks
        // first, the inline first chunk last.
        let batches = vec![
            numbered_batch(104..107),
            numbered_batch(107..108),
            numbered_batch(101..104),
        ];
        let mut rows = ArrowRows::numbered(batches, 101).unwrap();
        let ids: Vec<Option<i128>> = rows
            .next_chunk(10)
            .unwrap()
            .iter()
            .map(|r| r.country_id)
            .collect();
        assert_eq!(ids, (101..108).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_with_a_gap_or_the_wrong_start_is_refused() {
        let gap = ArrowRows::numbered(vec![numbered_batch(1..3), numbered_batch(4..6)], 1);
        let err = gap.err().expect("a gap");
        assert!(
            err.to_string().contains("row number 4 where 3 was due"),
            "{err}"
        );
        let late = ArrowRows::numbered(vec![numbered_batch(2..3)], 1);
        assert!(late.is_err());
        assert_eq!(ArrowRows::numbered(Vec::new(), 1).unwrap().remaining(), 0);
    }

    #[test]
    fn a_wrong_schema_is_refused_before_any_row_is_handed_out() {
        let texts: arrow_array::ArrayRef = StdArc::new(StringArray::from(vec!["USA"]));
        let textual_ids: arrow_array::ArrayRef = StdArc::new(StringArray::from(vec!["1"]));
        assert!(ArrowRows::new(vec![batch(textual_ids, texts)]).is_err());
    }

    #[test]
    fn large_and_view_strings_decode() {
        let ids: arrow_array::ArrayRef = StdArc::new(Int32Array::from(vec![7]));
        for texts in [
            StdArc::new(LargeStringArray::from(vec!["FRA"])) as arrow_array::ArrayRef,
            StdArc::new(StringViewArray::from(vec!["FRA"])),
        ] {
            let mut rows = Vec::new();
            decode_batch(&batch(ids.clone(), texts), &mut rows).unwrap();
            assert_eq!(rows, vec![SourceRow::new(Some(7), Some("FRA"))]);
        }
    }

    #[test]
    fn a_fractional_or_textual_id_is_an_unexpected_result() {
        let texts: arrow_array::ArrayRef = StdArc::new(StringArray::from(vec!["USA"]));
        let scaled: arrow_array::ArrayRef = StdArc::new(
            Decimal128Array::from(vec![15])
                .with_precision_and_scale(38, 1)
                .unwrap(),
        );
        let err = decode_batch(&batch(scaled, texts.clone()), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("country_id"), "{err}");
        assert!(!err.is_transient());
        let textual: arrow_array::ArrayRef = StdArc::new(StringArray::from(vec!["1"]));
        assert!(decode_batch(&batch(textual, texts), &mut Vec::new()).is_err());
    }
}
