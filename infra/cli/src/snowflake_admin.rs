//! Writing to Snowflake, which the product itself never does: creating and
//! loading the source table on the local stack and in tests.

use countries_shared::config::SnowflakeConfig;
use countries_shared::failure::SourceError;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::collect_rows;
use countries_snowflake::arrow::ArrowRows;
use countries_snowflake::client::build_api;
use countries_snowflake::errors::api_error;
use countries_snowflake::sql::{select_statement, string_literal, SourceTable};
use snowflake_api::{QueryResult, SnowflakeApi};

/// Rows per `INSERT … VALUES` statement: the emulator's cost grows with
/// the literals in a statement, and Snowflake caps a statement's text.
const INSERT_CHUNK_ROWS: usize = 1_000;

/// A Snowflake session for administrative statements.
pub struct SnowflakeAdmin {
    api: SnowflakeApi,
    source: SourceTable,
}

impl SnowflakeAdmin {
    pub fn connect(config: &SnowflakeConfig) -> Result<Self, SourceError> {
        Ok(Self {
            api: build_api(config, "countries-cli")?,
            source: SourceTable::from_config(config),
        })
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, SourceError> {
        self.api
            .exec(sql)
            .await
            .map_err(|e| api_error("statement", e))
    }

    /// Every row of the configured table, in no order (at most `limit`).
    pub async fn all_rows(&self, limit: usize) -> Result<Vec<SourceRow>, SourceError> {
        match self.execute(&select_statement(&self.source, limit)).await? {
            QueryResult::Empty => Ok(Vec::new()),
            QueryResult::Arrow(batches) => collect_rows(Box::new(ArrowRows::new(batches)?)),
            QueryResult::Json(json) => Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!("expected Arrow rows, got JSON {}", json.value),
            }),
        }
    }

    /// Inserts rows into the configured table.
    pub async fn insert_rows(&self, rows: &[SourceRow]) -> Result<(), SourceError> {
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            if let Some(sql) = insert_statement(&self.source, chunk) {
                self.execute(&sql).await?;
            }
        }
        Ok(())
    }
}

/// `INSERT INTO "case" ("COUNTRY_ID", "COUNTRY") VALUES (…), …` with the
/// same literal formatting as the product's deletes.
pub fn insert_statement(source: &SourceTable, rows: &[SourceRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            let id = r
                .country_id
                .map_or_else(|| "NULL".to_string(), |i| i.to_string());
            let country = r
                .country
                .as_deref()
                .map_or_else(|| "NULL".to_string(), string_literal);
            format!("({id}, {country})")
        })
        .collect();
    Some(format!(
        "INSERT INTO {} ({}, {}) VALUES {}",
        source.table.quoted(),
        source.id.quoted(),
        source.country.quoted(),
        values.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_quotes_the_table_and_escapes_values() {
        let table = SourceTable::named("case");
        let sql = insert_statement(
            &table,
            &[
                SourceRow::new(Some(1), Some("O'B")),
                SourceRow::new(None, None),
            ],
        )
        .unwrap();
        assert_eq!(
            sql,
            r#"INSERT INTO "case" ("COUNTRY_ID", "COUNTRY") VALUES (1, 'O''B'), (NULL, NULL)"#
        );
        assert_eq!(insert_statement(&table, &[]), None);
    }
}
