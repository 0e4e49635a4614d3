//! One replicator invocation, exactly as `countries replicate` does it, but
//! with the test kit's fault injector as the step hook, so that a test can
//! kill the real process at a named step (`COUNTRIES_CRASH_AT=after_write`)
//! or pause it there. Prints the run summary as JSON.

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
    match handle(&replicator, LambdaEvent::new(payload, Context::default())).await {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(3)
        }
    }
}
