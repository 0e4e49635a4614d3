//! `countries real-smoke`: the product's own Snowflake statements, with its
//! session settings, against a real account, on a scratch table it creates
//! and drops: the check at start, count, snapshot, read, join delete, drop.
//! Each statement's query id is in the log lines ("Snowflake statement");
//! each step's time is returned. Run by hand (`make real-smoke`), never by
//! the tests against anything but the local fake.

use std::time::Instant;

use countries_shared::config::SnowflakeConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::SourceError;
use countries_shared::model::ident::Identifier;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::{collect_rows, IdMatch, RowSource};
use countries_snowflake::SnowflakeSource;

use crate::snowflake_admin::SnowflakeAdmin;

/// Rows put in the scratch table.
const ROWS: i128 = 5;

/// One step and how long it took.
#[derive(Debug, serde::Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ms: u128,
    pub result: String,
}

/// Runs the smoke test on a scratch table named `scratch` in the configured
/// database and schema: the steps done, and whether all of them passed. The
/// scratch table is dropped whatever happens.
pub async fn real_smoke(
    config: &SnowflakeConfig,
    scratch: &str,
) -> (Vec<Step>, Result<(), SourceError>) {
    let mut steps = Vec::new();
    let outcome = smoke_on(config, scratch, &mut steps).await;
    (steps, outcome)
}

async fn smoke_on(
    config: &SnowflakeConfig,
    scratch: &str,
    steps: &mut Vec<Step>,
) -> Result<(), SourceError> {
    let table = Identifier::parse(scratch).map_err(|e| SourceError::Refused {
        operation: "real-smoke",
        detail: format!("scratch table name {scratch:?}: {e}"),
    })?;
    let mut config = config.clone();
    config.table = table.clone();
    let admin = SnowflakeAdmin::connect(&config)?;
    let created = timed(steps, "create the scratch table", async {
        admin
            .execute(&format!(
                "CREATE TABLE {} ({} NUMBER(38,0), {} VARCHAR)",
                table.quoted(),
                config.id_column.quoted(),
                config.country_column.quoted()
            ))
            .await
            .map(|_| "created".to_string())
    })
    .await;
    let outcome = match created {
        Ok(()) => run_statements(&admin, &config, steps).await,
        Err(e) => Err(e),
    };
    let dropped = timed(steps, "drop the scratch table", async {
        admin
            .execute(&format!("DROP TABLE IF EXISTS {}", table.quoted()))
            .await
            .map(|_| "dropped".to_string())
    })
    .await;
    outcome.and(dropped)
}

async fn run_statements(
    admin: &SnowflakeAdmin,
    config: &SnowflakeConfig,
    steps: &mut Vec<Step>,
) -> Result<(), SourceError> {
    let rows: Vec<SourceRow> = (1..=ROWS)
        .map(|id| SourceRow::new(Some(id), Some("USA")))
        .collect();
    timed(steps, "insert 5 rows", async {
        admin
            .insert_rows(&rows)
            .await
            .map(|()| "5 rows".to_string())
    })
    .await?;
    let source = SnowflakeSource::connect(config, "real-smoke")?;
    let deadline = Deadline::none();
    timed(steps, "check at start (DESCRIBE TABLE)", async {
        source
            .check(&deadline)
            .await
            .map(|()| "columns found".into())
    })
    .await?;
    timed(steps, "count (metadata)", async {
        source
            .count_rows(None, &deadline)
            .await
            .map(|n| format!("{n} rows"))
    })
    .await?;
    let run_id = uuid::Uuid::new_v4();
    let started = Instant::now();
    let snapshot = source.snapshot(run_id, 100, &deadline).await?;
    steps.push(Step {
        step: "snapshot (temporary table)",
        ms: started.elapsed().as_millis(),
        result: format!("run {run_id}"),
    });
    timed(steps, "read the page", async {
        let read = collect_rows(snapshot.read(1..=100).await?)?;
        if read.len() as i128 == ROWS {
            Ok(format!("{} rows", read.len()))
        } else {
            Err(SourceError::UnexpectedResult {
                operation: "real-smoke",
                detail: format!("read {} rows of {ROWS}", read.len()),
            })
        }
    })
    .await?;
    timed(steps, "join delete", async {
        snapshot
            .delete(&[1..=5], IdMatch::Equal)
            .await
            .map(|n| format!("{n} rows deleted"))
    })
    .await?;
    timed(steps, "drop the snapshot", async {
        snapshot.drop_snapshot().await.map(|()| "dropped".into())
    })
    .await?;
    timed(steps, "count again", async {
        match source.count_rows(None, &deadline).await? {
            0 => Ok("0 rows: every row deleted".into()),
            n => Err(SourceError::UnexpectedResult {
                operation: "real-smoke",
                detail: format!("{n} rows left after the delete"),
            }),
        }
    })
    .await
}

async fn timed(
    steps: &mut Vec<Step>,
    step: &'static str,
    work: impl std::future::Future<Output = Result<String, SourceError>>,
) -> Result<(), SourceError> {
    let started = Instant::now();
    let result = work.await;
    steps.push(Step {
        step,
        ms: started.elapsed().as_millis(),
        result: match &result {
            Ok(text) => text.clone(),
            Err(e) => format!("FAILED: {e}"),
        },
    });
    result.map(|_| ())
}
