//! Snowflake, the system rows come from: read a capped batch of `case` rows
//! ([`arrow`] decodes them), and delete exactly the rows that are safe
//! elsewhere ([`sql`] writes the statements; [`client`] talks to Snowflake).

pub mod arrow;
pub mod client;
pub mod sql;

use async_trait::async_trait;
use snowflake_api::{QueryResult, SnowflakeApi};

use crate::config::SnowflakeConfig;
use crate::failure::SourceError;
use crate::model::ident::Identifier;
use crate::model::row::SourceRow;
use crate::ports::{RowSource, RowsInMemory, SourceRows};
use crate::snowflake::arrow::ArrowRows;
use crate::snowflake::client::{api_error, build_api};
use crate::snowflake::sql::{delete_statement, deleted_count, select_statement};

/// The source table in Snowflake.
pub struct SnowflakeSource {
    api: SnowflakeApi,
    table: Identifier,
    delete_chunk_rows: usize,
}

impl SnowflakeSource {
    pub fn connect(config: &SnowflakeConfig) -> Result<Self, SourceError> {
        Ok(Self {
            api: build_api(config)?,
            table: config.table.clone(),
            delete_chunk_rows: config.delete_chunk_rows,
        })
    }
}

#[async_trait]
impl RowSource for SnowflakeSource {
    async fn read_batch(&self, limit: usize) -> Result<Box<dyn SourceRows>, SourceError> {
        let sql = select_statement(&self.table, limit);
        let result = self
            .api
            .exec(&sql)
            .await
            .map_err(|e| api_error("read", e))?;
        match result {
            QueryResult::Empty => Ok(Box::new(RowsInMemory::new(Vec::new()))),
            QueryResult::Arrow(batches) => Ok(Box::new(ArrowRows::new(batches)?)),
            QueryResult::Json(json) => Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!("expected Arrow rows, got JSON {}", json.value),
            }),
        }
    }

    async fn delete_rows(&self, rows: &[SourceRow]) -> Result<u64, SourceError> {
        let Some(sql) = delete_statement(&self.table, rows) else {
            return Ok(0);
        };
        let result = self
            .api
            .exec(&sql)
            .await
            .map_err(|e| api_error("delete", e))?;
        deleted_count(&result)
    }

    fn max_rows_per_delete(&self) -> usize {
        self.delete_chunk_rows
    }
}
