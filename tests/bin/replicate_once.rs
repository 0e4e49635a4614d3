//! One replicator invocation, exactly as `countries replicate` does it, but
//! with the test kit's fault injector as the step hook, so that a test can
//! kill the real process at a named step (`COUNTRIES_CRASH_AT=after_write`)
//! or pause it there, or give it a deadline (`COUNTRIES_DEADLINE_MS`).
//! Prints the run summary as JSON.

use std::process::ExitCode;

use countries_shared::config::ReplicatorConfig;
use countries_shared::lambda::replicator::{build, handle};
use lambda_runtime::{Context, LambdaEvent};
use testkit::fault::FaultInjector;

const SCHEDULED_EVENT: &str = include_str!("../../infra/local/events/scheduled-event.json");

#[tokio::main]
async fn main() -> ExitCode {
    countries_shared::telemetry::init();
    let config = match ReplicatorConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut replicator = match build(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    replicator.steps = Box::new(FaultInjector::from_env());
    let payload = serde_json::from_str(SCHEDULED_EVENT).unwrap_or_default();
    let mut context = Context::default();
    // COUNTRIES_DEADLINE_MS: the invocation's deadline this far from now,
    // as Lambda's context would give it.
    if let Some(left) = std::env::var("COUNTRIES_DEADLINE_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        context.deadline = now + left;
    }
    match handle(&replicator, LambdaEvent::new(payload, context)).await {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {}", e.error_type, e.error_message);
            ExitCode::from(3)
        }
    }
}
