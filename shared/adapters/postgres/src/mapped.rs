//! A mapped table's rows (any table the mapping file declares) into
//! Postgres, as the `case` sink writes: binary COPY first; when COPY refuses
//! the chunk for a row-level reason (usually `23505`, keys present already),
//! the upsert, through a temporary staging table filled by binary COPY in
//! the same transaction; refused rows isolated by bisection
//! ([`write_isolating`] over [`AllOrNothing`]); [`PgTableSink`] is the table
//! run's sink, on a connection of its own, opened again once lost.

use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::catalog::target_columns;
use crate::connect::PgConnection;
use crate::sqlstate::write_error;
use crate::values::{is_value_refused, PgValue};
use crate::warm::{PasswordSource, WarmConnection};
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::{ErrorKind, SinkError, WriteError};
use countries_shared::model::columns::{target_drift, ColumnPlan, TargetColumn};
use countries_shared::model::ident::Identifier;
use countries_shared::model::types::TargetType;
use countries_shared::model::value::Value;
use countries_shared::ports::{SinkOutcome, TableSink, WriteLimits};
use countries_shared::retry::retry;
use countries_shared::sink::isolate::{write_isolating, AllOrNothing};

/// The Postgres type a mapped column is sent as.
pub fn pg_type(target: TargetType) -> Type {
    match target {
        TargetType::Smallint => Type::INT2,
        TargetType::Integer => Type::INT4,
        TargetType::Bigint => Type::INT8,
        TargetType::Numeric => Type::NUMERIC,
        TargetType::Double => Type::FLOAT8,
        TargetType::Text => Type::TEXT,
        TargetType::Varchar => Type::VARCHAR,
        TargetType::Boolean => Type::BOOL,
        TargetType::Date => Type::DATE,
        TargetType::Time => Type::TIME,
        TargetType::Timestamp => Type::TIMESTAMP,
        TargetType::Timestamptz => Type::TIMESTAMPTZ,
        TargetType::Jsonb => Type::JSONB,
        TargetType::Bytea => Type::BYTEA,
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A written column: its Postgres name and type, and whether it is part of
/// the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumnType {
    pub name: String,
    pub ty: TargetType,
    pub key: bool,
}

/// A mapped table's target, with its statements made once.
#[derive(Debug, Clone)]
pub struct MappedTarget {
    /// `"schema"."table"`.
    table: String,
    types: Vec<Type>,
    copy: String,
    stage: String,
    copy_staged: String,
    upsert: String,
}

impl MappedTarget {
    /// The target `schema.table`, written in the order of `plan`'s columns.
    pub fn new(schema: &Identifier, table: &Identifier, plan: &[ColumnPlan]) -> Self {
        let columns: Vec<TargetColumnType> = plan
            .iter()
            .map(|c| TargetColumnType {
                name: c.target.clone(),
                ty: c.target_type,
                key: c.key,
            })
            .collect();
        Self::of_columns(schema, table, &columns)
    }

    /// The target `schema.table`, written in the order of `columns`.
    pub fn of_columns(schema: &Identifier, table: &Identifier, plan: &[TargetColumnType]) -> Self {
        let qualified = format!("{}.{}", schema.quoted(), table.quoted());
        let columns: Vec<String> = plan.iter().map(|c| quote(&c.name)).collect();
        let keys: Vec<String> = plan
            .iter()
            .filter(|c| c.key)
            .map(|c| quote(&c.name))
            .collect();
        let others: Vec<&String> = plan
            .iter()
            .zip(&columns)
            .filter(|(c, _)| !c.key)
            .map(|(_, q)| q)
            .collect();
        let list = columns.join(", ");
        // One staging table per target and session; its name is a hash, so
        // that a long target name never makes it pass Postgres's 63 bytes.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        qualified.hash(&mut hasher);
        let staging = format!("\"countries_stage_{:016x}\"", hasher.finish());
        let conflict = if others.is_empty() {
            "DO NOTHING".to_string()
        } else {
            let set: Vec<String> = others
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            let old: Vec<String> = others.iter().map(|c| format!("t.{c}")).collect();
            let new: Vec<String> = others.iter().map(|c| format!("EXCLUDED.{c}")).collect();
            // `IS DISTINCT FROM` leaves unchanged rows alone: no new row
            // versions, and an honest count of what changed.
            format!(
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                set.join(", "),
                old.join(", "),
                new.join(", ")
            )
        };
        Self {
            types: plan.iter().map(|c| pg_type(c.ty)).collect(),
            copy: format!("COPY {qualified} ({list}) FROM STDIN (FORMAT binary)"),
            // Rows live for one transaction; the table for the session.
            stage: format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS \
                 SELECT {list} FROM {qualified} WITH NO DATA"
            ),
            copy_staged: format!("COPY {staging} ({list}) FROM STDIN (FORMAT binary)"),
            upsert: format!(
                "INSERT INTO {qualified} AS t ({list}) SELECT {list} FROM {staging} \
                 ON CONFLICT ({}) {conflict}",
                keys.join(", ")
            ),
            table: qualified,
        }
    }

    /// `"schema"."table"`.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Writes a mapped table's rows on one connection; each row's values are
/// in the order of the plan's columns.
pub struct MappedWriter<'a> {
    client: &'a mut Client,
    target: &'a MappedTarget,
}

impl<'a> MappedWriter<'a> {
    pub fn new(client: &'a mut Client, target: &'a MappedTarget) -> Self {
        Self { client, target }
    }
}

/// A COPY error: a value refused before it was sent is row-level, as
/// Postgres's own refusals are.
fn copy_error(e: tokio_postgres::Error) -> WriteError {
    if is_value_refused(&e) {
        let detail = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        WriteError {
            kind: ErrorKind::RowLevel,
            sqlstate: None,
            message: detail,
        }
    } else {
        write_error(&e)
    }
}

async fn copy_rows(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    types: &[Type],
    rows: &[&[Value]],
) -> Result<u64, WriteError> {
    let writer = BinaryCopyInWriter::new(sink, types);
    futures::pin_mut!(writer);
    let mut values: Vec<PgValue<'_>> = Vec::with_capacity(types.len());
    for row in rows {
        values.clear();
        values.extend(row.iter().map(PgValue));
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await.map_err(copy_error)?;
    }
    writer.finish().await.map_err(copy_error)
}

impl MappedWriter<'_> {
    async fn upsert(&mut self, rows: &[&[Value]]) -> Result<u64, WriteError> {
        let target = self.target;
        let context = |e: WriteError| e.context(format!("upserting into {}", target.table));
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| write_error(&e))?;
        tx.batch_execute(&target.stage)
            .await
            .map_err(|e| context(write_error(&e)))?;
        let sink = tx.copy_in(&target.copy_staged).await.map_err(copy_error)?;
        copy_rows(sink, &target.types, rows).await?;
        let changed = tx
            .execute(&target.upsert, &[])
            .await
            .map_err(|e| context(write_error(&e)))?;
        tx.commit().await.map_err(|e| write_error(&e))?;
        Ok(changed)
    }
}

#[async_trait]
impl AllOrNothing<[Value]> for MappedWriter<'_> {
    /// One COPY, or the staged upsert when COPY refuses the chunk.
    async fn write_all(&mut self, rows: &[&[Value]]) -> Result<u64, WriteError> {
        let copied = match self.client.copy_in(&self.target.copy).await {
            Ok(sink) => copy_rows(sink, &self.target.types, rows).await,
            Err(e) => Err(copy_error(e)),
        };
        match copied {
            Ok(inserted) => Ok(inserted),
            Err(e) if e.kind == ErrorKind::RowLevel => {
                tracing::debug!(
                    table = %self.target.table,
                    sqlstate = e.sqlstate.as_deref().unwrap_or(""),
                    "COPY refused the chunk; upserting it"
                );
                self.upsert(rows).await
            }
            Err(e) => Err(e),
        }
    }
}

/// A mapped table's sink for its runs: one connection, opened on the first
/// write and again after one is lost or fails for a reason not the rows'.
pub struct PgTableSink {
    /// Opens the connection (and reads a rotated password again).
    connector: WarmConnection,
    target: MappedTarget,
    connection: tokio::sync::Mutex<Option<PgConnection>>,
    /// The target's catalog as the plan read it, compared before each run
    /// ([`TableSink::target_drift`]).
    planned: Option<PlannedCatalog>,
}

/// A target table's columns as its catalog described them when planned.
struct PlannedCatalog {
    schema: String,
    table: String,
    columns: Vec<TargetColumn>,
}

impl PgTableSink {
    pub fn new(config: PostgresConfig, target: MappedTarget) -> Self {
        Self::with_password_source(config, target, None)
    }

    /// A sink that reads `refresh` again, once, when Postgres refuses the
    /// password (`28P01`, a rotated secret), as the warm connections do.
    pub fn with_password_source(
        config: PostgresConfig,
        target: MappedTarget,
        refresh: Option<PasswordSource>,
    ) -> Self {
        Self {
            connector: WarmConnection::new(config, refresh),
            target,
            connection: tokio::sync::Mutex::new(None),
            planned: None,
        }
    }

    /// Checks before each run that `schema.table` still has the columns
    /// the plan was made from (`columns`, as read from its catalog then).
    pub fn planned_from(
        mut self,
        schema: &Identifier,
        table: &Identifier,
        columns: Vec<TargetColumn>,
    ) -> Self {
        self.planned = Some(PlannedCatalog {
            schema: schema.as_str().to_string(),
            table: table.as_str().to_string(),
            columns,
        });
        self
    }
}

#[async_trait]
impl TableSink for PgTableSink {
    async fn write(
        &self,
        rows: &[&[Value]],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> SinkOutcome {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            let connector = &self.connector;
            match retry(limits.policy, deadline, "Postgres connect", async || {
                connector.open().await
            })
            .await
            {
                Ok(connection) => *slot = Some(connection),
                Err(e) => {
                    return SinkOutcome {
                        deferred: (0..rows.len()).collect(),
                        stop: Some(SinkError::Postgres(e)),
                        ..SinkOutcome::default()
                    }
                }
            }
        }
        let Some(connection) = slot.as_mut() else {
            return SinkOutcome {
                deferred: (0..rows.len()).collect(),
                ..SinkOutcome::default()
            };
        };
        let mut writer = MappedWriter::new(&mut connection.client, &self.target);
        let outcome = write_isolating(&mut writer, rows, limits, deadline).await;
        if outcome.stop.is_some() {
            // The connection may be in any state: the next write opens another.
            *slot = None;
        }
        outcome
    }

    async fn target_drift(&self, deadline: &Deadline) -> Option<String> {
        let planned = self.planned.as_ref()?;
        let table = &self.target.table;
        let mut slot = self.connection.lock().await;
        // Twice: a connection kept from the last invocation may have been
        // closed under it (an idle timeout, a restart) without showing it.
        let mut why = String::new();
        for _ in 0..2 {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                match bounded(deadline, self.connector.open()).await {
                    Ok(connection) => *slot = Some(connection),
                    Err(e) => {
                        why = e;
                        continue;
                    }
                }
            }
            let Some(connection) = slot.as_mut() else {
                continue;
            };
            let read = target_columns(&connection.client, &planned.schema, &planned.table);
            match bounded(deadline, read).await {
                Ok(now) => return target_drift(table, &planned.columns, &now),
                Err(e) => {
                    why = e;
                    *slot = None;
                }
            }
        }
        // Unchecked is not unchanged: the plan is made again, and if
        // Postgres is down that fails and the rows stay in Snowflake.
        Some(format!(
            "table {table}: the target's catalog could not be read to check the plan ({why})"
        ))
    }
}

/// How long the check before a run may take, at most.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `work` within [`CHECK_TIMEOUT`] and the invocation's deadline; `Err`
/// says why it failed or that it took too long.
async fn bounded<T, E: std::fmt::Display>(
    deadline: &Deadline,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let mut until = tokio::time::Instant::now() + CHECK_TIMEOUT;
    if let Some(at) = deadline.statement_deadline() {
        until = until.min(at.into());
    }
    match tokio::time::timeout_at(until, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}
