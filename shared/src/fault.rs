//! Crash points for tests that kill the real process between two steps.
//!
//! With the `fault-injection` feature, `crash_point(name)` aborts the process
//! when `COUNTRIES_CRASH_AT` names that point; without the feature it compiles
//! to nothing, so no Lambda build carries it.

#[cfg(feature = "fault-injection")]
pub fn crash_point(name: &str) {
    if std::env::var("COUNTRIES_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("fault injection: crashing at {name}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
