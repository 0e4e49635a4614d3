//! `countries status`: is the pipeline healthy, and if not, where does it
//! hurt. Each dependency is asked on its own: one that cannot be reached is
//! reported as such, and the others are still shown.

use chrono::{DateTime, Duration, Utc};
use countries_postgres::connect::connect;
use countries_postgres::sqlstate::write_error;
use countries_shared::config::{PostgresConfig, SnowflakeConfig};
use countries_snowflake::sql::{count_statement, single_count, SourceTable};
use countries_sqs::sdk_error;
use serde::Serialize;

use crate::snowflake_admin::SnowflakeAdmin;

mod render;
pub use render::render;

/// The overall verdict, and the command's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy = 0,
    /// Partial runs, dead letters, failures waiting, a crashed run.
    Degraded = 1,
    /// No successful run in the window, or a dependency unreachable.
    Down = 2,
}

/// One part of the status: what was found, or why it could not be.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "value")]
pub enum Part<T> {
    Ok(T),
    Unreachable(String),
    NotConfigured(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The ledger's outcome; `crashed` for a run left `running` past the
    /// longest a run can take.
    pub outcome: String,
    /// `postgres` (the replicator) or `changes_queue` (the publisher).
    pub sink: String,
    /// `case`, or a mapped table's name.
    pub table: String,
    pub rows_read: i64,
    pub rows_written: i64,
    pub rows_enqueued: i64,
    pub rows_deferred: i64,
    pub rows_deleted: i64,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Runs {
    pub last: Vec<Run>,
    pub last_success: Option<DateTime<Utc>>,
    /// No successful run within the window.
    pub overdue: bool,
    /// Tables that ran within the window, none of it successfully.
    pub overdue_tables: Vec<String>,
    pub window_minutes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    pub error_class: String,
    pub sqlstate: String,
    pub count: i64,
    pub oldest: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub health: Health,
    pub reasons: Vec<String>,
    /// Rows waiting in the source table.
    pub snowflake_backlog: Part<u64>,
    pub runs: Part<Runs>,
    pub retry_queue: Part<QueueDepth>,
    pub dead_letter_queue: Part<QueueDepth>,
    /// Stream mode's changes queue and its dead-letter queue; absent when
    /// `CHANGES_QUEUE_URL` is not set (batch mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes_queue: Option<Part<QueueDepth>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes_dead_letter_queue: Option<Part<QueueDepth>>,
    pub unresolved_failures: Part<Vec<FailureGroup>>,
}

/// Where to look, and what counts as late.
pub struct Sources<'a> {
    pub postgres: Result<PostgresConfig, String>,
    pub snowflake: Result<SnowflakeConfig, String>,
    pub sqs: Option<&'a aws_sdk_sqs::Client>,
    pub retry_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    /// Stream mode (None in batch mode).
    pub changes_queue_url: Option<String>,
    pub changes_dead_letter_queue_url: Option<String>,
    /// No successful run within this window: down.
    pub window: Duration,
    /// A run still `running` after this crashed.
    pub stale_after: Duration,
}

pub async fn status(sources: &Sources<'_>) -> Status {
    let snowflake_backlog = match &sources.snowflake {
        Err(e) => Part::NotConfigured(e.clone()),
        Ok(config) => backlog(config).await,
    };
    let (runs, unresolved_failures) = match &sources.postgres {
        Err(e) => (
            Part::NotConfigured(e.clone()),
            Part::NotConfigured(e.clone()),
        ),
        Ok(config) => postgres_parts(config, sources).await,
    };
    let queue = |url: &Option<String>, name: &str| {
        let url = url.clone();
        let name = name.to_string();
        async move {
            match (sources.sqs, url) {
                (Some(client), Some(url)) => depth(client, &url).await,
                _ => Part::NotConfigured(format!("{name} is not set")),
            }
        }
    };
    let retry_queue = queue(&sources.retry_queue_url, "RETRY_QUEUE_URL").await;
    let dead_letter_queue = queue(&sources.dead_letter_queue_url, "DEAD_LETTER_QUEUE_URL").await;
    let (changes_queue, changes_dead_letter_queue) = match &sources.changes_queue_url {
        None => (None, None),
        Some(_) => (
            Some(queue(&sources.changes_queue_url, "CHANGES_QUEUE_URL").await),
            Some(
                queue(
                    &sources.changes_dead_letter_queue_url,
                    "CHANGES_DEAD_LETTER_QUEUE_URL",
                )
                .await,
            ),
        ),
    };
    let mut status = Status {
        health: Health::Healthy,
        reasons: Vec::new(),
        snowflake_backlog,
        runs,
        retry_queue,
        dead_letter_queue,
        changes_queue,
        changes_dead_letter_queue,
        unresolved_failures,
    };
    judge(&mut status);
    status
}

/// The verdict, from what was found.
fn judge(s: &mut Status) {
    let mut worst = Health::Healthy;
    let mut say = |health: Health, reason: String, reasons: &mut Vec<String>| {
        worst = worst.max(health);
        reasons.push(reason);
    };
    let mut reasons = Vec::new();
    for (name, unreachable) in [
        (
            "Snowflake",
            matches!(s.snowflake_backlog, Part::Unreachable(_)),
        ),
        ("Postgres", matches!(s.runs, Part::Unreachable(_))),
        (
            "the retry queue",
            matches!(s.retry_queue, Part::Unreachable(_)),
        ),
        (
            "the dead-letter queue",
            matches!(s.dead_letter_queue, Part::Unreachable(_)),
        ),
        (
            "the changes queue",
            matches!(s.changes_queue, Some(Part::Unreachable(_))),
        ),
        (
            "the changes dead-letter queue",
            matches!(s.changes_dead_letter_queue, Some(Part::Unreachable(_))),
        ),
    ] {
        if unreachable {
            say(
                Health::Down,
                format!("{name} cannot be reached"),
                &mut reasons,
            );
        }
    }
    if let Part::Ok(runs) = &s.runs {
        if runs.overdue {
            say(
                Health::Down,
                format!(
                    "no successful run in the last {} minutes",
                    runs.window_minutes
                ),
                &mut reasons,
            );
        }
        for table in &runs.overdue_tables {
            say(
                Health::Down,
                format!(
                    "table {table}: no successful run in the last {} minutes",
                    runs.window_minutes
                ),
                &mut reasons,
            );
        }
        if let Some(last) = runs.last.first() {
            if matches!(last.outcome.as_str(), "partial" | "failed" | "crashed") {
                say(
                    Health::Degraded,
                    format!("the last run ended {}", last.outcome),
                    &mut reasons,
                );
            }
        }
    }
    if let Part::Ok(dlq) = &s.dead_letter_queue {
        let waiting = dlq.visible + dlq.in_flight;
        if waiting > 0 {
            say(
                Health::Degraded,
                format!("{waiting} dead letters wait for the report"),
                &mut reasons,
            );
        }
    }
    if let Some(Part::Ok(dlq)) = &s.changes_dead_letter_queue {
        let waiting = dlq.visible + dlq.in_flight;
        if waiting > 0 {
            say(
                Health::Degraded,
                format!("{waiting} change batches in the changes dead-letter queue: fix the cause, then redrive them (README, Stream mode)"),
                &mut reasons,
            );
        }
    }
    if let Part::Ok(groups) = &s.unresolved_failures {
        let n: i64 = groups.iter().map(|g| g.count).sum();
        if n > 0 {
            say(
                Health::Degraded,
                format!("{n} unresolved failures in the report"),
                &mut reasons,
            );
        }
    }
    s.health = worst;
    s.reasons = reasons;
}

/// `SELECT COUNT(*)` of the whole table: Snowflake answers it from table
/// metadata, without a running warehouse.
async fn backlog(config: &SnowflakeConfig) -> Part<u64> {
    let admin = match SnowflakeAdmin::connect(config) {
        Ok(admin) => admin,
        Err(e) => return Part::Unreachable(e.to_string()),
    };
    match admin
        .execute(&count_statement(&SourceTable::from_config(config)))
        .await
    {
        Ok(result) => match single_count("count", &result) {
            Ok(n) => Part::Ok(n),
            Err(e) => Part::Unreachable(e.to_string()),
        },
        Err(e) => Part::Unreachable(e.to_string()),
    }
}

async fn postgres_parts(
    config: &PostgresConfig,
    sources: &Sources<'_>,
) -> (Part<Runs>, Part<Vec<FailureGroup>>) {
    let conn = match connect(config).await {
        Ok(conn) => conn,
        Err(e) => {
            let why = e.to_string();
            return (Part::Unreachable(why.clone()), Part::Unreachable(why));
        }
    };
    let schema = config.schema.quoted();
    let runs = conn
        .client
        .query(
            &format!(
                "SELECT run_id::text, started_at, finished_at, outcome, rows_read, rows_written, \
                 rows_enqueued, rows_deferred, rows_deleted, error, sink, table_name \
                 FROM {schema}.\"replication_run\" ORDER BY started_at DESC LIMIT 8"
            ),
            &[],
        )
        .await;
    let last_success = conn
        .client
        .query_one(
            &format!(
                "SELECT max(coalesce(finished_at, started_at)) FROM {schema}.\"replication_run\" \
                 WHERE outcome IN ('succeeded', 'skipped', 'idle')"
            ),
            &[],
        )
        .await;
    // A table is overdue when it ran in the window without succeeding (one
    // no longer in the mapping file stops running, and is not).
    let now = Utc::now();
    let since = now - sources.window;
    let overdue_tables: Vec<String> = conn
        .client
        .query(
            &format!(
                "SELECT table_name FROM {schema}.\"replication_run\" WHERE started_at > $1 \
                 GROUP BY table_name HAVING NOT bool_or(outcome IN ('succeeded', 'skipped', 'idle')) \
                 ORDER BY 1"
            ),
            &[&since],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let runs = match (runs, last_success) {
        (Ok(rows), Ok(success)) => {
            let last_success: Option<DateTime<Utc>> = success.get(0);
            let last = rows
                .iter()
                .map(|r| {
                    let started_at: DateTime<Utc> = r.get(1);
                    let finished_at: Option<DateTime<Utc>> = r.get(2);
                    let mut outcome: String = r.get(3);
                    if outcome == "running" && now - started_at > sources.stale_after {
                        outcome = "crashed".into();
                    }
                    Run {
                        run_id: r.get(0),
                        started_at,
                        finished_at,
                        outcome,
                        sink: r.get(10),
                        table: r.get(11),
                        rows_read: r.get(4),
                        rows_written: r.get(5),
                        rows_enqueued: r.get(6),
                        rows_deferred: r.get(7),
                        rows_deleted: r.get(8),
                        duration_seconds: finished_at
                            .map(|f| (f - started_at).num_milliseconds() as f64 / 1000.0),
                        error: r.get(9),
                    }
                })
                .collect();
            Part::Ok(Runs {
                last,
                last_success,
                overdue: last_success.is_none_or(|at| now - at > sources.window),
                overdue_tables,
                window_minutes: sources.window.num_minutes(),
            })
        }
        (Err(e), _) | (_, Err(e)) => Part::Unreachable(write_error(&e).to_string()),
    };
    let failures = conn
        .client
        .query(
            &format!(
                "SELECT error_class, coalesce(sqlstate, '-'), count(*), min(reported_at) \
                 FROM {schema}.\"failure_report\" WHERE resolved_at IS NULL \
                 GROUP BY 1, 2 ORDER BY 4"
            ),
            &[],
        )
        .await;
    let failures = match failures {
        Ok(rows) => Part::Ok(
            rows.iter()
                .map(|r| FailureGroup {
                    error_class: r.get(0),
                    sqlstate: r.get(1),
                    count: r.get(2),
                    oldest: r.get(3),
                })
                .collect(),
        ),
        Err(e) => Part::Unreachable(write_error(&e).to_string()),
    };
    (runs, failures)
}

async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> Part<QueueDepth> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attributes = match client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
    {
        Ok(output) => output.attributes.unwrap_or_default(),
        Err(e) => return Part::Unreachable(sdk_error(&e)),
    };
    let count = |a: A| {
        attributes
            .get(&a)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Part::Ok(QueueDepth {
        visible: count(A::ApproximateNumberOfMessages),
        in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
    })
}

#[cfg(test)]
mod tests;
