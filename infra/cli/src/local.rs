//! The commands that run the functions' handlers in this process (the local
//! stack, the demo, a smoke test against a real account), load rows into
//! Snowflake, and set up the local emulators (`countries local …`, for
//! `infra/local/stack.sh`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use countries_ops::event_source::LocalEventSource;
use countries_ops::loader::parse_csv;
use countries_ops::local_stack::{queues, snowflake};
use countries_ops::snowflake_admin::SnowflakeAdmin;
use countries_shared::config::{
    PublisherConfig, ReplicatorConfig, ReporterConfig, RetrierConfig, SnowflakeConfig, WriterConfig,
};
use countries_shared::{aws, lambda};
use lambda_runtime::{Context, LambdaEvent};

pub const SCHEDULED_EVENT: &str = include_str!("../../local/events/scheduled-event.json");

/// Makes the queues of `template.yaml` (both pairs, named `<prefix>-…`) and
/// the SES sender in the AWS emulator; prints their URLs as JSON.
pub async fn local_queues(prefix: &str, set: &[String], sender: &str) -> Result<ExitCode> {
    let parameters: Vec<(&str, &str)> = set
        .iter()
        .map(|p| {
            p.split_once('=')
                .with_context(|| format!("--set {p:?}: expected PARAMETER=VALUE"))
        })
        .collect::<Result<_>>()?;
    let aws = aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (retry, dlq) = queues::create_pair(&sqs, prefix, queues::RETRY, &parameters).await?;
    let (changes, changes_dlq) =
        queues::create_pair(&sqs, prefix, queues::CHANGES, &parameters).await?;
    aws_sdk_sesv2::Client::new(&aws)
        .create_email_identity()
        .email_identity(sender)
        .send()
        .await
        .with_context(|| format!("verifying the sender {sender} in the emulator"))?;
    println!(
        "{}",
        serde_json::json!({
            "retry_queue_url": retry,
            "dead_letter_queue_url": dlq,
            "changes_queue_url": changes,
            "changes_dead_letter_queue_url": changes_dlq,
            "sender": sender,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes the source database, schema and table in the Snowflake emulator
/// the `SNOWFLAKE_*` variables point at.
pub async fn local_snowflake() -> Result<ExitCode> {
    let config = SnowflakeConfig::from_env()?;
    let admin = SnowflakeAdmin::connect(&config)?;
    snowflake::set_up(
        &admin,
        &config.database,
        &config.schema,
        snowflake::SCHEMA_SQL,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn real_smoke(table: &str) -> Result<ExitCode> {
    let config = SnowflakeConfig::from_env()?;
    let (steps, outcome) = countries_ops::smoke::real_smoke(&config, table).await;
    for s in &steps {
        println!("{:<34} {:>7} ms  {}", s.step, s.ms, s.result);
    }
    match outcome {
        Ok(()) => {
            println!("real-smoke: passed");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("real-smoke: failed: {e}");
            Ok(ExitCode::from(1))
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
pub async fn replicate(event_json: String) -> Result<ExitCode> {
    let event: EventBridgeEvent =
        serde_json::from_str(&event_json).context("the event is not an EventBridge event")?;
    let payload = serde_json::to_value(&event)?;
    let config = ReplicatorConfig::from_env()?;
    let tables = replicator::build(&config).await?;
    print_outcome(
        lambda::replicator::handle(
            &tables,
            config.deadline_margin,
            LambdaEvent::new(payload, lambda_context()),
        )
        .await,
    )
}

/// Prints what a handler returned; exit code 3 when Lambda would report a
/// failed invocation.
fn print_outcome<T: serde::Serialize>(
    result: Result<T, lambda_runtime::Diagnostic>,
) -> Result<ExitCode> {
    match result {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "the handler returned an error (Lambda would report a failed invocation):\n  {}: {}",
                e.error_type, e.error_message
            );
            Ok(ExitCode::from(3))
        }
    }
}

pub async fn drive_retrier(batch_size: i32, timeout: Duration) -> Result<ExitCode> {
    let config = RetrierConfig::from_env()?;
    let retrier = retrier::build(&config).await;
    let source = LocalEventSource {
        client: aws_sdk_sqs::Client::new(&aws::sdk_config().await),
        queue_url: config.retry_queue_url.clone(),
        batch_size,
    };
    let summary = source.drain(&retrier, timeout).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

/// Runs the publisher exactly as Lambda would, with a scheduled event.
pub async fn publish() -> Result<ExitCode> {
    let config = PublisherConfig::from_env()?;
    let publisher = publisher::build(&config).await?;
    let payload = serde_json::from_str(SCHEDULED_EVENT)?;
    print_outcome(
        lambda::publisher::handle(&publisher, LambdaEvent::new(payload, lambda_context())).await,
    )
}

pub async fn drive_writers(
    writers: usize,
    batch_size: i32,
    follow: Duration,
    timeout: Duration,
) -> Result<ExitCode> {
    let config = WriterConfig::from_env()?;
    let writer = writer::build(&config).await;
    let queue_url = std::env::var("CHANGES_QUEUE_URL")
        .context("CHANGES_QUEUE_URL: the changes queue the writers are fed from")?;
    let source = LocalEventSource {
        client: aws_sdk_sqs::Client::new(&aws::sdk_config().await),
        queue_url,
        batch_size,
    };
    let summary = source
        .follow_parallel(&writer, writers, follow, timeout)
        .await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn run_report() -> Result<ExitCode> {
    let config = ReporterConfig::from_env()?;
    let reporter = dlq_reporter::build(&config).await;
    let payload = serde_json::from_str(SCHEDULED_EVENT)?;
    print_outcome(
        lambda::dlq_reporter::handle(&reporter, LambdaEvent::new(payload, lambda_context())).await,
    )
}

pub async fn load(csv: &str, origin: &str) -> Result<ExitCode> {
    let rows = parse_csv(csv).with_context(|| format!("reading {origin}"))?;
    let config = ReplicatorConfig::from_env()?;
    let admin = SnowflakeAdmin::connect(&config.snowflake)?;
    admin.insert_rows(&rows).await?;
    println!(
        "loaded {} rows from {origin} into Snowflake table {}.{}.\"{}\"",
        rows.len(),
        config.snowflake.database,
        config.snowflake.schema,
        config.snowflake.table
    );
    Ok(ExitCode::SUCCESS)
}
