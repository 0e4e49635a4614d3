//! The `replicator` function's wiring: configuration in, the tables' runs
//! out. `case` (the variables') and each table of `TABLES_FILE` are
//! mappings run by the general table run, each prepared at its first run
//! over adapters of its own (Snowflake; Postgres for the run guard and as
//! the sink; SQS), kept by warm invocations ([`tables`]). The handler is
//! `countries_shared::lambda::replicator`, the use case
//! `countries_shared::table_run`.

pub mod tables;

use countries_shared::config::vars::Function;
use countries_shared::config::ReplicatorConfig;
use countries_shared::failure::SourceError;
use countries_shared::table_run::set::TableRuns;
use countries_snowflake::SnowflakeSource;

/// The production wiring: `case` first, then the file's tables. `case`'s
/// Snowflake table and columns are checked at start
/// ([`SnowflakeSource::connect_and_check`]), so that a wrong variable stops
/// the function at its cold start, naming the variable.
pub async fn build(config: &ReplicatorConfig) -> Result<TableRuns, SourceError> {
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    let case = config.case_table();
    let source =
        SnowflakeSource::connect_and_check(&config.snowflake, Function::Replicator.name()).await?;
    let planner = tables::Planner::new(config.clone(), sqs).with_source(&case.name, source);
    let mappings = std::iter::once(case)
        .chain(config.tables.iter().cloned())
        .collect();
    Ok(TableRuns::new(mappings, Box::new(planner)))
}
