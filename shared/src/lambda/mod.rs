//! The Lambda handlers, one file per function: the only code that sees a
//! `LambdaEvent`. Each file also holds its function's wiring (`build`):
//! configuration in, real adapters out. `functions/<name>/src/main.rs` reads
//! the configuration, calls `build` once, and runs `handle`.

pub mod replicator;
pub mod reporter;
pub mod retrier;
