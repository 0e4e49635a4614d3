//! The `dlq-reporter` Lambda, on its own schedule: dead-letter queue to
//! failure report and one digest email. Use case: `countries_shared::dlq_reporter`;
//! handler: `countries_shared::lambda::dlq_reporter`; wiring: this crate's library.

use countries_shared::config::{Env, ReporterConfig};
use countries_shared::lambda::dlq_reporter::handle;
use countries_shared::lambda::start_or_exit;
use countries_shared::telemetry;
use dlq_reporter::build;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    // Secrets Manager values become plain variables before the config is read.
    let vars = start_or_exit(
        "cannot read the secrets",
        countries_secrets::environment().await,
    );
    let config = start_or_exit(
        "invalid configuration",
        ReporterConfig::from_vars(Env::from_map(vars)),
    );
    let reporter = build(&config).await;
    countries_shared::lambda::flush_on_shutdown().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&reporter, event)
    }))
    .await
}
