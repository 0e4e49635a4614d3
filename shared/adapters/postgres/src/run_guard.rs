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

/// Takes the run lock of the configured table and keeps the ledger beside it.
pub struct PostgresRunGuard {
    config: PostgresConfig,
}

impl PostgresRunGuard {
    pub fn new(config: PostgresConfig) -> Self {
        Self { config }
    }

    fn lock_name(&self) -> String {
        format!(
            "countries-replicator:{}.{}",
            self.config.schema, self.config.table
        )
    }
}

#[async_trait]
impl RunGuard for PostgresRunGuard {
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn GuardedRun>>, WriteError> {
        let Some(lock) = RunLock::acquire(&self.config, self.lock_name()).await? else {
            return Ok(None);
        };
        let run = PostgresRun { lock };
        run.record(summary).await?;
        Ok(Some(Box::new(run)))
    }
}

/// One run's hold: the lock's connection, over which the ledger is written.
struct PostgresRun {
    lock: RunLock,
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
                     snowflake_statements, sink) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
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
