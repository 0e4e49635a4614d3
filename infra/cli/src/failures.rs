//! The operator's side of the failure report: list what is unresolved,
//! replay it into the replica once the cause is fixed, mark it resolved.

use chrono::{DateTime, Utc};
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::WriteError;
use countries_shared::isolate::write_isolating;
use countries_shared::model::row::{validate, CountryRow, SourceRow};
use countries_shared::ports::{RowWriter, WriterPool};
use countries_shared::postgres::connect::connect;
use countries_shared::postgres::failure_report::PostgresFailureReport;
use countries_shared::postgres::sqlstate::write_error;
use countries_shared::retry::RetryPolicy;
use serde::Serialize;

/// A stored, unresolved failure, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredFailure {
    pub message_id: String,
    pub country_id: Option<String>,
    pub country: Option<String>,
    pub error_class: String,
    pub sqlstate: Option<String>,
    pub error_message: String,
    pub reported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    pub replayed: Vec<String>,
    /// (message id, why it was not replayed)
    pub not_replayed: Vec<(String, String)>,
}

/// The failure report table, as operators work with it.
pub struct FailureReport {
    config: PostgresConfig,
}

impl FailureReport {
    pub fn new(config: PostgresConfig) -> Self {
        Self { config }
    }

    fn table(&self) -> String {
        PostgresFailureReport::new(self.config.clone()).table()
    }

    /// Unresolved failures, oldest first.
    pub async fn unresolved(&self, limit: i64) -> Result<Vec<StoredFailure>, WriteError> {
        let conn = connect(&self.config).await?;
        let rows = conn
            .client
            .query(
                &format!(
                    "SELECT message_id, country_id::text, country, error_class, sqlstate, error_message, reported_at \
                     FROM {} WHERE resolved_at IS NULL ORDER BY reported_at, message_id LIMIT $1",
                    self.table()
                ),
                &[&limit],
            )
            .await
            .map_err(|e| write_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| StoredFailure {
                message_id: r.get(0),
                country_id: r.get(1),
                country: r.get(2),
                error_class: r.get(3),
                sqlstate: r.get(4),
                error_message: r.get(5),
                reported_at: r.get(6),
            })
            .collect())
    }

    /// Writes unresolved failures into the replica again (after the cause
    /// was fixed) and marks the ones written as resolved. `only` limits it to
    /// some message ids.
    pub async fn replay(
        &self,
        writers: &dyn WriterPool,
        only: Option<&[String]>,
    ) -> Result<ReplayOutcome, WriteError> {
        let failures = self.unresolved(100_000).await?;
        let mut outcome = ReplayOutcome {
            replayed: Vec::new(),
            not_replayed: Vec::new(),
        };
        let mut rows: Vec<(String, CountryRow)> = Vec::new();
        let mut seen_ids = std::collections::HashSet::new();
        for f in failures {
            if only.is_some_and(|ids| !ids.contains(&f.message_id)) {
                continue;
            }
            let id = f.country_id.as_deref().and_then(|i| i.parse::<i128>().ok());
            let source = SourceRow {
                country_id: id,
                country: f.country.clone(),
            };
            match validate(&source) {
                Err(e) => outcome.not_replayed.push((
                    f.message_id,
                    format!("{e}: fix the row at the source, then resolve it by hand"),
                )),
                Ok(row) if !seen_ids.insert(row.country_id) => outcome.not_replayed.push((
                    f.message_id,
                    "another failure of the same country_id is replayed now; replay again for this one"
                        .into(),
                )),
                Ok(row) => rows.push((f.message_id, row)),
            }
        }
        if !rows.is_empty() {
            let mut writer: Box<dyn RowWriter> = writers.writer().await?;
            let refs: Vec<&CountryRow> = rows.iter().map(|(_, r)| r).collect();
            let policy = RetryPolicy::new(3);
            let result = write_isolating(
                writer.as_mut(),
                &refs,
                usize::MAX,
                policy,
                &Deadline::none(),
            )
            .await;
            for i in &result.written {
                outcome.replayed.push(rows[*i].0.clone());
            }
            for (i, e) in &result.rejected {
                outcome
                    .not_replayed
                    .push((rows[*i].0.clone(), e.to_string()));
            }
            for i in &result.deferred {
                let why = result
                    .stop
                    .as_ref()
                    .map_or_else(|| "not written".to_string(), ToString::to_string);
                outcome.not_replayed.push((rows[*i].0.clone(), why));
            }
        }
        self.resolve(&outcome.replayed, "replayed").await?;
        Ok(outcome)
    }

    /// Marks failures as resolved, with how.
    pub async fn resolve(
        &self,
        message_ids: &[String],
        resolution: &str,
    ) -> Result<u64, WriteError> {
        if message_ids.is_empty() {
            return Ok(0);
        }
        let conn = connect(&self.config).await?;
        conn.client
            .execute(
                &format!(
                    "UPDATE {} SET resolved_at = now(), resolution = $2 \
                     WHERE message_id = ANY($1) AND resolved_at IS NULL",
                    self.table()
                ),
                &[&message_ids, &resolution],
            )
            .await
            .map_err(|e| write_error(&e))
    }
}
