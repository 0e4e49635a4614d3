//! A target table's columns as Postgres's catalog describes them (name,
//! type, NOT NULL, default, primary key), read when a table is planned, for
//! [`countries_shared::model::columns::match_columns`], and again before
//! each run, to see whether the table changed since
//! ([`countries_shared::model::columns::target_drift`]).

use tokio_postgres::Client;

use crate::sqlstate::write_error;
use countries_shared::failure::WriteError;
use countries_shared::model::columns::TargetColumn;

/// The columns of `schema.table` in their order; empty when the table does
/// not exist (the match then says so, naming the table).
pub async fn target_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<TargetColumn>, WriteError> {
    // Names as stored (no case folding): the mapping names them exactly.
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.attnotnull, a.atthasdef, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| write_error(&e).context(format!("reading the columns of {schema}.{table}")))?;
    Ok(rows
        .iter()
        .map(|row| TargetColumn {
            name: row.get(0),
            type_name: row.get(1),
            not_null: row.get(2),
            has_default: row.get(3),
            key: row.get(4),
        })
        .collect())
}
