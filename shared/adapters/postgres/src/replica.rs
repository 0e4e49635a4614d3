//! The replica as the replicator and the retrier see it: the run lock, the
//! writers, and the run ledger (`replication_run`).

use async_trait::async_trait;

use crate::connect::connect;
use crate::lock::try_lock;
use crate::sink::PgSink;
use crate::sqlstate::write_error;
use crate::warm::{Lease, PasswordSource, WarmConnection};
use countries_shared::config::PostgresConfig;
use countries_shared::failure::WriteError;
use countries_shared::ledger::RunSummary;
use countries_shared::model::row::CountryRow;
use countries_shared::ports::{ReplicaRun, ReplicaStore, RowSink, SinkPool};

/// The replica: the target table, its run lock and the ledger. Writers
/// without the lock (the retrier, the stream writer) use the container's
/// warm connection; a run opens its own, so that its lock ends with it.
pub struct PostgresStore {
    config: PostgresConfig,
    warm: WarmConnection,
}

impl PostgresStore {
    /// A store whose warm connection uses the configured password only.
    pub fn new(config: PostgresConfig) -> Self {
        Self::with_password_source(config, None)
    }

    /// A store that reads `refresh` again when Postgres refuses the password.
    pub fn with_password_source(config: PostgresConfig, refresh: Option<PasswordSource>) -> Self {
        Self {
            warm: WarmConnection::new(config.clone(), refresh),
            config,
        }
    }

    fn lock_name(&self) -> String {
        format!(
            "countries-replicator:{}.{}",
            self.config.schema, self.config.table
        )
    }
}

#[async_trait]
impl ReplicaStore for PostgresStore {
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn ReplicaRun>>, WriteError> {
        let connection = connect(&self.config).await?;
        let lock_name = self.lock_name();
        if !try_lock(&connection.client, &lock_name).await? {
            return Ok(None);
        }
        let writer = PgSink::new(
            self.config.clone(),
            Lease::from(connection),
            Some(lock_name),
        )
        .await?;
        let run = PostgresRun { writer };
        run.record(summary).await?;
        Ok(Some(Box::new(run)))
    }
}

#[async_trait]
impl SinkPool for PostgresStore {
    async fn open(&self) -> Result<Box<dyn RowSink>, WriteError> {
        Ok(Box::new(self.pg_writer().await?))
    }
}

impl PostgresStore {
    /// A writer without the run lock on the warm connection, as a concrete
    /// type (the benchmark).
    pub async fn pg_writer(&self) -> Result<PgSink, WriteError> {
        let lease = self.warm.lease().await?;
        // With the password in use now, should it reconnect mid-invocation.
        PgSink::new(self.warm.current_config(), lease, None).await
    }
}

struct PostgresRun {
    writer: PgSink,
}

impl PostgresRun {
    async fn record(&self, s: &RunSummary) -> Result<(), WriteError> {
        let ledger = format!(
            "{}.\"replication_run\"",
            self.writer.config().schema.quoted()
        );
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.writer
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
impl RowSink for PostgresRun {
    async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError> {
        self.writer.write_chunk(rows).await
    }
}

#[async_trait]
impl ReplicaRun for PostgresRun {
    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError> {
        self.writer.ensure_connected().await?;
        self.record(summary).await
    }
}
