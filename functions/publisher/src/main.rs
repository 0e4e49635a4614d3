//! The `publisher` Lambda (stream mode): on each scheduled event, takes a
//! run snapshot of `case` and publishes the valid rows to the changes
//! queue. Use case: `countries_shared::publisher`;
//! handler: `countries_shared::lambda::publisher`; wiring: this crate's library.

use countries_shared::config::{Env, PublisherConfig};
use countries_shared::lambda::publisher::handle;
use countries_shared::lambda::start_or_exit;
use countries_shared::telemetry;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use publisher::build;

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
        PublisherConfig::from_vars(Env::from_map(vars)),
    );
    let publisher = start_or_exit("cannot build the Snowflake client", build(&config).await);
    countries_shared::lambda::flush_on_shutdown().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&publisher, event)
    }))
    .await
}
