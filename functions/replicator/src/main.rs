//! The `replicator` Lambda: on each scheduled event, moves a capped batch of
//! `case` rows from Snowflake into Postgres. All logic lives in
//! `countries_shared::replicator`; this only wires configuration and clients.

use countries_shared::config::ReplicatorConfig;
use countries_shared::queue::SqsRetryQueue;
use countries_shared::replicator::{handle, Backoff, Replicator};
use countries_shared::sink::PostgresStore;
use countries_shared::source::SnowflakeSource;
use countries_shared::{aws_config, telemetry};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = ReplicatorConfig::from_env()?;
    let sqs = aws_sdk_sqs::Client::new(&aws_config().await);
    let replicator = Replicator {
        source: Box::new(SnowflakeSource::connect(&config.snowflake)?),
        store: Box::new(PostgresStore::new(config.postgres.clone())),
        queue: Box::new(SqsRetryQueue::new(sqs, config.retry_queue_url.clone())),
        limits: config.limits,
        backoff: Backoff::default(),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&replicator, event)
    }))
    .await
}
