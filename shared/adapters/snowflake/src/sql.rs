//! The SQL text sent to Snowflake. `snowflake-api` has no bind parameters,
//! so every literal is formatted here, in one audited place: integers printed
//! by Rust, strings escaped for Snowflake's single-quoted literals (`'` and
//! `\\` doubled), NULLs matched with `IS NULL`.

use snowflake_api::QueryResult;

use crate::arrow::decode_ids;
use countries_shared::failure::SourceError;
use countries_shared::model::ident::Identifier;
use countries_shared::ports::{IdMatch, RowNumbers};

/// The source table and its two columns, as configured: quoted exactly as
/// given, so that `QUOTED_IDENTIFIERS_IGNORE_CASE` (set off at every login)
/// and Snowflake's upper-casing of unquoted names change nothing.
#[derive(Debug, Clone)]
pub struct SourceTable {
    pub table: Identifier,
    pub id: Identifier,
    pub country: Identifier,
}

impl SourceTable {
    pub fn from_config(config: &countries_shared::config::SnowflakeConfig) -> Self {
        Self {
            table: config.table.clone(),
            id: config.id_column.clone(),
            country: config.country_column.clone(),
        }
    }

    /// `"case"` with `"COUNTRY_ID"` and `"COUNTRY"`, the defaults.
    pub fn named(table: &str) -> Self {
        let ident = |s: &str| Identifier::parse(s).unwrap_or_else(|_| Identifier::fallback());
        Self {
            table: ident(table),
            id: ident("COUNTRY_ID"),
            country: ident("COUNTRY"),
        }
    }

    /// `"id", "country"`.
    fn columns(&self) -> String {
        format!("{}, {}", self.id.quoted(), self.country.quoted())
    }

    /// The snapshot's order: ids, then countries, NULLs last.
    fn order(&self) -> String {
        format!(
            "ORDER BY {} NULLS LAST, {} NULLS LAST",
            self.id.quoted(),
            self.country.quoted()
        )
    }
}

/// The column that numbers a run snapshot's rows.
pub const ROW_NUMBER_COLUMN: &str = "\"_RN\"";

/// Every row of the table, in no order (tests and operator tools).
pub fn select_statement(source: &SourceTable, limit: usize) -> String {
    format!(
        "SELECT {} FROM {} LIMIT {limit}",
        source.columns(),
        source.table.quoted()
    )
}

/// `COUNT(*)` of the whole table: Snowflake answers it from the table's
/// metadata, without resuming the warehouse.
pub fn count_statement(source: &SourceTable) -> String {
    format!("SELECT COUNT(*) FROM {}", source.table.quoted())
}

/// The table's columns, from metadata (no warehouse): the check at start.
pub fn describe_statement(source: &SourceTable) -> String {
    format!("DESCRIBE TABLE {}", source.table.quoted())
}

/// The snapshot's name: one per run, so a table a failed drop left behind
/// in a warm session never collides with the next run's.
pub fn snapshot_name(run_id: uuid::Uuid) -> Identifier {
    // 14 + 32 characters of [A-Z0-9_]: always a valid identifier.
    Identifier::parse(&format!("COUNTRIES_RUN_{}", run_id.simple()).to_ascii_uppercase())
        .unwrap_or_else(|_| Identifier::fallback())
}

/// Freezes the `limit` lowest rows (by id, then country) into a temporary
/// table, numbered in that order. The order is what makes runs agree: a run
/// after a crash sees the versions of an id in the same order as the run
/// that crashed, so it writes the same one first (a no-op) instead of
/// writing an older one over a newer one; and a page is an id range, which
/// lets Snowflake prune the table's partitions in the join delete. The
/// LIMIT sits in the subquery: `ROW_NUMBER()` over the outer query would be
/// computed before a LIMIT there. `OR REPLACE`: the client may send the
/// statement twice, and the second run of it must succeed (nothing was
/// read from the first yet).
pub fn snapshot_statement(source: &SourceTable, snapshot: &Identifier, limit: usize) -> String {
    let (columns, order) = (source.columns(), source.order());
    format!(
        "CREATE OR REPLACE TEMPORARY TABLE {snap} AS \
         SELECT {columns}, ROW_NUMBER() OVER ({order}) AS {ROW_NUMBER_COLUMN} \
         FROM (SELECT {columns} FROM {table} {order} LIMIT {limit})",
        snap = snapshot.quoted(),
        table = source.table.quoted(),
    )
}

/// One page of the snapshot: constant-size SQL whatever the page holds.
pub fn page_statement(source: &SourceTable, snapshot: &Identifier, numbers: &RowNumbers) -> String {
    format!(
        "SELECT {}, {ROW_NUMBER_COLUMN} FROM {} \
         WHERE {ROW_NUMBER_COLUMN} BETWEEN {} AND {} ORDER BY {ROW_NUMBER_COLUMN}",
        source.columns(),
        snapshot.quoted(),
        numbers.start(),
        numbers.end()
    )
}

/// Deletes from the table every row equal, on both columns, to a snapshot
/// row numbered in `safe`. The ids are joined with `=`, which every engine
/// runs as a hash join (and Snowflake can prune partitions with); the
/// country with `EQUAL_NULL`, a filter on the joined pairs. `ids_between`,
/// the lowest and highest id of the pages the ranges fall in, is a literal
/// range on the table itself: Snowflake prunes the table's micro-partitions
/// by it before the join, where a join alone may scan them all. Rows whose
/// id is NULL (never valid, so only ever deleted after being queued) have
/// their own statement, `IdMatch::BothNull`. A newer version of an id that
/// arrived after the snapshot differs in its country and survives; an
/// identical copy goes with its twin, as its content is safe.
pub fn join_delete_statement(
    source: &SourceTable,
    snapshot: &Identifier,
    safe: &[RowNumbers],
    ids: IdMatch,
    ids_between: Option<(i128, i128)>,
) -> Option<String> {
    if safe.is_empty() {
        return None;
    }
    let ranges: Vec<String> = safe
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                format!("b.{ROW_NUMBER_COLUMN} = {}", r.start())
            } else {
                format!(
                    "b.{ROW_NUMBER_COLUMN} BETWEEN {} AND {}",
                    r.start(),
                    r.end()
                )
            }
        })
        .collect();
    let (id, country) = (source.id.quoted(), source.country.quoted());
    let id_match = match (ids, ids_between) {
        (IdMatch::Equal, Some((lo, hi))) => {
            format!("c.{id} BETWEEN {lo} AND {hi} AND c.{id} = b.{id}")
        }
        (IdMatch::Equal, None) => format!("c.{id} = b.{id}"),
        (IdMatch::BothNull, _) => format!("c.{id} IS NULL AND b.{id} IS NULL"),
    };
    Some(format!(
        "DELETE FROM {} AS c USING {} AS b WHERE ({}) AND {id_match} \
         AND EQUAL_NULL(c.{country}, b.{country})",
        source.table.quoted(),
        snapshot.quoted(),
        ranges.join(" OR "),
    ))
}

pub fn drop_statement(snapshot: &Identifier) -> String {
    format!("DROP TABLE IF EXISTS {}", snapshot.quoted())
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

/// The single number a DELETE or a `COUNT(*)` answers.
pub fn single_count(operation: &'static str, result: &QueryResult) -> Result<u64, SourceError> {
    let unexpected = |detail: String| SourceError::UnexpectedResult { operation, detail };
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

    fn table() -> SourceTable {
        SourceTable::named("case")
    }

    #[test]
    fn select_quotes_the_reserved_table_name() {
        assert_eq!(
            select_statement(&table(), 500),
            r#"SELECT "COUNTRY_ID", "COUNTRY" FROM "case" LIMIT 500"#
        );
    }

    #[test]
    fn configured_names_are_quoted_as_given() {
        let source = SourceTable {
            table: Identifier::parse("Countries").unwrap(),
            id: Identifier::parse("id").unwrap(),
            country: Identifier::parse("Code").unwrap(),
        };
        assert_eq!(
            select_statement(&source, 5),
            r#"SELECT "id", "Code" FROM "Countries" LIMIT 5"#
        );
        assert_eq!(describe_statement(&source), r#"DESCRIBE TABLE "Countries""#);
    }

    #[test]
    fn the_snapshot_numbers_a_limited_subquery() {
        let snap = snapshot_name(uuid::Uuid::nil());
        assert_eq!(
            snap.as_str(),
            "COUNTRIES_RUN_00000000000000000000000000000000"
        );
        assert_eq!(
            snapshot_statement(&table(), &snap, 500),
            "CREATE OR REPLACE TEMPORARY TABLE \"COUNTRIES_RUN_00000000000000000000000000000000\" AS \
             SELECT \"COUNTRY_ID\", \"COUNTRY\", ROW_NUMBER() OVER (ORDER BY \"COUNTRY_ID\" NULLS LAST, \
             \"COUNTRY\" NULLS LAST) AS \"_RN\" FROM (SELECT \"COUNTRY_ID\", \"COUNTRY\" FROM \"case\" \
             ORDER BY \"COUNTRY_ID\" NULLS LAST, \"COUNTRY\" NULLS LAST LIMIT 500)"
        );
        assert_eq!(
            page_statement(&table(), &snap, &(101..=200)),
            "SELECT \"COUNTRY_ID\", \"COUNTRY\", \"_RN\" FROM \"COUNTRIES_RUN_00000000000000000000000000000000\" \
             WHERE \"_RN\" BETWEEN 101 AND 200 ORDER BY \"_RN\""
        );
    }

    #[test]
    fn the_join_delete_names_ranges_not_keys() {
        let snap = Identifier::parse("S").unwrap();
        assert_eq!(
            join_delete_statement(&table(), &snap, &[1..=5000, 5002..=5002], IdMatch::Equal, None).unwrap(),
            "DELETE FROM \"case\" AS c USING \"S\" AS b WHERE (b.\"_RN\" BETWEEN 1 AND 5000 OR b.\"_RN\" = 5002) \
             AND c.\"COUNTRY_ID\" = b.\"COUNTRY_ID\" AND EQUAL_NULL(c.\"COUNTRY\", b.\"COUNTRY\")"
        );
        let pruned =
            join_delete_statement(&table(), &snap, &[1..=10], IdMatch::Equal, Some((-5, 70)))
                .unwrap();
        assert!(
            pruned.contains(
                "c.\"COUNTRY_ID\" BETWEEN -5 AND 70 AND c.\"COUNTRY_ID\" = b.\"COUNTRY_ID\""
            ),
            "{pruned}"
        );
        let nulls =
            join_delete_statement(&table(), &snap, &[7..=9], IdMatch::BothNull, Some((1, 2)))
                .unwrap();
        assert!(
            nulls.contains("c.\"COUNTRY_ID\" IS NULL AND b.\"COUNTRY_ID\" IS NULL"),
            "{nulls}"
        );
        assert_eq!(
            join_delete_statement(&table(), &snap, &[], IdMatch::Equal, None),
            None
        );
        // The text does not grow with the rows a range holds.
        let one = join_delete_statement(&table(), &snap, &[1..=10], IdMatch::Equal, None).unwrap();
        let many = join_delete_statement(&table(), &snap, &[1..=10_000_000], IdMatch::Equal, None)
            .unwrap();
        assert!(many.len() - one.len() <= 6);
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
