//! The Postgres sink: binary COPY first, the idempotent upsert when COPY
//! refuses the chunk for a row-level reason, and the refused rows isolated
//! by bisection ([`PgSink`]); the pool that opens one on the container's
//! warm connection ([`pool::PostgresStore`]). Tested against Postgres in
//! `tests/postgres_sink.rs` and `tests/warm_postgres.rs`.

pub mod pool;

use async_trait::async_trait;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::connect::connect;
use crate::sqlstate::write_error;
use crate::warm::Lease;
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::{ErrorKind, WriteError};
use countries_shared::model::change::ChangeMark;
use countries_shared::model::row::CountryRow;
use countries_shared::ports::SinkOutcome;
use countries_shared::ports::{RowSink, WriteLimits};
use countries_shared::sink::isolate::{write_isolating, AllOrNothing};

pub fn upsert_statement(config: &PostgresConfig) -> String {
    let table = format!("{}.{}", config.schema.quoted(), config.table.quoted());
    // `IS DISTINCT FROM` keeps a replay from touching unchanged rows: no new
    // row versions, no WAL, and an honest count of what changed.
    format!(
        "INSERT INTO {table} AS t (\"country_id\", \"country\") \
         SELECT * FROM UNNEST($1::int4[], $2::text[]) \
         ON CONFLICT (\"country_id\") DO UPDATE SET \"country\" = EXCLUDED.\"country\" \
         WHERE t.\"country\" IS DISTINCT FROM EXCLUDED.\"country\""
    )
}

async fn prepare_upsert(client: &Client, config: &PostgresConfig) -> Result<Statement, WriteError> {
    client
        .prepare_typed(
            &upsert_statement(config),
            &[Type::INT4_ARRAY, Type::TEXT_ARRAY],
        )
        .await
        .map_err(|e| {
            let mut err = write_error(&e);
            err.message = format!(
                "preparing the upsert into {}.{}: {}",
                config.schema, config.table, err.message
            );
            err
        })
}

/// A connection with the upsert prepared.
///
/// Each chunk is written with binary `COPY` first: a scheduled run normally
/// brings new rows, and COPY inserts them about three times faster than an
/// `ON CONFLICT` upsert. COPY is all or nothing, so when it refuses the chunk
/// for a row-level reason (usually `23505`: some ids exist already, as in a
/// replay or an update), the chunk is written again with the upsert, which is
/// the semantics; its errors are what the caller sees.
pub struct PgSink {
    config: PostgresConfig,
    upsert: Statement,
    connection: Lease,
    copy_first: bool,
}

pub fn copy_statement(config: &PostgresConfig) -> String {
    format!(
        "COPY {}.{} (\"country_id\", \"country\") FROM STDIN (FORMAT binary)",
        config.schema.quoted(),
        config.table.quoted()
    )
}

impl PgSink {
    pub(crate) async fn new(
        config: PostgresConfig,
        mut connection: Lease,
    ) -> Result<Self, WriteError> {
        let upsert = match prepare_upsert(&connection.client, &config).await {
            Ok(upsert) => upsert,
            Err(e) => {
                connection.discard();
                return Err(e);
            }
        };
        Ok(Self {
            config,
            upsert,
            connection,
            copy_first: true,
        })
    }

    /// Writes every chunk with the upsert alone (the benchmark's comparison).
    pub fn without_copy(mut self) -> Self {
        self.copy_first = false;
        self
    }

    async fn copy_rows(&self, rows: &[&CountryRow]) -> Result<u64, WriteError> {
        let pg = |e: tokio_postgres::Error| write_error(&e);
        let sink = self
            .connection
            .client
            .copy_in(&copy_statement(&self.config))
            .await
            .map_err(pg)?;
        let writer =
            tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
        futures::pin_mut!(writer);
        for row in rows {
            writer
                .as_mut()
                .write(&[&row.country_id, &row.country])
                .await
                .map_err(pg)?;
        }
        writer.finish().await.map_err(pg)
    }

    async fn upsert_rows(&self, rows: &[&CountryRow]) -> Result<u64, WriteError> {
        let ids: Vec<i32> = rows.iter().map(|r| r.country_id).collect();
        let countries: Vec<&str> = rows.iter().map(|r| r.country.as_str()).collect();
        self.connection
            .client
            .execute(&self.upsert, &[&ids, &countries])
            .await
            .map_err(|e| write_error(&e))
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    /// After a lost connection: reconnect.
    pub(crate) async fn ensure_connected(&mut self) -> Result<(), WriteError> {
        if !self.connection.client.is_closed() {
            return Ok(());
        }
        tracing::warn!("Postgres connection lost; reconnecting");
        let connection = connect(&self.config).await?;
        self.upsert = prepare_upsert(&connection.client, &self.config).await?;
        self.connection.replace(connection);
        Ok(())
    }
}

#[async_trait]
impl AllOrNothing for PgSink {
    /// One COPY (or upsert): every row or none.
    async fn write_all(&mut self, rows: &[&CountryRow]) -> Result<u64, WriteError> {
        let written = self.copy_or_upsert(rows).await;
        if written
            .as_ref()
            .is_err_and(|e| e.kind != ErrorKind::RowLevel)
        {
            // The connection may be in any state: the next lease opens another.
            self.connection.discard();
        }
        written
    }
}

#[async_trait]
impl RowSink for PgSink {
    /// A chunk Postgres refuses because of a row is halved until the
    /// refused rows stand alone ([`write_isolating`]).
    async fn write(
        &mut self,
        rows: &[&CountryRow],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome {
        write_isolating(self, rows, limits, deadline).await
    }

    async fn mark_changes(&mut self, marks: &[ChangeMark]) -> Result<(), WriteError> {
        let marked = self.mark(marks).await;
        if marked.is_err() {
            self.connection.discard();
        }
        marked
    }
}

/// The last mark of each group: one statement may not touch a row twice.
fn last_per_group(marks: &[ChangeMark]) -> Vec<ChangeMark> {
    let mut last: std::collections::BTreeMap<(u32, u32, u32), ChangeMark> = Default::default();
    for mark in marks {
        last.insert((mark.buckets, mark.block, mark.bucket), *mark);
    }
    last.into_values().collect()
}

impl PgSink {
    async fn mark(&mut self, marks: &[ChangeMark]) -> Result<(), WriteError> {
        if marks.is_empty() {
            return Ok(());
        }
        self.ensure_connected().await?;
        let marks = last_per_group(marks);
        // Bucket counts, blocks and seqs are bounded far below these types' limits.
        let buckets: Vec<i32> = marks.iter().map(|m| m.buckets as i32).collect();
        let block: Vec<i32> = marks.iter().map(|m| m.block as i32).collect();
        let bucket: Vec<i32> = marks.iter().map(|m| m.bucket as i32).collect();
        let runs: Vec<uuid::Uuid> = marks.iter().map(|m| m.run_id).collect();
        let seqs: Vec<i64> = marks
            .iter()
            .map(|m| i64::try_from(m.seq).unwrap_or(i64::MAX))
            .collect();
        self.connection
            .client
            .execute(
                &format!(
                    "INSERT INTO {}.change_marks AS m (buckets, block, bucket, run_id, seq) \
                     SELECT * FROM UNNEST($1::int4[], $2::int4[], $3::int4[], $4::uuid[], $5::int8[]) \
                     ON CONFLICT (buckets, block, bucket) DO UPDATE \
                     SET run_id = EXCLUDED.run_id, seq = EXCLUDED.seq, marked_at = now()",
                    self.config.schema.quoted()
                ),
                &[&buckets, &block, &bucket, &runs, &seqs],
            )
            .await
            .map(drop)
            .map_err(|e| write_error(&e).context("marking the batches written"))
    }

    async fn copy_or_upsert(&mut self, rows: &[&CountryRow]) -> Result<u64, WriteError> {
        self.ensure_connected().await?;
        if self.copy_first {
            match self.copy_rows(rows).await {
                Ok(inserted) => return Ok(inserted),
                Err(e) if e.kind == ErrorKind::RowLevel => {
                    tracing::debug!(
                        sqlstate = e.sqlstate.as_deref().unwrap_or(""),
                        "COPY refused the chunk; upserting it"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.upsert_rows(rows).await
    }
}
