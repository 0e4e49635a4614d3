//! The `case` row in its two forms: the raw values exactly as Snowflake
//! returned them ([`SourceRow`]), which identify the row for the delete, and
//! the validated form ([`CountryRow`]) that is written to Postgres.

use serde::{Deserialize, Serialize};

use crate::model::rules::{country_code, out_of_range_reason};
use crate::model::text::preview;
use crate::model::types::TargetType;

/// A row as read from Snowflake, before validation. `NUMBER(38,0)` can exceed
/// every Rust integer but `i128`, so the id is kept at that width until validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceRow {
    pub country_id: Option<i128>,
    pub country: Option<String>,
}

impl SourceRow {
    pub fn new(country_id: Option<i128>, country: Option<&str>) -> Self {
        Self {
            country_id,
            country: country.map(str::to_string),
        }
    }
}

/// A validated row, ready for Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryRow {
    pub country_id: i32,
    /// Exactly three ASCII uppercase letters.
    pub country: String,
    /// The raw row it came from: what the Snowflake delete must match.
    pub source: SourceRow,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRow {
    #[error("country_id is NULL")]
    NullId,
    /// In the words every table's range check uses.
    #[error("{}", out_of_range_reason("country_id", TargetType::Integer, *.0))]
    IdOutOfRange(i128),
    #[error("country is NULL")]
    NullCountry,
    #[error("country must be exactly three letters A-Z after trimming, got {0}")]
    BadCountry(String),
}

/// Validates one row.
///
/// The country code is trimmed and lowercase ASCII letters are upper-cased
/// (`" usa"` becomes `USA`): a lowercase ISO 3166 alpha-3 code names the same
/// country, and refusing it would only send a correct row to the failure report.
/// Anything else that is not three letters A–Z (digits, accents, two or four
/// letters, inner spaces) is rejected.
pub fn validate(row: &SourceRow) -> Result<CountryRow, InvalidRow> {
    let id = row.country_id.ok_or(InvalidRow::NullId)?;
    let country_id = i32::try_from(id).map_err(|_| InvalidRow::IdOutOfRange(id))?;
    let raw = row.country.as_deref().ok_or(InvalidRow::NullCountry)?;
    let country = country_code(raw).ok_or_else(|| InvalidRow::BadCountry(preview(raw, 40)))?;
    Ok(CountryRow {
        country_id,
        country,
        source: row.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Option<i128>, country: Option<&str>) -> SourceRow {
        SourceRow::new(id, country)
    }

    #[test]
    fn accepts_three_letters_and_normalises_case_and_spaces() {
        let ok = validate(&row(Some(7), Some(" usa "))).unwrap();
        assert_eq!(ok.country_id, 7);
        assert_eq!(ok.country, "USA");
        assert_eq!(ok.source.country.as_deref(), Some(" usa "), "raw kept");
    }

    #[test]
    fn rejects_every_malformed_row_with_a_reason() {
        let cases: Vec<(SourceRow, InvalidRow)> = vec![
            (row(None, Some("USA")), InvalidRow::NullId),
            (row(Some(1), None), InvalidRow::NullCountry),
            (
                row(Some(i128::from(i32::MAX) + 1), Some("USA")),
                InvalidRow::IdOutOfRange(i128::from(i32::MAX) + 1),
            ),
            (
                row(Some(i128::from(i32::MIN) - 1), Some("USA")),
                InvalidRow::IdOutOfRange(i128::from(i32::MIN) - 1),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(validate(&input).unwrap_err(), expected, "{input:?}");
        }
        for bad in [
            "", "US", "USAA", "U1A", "U A", "ÉSP", "UŠA", "\u{0}US", "U'S", "   ",
        ] {
            assert!(
                matches!(
                    validate(&row(Some(1), Some(bad))),
                    Err(InvalidRow::BadCountry(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn integer_limits_of_postgres_are_accepted() {
        for id in [0, -1, i128::from(i32::MAX), i128::from(i32::MIN)] {
            assert!(validate(&row(Some(id), Some("FRA"))).is_ok(), "{id}");
        }
    }

    #[test]
    fn a_huge_value_is_cut_in_the_error() {
        let huge = "A".repeat(10_000);
        let err = validate(&row(Some(1), Some(&huge)))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{} chars", err.len());
    }
}
