//! Logging: one JSON object per line in Lambda (CloudWatch Logs Insights can
//! query the fields), compact text on a terminal.

use tracing_subscriber::EnvFilter;

/// Sets up logging once per process. `LOG_FORMAT` (`json` or `text`) wins;
/// otherwise JSON inside Lambda and text elsewhere. `RUST_LOG` filters
/// (default `info`).
pub fn init() {
    let json = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
