//! The countries replication job: Snowflake `case` rows into Postgres.
//!
//! Organised by concern: [`config`] (the environment), [`model`] (the row, its
//! validation, the queue message), [`source`] (Snowflake), [`sink`]
//! (Postgres), [`queue`] (SQS), [`replicator`] (one run, and the Lambda
//! handler). Binaries under `functions/` only wire these together.

#[cfg(any(test, feature = "fuzzing"))]
pub mod checks;
pub mod config;
pub mod fault;
pub mod ident;
pub mod model;
pub mod queue;
pub mod replicator;
pub mod report;
pub mod retrier;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod telemetry;

/// Builds the AWS SDK configuration from the standard environment
/// (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a local emulator).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An error and its causes on one line, each cause once (wrappers that
/// repeat their cause's text are not repeated).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
