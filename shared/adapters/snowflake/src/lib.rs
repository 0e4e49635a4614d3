//! Snowflake, the system rows come from. A run freezes its batch into a
//! temporary snapshot table, reads it a page at a time ([`arrow`] decodes
//! the pages) and deletes the rows that became safe by joining the table
//! against the snapshot: no statement carries the rows' keys, so every
//! statement has the same small size whatever the batch ([`sql`] writes
//! them; [`client`] builds the client with its session settings; [`errors`]
//! classifies what Snowflake answers; [`discovery`] reads a table's columns
//! and their types; [`mapped`] reads and consumes any mapped table;
//! [`values`] decodes a column of any Snowflake type from every Arrow
//! encoding real Snowflake sends). Every statement is logged with its
//! query id, and carries the run's deadline: the client polls a long
//! statement until then and aborts it there. `checks` (with the `fuzzing`
//! feature) holds the properties the `row_and_delete` fuzz target drives.

pub mod arrow;
#[cfg(any(test, feature = "fuzzing"))]
pub mod checks;
pub mod client;
pub mod discovery;
pub mod errors;
pub mod mapped;
pub mod sql;
pub mod values;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use snowflake_api::{ExecOptions, Executed, QueryResult, SnowflakeApi};
use uuid::Uuid;

use crate::arrow::{decode_ids, ArrowRows};
use crate::client::{build_api, query_tag};
use crate::discovery::described_columns;
use crate::errors::api_error;
use crate::sql::{
    count_statement, describe_statement, drop_statement, join_delete_statement, page_statement,
    single_count, snapshot_name, snapshot_statement, SourceTable,
};
use countries_shared::config::SnowflakeConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::{Classify, SourceError};
use countries_shared::model::ident::Identifier;
use countries_shared::ports::{IdMatch, RowNumbers, RowSource, RowsInMemory, Snapshot, SourceRows};

/// The source table in Snowflake, and the session its snapshots live in.
pub struct SnowflakeSource {
    session: Arc<Session>,
    source: SourceTable,
    /// The table and its columns were found (once per process).
    checked: AtomicBool,
}

/// The client (its login is reused by later invocations of a warm Lambda,
/// and with it the session's temporary tables), the statements it sent, and
/// the snapshots whose drop failed: dropped before the next snapshot is
/// made. A snapshot that outlives its process dies with its session.
struct Session {
    api: SnowflakeApi,
    function: String,
    statements: AtomicUsize,
    undropped: Mutex<Vec<Identifier>>,
}

/// What a statement belongs to: the run (its `QUERY_TAG`), the time it may
/// take, and the session it needs (a snapshot's statements need the
/// session that holds the snapshot).
#[derive(Clone, Copy)]
struct Scope {
    run_id: Option<Uuid>,
    deadline: Option<Instant>,
    session: Option<u64>,
}

impl Scope {
    /// A statement of run `run_id` that needs no particular session.
    fn of_run(run_id: Option<Uuid>, deadline: &Deadline) -> Self {
        Self {
            run_id,
            deadline: deadline.statement_deadline(),
            session: None,
        }
    }
}

impl Session {
    /// Drops the snapshots earlier runs could not drop; one that still
    /// cannot be dropped is kept for the next try.
    async fn drop_leftovers(&self, scope: Scope) {
        let leftovers = std::mem::take(&mut *self.undropped());
        for name in leftovers {
            if let Err(e) = self.exec("drop", &drop_statement(&name), scope).await {
                tracing::warn!(snapshot = %name, error = %e, "an earlier snapshot still cannot be dropped");
                self.undropped().push(name);
            }
        }
    }

    /// Drops snapshot `name`; when that fails, it is remembered and dropped
    /// before the next snapshot ([`Self::drop_leftovers`]). A snapshot gone
    /// with its session needs nothing.
    async fn drop_snapshot(&self, name: &Identifier, scope: Scope) -> Result<(), SourceError> {
        match self.exec("drop", &drop_statement(name), scope).await {
            Ok(_) | Err(SourceError::SnapshotLost { .. }) => Ok(()),
            Err(e) => {
                self.undropped().push(name.clone());
                Err(e)
            }
        }
    }

    /// A statement of a run (counted in the run's statements).
    async fn exec(
        &self,
        operation: &'static str,
        sql: &str,
        scope: Scope,
    ) -> Result<Executed, SourceError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.send(operation, sql, scope).await
    }

    async fn send(
        &self,
        operation: &'static str,
        sql: &str,
        scope: Scope,
    ) -> Result<Executed, SourceError> {
        let tag = query_tag(&self.function, scope.run_id);
        let opts = ExecOptions {
            deadline: scope.deadline,
            query_tag: Some(&tag),
            session: scope.session,
        };
        let started = Instant::now();
        let run_id = scope.run_id.map(|id| id.to_string()).unwrap_or_default();
        match self.api.execute(sql, &opts).await {
            Ok(done) => {
                tracing::info!(
                    operation,
                    run_id,
                    query_id = done.query_id.as_deref().unwrap_or(""),
                    ms = started.elapsed().as_millis() as u64,
                    polls = done.polls,
                    chunks = done.chunks,
                    session = done.session,
                    "Snowflake statement"
                );
                Ok(done)
            }
            Err(e) => {
                let err = api_error(operation, e);
                tracing::warn!(
                    operation,
                    run_id,
                    ms = started.elapsed().as_millis() as u64,
                    kind = %err.kind(),
                    error = %err,
                    "Snowflake statement failed"
                );
                Err(err)
            }
        }
    }

    fn undropped(&self) -> std::sync::MutexGuard<'_, Vec<Identifier>> {
        // A panic while holding this lock loses at most a name to retry.
        self.undropped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The longest the check at start may take: Lambda gives a function's
/// initialisation 10 s in all.
pub const START_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl SnowflakeSource {
    /// The source for `function` (named in every statement's `QUERY_TAG`).
    pub fn connect(config: &SnowflakeConfig, function: &str) -> Result<Self, SourceError> {
        Self::with_api(build_api(config, function)?, config, function)
    }

    /// The source over a client built elsewhere (tests with short timeouts).
    pub fn with_api(
        api: SnowflakeApi,
        config: &SnowflakeConfig,
        function: &str,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            session: Arc::new(Session {
                api,
                function: function.to_string(),
                statements: AtomicUsize::new(0),
                undropped: Mutex::new(Vec::new()),
            }),
            source: SourceTable::from_config(config),
            checked: AtomicBool::new(false),
        })
    }

    /// Connects and checks the table at start, as a function's
    /// initialisation does: a wrong name stops the start with an error
    /// naming the variable; a network failure only postpones the check to
    /// the first run (an init that failed on it would be retried by Lambda
    /// in a crash loop). Bounded by [`START_CHECK`].
    pub async fn connect_and_check(
        config: &SnowflakeConfig,
        function: &str,
    ) -> Result<Self, SourceError> {
        let source = Self::connect(config, function)?;
        match source
            .check(&Deadline::after(START_CHECK, std::time::Duration::ZERO))
            .await
        {
            Ok(()) => {}
            Err(e) if countries_shared::failure::Classify::is_transient(&e) => {
                tracing::warn!(error = %e, "Snowflake could not be checked at start; the first run checks it");
            }
            Err(e) => return Err(e),
        }
        Ok(source)
    }

    /// Checks what no session setting can: that the table and its two
    /// columns exist as configured (`DESCRIBE TABLE`, answered from
    /// metadata without a warehouse). Once per process; the error names the
    /// variable to change.
    pub async fn check(&self, deadline: &Deadline) -> Result<(), SourceError> {
        if self.checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let scope = Scope::of_run(None, deadline);
        let described = self
            .session
            .send("check", &describe_statement(&self.source), scope)
            .await
            .map_err(|e| match e {
                SourceError::Statement { code, .. } if code == "002003" => SourceError::Refused {
                    operation: "check",
                    detail: format!(
                        "table {} not found, or not visible to the role: check SNOWFLAKE_TABLE, SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA and SNOWFLAKE_ROLE",
                        self.source.table.quoted()
                    ),
                },
                other => other,
            })?;
        let columns: Vec<String> = described_columns(&described.result)?
            .into_iter()
            .map(|c| c.name)
            .collect();
        for (var, column) in [
            ("SNOWFLAKE_ID_COLUMN", &self.source.id),
            ("SNOWFLAKE_COUNTRY_COLUMN", &self.source.country),
        ] {
            if !columns.iter().any(|c| c == column.as_str()) {
                return Err(SourceError::Refused {
                    operation: "check",
                    detail: format!(
                        "{var}: table {} has no column {} (it has {}); names are case-sensitive",
                        self.source.table.quoted(),
                        column.quoted(),
                        columns.join(", ")
                    ),
                });
            }
        }
        self.checked.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl RowSource for SnowflakeSource {
    async fn count_rows(
        &self,
        run_id: Option<Uuid>,
        deadline: &Deadline,
    ) -> Result<u64, SourceError> {
        self.check(deadline).await?;
        let scope = Scope::of_run(run_id, deadline);
        let done = self
            .session
            .exec("count", &count_statement(&self.source), scope)
            .await?;
        single_count("count", &done.result)
    }

    async fn snapshot(
        &self,
        run_id: Uuid,
        limit: usize,
        deadline: &Deadline,
    ) -> Result<Box<dyn Snapshot>, SourceError> {
        let scope = Scope::of_run(Some(run_id), deadline);
        self.session.drop_leftovers(scope).await;
        let name = snapshot_name(run_id);
        let made = self
            .session
            .exec(
                "snapshot",
                &snapshot_statement(&self.source, &name, limit),
                scope,
            )
            .await?;
        Ok(Box::new(SnowflakeSnapshot {
            session: Arc::clone(&self.session),
            source: self.source.clone(),
            name,
            scope: Scope {
                session: Some(made.session),
                ..scope
            },
            pages: Mutex::new(Vec::new()),
        }))
    }

    fn statements_sent(&self) -> usize {
        self.session.statements.load(Ordering::Relaxed)
    }
}

/// One run's temporary snapshot table, and the id range of each page read
/// (the join delete's pruning range).
struct SnowflakeSnapshot {
    session: Arc<Session>,
    source: SourceTable,
    name: Identifier,
    scope: Scope,
    pages: Mutex<Vec<(RowNumbers, IdRange)>>,
}

/// The lowest and highest non-NULL id of a page (None: only NULL ids).
type IdRange = Option<(i128, i128)>;

/// What a snapshot's pages read (their numbers, and what each says of its
/// key) say of the pages `safe` falls in: the join delete's pruning range
/// comes from those.
pub(crate) fn pages_touched<'a, B>(
    pages: &'a [(RowNumbers, B)],
    safe: &'a [RowNumbers],
) -> impl Iterator<Item = &'a B> {
    pages
        .iter()
        .filter(|(numbers, _)| {
            safe.iter()
                .any(|s| s.start() <= numbers.end() && numbers.start() <= s.end())
        })
        .map(|(_, bounds)| bounds)
}

impl SnowflakeSnapshot {
    /// The lowest and highest id of the pages `safe` falls in.
    fn ids_between(&self, safe: &[RowNumbers]) -> IdRange {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        pages_touched(&pages, safe)
            .filter_map(|bounds| *bounds)
            .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
    }
}

#[async_trait]
impl Snapshot for SnowflakeSnapshot {
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn SourceRows>, SourceError> {
        let first = *numbers.start();
        let done = self
            .session
            .exec(
                "read",
                &page_statement(&self.source, &self.name, &numbers),
                self.scope,
            )
            .await?;
        match done.result {
            QueryResult::Empty => Ok(Box::new(RowsInMemory::new(Vec::new()))),
            QueryResult::Arrow(batches) => {
                let mut bounds: IdRange = None;
                for batch in &batches {
                    let mut ids = Vec::with_capacity(batch.num_rows());
                    decode_ids(batch.column(0).as_ref(), &mut ids)?;
                    for id in ids.into_iter().flatten() {
                        bounds = Some(bounds.map_or((id, id), |(lo, hi)| (lo.min(id), hi.max(id))));
                    }
                }
                self.pages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((numbers, bounds));
                Ok(Box::new(ArrowRows::numbered(batches, first)?))
            }
            QueryResult::Json(json) => Err(SourceError::UnexpectedResult {
                operation: "read",
                detail: format!("expected Arrow rows, got JSON {}", json.value),
            }),
        }
    }

    async fn delete(&self, safe: &[RowNumbers], ids: IdMatch) -> Result<u64, SourceError> {
        let between = self.ids_between(safe);
        let Some(sql) = join_delete_statement(&self.source, &self.name, safe, ids, between) else {
            return Ok(0);
        };
        let done = self.session.exec("delete", &sql, self.scope).await?;
        single_count("delete", &done.result)
    }

    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        self.session.drop_snapshot(&self.name, self.scope).await
    }
}
