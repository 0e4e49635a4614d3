//! The failure report table (`failure_report`): one row per dead letter,
//! stored idempotently on the SQS message id, with the `case` columns and
//! the table name and row as JSON (`row_data`), ready for other tables. An entry Postgres refuses is
//! isolated (savepoints, only after the fast path failed) so that the others
//! are stored; the reporter stores it again in escaped form.

use async_trait::async_trait;
use uuid::Uuid;

use countries_shared::config::PostgresConfig;
use std::collections::HashSet;

use crate::connect::PgConnection;
use crate::sqlstate::write_error;
use crate::warm::{PasswordSource, WarmConnection};
use countries_shared::failure::{ErrorKind, WriteError};
use countries_shared::model::report::FailureEntry;
use countries_shared::ports::{FailureStore, Stored};

/// The failure report table in Postgres, written on the container's warm
/// connection.
pub struct PostgresFailureReport {
    config: PostgresConfig,
    warm: WarmConnection,
}

impl PostgresFailureReport {
    pub fn new(config: PostgresConfig) -> Self {
        Self::with_password_source(config, None)
    }

    /// A report that reads `refresh` again when Postgres refuses the password.
    pub fn with_password_source(config: PostgresConfig, refresh: Option<PasswordSource>) -> Self {
        Self {
            warm: WarmConnection::new(config.clone(), refresh),
            config,
        }
    }

    /// The schema-qualified, quoted table name.
    pub fn table(&self) -> String {
        format!("{}.\"failure_report\"", self.config.schema.quoted())
    }
}

impl PostgresFailureReport {
    /// Inserts every entry in one transaction. With `isolate`, each entry
    /// goes under its own savepoint, so that a row-level refusal fails that
    /// entry alone; without it, the first refusal fails the call (the fast
    /// path, which is all a clean batch needs).
    async fn insert_all(
        &self,
        conn: &mut PgConnection,
        report_run_id: Uuid,
        entries: &[FailureEntry],
        isolate: bool,
    ) -> Result<Vec<Result<Stored, WriteError>>, WriteError> {
        let pg = |e: tokio_postgres::Error| write_error(&e);
        let mut tx = conn.client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} (message_id, record_key, country_id, country, error_class, sqlstate, \
                 error_message, attempts, first_failed_at, last_failed_at, source_run_id, report_run_id, raw_body, \
                 table_name, row_data, change_buckets, change_bucket, change_seq, change_block) \
                 VALUES ($1, $2, $3::text::numeric, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::text::jsonb, \
                 $16, $17, $18, $19) \
                 ON CONFLICT (message_id) DO NOTHING",
                self.table()
            ))
            .await
            .map_err(pg)?;
        let mut inserted: Vec<Result<u64, WriteError>> = Vec::with_capacity(entries.len());
        for e in entries {
            let country_id = e.country_id.map(|i| i.to_string());
            let attempts = e.attempts.map(|a| i32::try_from(a).unwrap_or(i32::MAX));
            let table_name = e
                .table
                .clone()
                .unwrap_or_else(|| self.config.table.to_string());
            let row_data = row_json(e);
            // Bucket counts and seqs are far below these types' limits.
            let change_buckets = e.change.map(|c| c.buckets as i32);
            let change_bucket = e.change.map(|c| c.bucket as i32);
            let change_seq = e.change.map(|c| i64::try_from(c.seq).unwrap_or(i64::MAX));
            let change_block = e.change.map(|c| c.block as i32);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 19] = [
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
                &table_name,
                &row_data,
                &change_buckets,
                &change_bucket,
                &change_seq,
                &change_block,
            ];
            if !isolate {
                inserted.push(Ok(tx.execute(&insert, &params).await.map_err(pg)?));
                continue;
            }
            let savepoint = tx.savepoint("entry").await.map_err(pg)?;
            match savepoint.execute(&insert, &params).await {
                Ok(n) => {
                    savepoint.commit().await.map_err(pg)?;
                    inserted.push(Ok(n));
                }
                Err(err) => {
                    let err = write_error(&err);
                    if err.kind != ErrorKind::RowLevel {
                        return Err(err);
                    }
                    savepoint.rollback().await.map_err(pg)?;
                    inserted.push(Err(err));
                }
            }
        }
        // Which of them a digest announced already (a letter that came back
        // because an earlier run could not delete it).
        let stored_ids: Vec<&str> = entries
            .iter()
            .zip(&inserted)
            .filter(|(_, r)| r.is_ok())
            .map(|(e, _)| e.message_id.as_str())
            .collect();
        let emailed: HashSet<String> = tx
            .query(
                &format!(
                    "SELECT message_id FROM {} WHERE message_id = ANY($1) AND emailed_at IS NOT NULL",
                    self.table()
                ),
                &[&stored_ids],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(entries
            .iter()
            .zip(inserted)
            .map(|(e, r)| {
                r.map(|n| Stored {
                    new: n == 1,
                    emailed: emailed.contains(&e.message_id),
                })
            })
            .collect())
    }
}

/// The record's row as JSON, keyed by source column name, as read (a
/// mapped table's as its message carries it); for `case`, an id
/// past 64 bits keeps every digit (a JSON number of any length; `jsonb`
/// stores it as `numeric`). None for a body that did not parse.
fn row_json(entry: &FailureEntry) -> Option<String> {
    if let Some(row) = &entry.row {
        // A mapped table's row, already keyed by column and tagged.
        return serde_json::to_string(row).ok();
    }
    if entry.raw_body.is_some() && entry.record_key.is_none() {
        return None;
    }
    let id = entry
        .country_id
        .map_or_else(|| "null".to_string(), |id| id.to_string());
    let country = serde_json::to_string(&entry.country).unwrap_or_else(|_| "null".into());
    Some(format!(r#"{{"country_id":{id},"country":{country}}}"#))
}

#[async_trait]
impl FailureStore for PostgresFailureReport {
    async fn store(
        &self,
        report_run_id: Uuid,
        entries: &[FailureEntry],
    ) -> Result<Vec<Result<Stored, WriteError>>, WriteError> {
        let mut conn = self.warm.lease().await?;
        let stored = match self
            .insert_all(&mut conn, report_run_id, entries, false)
            .await
        {
            Err(e) if e.kind == ErrorKind::RowLevel => {
                // Some entry holds a value Postgres refuses: store again,
                // each entry on its own, so that it alone is refused.
                tracing::warn!(error = %e, "the failure report refused an entry; isolating it");
                self.insert_all(&mut conn, report_run_id, entries, true)
                    .await
            }
            other => other,
        };
        if stored.is_err() {
            conn.discard();
        }
        stored
    }

    async fn mark_emailed(
        &self,
        report_run_id: Uuid,
        message_ids: &[String],
    ) -> Result<u64, WriteError> {
        let mut conn = self.warm.lease().await?;
        let marked = conn
            .client
            .execute(
                &format!(
                    "UPDATE {} SET emailed_in = $1, emailed_at = now() \
                     WHERE message_id = ANY($2) AND emailed_at IS NULL",
                    self.table()
                ),
                &[&report_run_id, &message_ids],
            )
            .await
            .map_err(|e| write_error(&e).context("recording the emailed records"));
        if marked.is_err() {
            conn.discard();
        }
        marked
    }
}
