//! `countries tables FILE`: a table mapping file checked against both
//! databases before it is deployed. For each table, the source's columns
//! (Snowflake's `DESCRIBE TABLE`) and the target's (Postgres's catalog) are
//! read and matched ([`match_columns`]); the answer is each table's column
//! plan, or every problem found, each naming its table and column.

use countries_postgres::catalog::target_columns;
use countries_shared::config::tables::TableMapping;
use countries_shared::deadline::Deadline;
use countries_shared::model::columns::{declared_columns, match_columns, ColumnPlan};
use countries_snowflake::discovery::TableName;
use countries_snowflake::SnowflakeSource;

/// One table of the file, checked.
#[derive(Debug)]
pub struct TableCheck {
    pub name: String,
    /// The source, quoted as Snowflake reads it.
    pub source: String,
    /// `schema.table` in Postgres.
    pub target: String,
    pub plan: Result<Vec<ColumnPlan>, Vec<String>>,
}

/// Checks every table of the file; one table's problems never stop the
/// others' checks.
pub async fn check_tables(
    tables: &[TableMapping],
    snowflake: &SnowflakeSource,
    postgres: &tokio_postgres::Client,
    deadline: &Deadline,
) -> Vec<TableCheck> {
    let mut checked = Vec::with_capacity(tables.len());
    for table in tables {
        let name = TableName {
            database: table.source_database.as_deref(),
            schema: &table.source_schema,
            table: &table.source_table,
        };
        let source = name.quoted();
        let target = format!("{}.{}", table.target_schema, table.target_table);
        let at = format!("table {}", table.name);
        let mut problems = Vec::new();
        let described = snowflake
            .describe(&name, deadline)
            .await
            .map_err(|e| problems.push(format!("{at}: source {source}: {e}")))
            .unwrap_or_default();
        let target_columns = target_columns(
            postgres,
            table.target_schema.as_str(),
            table.target_table.as_str(),
        )
        .await
        .map_err(|e| problems.push(format!("{at}: target {target}: {e}")))
        .unwrap_or_default();
        let plan = if problems.is_empty() {
            let pairs: Vec<(String, String)> = described
                .into_iter()
                .map(|c| (c.name, c.declared))
                .collect();
            let (source_columns, mut type_problems) = declared_columns(
                &table.name,
                &pairs,
                &target_columns,
                table.columns.as_deref(),
            );
            match match_columns(
                &table.name,
                &source_columns,
                &target_columns,
                table.columns.as_deref(),
                &table.key,
            ) {
                Ok(plan) if type_problems.is_empty() => Ok(plan),
                Ok(_) => Err(type_problems),
                Err(more) => {
                    type_problems.extend(more);
                    Err(type_problems)
                }
            }
        } else {
            Err(problems)
        };
        checked.push(TableCheck {
            name: table.name.clone(),
            source,
            target,
            plan,
        });
    }
    checked
}

/// The checks as the command prints them: per table, its column plan (what
/// each column keeps and refuses) or its problems.
pub fn render(checked: &[TableCheck]) -> String {
    let mut out = String::new();
    for table in checked {
        out.push_str(&format!(
            "table {}: {} -> {}\n",
            table.name, table.source, table.target
        ));
        match &table.plan {
            Ok(plan) => {
                for c in plan {
                    let key = if c.key { ", key" } else { "" };
                    let refused = if c.mapping.refused.is_empty() {
                        String::new()
                    } else {
                        format!("; refused: {}", c.mapping.refused)
                    };
                    out.push_str(&format!(
                        "  {} -> {} ({}{key}): {}{refused}\n",
                        c.source,
                        c.target,
                        c.target_type.sql(),
                        c.mapping.kept
                    ));
                }
            }
            Err(problems) => {
                for p in problems {
                    out.push_str(&format!("  problem: {p}\n"));
                }
            }
        }
    }
    out
}
