//! Rows from a CSV file (`country_id,country` per record), for loading the
//! local Snowflake. Quoting is RFC 4180's, through the `csv` crate, the same
//! as the digest email's attachment.

use anyhow::{bail, Context as _, Result};
use countries_shared::model::row::SourceRow;

/// Parses `country_id,country` records; a `country_id,country` header is
/// skipped; an empty field is NULL; values are kept exactly as written
/// (spaces and case included: validation is the product's job).
pub fn parse_csv(text: &str) -> Result<Vec<SourceRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("record {}", index + 1))?;
        let line = record.position().map_or(index as u64 + 1, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if index == 0
            && record.len() == 2
            && record[0].trim().eq_ignore_ascii_case("country_id")
            && record[1].trim().eq_ignore_ascii_case("country")
        {
            continue;
        }
        if record.len() != 2 {
            bail!(
                "line {line}: expected `country_id,country`, got {} field(s)",
                record.len()
            );
        }
        let id = record[0].trim();
        let country_id = if id.is_empty() {
            None
        } else {
            Some(
                id.parse::<i128>()
                    .with_context(|| format!("line {line}: country_id {id:?} is not an integer"))?,
            )
        };
        let country = &record[1];
        rows.push(SourceRow {
            country_id,
            country: (!country.is_empty()).then(|| country.to_string()),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_their_raw_values() {
        let rows =
            parse_csv("country_id,country\n1,USA\n2, che \n,IND\n3,\n4,\"O\"\"B\"\r\n").unwrap();
        assert_eq!(
            rows,
            vec![
                SourceRow::new(Some(1), Some("USA")),
                SourceRow::new(Some(2), Some(" che ")),
                SourceRow::new(None, Some("IND")),
                SourceRow::new(Some(3), None),
                SourceRow::new(Some(4), Some("O\"B")),
            ]
        );
    }

    #[test]
    fn a_quoted_comma_or_newline_stays_in_its_field() {
        let rows = parse_csv("5,\"A,B\"\n6,\"x\ny\"\n").unwrap();
        assert_eq!(rows[0], SourceRow::new(Some(5), Some("A,B")));
        assert_eq!(rows[1], SourceRow::new(Some(6), Some("x\ny")));
    }

    #[test]
    fn a_bad_csv_line_is_named() {
        let err = parse_csv("1,USA\nabc,FRA\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse_csv("1;USA").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
