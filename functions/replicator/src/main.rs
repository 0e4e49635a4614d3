//! The `replicator` Lambda: on each scheduled event, moves a capped batch of
//! rows of `case` and of each mapped table from Snowflake into Postgres.
//! Use case: `countries_shared::table_run`; handler:
//! `countries_shared::lambda::replicator`; wiring: this crate's library.

use countries_shared::config::{Env, ReplicatorConfig};
use countries_shared::lambda::replicator::handle;
use countries_shared::lambda::start_or_exit;
use countries_shared::telemetry;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use replicator::build;

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
        ReplicatorConfig::from_vars(Env::from_map(vars)),
    );
    let tables = start_or_exit("cannot build the Snowflake client", build(&config).await);
    let margin = config.deadline_margin;
    countries_shared::lambda::flush_on_shutdown().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&tables, margin, event)
    }))
    .await
}
