//! The `replicator` function's wiring: configuration in, real adapters out
//! (Snowflake; Postgres for the run guard and as the sink; SQS), built once per process and reused by warm
//! invocations; [`tables`] wires the mapped tables of `TABLES_FILE`. The
//! handler is `countries_shared::lambda::replicator`, the use cases
//! `countries_shared::replicator` and `countries_shared::table_run`.

pub mod tables;

use countries_postgres::run_guard::PostgresRunGuard;
use countries_postgres::sink::pool::PostgresStore;
use countries_postgres::warm::PasswordSource;
use countries_shared::config::vars::Function;
use countries_shared::config::ReplicatorConfig;
use countries_shared::failure::SourceError;
use countries_shared::replicator::Replicator;
use countries_shared::table_run::set::TableRuns;
use countries_snowflake::SnowflakeSource;
use countries_sqs::retry_queue::SqsRetryQueue;

/// The production wiring. Checks the Snowflake table at start
/// ([`SnowflakeSource::connect_and_check`]).
pub async fn build(config: &ReplicatorConfig) -> Result<Replicator, SourceError> {
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    let source =
        SnowflakeSource::connect_and_check(&config.snowflake, Function::Replicator.name()).await?;
    Ok(Replicator::new(
        Box::new(source),
        Box::new(PostgresRunGuard::new(config.postgres.clone())),
        // The container's warm connection (countries_postgres::warm).
        Box::new(PostgresStore::with_password_source(
            config.postgres.clone(),
            PasswordSource::from_config(&config.postgres).await,
        )),
        Box::new(SqsRetryQueue::new(sqs, config.retry_queue_url.clone())),
        config,
    ))
}

/// The mapped tables of `TABLES_FILE`, each prepared on its first run.
pub async fn build_tables(config: &ReplicatorConfig) -> TableRuns {
    if config.tables.is_empty() {
        return TableRuns::none();
    }
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    TableRuns::new(
        config.tables.clone(),
        Box::new(tables::Planner::new(config.clone(), sqs)),
    )
}
