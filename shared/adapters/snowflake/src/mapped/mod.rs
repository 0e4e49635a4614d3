//! A mapped table (any table the mapping file declares) read the way the
//! `case` table is: a run freezes its batch into a temporary snapshot with
//! each row's hash ([`sql`]), reads it a page at a time, every column
//! decoded by [`crate::values`], and deletes the rows that became safe by
//! joining the table against the snapshot on the key and the hash. Each
//! table has a Snowflake client of its own, kept by the warm process across
//! its plans (one login per table). The
//! table run ([`countries_shared::table_run`]) reads it through its ports.

pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use snowflake_api::QueryResult;
use uuid::Uuid;

use crate::sql::{single_count, snapshot_name};
use crate::values::decode_column;
use crate::{Scope, Session, SnowflakeSource};
use countries_shared::deadline::Deadline;
use countries_shared::failure::SourceError;
use countries_shared::model::ident::Identifier;
use countries_shared::model::value::{TablePage, Value};
use countries_shared::ports::{IdMatch, RowNumbers, TableSnapshot, TableSource};
use sql::{
    count_statement, join_delete_statement, page_statement, snapshot_statement, MappedTable,
};

/// A mapped table in Snowflake.
pub struct MappedSource {
    session: Arc<Session>,
    table: MappedTable,
}

impl SnowflakeSource {
    /// `table` read over this source's session.
    pub fn mapped(&self, table: MappedTable) -> MappedSource {
        MappedSource {
            session: Arc::clone(&self.session),
            table,
        }
    }
}

#[async_trait]
impl TableSource for MappedSource {
    async fn count_rows(&self, run_id: Uuid, deadline: &Deadline) -> Result<u64, SourceError> {
        let scope = Scope::of_run(Some(run_id), deadline);
        let done = self
            .session
            .exec("count", &count_statement(&self.table), scope)
            .await?;
        single_count("count", &done.result)
    }

    /// Freezes up to `limit` rows into run `run_id`'s snapshot.
    async fn snapshot(
        &self,
        run_id: Uuid,
        limit: usize,
        deadline: &Deadline,
    ) -> Result<Box<dyn TableSnapshot + '_>, SourceError> {
        let scope = Scope::of_run(Some(run_id), deadline);
        self.session.drop_leftovers(scope).await;
        let name = snapshot_name(run_id);
        let made = self
            .session
            .exec(
                "snapshot",
                &snapshot_statement(&self.table, &name, limit),
                scope,
            )
            .await?;
        Ok(Box::new(MappedSnapshot {
            source: self,
            name,
            scope: Scope {
                session: Some(made.session),
                ..scope
            },
        }))
    }

    fn statements_sent(&self) -> usize {
        self.session
            .statements
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One run's snapshot of a mapped table.
pub struct MappedSnapshot<'a> {
    source: &'a MappedSource,
    name: Identifier,
    scope: Scope,
}

#[async_trait]
impl TableSnapshot for MappedSnapshot<'_> {
    /// The rows numbered `numbers`, in order; fewer than the range holds
    /// when the snapshot ends there.
    async fn read(&self, numbers: RowNumbers) -> Result<TablePage, SourceError> {
        let sql = page_statement(&self.source.table, &self.name, &numbers);
        let done = self.source.session.exec("read", &sql, self.scope).await?;
        let batches = match done.result {
            QueryResult::Empty => {
                return Ok(TablePage::new(
                    *numbers.start(),
                    self.source.table.columns.len(),
                    0,
                ))
            }
            QueryResult::Arrow(batches) => batches,
            QueryResult::Json(json) => {
                return Err(SourceError::UnexpectedResult {
                    operation: "read",
                    detail: format!("expected Arrow rows, got JSON {}", json.value),
                })
            }
        };
        let copied = self.source.table.columns.len();
        // Sized once (a growing vector would hold two copies while it
        // moves), and each Arrow batch freed once decoded: the page's peak
        // is its rows and one batch, not its rows and all of its batches.
        let held: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut page = TablePage::new(*numbers.start(), copied, held);
        for batch in batches {
            if batch.num_columns() != copied + 1 {
                return Err(SourceError::UnexpectedResult {
                    operation: "read",
                    detail: format!(
                        "{} columns, expected {} and the row number",
                        batch.num_columns(),
                        copied
                    ),
                });
            }
            let schema = batch.schema();
            let mut columns = Vec::with_capacity(copied);
            for i in 0..copied {
                columns.push(decode_column(schema.field(i), batch.column(i).as_ref())?.into_iter());
            }
            for _ in 0..batch.num_rows() {
                page.push_row(columns.iter_mut().map(|c| match c.next() {
                    Some(Ok(value)) => Ok(value),
                    Some(Err(bad)) => Err(bad.to_string()),
                    None => Ok(Value::Null),
                }));
            }
        }
        Ok(page)
    }

    /// Deletes the table's rows that match, on the key and the whole
    /// copied content, a snapshot row numbered in `safe`; returns how many
    /// went. Safe to run twice.
    async fn delete(&self, safe: &[RowNumbers], keys: IdMatch) -> Result<u64, SourceError> {
        let Some(sql) = join_delete_statement(&self.source.table, &self.name, safe, keys) else {
            return Ok(0);
        };
        let done = self.source.session.exec("delete", &sql, self.scope).await?;
        single_count("delete", &done.result)
    }

    /// Drops the snapshot; one whose drop fails is dropped before the
    /// table's next snapshot (or dies with its session).
    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        self.source
            .session
            .drop_snapshot(&self.name, self.scope)
            .await
    }
}
