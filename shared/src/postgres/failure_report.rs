//! The failure report table (`failure_report`): one row per dead letter,
//! stored idempotently on the SQS message id.

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::PostgresConfig;
use crate::failure::WriteError;
use crate::model::report::FailureEntry;
use crate::ports::FailureStore;
use crate::postgres::connect::connect;
use crate::postgres::sqlstate::write_error;

/// The failure report table in Postgres.
pub struct PostgresFailureReport {
    config: PostgresConfig,
}

impl PostgresFailureReport {
    pub fn new(config: PostgresConfig) -> Self {
        Self { config }
    }

    /// The schema-qualified, quoted table name.
    pub fn table(&self) -> String {
        format!("{}.\"failure_report\"", self.config.schema.quoted())
    }
}

#[async_trait]
impl FailureStore for PostgresFailureReport {
    async fn store(
        &self,
        report_run_id: Uuid,
        entries: &[FailureEntry],
    ) -> Result<u64, WriteError> {
        let mut conn = connect(&self.config).await?;
        let pg = |e: tokio_postgres::Error| write_error(&e);
        let tx = conn.client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} (message_id, record_key, country_id, country, error_class, sqlstate, \
                 error_message, attempts, first_failed_at, last_failed_at, source_run_id, report_run_id, raw_body) \
                 VALUES ($1, $2, $3::text::numeric, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (message_id) DO NOTHING",
                self.table()
            ))
            .await
            .map_err(pg)?;
        let mut new = 0;
        for e in entries {
            let country_id = e.country_id.map(|i| i.to_string());
            let attempts = e.attempts.map(|a| i32::try_from(a).unwrap_or(i32::MAX));
            new += tx
                .execute(
                    &insert,
                    &[
                        &e.message_id,
                        &e.record_key,
                        &country_id,
                        &e.country,
                        &e.error_class,
                        &e.sqlstate,
                        &e.error_message,
                        &attempts,
                        &e.first_failed_at,
                        &e.last_failed_at,
                        &e.source_run_id,
                        &report_run_id,
                        &e.raw_body,
                    ],
                )
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }
}
