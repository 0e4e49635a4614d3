//! `countries tables FILE`: a table mapping file checked against both
//! databases before it is deployed. For each table, the source's columns
//! (Snowflake's `DESCRIBE TABLE`) and the target's (Postgres's catalog) are
//! read and matched (`replicator::tables::plan_table`, what the replicator
//! does at a table's first run); the answer is each table's column
//! plan, or every problem found, each naming its table and column.

use countries_shared::config::tables::{Rule, TableMapping};
use countries_shared::deadline::Deadline;
use countries_shared::model::columns::ColumnPlan;
use countries_snowflake::SnowflakeSource;
use replicator::tables::{plan_table, source_name};

/// One table of the file, checked.
#[derive(Debug)]
pub struct TableCheck {
    pub name: String,
    /// The source, quoted as Snowflake reads it.
    pub source: String,
    /// `schema.table` in Postgres.
    pub target: String,
    pub plan: Result<Vec<ColumnPlan>, Vec<String>>,
    /// The mapping's rules: (target column, rule).
    pub rules: Vec<(String, Rule)>,
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
        checked.push(TableCheck {
            name: table.name.clone(),
            source: source_name(table).quoted(),
            target: format!("{}.{}", table.target_schema, table.target_table),
            plan: plan_table(table, snowflake, postgres, deadline).await,
            rules: table.rules.clone(),
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
                    let rule = table
                        .rules
                        .iter()
                        .find(|(column, _)| *column == c.target)
                        .map(|(_, r)| format!("; rule {}: {}", r.name(), r.describe()))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "  {} -> {} ({}{key}): {}{refused}{rule}\n",
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
