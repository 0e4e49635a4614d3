//! The `retrier` Lambda, triggered by the retry queue with
//! `ReportBatchItemFailures`. Use case: `countries_shared::retrier`;
//! handler: `countries_shared::lambda::retrier`; wiring: this crate's library.

use aws_lambda_events::event::sqs::SqsEvent;
use countries_shared::config::{Env, RetrierConfig};
use countries_shared::lambda::retrier::handle;
use countries_shared::lambda::start_or_exit;
use countries_shared::telemetry;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use retrier::build;

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
        RetrierConfig::from_vars(Env::from_map(vars)),
    );
    let retrier = build(&config).await;
    countries_shared::lambda::flush_on_shutdown().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        handle(&retrier, event)
    }))
    .await
}
