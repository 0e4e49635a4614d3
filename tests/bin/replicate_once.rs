//! One replicator invocation, exactly as `countries replicate` does it, but
//! built by the tests package with the `fault-injection` feature, so that a
//! test can kill the real process at a named crash point
//! (`COUNTRIES_CRASH_AT=after_write`). Prints the run summary as JSON.

use std::process::ExitCode;

use countries_shared::config::ReplicatorConfig;
use countries_shared::replicator::{handle, Replicator};
use lambda_runtime::{Context, LambdaEvent};

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
    let replicator = match Replicator::from_config(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
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
