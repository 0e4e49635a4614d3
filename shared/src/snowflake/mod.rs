//! Snowflake, the system rows come from. A run freezes its batch into a
//! temporary snapshot table, reads it a page at a time ([`arrow`] decodes
//! the pages) and deletes the rows that became safe by joining the table
//! against the snapshot: no statement carries the rows' keys, so every
//! statement has the same small size whatever the batch ([`sql`] writes
//! them; [`client`] talks to Snowflake).

pub mod arrow;
pub mod client;
pub mod sql;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use snowflake_api::{QueryResult, SnowflakeApi};
use uuid::Uuid;

use crate::config::SnowflakeConfig;
use crate::failure::SourceError;
use crate::model::ident::Identifier;
use crate::ports::{IdMatch, RowNumbers, RowSource, RowsInMemory, Snapshot, SourceRows};
use crate::snowflake::arrow::ArrowRows;
use crate::snowflake::client::{api_error, build_api};
use crate::snowflake::sql::{
    count_statement, drop_statement, join_delete_statement, page_statement, single_count,
    snapshot_name, snapshot_statement,
};

/// The source table in Snowflake, and the session its snapshots live in.
pub struct SnowflakeSource {
    session: Arc<Session>,
    table: Identifier,
}

/// The client (its login is reused by later invocations of a warm Lambda,
/// and with it the session's temporary tables), the statements it sent, and
/// the snapshots whose drop failed: dropped before the next snapshot is
/// made. A snapshot that outlives its process dies with its session.
struct Session {
    api: SnowflakeApi,
    statements: AtomicUsize,
    undropped: Mutex<Vec<Identifier>>,
}

impl Session {
    async fn exec(&self, operation: &'static str, sql: &str) -> Result<QueryResult, SourceError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.api
            .exec(sql)
            .await
            .map_err(|e| api_error(operation, e))
    }

    fn undropped(&self) -> std::sync::MutexGuard<'_, Vec<Identifier>> {
        // A panic while holding this lock loses at most a name to retry.
        self.undropped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SnowflakeSource {
    pub fn connect(config: &SnowflakeConfig) -> Result<Self, SourceError> {
        Ok(Self {
            session: Arc::new(Session {
                api: build_api(config)?,
                statements: AtomicUsize::new(0),
                undropped: Mutex::new(Vec::new()),
            }),
            table: config.table.clone(),
        })
    }
}

#[async_trait]
impl RowSource for SnowflakeSource {
    async fn count_rows(&self) -> Result<u64, SourceError> {
        let result = self
            .session
            .exec("count", &count_statement(&self.table))
            .await?;
        single_count("count", &result)
    }

    async fn snapshot(&self, run_id: Uuid, limit: usize) -> Result<Box<dyn Snapshot>, SourceError> {
        let leftovers = std::mem::take(&mut *self.session.undropped());
        for name in leftovers {
            if let Err(e) = self.session.exec("drop", &drop_statement(&name)).await {
                tracing::warn!(snapshot = %name, error = %e, "an earlier snapshot still cannot be dropped");
                self.session.undropped().push(name);
            }
        }
        let name = snapshot_name(run_id);
        self.session
            .exec("snapshot", &snapshot_statement(&self.table, &name, limit))
            .await?;
        Ok(Box::new(SnowflakeSnapshot {
            session: Arc::clone(&self.session),
            table: self.table.clone(),
            name,
        }))
    }

    fn statements_sent(&self) -> usize {
        self.session.statements.load(Ordering::Relaxed)
    }
}

/// One run's temporary snapshot table.
struct SnowflakeSnapshot {
    session: Arc<Session>,
    table: Identifier,
    name: Identifier,
}

#[async_trait]
impl Snapshot for SnowflakeSnapshot {
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn SourceRows>, SourceError> {
        let first = *numbers.start();
        let result = self
            .session
            .exec("read", &page_statement(&self.name, &numbers))
            .await?;
        match result {
            QueryResult::Empty => Ok(Box::new(RowsInMemory::new(Vec::new()))),
            QueryResult::Arrow(batches) => Ok(Box::new(ArrowRows::numbered(batches, first)?)),
            QueryResult::Json(json) => Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!("expected Arrow rows, got JSON {}", json.value),
            }),
        }
    }

    async fn delete(&self, safe: &[RowNumbers], ids: IdMatch) -> Result<u64, SourceError> {
        let Some(sql) = join_delete_statement(&self.table, &self.name, safe, ids) else {
            return Ok(0);
        };
        let result = self.session.exec("delete", &sql).await?;
        single_count("delete", &result)
    }

    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        let dropped = self.session.exec("drop", &drop_statement(&self.name)).await;
        if dropped.is_err() {
            self.session.undropped().push(self.name.clone());
        }
        dropped.map(|_| ())
    }
}
