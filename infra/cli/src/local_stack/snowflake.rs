//! The Snowflake emulator's database, schema and tables: the statements of
//! `infra/sql/snowflake`, run in a database and schema made for them.

use anyhow::{Context, Result};

use crate::snowflake_admin::SnowflakeAdmin;

/// The source table as the product expects it.
pub const SCHEMA_SQL: &str = include_str!("../../../sql/snowflake/001_case.sql");

/// The statements of a SQL file, comment lines dropped first (they may hold
/// semicolons).
pub fn sql_statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Makes `database` and `database.schema` if missing, then runs `sql` in
/// them. `admin` may name any database: every statement is qualified or
/// runs after `USE SCHEMA`.
pub async fn set_up(admin: &SnowflakeAdmin, database: &str, schema: &str, sql: &str) -> Result<()> {
    for statement in [
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!("CREATE SCHEMA IF NOT EXISTS {database}.{schema}"),
        format!("USE SCHEMA {database}.{schema}"),
    ]
    .into_iter()
    .chain(sql_statements(sql))
    {
        admin
            .execute(&statement)
            .await
            .with_context(|| format!("Snowflake emulator: {statement}"))?;
    }
    Ok(())
}
