//! A mapped table (any table the mapping file declares) read the way the
//! `case` table is: a run freezes its batch into a temporary snapshot with
//! each row's hash ([`sql`]), reads it a page at a time, every column
//! decoded by [`crate::values`], and deletes the rows that became safe by
//! joining the table against the snapshot on the key and the hash (and,
//! for an integer first key, between its literal bounds in the pages
//! read, for partition pruning). Each
//! table has a Snowflake client of its own, kept by the warm process across
//! its plans (one login per table). The
//! table run ([`countries_shared::table_run`]) reads it through its ports.

mod page;
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use snowflake_api::QueryResult;
use uuid::Uuid;

use crate::sql::{single_count, snapshot_name};
use crate::{Scope, Session, SnowflakeSource};
use countries_shared::deadline::Deadline;
use countries_shared::failure::SourceError;
use countries_shared::model::ident::Identifier;
use countries_shared::model::value::EncodedPage;
use countries_shared::ports::{IdMatch, RowNumbers, TableSnapshot, TableSource};
use page::{ArrowPage, KeyBounds};
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
            pages: std::sync::Mutex::new(Vec::new()),
        }))
    }

    fn statements_sent(&self) -> usize {
        self.session
            .statements
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One run's snapshot of a mapped table, and what each page read says of
/// its first key column (the join delete's pruning range).
pub struct MappedSnapshot<'a> {
    source: &'a MappedSource,
    name: Identifier,
    scope: Scope,
    pages: std::sync::Mutex<Vec<(RowNumbers, KeyBounds)>>,
}

impl MappedSnapshot<'_> {
    /// The first key column's lowest and highest value in the pages
    /// `safe` falls in; None when it is no integer column.
    fn first_key_between(&self, safe: &[RowNumbers]) -> Option<(i128, i128)> {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let bounds =
            crate::pages_touched(&pages, safe).fold(KeyBounds::Nulls, |acc, b| acc.and(*b));
        match bounds {
            KeyBounds::Between(lo, hi) => Some((lo, hi)),
            KeyBounds::Nulls | KeyBounds::Unknown => None,
        }
    }
}

#[async_trait]
impl TableSnapshot for MappedSnapshot<'_> {
    /// The rows numbered `numbers`, in order; fewer than the range holds
    /// when the snapshot ends there.
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn EncodedPage>, SourceError> {
        let sql = page_statement(&self.source.table, &self.name, &numbers);
        let done = self.source.session.exec("read", &sql, self.scope).await?;
        let copied = self.source.table.columns.len();
        let batches = match done.result {
            QueryResult::Empty => Vec::new(),
            QueryResult::Arrow(batches) => batches,
            QueryResult::Json(json) => {
                return Err(SourceError::UnexpectedResult {
                    operation: "read",
                    detail: format!("expected Arrow rows, got JSON {}", json.value),
                })
            }
        };
        let page = ArrowPage::new(*numbers.start(), copied, batches)?;
        let bounds = self
            .source
            .table
            .first_key_position()
            .map_or(KeyBounds::Unknown, |k| page.key_bounds(k));
        self.pages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((numbers, bounds));
        Ok(Box::new(page))
    }

    /// Deletes the table's rows that match, on the key and the whole
    /// copied content, a snapshot row numbered in `safe`; returns how many
    /// went. Safe to run twice.
    async fn delete(&self, safe: &[RowNumbers], keys: IdMatch) -> Result<u64, SourceError> {
        let between = self.first_key_between(safe);
        let table = &self.source.table;
        let Some(sql) = join_delete_statement(table, &self.name, safe, keys, between) else {
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
