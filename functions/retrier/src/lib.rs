//! The `retrier` function's wiring: Postgres (the container's warm
//! connection; the mapped tables' targets of `TABLES_FILE`) and the retry
//! queue for the backoff. The handler is
//! `countries_shared::lambda::retrier`, the use case
//! `countries_shared::retrier`.

use countries_postgres::mapped_rows::PgMappedRows;
use countries_postgres::sink::pool::PostgresStore;
use countries_postgres::warm::PasswordSource;
use countries_shared::config::RetrierConfig;
use countries_shared::ports::{MappedRows, VisibilityDelay};
use countries_shared::retrier::Retrier;
use countries_shared::retry::{Backoff, RetryPolicy};
use countries_sqs::visibility::SqsVisibilityDelay;

/// The production wiring.
pub async fn build(config: &RetrierConfig) -> Retrier {
    let sqs = aws_sdk_sqs::Client::new(&countries_shared::aws::sdk_config().await);
    let delay: Option<Box<dyn VisibilityDelay>> = if config.backoff_base.is_zero() {
        None
    } else {
        Some(Box::new(SqsVisibilityDelay::new(
            sqs,
            config.retry_queue_url.clone(),
        )))
    };
    let refresh = PasswordSource::from_config(&config.postgres).await;
    // Rows of the mapped tables, written again on a connection of their own.
    let mapped: Option<Box<dyn MappedRows>> = (!config.tables.is_empty()).then(|| {
        Box::new(PgMappedRows::with_password_source(
            config.postgres.clone(),
            config.tables.clone(),
            refresh.clone(),
        )) as Box<dyn MappedRows>
    });
    Retrier {
        mapped,
        sinks: Box::new(PostgresStore::with_password_source(
            config.postgres.clone(),
            refresh,
        )),
        policy: RetryPolicy::new(config.write_attempts),
        delay,
        retry_backoff: Backoff {
            first: config.backoff_base,
            max: config.backoff_max,
        },
        deadline_margin: config.deadline_margin,
    }
}
