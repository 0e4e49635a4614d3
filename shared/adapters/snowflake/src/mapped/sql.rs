//! The statements of a run over a mapped table (any table the mapping file
//! declares): the snapshot, a page of it, and the join delete. Like the
//! `case` table's ([`crate::sql`]) they carry numbers, never a row's
//! content, so their size does not grow with the rows.
//!
//! The snapshot keeps, beside the copied columns, each row's `HASH` over
//! them (`_ROW_HASH`). The delete joins the table to the snapshot on the
//! key with `=` (a hash join) and on that hash: a row goes only when its
//! whole copied content is the snapshot's, NULLs included (Snowflake's
//! `HASH` hashes NULL as a value). So a newer version of a key that arrived
//! after the snapshot survives, and identical copies of a row go together.
//! The delete names each key column once and the copied columns once in
//! the `HASH` call: its size follows the column list (about 12 bytes a
//! column, 6 KB for 500 columns, against Snowflake's 1 MB), never the rows.
//!
//! Why a 64-bit hash is enough: it decides only between versions of one
//! key (the key is compared as itself). A newer version of a key is lost
//! only if it arrived during the run and its hash equals the old
//! version's: 1 in 1.8 × 10^19 per such version, about one in 20 billion
//! years at a thousand such versions a second. Comparing every column
//! instead (`EQUAL_NULL` on each) would grow the statement by about 40 bytes
//! a column and filter row pairs column by column.

use crate::discovery::TableName;
use crate::sql::ROW_NUMBER_COLUMN;
use countries_shared::model::ident::Identifier;
use countries_shared::ports::{IdMatch, RowNumbers};

/// The snapshot's column holding each row's hash over its copied columns.
pub const ROW_HASH_COLUMN: &str = "\"_ROW_HASH\"";

/// A mapped table as its statements name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedTable {
    /// `"db"."schema"."table"`, quoted.
    pub table: String,
    /// The key columns (source names), quoted.
    pub keys: Vec<String>,
    /// The copied columns (source names, keys included), quoted, in the
    /// order a page returns them.
    pub columns: Vec<String>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl MappedTable {
    /// `keys` and `columns` are source column names, as discovered.
    pub fn new(table: &TableName<'_>, keys: &[String], columns: &[String]) -> Self {
        Self {
            table: table.quoted(),
            keys: keys.iter().map(|k| quote(k)).collect(),
            columns: columns.iter().map(|c| quote(c)).collect(),
        }
    }

    fn column_list(&self, alias: &str) -> String {
        let prefixed: Vec<String> = self.columns.iter().map(|c| format!("{alias}{c}")).collect();
        prefixed.join(", ")
    }

    /// Where the first key column is among the copied ones.
    pub fn first_key_position(&self) -> Option<usize> {
        let first = self.keys.first()?;
        self.columns.iter().position(|c| c == first)
    }

    fn key_order(&self, alias: &str) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{alias}{k} NULLS LAST"))
            .collect();
        format!("{}, {alias}{ROW_HASH_COLUMN}", keys.join(", "))
    }
}

/// `COUNT(*)` of the whole table (from metadata: no warehouse).
pub fn count_statement(table: &MappedTable) -> String {
    format!("SELECT COUNT(*) FROM {}", table.table)
}

/// Freezes the `limit` lowest rows (by key, then by hash: every version of
/// a key next to the others, in an order every run agrees on) into a
/// temporary table, numbered in that order, with each row's hash.
pub fn snapshot_statement(table: &MappedTable, snapshot: &Identifier, limit: usize) -> String {
    format!(
        "CREATE OR REPLACE TEMPORARY TABLE {snap} AS \
         SELECT s.*, ROW_NUMBER() OVER (ORDER BY {outer_order}) AS {ROW_NUMBER_COLUMN} \
         FROM (SELECT {columns}, HASH({columns}) AS {ROW_HASH_COLUMN} FROM {source} \
         ORDER BY {inner_order} LIMIT {limit}) AS s",
        snap = snapshot.quoted(),
        outer_order = table.key_order("s."),
        columns = table.column_list(""),
        source = table.table,
        inner_order = table.key_order(""),
    )
}

/// One page of the snapshot: the copied columns, then the row number.
pub fn page_statement(table: &MappedTable, snapshot: &Identifier, numbers: &RowNumbers) -> String {
    format!(
        "SELECT {}, {ROW_NUMBER_COLUMN} FROM {} \
         WHERE {ROW_NUMBER_COLUMN} BETWEEN {} AND {} ORDER BY {ROW_NUMBER_COLUMN}",
        table.column_list(""),
        snapshot.quoted(),
        numbers.start(),
        numbers.end()
    )
}

/// Deletes every row of the table whose key and copied content are a
/// snapshot row's numbered in `safe`. `IdMatch::Equal` joins the keys with
/// `=` (rows whose keys are all present); `IdMatch::BothNull` with
/// `EQUAL_NULL`, for the rows with a NULL in their key (never written, so
/// only ever deleted once in the failure path). `first_key_between`: the
/// lowest and highest value of the first key column (an integer) among
/// the pages `safe` falls in, as literals, so that Snowflake prunes the
/// table's micro-partitions before the join (a join predicate alone does
/// not); it names no row the join would not.
pub fn join_delete_statement(
    table: &MappedTable,
    snapshot: &Identifier,
    safe: &[RowNumbers],
    keys: IdMatch,
    first_key_between: Option<(i128, i128)>,
) -> Option<String> {
    if safe.is_empty() {
        return None;
    }
    let ranges: Vec<String> = safe
        .iter()
        .map(|r| {
            format!(
                "b.{ROW_NUMBER_COLUMN} BETWEEN {} AND {}",
                r.start(),
                r.end()
            )
        })
        .collect();
    let mut key_match: Vec<String> = Vec::new();
    if let (IdMatch::Equal, Some((lo, hi)), Some(first)) =
        (keys, first_key_between, table.keys.first())
    {
        key_match.push(format!("c.{first} BETWEEN {lo} AND {hi}"));
    }
    key_match.extend(table.keys.iter().map(|k| match keys {
        IdMatch::Equal => format!("c.{k} = b.{k}"),
        IdMatch::BothNull => format!("EQUAL_NULL(c.{k}, b.{k})"),
    }));
    Some(format!(
        "DELETE FROM {} AS c USING {} AS b WHERE ({}) AND {} \
         AND HASH({}) = b.{ROW_HASH_COLUMN}",
        table.table,
        snapshot.quoted(),
        ranges.join(" OR "),
        key_match.join(" AND "),
        table.column_list("c."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> MappedTable {
        MappedTable::new(
            &TableName {
                database: None,
                schema: Some("PUBLIC"),
                table: "ORDERS",
            },
            &["REGION".into(), "ORDER_NO".into()],
            &["REGION".into(), "ORDER_NO".into(), "Note".into()],
        )
    }

    #[test]
    fn the_snapshot_orders_by_key_then_hash_and_limits_inside() {
        let snap = Identifier::parse("SNAP").unwrap();
        assert_eq!(
            snapshot_statement(&orders(), &snap, 500),
            "CREATE OR REPLACE TEMPORARY TABLE \"SNAP\" AS SELECT s.*, ROW_NUMBER() OVER \
             (ORDER BY s.\"REGION\" NULLS LAST, s.\"ORDER_NO\" NULLS LAST, s.\"_ROW_HASH\") AS \"_RN\" \
             FROM (SELECT \"REGION\", \"ORDER_NO\", \"Note\", HASH(\"REGION\", \"ORDER_NO\", \"Note\") \
             AS \"_ROW_HASH\" FROM \"PUBLIC\".\"ORDERS\" ORDER BY \"REGION\" NULLS LAST, \
             \"ORDER_NO\" NULLS LAST, \"_ROW_HASH\" LIMIT 500) AS s"
        );
    }

    #[test]
    fn the_delete_joins_on_the_keys_and_the_hash_whatever_the_rows() {
        let snap = Identifier::parse("SNAP").unwrap();
        let sql = join_delete_statement(&orders(), &snap, &[1..=1_000_000], IdMatch::Equal, None)
            .expect("a statement");
        assert_eq!(
            sql,
            "DELETE FROM \"PUBLIC\".\"ORDERS\" AS c USING \"SNAP\" AS b WHERE \
             (b.\"_RN\" BETWEEN 1 AND 1000000) AND c.\"REGION\" = b.\"REGION\" AND \
             c.\"ORDER_NO\" = b.\"ORDER_NO\" AND HASH(c.\"REGION\", c.\"ORDER_NO\", c.\"Note\") \
             = b.\"_ROW_HASH\""
        );
        let nulls = join_delete_statement(
            &orders(),
            &snap,
            &[3..=3, 7..=9],
            IdMatch::BothNull,
            Some((1, 2)),
        )
        .expect("a statement");
        assert!(
            nulls.contains("EQUAL_NULL(c.\"REGION\", b.\"REGION\") AND EQUAL_NULL(c.\"ORDER_NO\", b.\"ORDER_NO\")")
                && nulls.contains("(b.\"_RN\" BETWEEN 3 AND 3 OR b.\"_RN\" BETWEEN 7 AND 9)")
                && !nulls.contains("c.\"REGION\" BETWEEN"),
            "no range for NULL keys: {nulls}"
        );
        assert_eq!(
            join_delete_statement(&orders(), &snap, &[], IdMatch::Equal, None),
            None
        );
        // An integer first key: its range prunes before the join.
        let pruned = join_delete_statement(
            &orders(),
            &snap,
            &[1..=100],
            IdMatch::Equal,
            Some((-5, 104_233)),
        )
        .expect("a statement");
        assert!(
            pruned.contains(
                "(b.\"_RN\" BETWEEN 1 AND 100) AND c.\"REGION\" BETWEEN -5 AND 104233 AND c.\"REGION\" = b.\"REGION\""
            ),
            "{pruned}"
        );
    }
}
