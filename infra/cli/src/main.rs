//! `countries`: commands for operators and for the local stack.
//!
//!   countries replicate [--event FILE]   run the replicator's Lambda handler once
//!   countries load-csv FILE              insert rows from a CSV into Snowflake
//!   countries load-sample                insert the sample rows (some invalid)
//!
//! Configuration is the same environment the Lambda functions read (see the
//! README); `source .local/stack/stack.env` points it at the local stack.

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use countries_shared::config::ReplicatorConfig;
use countries_shared::model::SourceRow;
use countries_shared::replicator::{handle, Replicator};
use countries_shared::source::SnowflakeSource;
use countries_shared::telemetry;
use lambda_runtime::{Context, LambdaEvent};

const SAMPLE_ROWS: &str = include_str!("../../local/sample-rows.csv");
const SCHEDULED_EVENT: &str = include_str!("../../local/events/scheduled-event.json");
const USAGE: &str = "usage:
  countries replicate [--event FILE]   run the replicator's Lambda handler once with an EventBridge scheduled event
  countries load-csv FILE              insert rows (country_id,country) from a CSV file into Snowflake
  countries load-sample                insert the sample rows, some of them invalid, into Snowflake";

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

async fn run(args: &[String]) -> Result<ExitCode> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["replicate"] => replicate(SCHEDULED_EVENT.to_string()).await,
        ["replicate", "--event", path] => {
            let event = std::fs::read_to_string(path)
                .with_context(|| format!("reading the event file {path}"))?;
            replicate(event).await
        }
        ["load-csv", path] => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            load(&text, path).await
        }
        ["load-sample"] => load(SAMPLE_ROWS, "the sample rows").await,
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs the replicator exactly as Lambda would: same configuration, same
/// clients, same handler, a real EventBridge scheduled event as the payload.
async fn replicate(event_json: String) -> Result<ExitCode> {
    let event: EventBridgeEvent =
        serde_json::from_str(&event_json).context("the event is not an EventBridge event")?;
    let payload = serde_json::to_value(&event)?;
    let config = ReplicatorConfig::from_env()?;
    let replicator = Replicator::from_config(&config).await?;
    let mut context = Context::default();
    context.request_id = "local-invocation".to_string();
    match handle(&replicator, LambdaEvent::new(payload, context)).await {
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
}
