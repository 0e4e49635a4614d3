//! One replicator invocation, exactly as `countries replicate` does it, but
//! with the test kit's fault injector as the step hook, so that a test can
//! kill the real process at a named step (`COUNTRIES_CRASH_AT=after_write`)
//! or pause it there, or give it a deadline (`COUNTRIES_DEADLINE_MS`); the
//! mapped tables of `TABLES_FILE` run beside `case`, and
//! `COUNTRIES_FAULT_IN=tables` gives them the fault injector instead of
//! `case` (their runs reach the same steps).
//! With `COUNTRIES_PUBLISH=1` it is stream mode's publisher instead, as
//! `countries publish` runs it (its runs reach the same steps).
//! Prints the run summary (the publisher: its runs) as JSON.

use std::process::ExitCode;

use countries_shared::config::{PublisherConfig, ReplicatorConfig};
use countries_shared::lambda;
use lambda_runtime::{Context, LambdaEvent};
use testkit::fault::FaultInjector;

const SCHEDULED_EVENT: &str = include_str!("../../infra/local/events/scheduled-event.json");

#[tokio::main]
async fn main() -> ExitCode {
    countries_shared::telemetry::init();
    let payload: serde_json::Value = serde_json::from_str(SCHEDULED_EVENT).unwrap_or_default();
    let event = LambdaEvent::new(payload, context());
    let printed = if std::env::var_os("COUNTRIES_PUBLISH").is_some() {
        let config = match PublisherConfig::from_env() {
            Ok(config) => config,
            Err(e) => return fail(e),
        };
        let mut publisher = match publisher::build(&config).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        publisher.runs.steps = Box::new(FaultInjector::from_env());
        lambda::publisher::handle(&publisher, event)
            .await
            .map(|outcome| serde_json::to_string(&outcome))
    } else {
        let config = match ReplicatorConfig::from_env() {
            Ok(config) => config,
            Err(e) => return fail(e),
        };
        let mut tables = match replicator::build(&config).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let injector = Box::new(FaultInjector::from_env());
        if std::env::var("COUNTRIES_FAULT_IN").as_deref() == Ok("tables") {
            tables.observe(injector, |table| !table.is_case);
        } else {
            tables.observe(injector, |table| table.is_case);
        }
        lambda::replicator::handle(&tables, config.deadline_margin, event)
            .await
            .map(|response| serde_json::to_string(&response))
    };
    match printed {
        Ok(json) => {
            println!("{}", json.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {}", e.error_type, e.error_message);
            ExitCode::from(3)
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(1)
}

/// Lambda's context; `COUNTRIES_DEADLINE_MS` sets the invocation's deadline
/// this far from now, as Lambda's context would give it.
fn context() -> Context {
    let mut context = Context::default();
    if let Some(left) = std::env::var("COUNTRIES_DEADLINE_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        context.deadline = now + left;
    }
    context
}
