//! The Lambda handlers, one file per function: the only code that sees a
//! `LambdaEvent`. Each function's wiring (`build`: configuration in, real
//! adapters out) is the library of its crate, `functions/<name>/src/lib.rs`;
//! its `main.rs` reads the configuration, calls `build` once, and runs
//! `handle`.

pub mod dlq_reporter;
pub mod publisher;
pub mod replicator;
pub mod retrier;
pub mod writer;

use std::fmt::Display;

use lambda_runtime::Diagnostic;

/// The id that ties a scheduled run to what triggered it: the event's `id`
/// when there is one (EventBridge Scheduler may send `{}` or a full
/// scheduled event), else the invocation's request id.
pub fn trigger_id(event: &lambda_runtime::LambdaEvent<serde_json::Value>) -> Option<String> {
    event
        .payload
        .get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or_else(|| Some(event.context.request_id.clone()).filter(|id| !id.is_empty()))
}

/// A failed invocation with a stable `errorType` (the runtime's default is
/// a Rust type name such as `&alloc::boxed::Box<dyn core::error::Error>`),
/// so that logs, alarms and the invocation failure queue can be filtered on it.
pub fn failure(error_type: &str, message: impl Display) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_string(),
        error_message: message.to_string(),
    }
}

/// The function cannot start (a configuration problem, a secret that cannot
/// be read): log the same clear lines the command line prints, as one
/// structured line, and exit. Lambda reports it as an init error
/// (`Runtime.ExitError`) with that line in the function's log.
pub fn start_or_exit<T, E: Display>(what: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            tracing::error!(error_type = "InitError", error = %e, "{what}");
            eprintln!("{what}: {e}");
            crate::telemetry::flush();
            std::process::exit(1);
        }
    }
}

/// In Lambda, flush logs and metrics when the runtime sends SIGTERM (at
/// shutdown, or when an invocation times out), through `lambda_runtime`'s
/// graceful-shutdown support. It registers a no-op extension, which only the
/// Lambda environment offers, so elsewhere (the command line, tests) it does
/// nothing. A runtime API without the extensions API (some emulators) makes
/// the registration panic inside `lambda_runtime`: that is caught, logged,
/// and the function starts without the hook rather than not at all.
pub async fn flush_on_shutdown() {
    use futures::FutureExt as _;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return;
    }
    let registered =
        std::panic::AssertUnwindSafe(lambda_runtime::spawn_graceful_shutdown_handler(|| async {
            tracing::info!("shutting down");
            crate::telemetry::flush();
        }))
        .catch_unwind()
        .await;
    if registered.is_err() {
        tracing::warn!("no extensions API: starting without the graceful-shutdown hook");
    }
}
