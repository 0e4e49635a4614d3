//! The operator's side of the failure report: list what is unresolved,
//! replay it into the replica once the cause is fixed (a mapped table's rows
//! through [`MappedRows`]), mark it resolved.
//! A stream-mode record (a row of a parked changes batch) is replayed only
//! when it is not older than what Postgres holds for its id ([`stale`]).

use chrono::{DateTime, Utc};
use countries_postgres::connect::connect;
use countries_postgres::failure_report::PostgresFailureReport;
use countries_postgres::sqlstate::write_error;
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::{SinkError, WriteError};
use countries_shared::model::report::ChangeOrigin;
use countries_shared::model::row::{validate, CountryRow, SourceRow};
use countries_shared::ports::{MappedRows, RowSink, SinkOutcome, SinkPool, WriteLimits};
use countries_shared::retry::RetryPolicy;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

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
    /// The run that sent it (replicator or publisher).
    pub source_run_id: Option<uuid::Uuid>,
    /// Stream mode's records: their batch's group and place in its run.
    pub change: Option<ChangeOrigin>,
    /// A mapped table's record (None: the `case` table): the mapping's
    /// name and the row as JSON, column → tagged value.
    pub mapped: Option<(String, String)>,
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
                    "SELECT message_id, country_id::text, country, error_class, sqlstate, error_message, reported_at, \
                     source_run_id, change_buckets, change_bucket, change_seq, \
                     CASE WHEN table_name <> $2 THEN table_name END, \
                     CASE WHEN table_name <> $2 THEN row_data::text END, \
                     coalesce(change_block, 1) \
                     FROM {} WHERE resolved_at IS NULL ORDER BY reported_at, message_id LIMIT $1",
                    self.table()
                ),
                &[&limit, &self.config.table.as_str()],
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
                source_run_id: r.get(7),
                change: match (
                    r.get::<_, Option<i32>>(8),
                    r.get::<_, Option<i32>>(9),
                    r.get::<_, Option<i64>>(10),
                ) {
                    (Some(buckets), Some(bucket), Some(seq)) => Some(ChangeOrigin {
                        buckets: u32::try_from(buckets).unwrap_or(0),
                        block: u32::try_from(r.get::<_, i32>(13)).unwrap_or(1),
                        bucket: u32::try_from(bucket).unwrap_or(0),
                        seq: u64::try_from(seq).unwrap_or(0),
                    }),
                    _ => None,
                },
                mapped: match (
                    r.get::<_, Option<String>>(11),
                    r.get::<_, Option<String>>(12),
                ) {
                    (Some(table), row) => Some((table, row.unwrap_or_default())),
                    (None, _) => None,
                },
            })
            .collect())
    }

    /// Writes unresolved failures into the replica again (after the cause
    /// was fixed) and marks the ones written as resolved. `only` limits it to
    /// some message ids.
    pub async fn replay(
        &self,
        sinks: &dyn SinkPool,
        mapped_rows: &dyn MappedRows,
        only: Option<&[String]>,
    ) -> Result<ReplayOutcome, SinkError> {
        let failures = self.unresolved(100_000).await?;
        let mut outcome = ReplayOutcome {
            replayed: Vec::new(),
            not_replayed: Vec::new(),
        };
        let mut rows: Vec<(String, CountryRow)> = Vec::new();
        // A mapped table's rows, by table: (message id, row).
        let mut mapped: BTreeMap<String, Vec<StoredRow>> = BTreeMap::new();
        let mut seen_ids = std::collections::HashSet::new();
        let conn = connect(&self.config).await?;
        for f in failures {
            if only.is_some_and(|ids| !ids.contains(&f.message_id)) {
                continue;
            }
            if let Some((table, row)) = f.mapped {
                match serde_json::from_str::<Map<String, Json>>(&row) {
                    Ok(row) => mapped.entry(table).or_default().push((f.message_id, row)),
                    Err(e) => outcome.not_replayed.push((
                        f.message_id,
                        format!("the stored row of table {table} is not a JSON object: {e}"),
                    )),
                }
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
                    format!("{e}: fix the row at the source, then `countries resolve` it"),
                )),
                Ok(row) if !seen_ids.insert(row.country_id) => outcome.not_replayed.push((
                    f.message_id,
                    "another failure of the same country_id is replayed now; replay again for this one"
                        .into(),
                )),
                Ok(row) => match f.change {
                    Some(change) => {
                        match stale(&conn.client, &self.config, &row, change, f.source_run_id)
                            .await?
                        {
                            Some(why) => outcome.not_replayed.push((f.message_id, why)),
                            None => rows.push((f.message_id, row)),
                        }
                    }
                    None => rows.push((f.message_id, row)),
                },
            }
        }
        drop(conn);
        if !rows.is_empty() {
            let mut sink: Box<dyn RowSink> = sinks.open(None).await?;
            let refs: Vec<&CountryRow> = rows.iter().map(|(_, r)| r).collect();
            let limits = WriteLimits {
                failure_budget: usize::MAX,
                policy: RetryPolicy::new(3),
            };
            let result = sink.write(&refs, limits, &Deadline::none()).await;
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
        for (table, entries) in mapped {
            let rows: Vec<&Map<String, Json>> = entries.iter().map(|(_, r)| r).collect();
            let limits = WriteLimits {
                failure_budget: usize::MAX,
                policy: RetryPolicy::new(3),
            };
            match mapped_rows
                .write_rows(&table, &rows, limits, &Deadline::none())
                .await
            {
                Ok(result) => note_outcome(&mut outcome, &entries, result),
                Err(why) => outcome
                    .not_replayed
                    .extend(entries.into_iter().map(|(id, _)| (id, why.clone()))),
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

/// A mapped table's stored row: its message id and the row.
type StoredRow = (String, Map<String, Json>);

/// A mapped table's replay, in the operator's terms.
fn note_outcome(outcome: &mut ReplayOutcome, entries: &[StoredRow], result: SinkOutcome) {
    let id = |i: usize| entries[i].0.clone();
    outcome
        .replayed
        .extend(result.written.iter().map(|&i| id(i)));
    for (i, e) in result.rejected {
        outcome.not_replayed.push((id(i), e.to_string()));
    }
    let why = result
        .stop
        .as_ref()
        .map_or_else(|| "not written".to_string(), ToString::to_string);
    for i in result.deferred {
        outcome.not_replayed.push((id(i), why.clone()));
    }
}

/// SQL for the bucket of an id in a packing, as
/// [`countries_shared::model::change::Groups::bucket_of`] computes it: the
/// block rounded towards minus infinity (`floor`, as `div_euclid`), then a
/// modulo that is never negative (as `rem_euclid`). Each argument is an SQL
/// expression: an `int8` id, an integer block and bucket count.
pub fn bucket_sql(id: &str, block: &str, buckets: &str) -> String {
    format!("((floor({id}::numeric / {block})::int8 % {buckets}) + {buckets}) % {buckets}")
}

/// Why a stream-mode row must not be replayed, if it must not: Postgres
/// holds another value for its id, and a batch of its message group later
/// than its own was given to Postgres since (the writer's
/// `change_marks`), so that value may be the newer version. A row whose id
/// Postgres does not hold, or holds with the same value, or whose group
/// went no further than its own batch, is replayed.
pub async fn stale(
    client: &tokio_postgres::Client,
    config: &PostgresConfig,
    row: &CountryRow,
    change: ChangeOrigin,
    run_id: Option<uuid::Uuid>,
) -> Result<Option<String>, WriteError> {
    let pg = |e: tokio_postgres::Error| write_error(&e);
    let schema = config.schema.quoted();
    let held: Option<String> = client
        .query_opt(
            &format!(
                "SELECT country::text FROM {schema}.{} WHERE country_id = $1",
                config.table.quoted()
            ),
            &[&row.country_id],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0));
    let Some(held) = held.filter(|held| *held != row.country) else {
        return Ok(None);
    };
    let seq = i64::try_from(change.seq).unwrap_or(i64::MAX);
    // Later: a higher seq of the same run, or a run that started later
    // (runs hold the run lock one at a time); a run the ledger does not
    // know counts as later, which errs towards not overwriting. The groups
    // looked at are those that hold this id in their own packing (its
    // block, modulo their bucket count), so that a batch packed otherwise
    // (after a change of CHANGE_BUCKETS or CHANGE_BLOCK_IDS, or version 1's
    // by id) is not missed.
    let later = client
        .query_opt(
            &format!(
                "SELECT m.run_id, m.seq, m.marked_at, m.bucket, m.buckets, m.block FROM {schema}.change_marks m \
                 LEFT JOIN {schema}.replication_run mine ON mine.run_id = $1 \
                 LEFT JOIN {schema}.replication_run theirs ON theirs.run_id = m.run_id \
                 WHERE {} = m.bucket \
                   AND CASE WHEN m.run_id = $1 THEN m.seq > $2 \
                            ELSE mine.started_at IS NULL OR theirs.started_at IS NULL \
                                 OR theirs.started_at > mine.started_at END \
                 ORDER BY m.marked_at DESC LIMIT 1",
                bucket_sql("$3::int8", "m.block", "m.buckets")
            ),
            &[
                &run_id as &(dyn tokio_postgres::types::ToSql + Sync),
                &seq,
                &i64::from(row.country_id),
            ],
        )
        .await
        .map_err(pg)?;
    Ok(later.map(|mark| {
        let (their_run, their_seq, at): (uuid::Uuid, i64, DateTime<Utc>) =
            (mark.get(0), mark.get(1), mark.get(2));
        let (bucket, buckets, block): (i32, i32, i32) = (mark.get(3), mark.get(4), mark.get(5));
        format!(
            "Postgres holds {held:?} for country_id {}, and a later batch of its message group \
             (bucket {bucket} of {buckets}, blocks of {block}: run {their_run}, batch {their_seq}, given to Postgres at {at}) \
             came after this row's (batch {seq}): that value is likely newer, so this older one is not \
             written; `countries resolve` it if it is not",
            row.country_id
        )
    }))
}
