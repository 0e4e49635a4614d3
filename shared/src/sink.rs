//! Postgres, the system rows go to: TLS connection, the idempotent upsert, the
//! run lock and the run ledger.
//!
//! Every Postgres error is classified once, here, by SQLSTATE:
//! - row-level (class 22 data exception, class 23 integrity violation): the row
//!   itself is refused; the replicator isolates it and sends it to the queue;
//! - transient (connection, serialization, deadlock, lock timeout, cancel,
//!   resources, shutdown): retrying later can work;
//! - systemic (everything else: a missing table, a permission, a bad column):
//!   no row can be written, so the run stops and every row stays in Snowflake
//!   instead of flooding the queue.

use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

use crate::config::{PostgresConfig, TlsMode};
use crate::error_chain;
use crate::model::{CountryRow, FailureClass, FailureDetail};
use crate::replicator::RunSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    RowLevel,
    Transient,
    Systemic,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("Postgres {kind:?} error{}: {message}", sqlstate.as_ref().map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
pub struct WriteError {
    pub kind: WriteErrorKind,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl WriteError {
    pub fn is_transient(&self) -> bool {
        self.kind == WriteErrorKind::Transient
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: WriteErrorKind::Transient,
            sqlstate: None,
            message: message.into(),
        }
    }

    pub fn systemic(message: impl Into<String>) -> Self {
        Self {
            kind: WriteErrorKind::Systemic,
            sqlstate: None,
            message: message.into(),
        }
    }

    /// What the queue message says about this failure.
    pub fn detail(&self) -> FailureDetail {
        FailureDetail {
            class: match self.kind {
                WriteErrorKind::RowLevel => FailureClass::Rejected,
                WriteErrorKind::Transient | WriteErrorKind::Systemic => FailureClass::Transient,
            },
            sqlstate: self.sqlstate.clone(),
            message: self.message.clone(),
        }
    }

    pub fn from_postgres(err: &tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No SQLSTATE: the connection broke, timed out or was closed.
            return Self::transient(err.to_string());
        };
        let code = db.code().code();
        let kind = classify_sqlstate(code);
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(" (");
            message.push_str(detail);
            message.push(')');
        }
        if let Some(constraint) = db.constraint() {
            message.push_str(&format!(" [constraint {constraint}]"));
        }
        Self {
            kind,
            sqlstate: Some(code.to_string()),
            message,
        }
    }
}

pub fn classify_sqlstate(code: &str) -> WriteErrorKind {
    let class = code.get(..2).unwrap_or("");
    match class {
        // 21: cardinality (one statement touching an id twice); bisection
        // separates the two rows, so it heals like a refused row.
        "21" | "22" | "23" => WriteErrorKind::RowLevel,
        // connection exception, insufficient resources, system error
        "08" | "53" | "58" => WriteErrorKind::Transient,
        _ => {
            let transient = [
                SqlState::T_R_SERIALIZATION_FAILURE.code(),
                SqlState::T_R_DEADLOCK_DETECTED.code(),
                SqlState::LOCK_NOT_AVAILABLE.code(),
                SqlState::QUERY_CANCELED.code(),
                SqlState::ADMIN_SHUTDOWN.code(),
                SqlState::CRASH_SHUTDOWN.code(),
                SqlState::CANNOT_CONNECT_NOW.code(),
                SqlState::IDLE_SESSION_TIMEOUT.code(),
            ];
            if transient.contains(&code) {
                WriteErrorKind::Transient
            } else {
                WriteErrorKind::Systemic
            }
        }
    }
}

/// Something rows can be written to: one statement per call.
#[async_trait]
pub trait RowWriter: Send {
    /// Upserts the rows in one statement: all of them are committed, or none.
    /// Returns how many rows changed (a replay changes none).
    async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError>;
}

/// The replica, as the replicator sees it.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Starts a run: takes the run lock and records the run as started.
    /// `None` when another run holds the lock.
    async fn open_run(
        &self,
        summary: &RunSummary,
    ) -> Result<Option<Box<dyn ReplicaRun>>, WriteError>;
}

/// One run's hold on the replica. Dropping it releases the lock.
#[async_trait]
pub trait ReplicaRun: RowWriter {
    /// Records the run's outcome in the ledger.
    async fn finish(&mut self, summary: &RunSummary) -> Result<(), WriteError>;
}

/// Opens writers without a run lock (the retrier and the replay command).
#[async_trait]
pub trait WriterPool: Send + Sync {
    async fn writer(&self) -> Result<Box<dyn RowWriter>, WriteError>;
}

impl PostgresStore {
    /// A writer without the run lock, as a concrete type (the benchmark).
    pub async fn pg_writer(&self) -> Result<PgWriter, WriteError> {
        let connection = connect(&self.config).await?;
        PgWriter::new(self.config.clone(), connection, None).await
    }
}

/// Opens a connection with the configured TLS mode.
pub async fn connect(config: &PostgresConfig) -> Result<PgConnection, WriteError> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .dbname(&config.database)
        .user(&config.user)
        .application_name("countries-replication")
        .connect_timeout(config.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    let where_ = format!(
        "{}@{}:{}/{}",
        config.user, config.host, config.port, config.database
    );
    let fail = |e: tokio_postgres::Error| {
        let mut err = WriteError::from_postgres(&e);
        // Authentication and unknown-database errors are permanent, and so
        // is a TLS handshake refused for a bad certificate or host name.
        if err.sqlstate.is_none() && is_tls_refusal(&e) {
            err.kind = WriteErrorKind::Systemic;
        }
        err.message = format!("connecting to {where_}: {}", error_chain(&e));
        err
    };
    let (client, task) = match config.tls {
        TlsMode::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
            (client, tokio::spawn(drive(connection)))
        }
        mode => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tls_connector(mode, config)?;
            let (client, connection) = pg.connect(tls).await.map_err(fail)?;
            (client, tokio::spawn(drive(connection)))
        }
    };
    Ok(PgConnection { client, task })
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "Postgres connection ended with an error");
    }
}

fn tls_connector(
    mode: TlsMode,
    config: &PostgresConfig,
) -> Result<postgres_native_tls::MakeTlsConnector, WriteError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &config.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            WriteError::systemic(format!("reading PGSSLROOTCERT {}: {e}", path.display()))
        })?;
        let certs = pem_certificates(&pem)
            .map_err(|e| WriteError::systemic(format!("PGSSLROOTCERT {}: {e}", path.display())))?;
        // Like libpq's sslrootcert: trust exactly the given CAs.
        builder.disable_built_in_roots(true);
        for cert in certs {
            builder.add_root_certificate(cert);
        }
    }
    match mode {
        TlsMode::Require => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        TlsMode::VerifyCa => {
            builder.danger_accept_invalid_hostnames(true);
        }
        TlsMode::VerifyFull | TlsMode::Disable => {}
    }
    let connector = builder
        .build()
        .map_err(|e| WriteError::systemic(format!("building the TLS connector: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// Splits a PEM bundle (the RDS bundle holds dozens of CAs) into certificates.
fn pem_certificates(pem: &[u8]) -> Result<Vec<native_tls::Certificate>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_string())?;
    let mut certs = Vec::new();
    for block in text.split_inclusive(END).filter(|b| b.contains(END)) {
        let cert = native_tls::Certificate::from_pem(block.trim().as_bytes())
            .map_err(|e| format!("certificate {} unreadable: {e}", certs.len() + 1))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

fn is_tls_refusal(err: &tokio_postgres::Error) -> bool {
    let text = error_chain(err).to_ascii_lowercase();
    text.contains("certificate") || text.contains("handshake") || text.contains("ssl")
}

/// A client whose connection task ends with it.
pub struct PgConnection {
    pub client: Client,
    task: JoinHandle<()>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct PostgresStore {
    config: PostgresConfig,
}

impl PostgresStore {
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
        let writer = PgWriter::new(self.config.clone(), connection, Some(lock_name)).await?;
        let run = PostgresRun { writer };
        run.record(summary).await?;
        Ok(Some(Box::new(run)))
    }
}

#[async_trait]
impl WriterPool for PostgresStore {
    async fn writer(&self) -> Result<Box<dyn RowWriter>, WriteError> {
        let connection = connect(&self.config).await?;
        Ok(Box::new(
            PgWriter::new(self.config.clone(), connection, None).await?,
        ))
    }
}

async fn try_lock(client: &Client, lock_name: &str) -> Result<bool, WriteError> {
    // A session-level advisory lock: released when the connection ends, so a
    // crashed run cannot leave it behind.
    let row = client
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_name])
        .await
        .map_err(|e| WriteError::from_postgres(&e))?;
    Ok(row.get(0))
}

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
            let mut err = WriteError::from_postgres(&e);
            err.message = format!(
                "preparing the upsert into {}.{}: {}",
                config.schema, config.table, err.message
            );
            err
        })
}

/// A connection with the upsert prepared. With a lock name, it holds that
/// advisory lock and takes it again after reconnecting.
///
/// Each chunk is written with binary `COPY` first: a scheduled run normally
/// brings new rows, and COPY inserts them about three times faster than an
/// `ON CONFLICT` upsert. COPY is all or nothing, so when it refuses the chunk
/// for a row-level reason (usually `23505`: some ids exist already, as in a
/// replay or an update), the chunk is written again with the upsert, which is
/// the semantics; its errors are what the caller sees.
pub struct PgWriter {
    config: PostgresConfig,
    lock_name: Option<String>,
    upsert: Statement,
    connection: PgConnection,
    copy_first: bool,
}

pub fn copy_statement(config: &PostgresConfig) -> String {
    format!(
        "COPY {}.{} (\"country_id\", \"country\") FROM STDIN (FORMAT binary)",
        config.schema.quoted(),
        config.table.quoted()
    )
}

impl PgWriter {
    async fn new(
        config: PostgresConfig,
        connection: PgConnection,
        lock_name: Option<String>,
    ) -> Result<Self, WriteError> {
        let upsert = prepare_upsert(&connection.client, &config).await?;
        Ok(Self {
            config,
            lock_name,
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

    async fn copy_rows(&self, rows: &[CountryRow]) -> Result<u64, WriteError> {
        let pg = |e: tokio_postgres::Error| WriteError::from_postgres(&e);
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

    async fn upsert_rows(&self, rows: &[CountryRow]) -> Result<u64, WriteError> {
        let ids: Vec<i32> = rows.iter().map(|r| r.country_id).collect();
        let countries: Vec<&str> = rows.iter().map(|r| r.country.as_str()).collect();
        self.connection
            .client
            .execute(&self.upsert, &[&ids, &countries])
            .await
            .map_err(|e| WriteError::from_postgres(&e))
    }

    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    /// After a lost connection: reconnect and take the lock again. Another run
    /// may hold it by now, and then this run must stop writing.
    async fn ensure_connected(&mut self) -> Result<(), WriteError> {
        if !self.connection.client.is_closed() {
            return Ok(());
        }
        tracing::warn!("Postgres connection lost; reconnecting");
        let connection = connect(&self.config).await?;
        if let Some(lock_name) = &self.lock_name {
            if !try_lock(&connection.client, lock_name).await? {
                return Err(WriteError::systemic(
                    "lost the run lock with the connection, and another run holds it now",
                ));
            }
        }
        self.upsert = prepare_upsert(&connection.client, &self.config).await?;
        self.connection = connection;
        Ok(())
    }
}

#[async_trait]
impl RowWriter for PgWriter {
    async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError> {
        self.ensure_connected().await?;
        if self.copy_first {
            match self.copy_rows(rows).await {
                Ok(inserted) => return Ok(inserted),
                Err(e) if e.kind == WriteErrorKind::RowLevel => {
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

struct PostgresRun {
    writer: PgWriter,
}

impl PostgresRun {
    async fn record(&self, s: &RunSummary) -> Result<(), WriteError> {
        let ledger = format!("{}.\"replication_run\"", self.writer.config.schema.quoted());
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.writer
            .client()
            .execute(
                &format!(
                    "INSERT INTO {ledger} (run_id, trigger_id, started_at, finished_at, outcome, \
                     rows_read, rows_written, rows_changed, rows_invalid, rows_rejected, \
                     rows_enqueued, rows_deferred, rows_deferred_duplicates, rows_deleted, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (run_id) DO UPDATE SET finished_at = EXCLUDED.finished_at, \
                     outcome = EXCLUDED.outcome, rows_read = EXCLUDED.rows_read, \
                     rows_written = EXCLUDED.rows_written, rows_changed = EXCLUDED.rows_changed, \
                     rows_invalid = EXCLUDED.rows_invalid, rows_rejected = EXCLUDED.rows_rejected, \
                     rows_enqueued = EXCLUDED.rows_enqueued, rows_deferred = EXCLUDED.rows_deferred, \
                     rows_deferred_duplicates = EXCLUDED.rows_deferred_duplicates, \
                     rows_deleted = EXCLUDED.rows_deleted, error = EXCLUDED.error"
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
                ],
            )
            .await
            .map_err(|e| {
                let mut err = WriteError::from_postgres(&e);
                err.message = format!("recording the run in {ledger}: {}", err.message);
                err
            })?;
        Ok(())
    }
}

#[async_trait]
impl RowWriter for PostgresRun {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_fall_into_the_three_classes() {
        for row_level in [
            "23514", "23502", "23505", "23503", "22001", "22P02", "21000",
        ] {
            assert_eq!(
                classify_sqlstate(row_level),
                WriteErrorKind::RowLevel,
                "{row_level}"
            );
        }
        for transient in [
            "08006", "08001", "40001", "40P01", "55P03", "57014", "57P01", "53300", "58030",
        ] {
            assert_eq!(
                classify_sqlstate(transient),
                WriteErrorKind::Transient,
                "{transient}"
            );
        }
        for systemic in ["42P01", "42703", "42501", "28P01", "3D000", "25006"] {
            assert_eq!(
                classify_sqlstate(systemic),
                WriteErrorKind::Systemic,
                "{systemic}"
            );
        }
    }

    #[test]
    fn a_pem_bundle_is_split_and_junk_is_refused() {
        assert!(pem_certificates(b"not a certificate").is_err());
        assert!(pem_certificates(&[0xff, 0xfe]).is_err());
    }
}
