//! The Lambda handlers, one file per function: the only code that sees a
//! `LambdaEvent`. Each file also holds its function's wiring (`build`):
//! configuration in, real adapters out. `functions/<name>/src/main.rs` reads
//! the configuration, calls `build` once, and runs `handle`.

pub mod replicator;
pub mod reporter;
pub mod retrier;

/// In Lambda, flush logs and metrics when the runtime sends SIGTERM (at
/// shutdown, or when an invocation times out), through `lambda_runtime`'s
/// graceful-shutdown support. It registers a no-op extension, which only the
/// Lambda environment offers, so elsewhere (the command line, tests) it does
/// nothing.
pub async fn flush_on_shutdown() {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return;
    }
    lambda_runtime::spawn_graceful_shutdown_handler(|| async {
        tracing::info!("shutting down");
        crate::telemetry::flush();
    })
    .await;
}
