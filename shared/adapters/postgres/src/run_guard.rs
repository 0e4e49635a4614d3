//! The run guard in Postgres: the run lock ([`crate::lock`]) and the run
//! ledger (`replication_run`), one per run whatever its sink (the replica,
//! or the changes queue in stream mode).

use async_trait::async_trait;

use crate::lock::RunLock;
use crate::sqlstate::write_error;
use countries_shared::config::PostgresConfig;
use countries_shared::failure::WriteError;
use countries_shared::ledger::RunSummary;
use countries_shared::ports::{GuardedRun, RunGuard};

/// Takes the run lock of one table and keeps the ledger beside it.
pub struct PostgresRunGuard {
    config: PostgresConfig,
    /// The ledger's `table_name`.
    table: String,
    lock_name: String,
}

impl PostgresRunGuard {
    /// The configured (`case`) table's guard.
    pub fn new(config: PostgresConfig) -> Self {
        Self {
            table: config.table.to_string(),
            lock_name: format!("countries-replicator:{}.{}", config.schema, config.table),
            config,
        }
    }

    /// The guard of the mapped table named `name` (the mapping's name):
    /// its own lock, and its name in the ledger.
    pub fn for_table(config: PostgresConfig, name: &str) -> Self {
        Self {
            table: name.to_string(),
            lock_name: format!("countries-replicator:table:{name}"),
            config,
        }
    }
}

#[async_trait]
impl RunGuard for PostgresRunGuard {
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn GuardedRun>>, WriteError> {
        let Some(lock) = RunLock::acquire(&self.config, self.lock_name.clone()).await? else {
            return Ok(None);
        };
        let run = PostgresRun {
            lock,
            table: self.table.clone(),
        };
        run.record(summary).await?;
        Ok(Some(Box::new(run)))
    }
}

/// One run's hold: the lock's connection, over which the ledger is written.
struct PostgresRun {
    lock: RunLock,
    table: String,
}

impl PostgresRun {
    async fn record(&self, s: &RunSummary) -> Result<(), WriteError> {
        let ledger = format!("{}.\"replication_run\"", self.lock.config().schema.quoted());
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.lock
            .client()
            .execute(
                &format!(
                    "INSERT INTO {ledger} (run_id, trigger_id, started_at, finished_at, outcome, \
                     rows_read, rows_written, rows_changed, rows_invalid, rows_rejected, \
                     rows_enqueued, rows_deferred, rows_deferred_duplicates, rows_deleted, error, \
                     snowflake_statements, sink, table_name) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                     ON CONFLICT (run_id) DO UPDATE SET finished_at = EXCLUDED.finished_at, \
                     outcome = EXCLUDED.outcome, rows_read = EXCLUDED.rows_read, \
                     rows_written = EXCLUDED.rows_written, rows_changed = EXCLUDED.rows_changed, \
                     rows_invalid = EXCLUDED.rows_invalid, rows_rejected = EXCLUDED.rows_rejected, \
                     rows_enqueued = EXCLUDED.rows_enqueued, rows_deferred = EXCLUDED.rows_deferred, \
                     rows_deferred_duplicates = EXCLUDED.rows_deferred_duplicates, \
                     rows_deleted = EXCLUDED.rows_deleted, error = EXCLUDED.error, \
                     snowflake_statements = EXCLUDED.snowflake_statements"
                ),
                &[
                    &s.run_id,
                    &s.trigger_id,
                    &s.started_at,
                    &s.finished_at,
                    &s.outcome.as_str(),
                    &to_i64(s.rows_read),
                    &to_i64(s.rows_written),
                    &to_i64(s.rows_changed),
                    &to_i64(s.rows_invalid),
                    &to_i64(s.rows_rejected),
                    &to_i64(s.rows_enqueued),
                    &to_i64(s.rows_deferred),
                    &to_i64(s.rows_deferred_duplicates),
                    &to_i64(s.rows_deleted),
                    &s.error,
                    &to_i64(s.snowflake_statements),
                    &s.sink.as_str(),
                    &self.table,
                ],
            )
            .await
            .map_err(|e| {
                let mut err = write_error(&e);
                err.message = format!("recording the run in {ledger}: {}", err.message);
                err
            })?;
        Ok(())
    }
}

#[async_trait]
impl GuardedRun for PostgresRun {
    async fn confirm(&mut self) -> Result<(), WriteError> {
        self.lock.confirm().await
    }

    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError> {
        self.lock.confirm().await?;
        self.record(summary).await
    }
}
