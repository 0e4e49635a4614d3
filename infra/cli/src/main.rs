//! `countries`: commands for operators and for the local stack.
//!
//! Configuration is the same environment the Lambda functions read (see the
//! README); `source .local/stack/stack.env` points it at the local stack.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use countries_shared::config::{
    PostgresConfig, RedriveConfig, ReplicatorConfig, ReporterConfig, RetrierConfig,
};
use countries_shared::model::SourceRow;
use countries_shared::replicator::Replicator;
use countries_shared::report::{PostgresFailureReport, Reporter};
use countries_shared::retrier::{LocalEventSource, Retrier};
use countries_shared::sink::PostgresStore;
use countries_shared::source::SnowflakeSource;
use countries_shared::{aws_config, queue, replicator, report, telemetry};
use lambda_runtime::{Context, LambdaEvent};

const SAMPLE_ROWS: &str = include_str!("../../local/sample-rows.csv");
const SCHEDULED_EVENT: &str = include_str!("../../local/events/scheduled-event.json");
const USAGE: &str = "usage: countries COMMAND

Run the functions once (as Lambda would, same configuration and handlers):
  replicate [--event FILE]       the replicator, with an EventBridge scheduled event
  drive-retrier [--batch-size N] [--timeout SECONDS]
                                 the retrier, fed from the retry queue like Lambda's SQS
                                 event source mapping, until the queue is empty
  report                         the dlq-reporter: dead-letter queue -> failure report + email

Recover (against the real or the local stack):
  failures [--limit N]           the unresolved failures: counts by error, then the records
  replay [MESSAGE_ID...]         write failed records again (all unresolved ones when no id
                                 is given) after fixing the cause; marks them resolved
  redrive [--max N]              move dead-letter messages back to the retry queue

Local stack:
  load-csv FILE                  insert rows (country_id,country) from a CSV into Snowflake
  load-sample                    insert the sample rows, some of them invalid, into Snowflake";

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("countries: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn flag<T: std::str::FromStr>(args: &[&str], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| *a == name) {
        None => Ok(default),
        Some(i) => {
            let value = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}: {value:?} is not a valid value"))
        }
    }
}

async fn run(args: &[String]) -> Result<ExitCode> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let rest = words.get(1..).unwrap_or_default();
    match words.first().copied() {
        Some("replicate") => {
            let event = match flag::<String>(rest, "--event", String::new())? {
                path if path.is_empty() => SCHEDULED_EVENT.to_string(),
                path => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the event file {path}"))?,
            };
            replicate(event).await
        }
        Some("drive-retrier") => {
            let batch_size = flag(rest, "--batch-size", 10)?;
            let timeout = flag(rest, "--timeout", 120u64)?;
            drive_retrier(batch_size, Duration::from_secs(timeout)).await
        }
        Some("report") => run_report().await,
        Some("failures") => failures(flag(rest, "--limit", 100i64)?).await,
        Some("replay") => {
            let ids: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            replay(ids).await
        }
        Some("redrive") => redrive(flag(rest, "--max", 1_000usize)?).await,
        Some("load-csv") => {
            let path = rest.first().context("load-csv needs a file")?;
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            load(&text, path).await
        }
        Some("load-sample") => load(SAMPLE_ROWS, "the sample rows").await,
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

fn lambda_context() -> Context {
    let mut context = Context::default();
    context.request_id = "local-invocation".to_string();
    context
}

/// Runs the replicator exactly as Lambda would: same configuration, same
/// clients, same handler, a real EventBridge scheduled event as the payload.
async fn replicate(event_json: String) -> Result<ExitCode> {
    let event: EventBridgeEvent =
        serde_json::from_str(&event_json).context("the event is not an EventBridge event")?;
    let payload = serde_json::to_value(&event)?;
    let config = ReplicatorConfig::from_env()?;
    let replicator = Replicator::from_config(&config).await?;
    print_outcome(
        replicator::handle(&replicator, LambdaEvent::new(payload, lambda_context())).await,
    )
}

/// Prints what a handler returned; exit code 3 when Lambda would report a
/// failed invocation.
fn print_outcome<T: serde::Serialize>(
    result: Result<T, lambda_runtime::Error>,
) -> Result<ExitCode> {
    match result {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "the handler returned an error (Lambda would report a failed invocation):\n  {e}"
            );
            Ok(ExitCode::from(3))
        }
    }
}

async fn drive_retrier(batch_size: i32, timeout: Duration) -> Result<ExitCode> {
    let config = RetrierConfig::from_env()?;
    let retrier = Retrier::from_config(&config).await;
    let source = LocalEventSource {
        client: aws_sdk_sqs::Client::new(&aws_config().await),
        queue_url: config.retry_queue_url.clone(),
        batch_size,
    };
    let summary = source
        .drain(&retrier, timeout)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

async fn run_report() -> Result<ExitCode> {
    let config = ReporterConfig::from_env()?;
    let reporter = Reporter::from_config(&config).await;
    let payload = serde_json::from_str(SCHEDULED_EVENT)?;
    print_outcome(report::handle(&reporter, LambdaEvent::new(payload, lambda_context())).await)
}

async fn failures(limit: i64) -> Result<ExitCode> {
    let report = PostgresFailureReport::new(PostgresConfig::from_env()?);
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
            f.country_id.as_deref().unwrap_or("NULL"),
            f.country
                .as_deref()
                .map_or("NULL".to_string(), |c| format!("{c:?}")),
            f.error_class,
            f.sqlstate.as_deref().unwrap_or("-"),
            countries_shared::model::one_line(&f.error_message, 100),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(ids: Vec<String>) -> Result<ExitCode> {
    let config = PostgresConfig::from_env()?;
    let report = PostgresFailureReport::new(config.clone());
    let writers = PostgresStore::new(config);
    let only = (!ids.is_empty()).then_some(ids.as_slice());
    let outcome = report.replay(&writers, only).await?;
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

async fn redrive(max: usize) -> Result<ExitCode> {
    let config = RedriveConfig::from_env()?;
    let client = aws_sdk_sqs::Client::new(&aws_config().await);
    let moved = queue::move_messages(
        &client,
        &config.dead_letter_queue_url,
        &config.retry_queue_url,
        max,
    )
    .await?;
    println!(
        "moved {} messages from the dead-letter queue to the retry queue",
        moved.len()
    );
    // Best effort: the failure report may not be reachable from here.
    if let Ok(pg) = PostgresConfig::from_env() {
        match PostgresFailureReport::new(pg)
            .resolve(&moved, "redriven")
            .await
        {
            Ok(n) => println!("marked {n} failure-report rows as redriven"),
            Err(e) => eprintln!("could not mark the failure report: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(csv: &str, origin: &str) -> Result<ExitCode> {
    let rows = parse_csv(csv).with_context(|| format!("reading {origin}"))?;
    let config = ReplicatorConfig::from_env()?;
    let source = SnowflakeSource::connect(&config.snowflake)?;
    source.insert_rows(&rows).await?;
    println!(
        "loaded {} rows from {origin} into Snowflake table {}.{}.\"{}\"",
        rows.len(),
        config.snowflake.database,
        config.snowflake.schema,
        config.snowflake.table
    );
    Ok(ExitCode::SUCCESS)
}

/// `country_id,country` per line; a header line is skipped; an empty field is
/// NULL; a field may be double-quoted (`""` inside is a quote).
fn parse_csv(text: &str) -> Result<Vec<SourceRow>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty()
            || (index == 0 && line.trim().eq_ignore_ascii_case("country_id,country"))
        {
            continue;
        }
        let Some((id, country)) = line.split_once(',') else {
            bail!("line {line_no}: expected `country_id,country`, got {line:?}");
        };
        let id = id.trim();
        let country_id =
            if id.is_empty() {
                None
            } else {
                Some(id.parse::<i128>().with_context(|| {
                    format!("line {line_no}: country_id {id:?} is not an integer")
                })?)
            };
        let country = unquote(country);
        rows.push(SourceRow {
            country_id,
            country: (!country.is_empty()).then_some(country),
        });
    }
    Ok(rows)
}

fn unquote(field: &str) -> String {
    let trimmed = field.trim();
    if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
        trimmed[1..trimmed.len() - 1].replace("\"\"", "\"")
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_their_raw_values() {
        let rows =
            parse_csv("country_id,country\n1,USA\n2, che \n,IND\n3,\n4,\"O\"\"B\"\r\n").unwrap();
        assert_eq!(
            rows,
            vec![
                SourceRow::new(Some(1), Some("USA")),
                SourceRow::new(Some(2), Some(" che ")),
                SourceRow::new(None, Some("IND")),
                SourceRow::new(Some(3), None),
                SourceRow::new(Some(4), Some("O\"B")),
            ]
        );
    }

    #[test]
    fn a_bad_csv_line_is_named() {
        let err = parse_csv("1,USA\nabc,FRA\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_csv("1;USA")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }

    #[test]
    fn the_embedded_sample_and_event_are_valid() {
        assert!(parse_csv(SAMPLE_ROWS).unwrap().len() > 20);
        let _: EventBridgeEvent = serde_json::from_str(SCHEDULED_EVENT).unwrap();
    }

    #[test]
    fn flags_are_parsed_and_bad_values_named() {
        let args = ["--max", "5", "--timeout", "x"];
        assert_eq!(flag(&args, "--max", 1usize).unwrap(), 5);
        assert_eq!(flag(&args, "--batch-size", 10i32).unwrap(), 10);
        assert!(flag::<u64>(&args, "--timeout", 1)
            .unwrap_err()
            .to_string()
            .contains("--timeout"));
    }
}
