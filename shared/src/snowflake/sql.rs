//! The SQL text sent to Snowflake. `snowflake-api` has no bind parameters,
//! so every literal is formatted here, in one audited place: integers printed
//! by Rust, strings escaped for Snowflake's single-quoted literals (`'` and
//! `\\` doubled), NULLs matched with `IS NULL`.

use snowflake_api::QueryResult;

use crate::failure::SourceError;
use crate::model::ident::Identifier;
use crate::model::row::SourceRow;
use crate::snowflake::arrow::decode_ids;

pub const ID_COLUMN: &str = "\"COUNTRY_ID\"";
pub const COUNTRY_COLUMN: &str = "\"COUNTRY\"";

pub fn select_statement(table: &Identifier, limit: usize) -> String {
    format!(
        "SELECT {ID_COLUMN}, {COUNTRY_COLUMN} FROM {} LIMIT {limit}",
        table.quoted()
    )
}

/// `DELETE … WHERE ("COUNTRY" = 'USA' AND "COUNTRY_ID" IN (1, 2, …)) OR …`:
/// it matches whole rows, so a newer version of an id that arrived after the
/// read survives. Ids are grouped under their country (few distinct codes)
/// rather than listed as `(id, country)` pairs: the same rows, statements
/// half the size, and three to four times faster for the emulator to parse
/// (measured: 4,500 vs 1,300 rows/s); Snowflake still prunes on the id.
/// Rows with a NULL get their own `IS NULL` predicate.
pub fn delete_statement(table: &Identifier, rows: &[SourceRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let mut by_country: std::collections::BTreeMap<&str, Vec<i128>> = Default::default();
    let mut null_predicates = Vec::new();
    for row in rows {
        match (row.country_id, row.country.as_deref()) {
            (Some(id), Some(country)) => by_country.entry(country).or_default().push(id),
            (id, country) => {
                let id_pred = id.map_or_else(
                    || format!("{ID_COLUMN} IS NULL"),
                    |id| format!("{ID_COLUMN} = {id}"),
                );
                let country_pred = country.map_or_else(
                    || format!("{COUNTRY_COLUMN} IS NULL"),
                    |c| format!("{COUNTRY_COLUMN} = {}", string_literal(c)),
                );
                null_predicates.push(format!("({id_pred} AND {country_pred})"));
            }
        }
    }
    let mut predicates: Vec<String> = by_country
        .into_iter()
        .map(|(country, mut ids)| {
            ids.sort_unstable();
            ids.dedup();
            let ids: Vec<String> = ids.iter().map(i128::to_string).collect();
            format!(
                "({COUNTRY_COLUMN} = {} AND {ID_COLUMN} IN ({}))",
                string_literal(country),
                ids.join(", ")
            )
        })
        .collect();
    predicates.extend(null_predicates);
    Some(format!(
        "DELETE FROM {} WHERE {}",
        table.quoted(),
        predicates.join(" OR ")
    ))
}

/// A Snowflake single-quoted string literal. Snowflake reads backslash escapes
/// inside such literals, so both the quote and the backslash are doubled.
pub fn string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub fn deleted_count(result: &QueryResult) -> Result<u64, SourceError> {
    let unexpected = |detail: String| SourceError::UnexpectedResult {
        operation: "delete",
        detail,
    };
    match result {
        QueryResult::Json(json) => {
            // A DELETE answers `[["<count>"]]` (one row, "number of rows deleted").
            let cell = json
                .value
                .get(0)
                .and_then(|row| row.get(0))
                .ok_or_else(|| unexpected(format!("no row count in {}", json.value)))?;
            let count = match cell {
                serde_json::Value::String(s) => s.parse::<u64>().ok(),
                serde_json::Value::Number(n) => n.as_u64(),
                _ => None,
            };
            count.ok_or_else(|| unexpected(format!("row count {cell} is not a number")))
        }
        QueryResult::Arrow(batches) => {
            let batch = batches
                .first()
                .ok_or_else(|| unexpected("no row count".into()))?;
            let mut ids = Vec::new();
            decode_ids(batch.column(0).as_ref(), &mut ids)?;
            ids.first()
                .copied()
                .flatten()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| unexpected("row count is not a number".into()))
        }
        QueryResult::Empty => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Identifier {
        Identifier::parse("case").unwrap()
    }

    #[test]
    fn select_quotes_the_reserved_table_name() {
        assert_eq!(
            select_statement(&table(), 500),
            r#"SELECT "COUNTRY_ID", "COUNTRY" FROM "case" LIMIT 500"#
        );
    }

    #[test]
    fn delete_matches_whole_rows_and_escapes_strings() {
        let rows = vec![
            SourceRow::new(Some(1), Some("USA")),
            SourceRow::new(Some(-2), Some("O'B\\")),
            SourceRow::new(None, Some("FRA")),
            SourceRow::new(Some(3), None),
        ];
        assert_eq!(
            delete_statement(&table(), &rows).unwrap(),
            r#"DELETE FROM "case" WHERE ("COUNTRY" = 'O''B\\' AND "COUNTRY_ID" IN (-2)) OR ("COUNTRY" = 'USA' AND "COUNTRY_ID" IN (1)) OR ("COUNTRY_ID" IS NULL AND "COUNTRY" = 'FRA') OR ("COUNTRY_ID" = 3 AND "COUNTRY" IS NULL)"#
        );
        let grouped = delete_statement(
            &table(),
            &[
                SourceRow::new(Some(9), Some("USA")),
                SourceRow::new(Some(2), Some("USA")),
                SourceRow::new(Some(2), Some("USA")),
                SourceRow::new(Some(5), Some("FRA")),
            ],
        )
        .unwrap();
        assert_eq!(
            grouped,
            r#"DELETE FROM "case" WHERE ("COUNTRY" = 'FRA' AND "COUNTRY_ID" IN (5)) OR ("COUNTRY" = 'USA' AND "COUNTRY_ID" IN (2, 9))"#
        );
        assert_eq!(delete_statement(&table(), &[]), None);
    }

    #[test]
    fn string_literal_cannot_be_escaped_from() {
        for nasty in ["'", "\\", "\\'", "''", "a'); DROP TABLE x; --", "\n\t"] {
            let lit = string_literal(nasty);
            let inner = &lit[1..lit.len() - 1];
            // Undo the escaping and check that we get the value back, which
            // means no quote ends the literal early.
            let restored = inner.replace("''", "'").replace("\\\\", "\\");
            assert_eq!(restored, nasty);
            assert!(!inner.replace("''", "").replace("\\\\", "").contains('\''));
        }
    }
}
