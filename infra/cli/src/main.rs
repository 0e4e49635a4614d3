//! `countries`: commands for operators and for the local stack.
//!
//! Configuration is the same environment the Lambda functions read (see the
//! README); `source .local/stack/stack.env` points it at the local stack.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use countries_ops::failures::FailureReport;
use countries_ops::redrive::move_messages;
use countries_ops::status;
use countries_ops::RedriveConfig;
use countries_postgres::sink::pool::PostgresStore;
use countries_shared::config::{PostgresConfig, SnowflakeConfig};
use countries_shared::{aws, telemetry};

mod local;

use local::{
    drive_retrier, drive_writers, load, publish, real_smoke, replicate, run_report, SCHEDULED_EVENT,
};

const SAMPLE_ROWS: &str = include_str!("../../local/sample-rows.csv");

/// Operator and local-stack commands of the countries replication job.
///
/// Reads the same environment as the Lambda functions (see the README's
/// configuration table). Exit codes: 0 done, 1 error, 2 usage, 3 the handler
/// failed (Lambda would report a failed invocation), 4 some records were not
/// replayed or not moved.
#[derive(Debug, Parser)]
#[command(name = "countries", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the replicator once, as Lambda would, with an EventBridge scheduled event.
    Replicate {
        /// The event to pass (JSON); a scheduled event when omitted.
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
    },
    /// Run the retrier, fed from the retry queue like Lambda's SQS event
    /// source mapping, until the queue is empty.
    DriveRetrier {
        /// Messages per invocation (1–10).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10))]
        batch_size: i32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Stream mode: run the publisher once, as Lambda would, with an
    /// EventBridge scheduled event (it loops for PUBLISH_LOOP_SECONDS).
    Publish,
    /// Stream mode: run N writers, fed from the changes queue like Lambda's
    /// SQS event source mapping with MaximumConcurrency N, until it is empty.
    DriveWriters {
        /// Writers at once (the event source mapping's MaximumConcurrency).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1000))]
        writers: u16,
        /// Messages per invocation (1–10; a FIFO queue's limit).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10))]
        batch_size: i32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
        /// Keep polling for this many seconds even while the queue is empty
        /// (as the always-on event source mapping does), then until it is.
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        follow: u64,
    },
    /// Run the dlq-reporter once: dead-letter queue to failure report and email.
    Report,
    /// Is the pipeline healthy, and if not, where does it hurt. Exit code 0
    /// healthy, 1 degraded (partial runs, dead letters, failures waiting),
    /// 2 down (no successful run in the window, a dependency unreachable).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Down when no run succeeded within this many minutes (default:
        /// three times the default 15-minute schedule).
        #[arg(long, default_value_t = 45, value_name = "MINUTES")]
        window: i64,
        /// A run still `running` after this many minutes crashed (the
        /// replicator's timeout is at most 15).
        #[arg(long, default_value_t = 20, value_name = "MINUTES")]
        stale_after: i64,
    },
    /// List the unresolved failures: counts by error, then the records.
    Failures {
        /// Records to list at most.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Write failed records again after fixing the cause, and mark them resolved.
    Replay {
        /// Only these failures (all unresolved ones when none is given).
        #[arg(value_name = "MESSAGE_ID")]
        message_ids: Vec<String>,
    },
    /// Mark failures resolved without writing them (a row fixed at the
    /// source, or an older version not to be written), with a note.
    Resolve {
        #[arg(value_name = "MESSAGE_ID", required = true)]
        message_ids: Vec<String>,
        /// What was done about them (kept in the report's `resolution`).
        #[arg(long)]
        note: String,
    },
    /// Check a table mapping file (TOML, see the README) against Snowflake
    /// and Postgres before deploying it: prints each table's column plan, or
    /// every problem found; exit code 1 when there is one.
    Tables {
        /// The mapping file.
        file: PathBuf,
    },
    /// Bring the Postgres schema up to date (adopting one set up by hand);
    /// run as a role that owns the schema and may create roles.
    Migrate,
    /// Move dead-letter messages back to the retry queue.
    Redrive {
        /// Messages to move at most.
        #[arg(long, default_value_t = 1_000)]
        max: usize,
    },
    /// Insert rows (country_id,country) from a CSV file into Snowflake.
    LoadCsv {
        /// The CSV file.
        file: PathBuf,
    },
    /// Insert the sample rows, some of them invalid on purpose, into Snowflake.
    LoadSample,
    /// Against a real account (credentials from the environment): the
    /// product's statements on a scratch table it creates and drops; prints
    /// each step's time (query ids are in the log lines).
    RealSmoke {
        /// The scratch table (created in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA).
        #[arg(long, default_value = "COUNTRIES_SMOKE")]
        table: String,
    },
    /// Set up the local stack's emulators (for infra/local/stack.sh).
    #[command(subcommand)]
    Local(LocalCommand),
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Make template.yaml's queues and the SES sender in the AWS emulator
    /// (AWS_ENDPOINT_URL); print their URLs as JSON.
    Queues {
        /// Queue names start with this.
        #[arg(long, default_value = "countries")]
        prefix: String,
        /// A template parameter instead of its default (repeatable).
        #[arg(long = "set", value_name = "PARAMETER=VALUE")]
        set: Vec<String>,
        /// The sender address to verify.
        #[arg(long, default_value = "replication@example.com")]
        sender: String,
    },
    /// Make SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA and the source table in the
    /// Snowflake emulator (SNOWFLAKE_ENDPOINT_URL).
    Snowflake,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("countries: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Replicate { event } => {
            let event = match event {
                None => SCHEDULED_EVENT.to_string(),
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the event file {}", path.display()))?,
            };
            replicate(event).await
        }
        Command::DriveRetrier {
            batch_size,
            timeout,
        } => drive_retrier(batch_size, Duration::from_secs(timeout)).await,
        Command::Publish => publish().await,
        Command::DriveWriters {
            writers,
            batch_size,
            timeout,
            follow,
        } => {
            drive_writers(
                usize::from(writers),
                batch_size,
                Duration::from_secs(follow),
                Duration::from_secs(timeout),
            )
            .await
        }
        Command::Report => run_report().await,
        Command::Status {
            json,
            window,
            stale_after,
        } => status(json, window, stale_after).await,
        Command::Failures { limit } => failures(limit).await,
        Command::Replay { message_ids } => replay(message_ids).await,
        Command::Resolve { message_ids, note } => {
            let report = FailureReport::new(PostgresConfig::from_env()?);
            let resolved = report.resolve(&message_ids, &note).await?;
            println!("resolved: {resolved} of {}", message_ids.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tables { file } => tables(&file).await,
        Command::Migrate => migrate().await,
        Command::Redrive { max } => redrive(max).await,
        Command::LoadCsv { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            load(&text, &file.display().to_string()).await
        }
        Command::LoadSample => load(SAMPLE_ROWS, "the sample rows").await,
        Command::RealSmoke { table } => real_smoke(&table).await,
        Command::Local(LocalCommand::Queues {
            prefix,
            set,
            sender,
        }) => local::local_queues(&prefix, &set, &sender).await,
        Command::Local(LocalCommand::Snowflake) => local::local_snowflake().await,
    }
}

async fn tables(file: &std::path::Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the mapping file {}", file.display()))?;
    use countries_shared::config::tables::{parse_tables_beside, CaseTable};
    let origin = file.display().to_string();
    let (snowflake_config, postgres_config) =
        (SnowflakeConfig::from_env()?, PostgresConfig::from_env()?);
    // What the replicator refuses at start, refused here too: a table of
    // the file that is `case` itself.
    let case = CaseTable {
        source: Some((
            snowflake_config.database.as_str(),
            snowflake_config.schema.as_str(),
            snowflake_config.table.as_str(),
        )),
        target: (
            postgres_config.schema.as_str(),
            postgres_config.table.as_str(),
        ),
    };
    let mappings = match parse_tables_beside(&text, &origin, &case) {
        // `case` first, as the replicator runs it.
        Ok(mappings) => std::iter::once(countries_shared::config::case_table(
            &snowflake_config,
            &postgres_config,
        ))
        .chain(mappings)
        .collect::<Vec<_>>(),
        Err(problems) => {
            for p in problems {
                println!("problem: {p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let snowflake =
        countries_snowflake::SnowflakeSource::connect(&snowflake_config, "countries-tables")?;
    let postgres = countries_postgres::connect::connect(&postgres_config).await?;
    let deadline =
        countries_shared::deadline::Deadline::after(Duration::from_secs(60), Duration::ZERO);
    let checked =
        countries_ops::tables::check_tables(&mappings, &snowflake, &postgres.client, &deadline)
            .await;
    print!("{}", countries_ops::tables::render(&checked));
    Ok(if checked.iter().all(|t| t.plan.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(json: bool, window: i64, stale_after: i64) -> Result<ExitCode> {
    let sqs = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let url = |name: &str| std::env::var(name).ok().filter(|u| !u.trim().is_empty());
    let sources = status::Sources {
        postgres: PostgresConfig::from_env().map_err(|e| e.to_string()),
        snowflake: SnowflakeConfig::from_env().map_err(|e| e.to_string()),
        sqs: Some(&sqs),
        retry_queue_url: url("RETRY_QUEUE_URL"),
        dead_letter_queue_url: url("DEAD_LETTER_QUEUE_URL"),
        changes_queue_url: url("CHANGES_QUEUE_URL"),
        changes_dead_letter_queue_url: url("CHANGES_DEAD_LETTER_QUEUE_URL"),
        window: chrono::Duration::minutes(window),
        stale_after: chrono::Duration::minutes(stale_after),
    };
    let found = status::status(&sources).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", status::render(&found));
    }
    Ok(ExitCode::from(found.health as u8))
}

async fn failures(limit: i64) -> Result<ExitCode> {
    let report = FailureReport::new(PostgresConfig::from_env()?);
    let failures = report.unresolved(limit).await?;
    if failures.is_empty() {
        println!("no unresolved failures");
        return Ok(ExitCode::SUCCESS);
    }
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for f in &failures {
        *counts
            .entry((
                f.error_class.clone(),
                f.sqlstate.clone().unwrap_or_else(|| "-".into()),
            ))
            .or_default() += 1;
    }
    println!("unresolved failures by error (first {limit}):");
    for ((class, code), n) in counts {
        println!("  {class:<10} {code:<8} {n}");
    }
    println!(
        "\n{:<38} {:<12} {:<10} {:<10} {:<8} message",
        "message_id", "country_id", "country", "class", "sqlstate"
    );
    for f in failures {
        println!(
            "{:<38} {:<12} {:<10} {:<10} {:<8} {}",
            f.message_id,
            match &f.mapped {
                Some((table, _)) => format!("[{table}]"),
                None => f.country_id.as_deref().unwrap_or("NULL").to_string(),
            },
            match &f.mapped {
                Some((_, row)) => countries_shared::model::text::one_line(row, 60),
                None => f
                    .country
                    .as_deref()
                    .map_or("NULL".to_string(), |c| format!("{c:?}")),
            },
            f.error_class,
            f.sqlstate.as_deref().unwrap_or("-"),
            countries_shared::model::text::one_line(&f.error_message, 100),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(ids: Vec<String>) -> Result<ExitCode> {
    let config = PostgresConfig::from_env()?;
    let report = FailureReport::new(config.clone());
    let replica = PostgresStore::new(config.clone());
    // The mapped tables' targets, from the same mapping file the replicator
    // reads (TABLES_FILE), refused as the retrier refuses it when it lists
    // `case` itself; without it their rows are not replayed, and say so.
    let tables = match std::env::var("TABLES_FILE") {
        Ok(path) if !path.trim().is_empty() => {
            use countries_shared::config::tables::{parse_tables_beside, CaseTable};
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading TABLES_FILE {path}"))?;
            let case = CaseTable {
                source: None,
                target: (config.schema.as_str(), config.table.as_str()),
            };
            parse_tables_beside(&text, &path, &case)
                .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?
        }
        _ => Vec::new(),
    };
    let mapped = countries_postgres::mapped_rows::PgMappedRows::new(config, tables);
    let only = (!ids.is_empty()).then_some(ids.as_slice());
    let outcome = report.replay(&replica, &mapped, only).await?;
    println!("replayed and resolved: {}", outcome.replayed.len());
    for (id, why) in &outcome.not_replayed {
        println!("not replayed {id}: {why}");
    }
    Ok(if outcome.not_replayed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

async fn migrate() -> Result<ExitCode> {
    let config = PostgresConfig::from_env()?;
    let mut conn = countries_postgres::connect::connect(&config).await?;
    let done = countries_ops::migrate::migrate(&mut conn.client).await?;
    if !done.adopted.is_empty() {
        println!(
            "adopted a schema set up by hand: versions {:?} recorded as applied, nothing run",
            done.adopted
        );
    }
    if done.applied.is_empty() {
        println!("the schema is up to date");
    }
    for name in &done.applied {
        println!("applied {name}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn redrive(max: usize) -> Result<ExitCode> {
    let config = RedriveConfig::from_env()?;
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let done = move_messages(
        &client,
        &config.dead_letter_queue_url,
        &config.retry_queue_url,
        max,
    )
    .await?;
    let moved = done.moved;
    println!(
        "moved {} messages from the dead-letter queue to the retry queue",
        moved.len()
    );
    for (id, why) in &done.failed {
        println!("not moved {id}: {why}");
    }
    // Best effort: the failure report may not be reachable from here.
    if let Ok(pg) = PostgresConfig::from_env() {
        match FailureReport::new(pg).resolve(&moved, "redriven").await {
            Ok(n) => println!("marked {n} failure-report rows as redriven"),
            Err(e) => eprintln!("could not mark the failure report: {e}"),
        }
    }
    Ok(if done.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::eventbridge::EventBridgeEvent;
    use clap::CommandFactory;
    use countries_ops::loader::parse_csv;

    #[test]
    fn the_embedded_sample_and_event_are_valid() {
        assert!(parse_csv(SAMPLE_ROWS).unwrap().len() > 20);
        let _: EventBridgeEvent = serde_json::from_str(SCHEDULED_EVENT).unwrap();
    }

    #[test]
    fn the_command_line_is_consistent_and_bad_flags_are_named() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["countries", "redrive", "--max", "5"]).unwrap();
        assert!(matches!(cli.command, Command::Redrive { max: 5 }));
        let cli = Cli::try_parse_from(["countries", "replay", "m1", "m2"]).unwrap();
        assert!(
            matches!(&cli.command, Command::Replay { message_ids } if message_ids == &["m1", "m2"])
        );
        let err = Cli::try_parse_from(["countries", "drive-retrier", "--timeout", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--timeout"), "{err}");
        let err = Cli::try_parse_from(["countries", "drive-retrier", "--batch-size", "11"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--batch-size"), "{err}");
        assert!(Cli::try_parse_from(["countries", "replay", "--nope"]).is_err());
    }
}
