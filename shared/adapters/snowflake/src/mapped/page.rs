//! A page of a mapped table as Snowflake sent it: its Arrow batches, kept
//! as they are until the run decodes a chunk of rows
//! ([`countries_shared::model::value::EncodedPage`]). Each column's encoding is
//! checked when the page arrives, so decoding a chunk later cannot fail
//! as a whole: a value that is no value of its type refuses its row only.

use arrow_array::RecordBatch;

use crate::values::{decode_column, integer_bounds};
use countries_shared::failure::SourceError;
use countries_shared::model::value::{EncodedPage, TablePage, Value};

pub(super) struct ArrowPage {
    /// The snapshot number of the first row.
    first: u64,
    /// The copied columns (each batch also carries the row number, last).
    copied: usize,
    batches: Vec<RecordBatch>,
    /// The page index of each batch's first row, and the page's length.
    starts: Vec<usize>,
    rows: usize,
}

impl ArrowPage {
    /// The page of `batches`, numbered from `first`; an error names a
    /// batch of the wrong shape or a column whose encoding is none that
    /// Snowflake sends for its type.
    pub(super) fn new(
        first: u64,
        copied: usize,
        batches: Vec<RecordBatch>,
    ) -> Result<Self, SourceError> {
        let mut starts = Vec::with_capacity(batches.len());
        let mut rows = 0;
        for batch in &batches {
            if batch.num_columns() != copied + 1 {
                return Err(SourceError::UnexpectedResult {
                    operation: "read",
                    detail: format!(
                        "{} columns, expected {} and the row number",
                        batch.num_columns(),
                        copied
                    ),
                });
            }
            // Decoding no row checks the column's type and encoding.
            let schema = batch.schema();
            for i in 0..copied {
                decode_column(schema.field(i), batch.column(i).slice(0, 0).as_ref())?;
            }
            starts.push(rows);
            rows += batch.num_rows();
        }
        Ok(Self {
            first,
            copied,
            batches,
            starts,
            rows,
        })
    }
}

/// What a page's rows say of the first key column: the join delete's
/// pruning range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyBounds {
    /// Its lowest and highest value (an integer column).
    Between(i128, i128),
    /// Every value NULL.
    Nulls,
    /// Not an integer column: no range.
    Unknown,
}

impl KeyBounds {
    /// The bounds of two pages together.
    pub(super) fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            (Self::Nulls, b) | (b, Self::Nulls) => b,
            (Self::Between(a, b), Self::Between(c, d)) => Self::Between(a.min(c), b.max(d)),
        }
    }
}

impl ArrowPage {
    /// The bounds of column `column` (the first key column) in this page.
    pub(super) fn key_bounds(&self, column: usize) -> KeyBounds {
        self.batches.iter().fold(KeyBounds::Nulls, |acc, batch| {
            let field = batch.schema_ref().field(column).clone();
            let here = match integer_bounds(&field, batch.column(column).as_ref()) {
                Some(Some((lo, hi))) => KeyBounds::Between(lo, hi),
                Some(None) => KeyBounds::Nulls,
                None => KeyBounds::Unknown,
            };
            acc.and(here)
        })
    }
}

impl EncodedPage for ArrowPage {
    fn len(&self) -> usize {
        self.rows
    }

    fn decode(&self, rows: std::ops::Range<usize>) -> TablePage {
        let rows = rows.start.min(self.rows)..rows.end.min(self.rows);
        let first = self.first + rows.start as u64;
        let mut page = TablePage::new(first, self.copied, rows.len());
        for (batch, &start) in self.batches.iter().zip(&self.starts) {
            let end = start + batch.num_rows();
            let (from, to) = (rows.start.max(start), rows.end.min(end));
            if from >= to {
                continue;
            }
            let (offset, len) = (from - start, to - from);
            let schema = batch.schema();
            let mut columns = Vec::with_capacity(self.copied);
            for i in 0..self.copied {
                let column = batch.column(i).slice(offset, len);
                // Checked when the page arrived; should it fail all the
                // same, the rows fail (row-level), naming why.
                columns.push(
                    decode_column(schema.field(i), column.as_ref())
                        .map_err(|e| e.to_string())
                        .map(Vec::into_iter),
                );
            }
            for _ in 0..len {
                page.push_row(columns.iter_mut().map(|c| match c {
                    Ok(values) => match values.next() {
                        Some(Ok(value)) => Ok(value),
                        Some(Err(bad)) => Err(bad.to_string()),
                        None => Ok(Value::Null),
                    },
                    Err(why) => Err(why.clone()),
                }));
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn field(name: &str, ty: DataType, logical: &str) -> Field {
        let meta = HashMap::from([
            ("logicalType".to_string(), logical.to_string()),
            ("scale".to_string(), "0".to_string()),
        ]);
        Field::new(name, ty, true).with_metadata(meta)
    }

    /// A batch of (ID NUMBER, NOTE TEXT, the row number).
    fn batch(ids: Vec<Option<i64>>, notes: Vec<Option<&str>>) -> RecordBatch {
        let n = ids.len() as i64;
        let schema = Schema::new(vec![
            field("ID", DataType::Int64, "FIXED"),
            field("NOTE", DataType::Utf8, "TEXT"),
            field("N", DataType::Int64, "FIXED"),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(notes)),
            Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn a_chunk_across_batches_decodes_in_order_and_numbered() {
        let page = ArrowPage::new(
            11,
            2,
            vec![
                batch(vec![Some(1), Some(2)], vec![Some("a"), None]),
                batch(
                    vec![None, Some(4), Some(5)],
                    vec![Some("c"), Some("d"), Some("e")],
                ),
            ],
        )
        .unwrap();
        assert_eq!(page.len(), 5);
        let chunk = page.decode(1..4);
        assert_eq!(chunk.len(), 3);
        assert_eq!(chunk.number(0), 12);
        assert_eq!(chunk.row(0), [Value::Int(2), Value::Null]);
        assert_eq!(chunk.row(1), [Value::Null, Value::Text("c".into())]);
        assert_eq!(chunk.row(2), [Value::Int(4), Value::Text("d".into())]);
        assert_eq!(page.decode(4..9).len(), 1, "cut at the page's end");
        assert!(page.decode(7..9).is_empty());
    }

    #[test]
    fn a_page_gives_its_integer_key_range_for_the_delete() {
        let page = ArrowPage::new(
            1,
            2,
            vec![
                batch(vec![Some(7), None], vec![Some("a"), None]),
                batch(vec![Some(-3), Some(40)], vec![None, None]),
            ],
        )
        .unwrap();
        assert_eq!(page.key_bounds(0), KeyBounds::Between(-3, 40));
        assert_eq!(page.key_bounds(1), KeyBounds::Unknown, "a text column");
        let nulls = ArrowPage::new(1, 2, vec![batch(vec![None], vec![None])]).unwrap();
        assert_eq!(nulls.key_bounds(0), KeyBounds::Nulls);
        assert_eq!(
            KeyBounds::Nulls.and(KeyBounds::Between(1, 2)),
            KeyBounds::Between(1, 2)
        );
        assert_eq!(
            KeyBounds::Between(1, 2).and(KeyBounds::Unknown),
            KeyBounds::Unknown
        );
    }

    #[test]
    fn an_encoding_no_snowflake_type_arrives_in_is_refused_on_arrival() {
        let schema = Schema::new(vec![
            field("ID", DataType::Utf8, "FIXED"),
            field("N", DataType::Int64, "FIXED"),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["1"])),
            Arc::new(Int64Array::from(vec![1])),
        ];
        let bad = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
        let err = ArrowPage::new(1, 1, vec![bad]).err().expect("refused");
        assert!(err.to_string().contains("column ID"), "{err}");
        let err = ArrowPage::new(1, 3, vec![batch(vec![Some(1)], vec![None])])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("expected 3"), "{err}");
    }
}
