//! The `writer` Lambda (stream mode), triggered by the changes queue with
//! `ReportBatchItemFailures`. Use case: `countries_shared::writer`;
//! handler: `countries_shared::lambda::writer`; wiring: this crate's library.

use aws_lambda_events::event::sqs::SqsEvent;
use countries_shared::config::{Env, WriterConfig};
use countries_shared::lambda::start_or_exit;
use countries_shared::lambda::writer::handle;
use countries_shared::telemetry;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use writer::build;

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
        WriterConfig::from_vars(Env::from_map(vars)),
    );
    let writer = build(&config).await;
    countries_shared::lambda::flush_on_shutdown().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        handle(&writer, event)
    }))
    .await
}
