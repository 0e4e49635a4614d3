//! The `publisher` function's wiring (stream mode): `case`'s own run
//! with the changes queue as its sink, behind the Postgres run guard (lock
//! and ledger). The handler is `countries_shared::lambda::publisher`, the use
//! case `countries_shared::publisher`.

use std::sync::Arc;

use countries_postgres::run_guard::PostgresRunGuard;
use countries_shared::case_run::CaseRun;
use countries_shared::config::vars::Function;
use countries_shared::config::PublisherConfig;
use countries_shared::failure::SourceError;
use countries_shared::publisher::Publisher;
use countries_snowflake::SnowflakeSource;
use countries_sqs::changes_queue::sink::ChangesQueueSinks;
use countries_sqs::changes_queue::SqsChangesQueue;
use countries_sqs::retry_queue::SqsRetryQueue;

/// The production wiring. Checks the Snowflake table at start
/// ([`SnowflakeSource::connect_and_check`]).
pub async fn build(config: &PublisherConfig) -> Result<Publisher, SourceError> {
    let runs = &config.replicator;
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    let sinks = ChangesQueueSinks {
        queue: Arc::new(SqsChangesQueue::new(
            sqs.clone(),
            config.changes_queue_url.clone(),
        )),
        groups: config.change_groups,
    };
    let source =
        SnowflakeSource::connect_and_check(&runs.snowflake, Function::Publisher.name()).await?;
    Ok(Publisher {
        runs: CaseRun::new(
            Box::new(source),
            Box::new(PostgresRunGuard::new(runs.postgres.clone())),
            Box::new(sinks),
            Box::new(SqsRetryQueue::new(sqs, runs.retry_queue_url.clone())),
            runs,
        ),
        loop_for: config.loop_for,
        idle_wait: config.idle_wait,
    })
}
