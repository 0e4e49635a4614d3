//! Fault points for tests that interrupt the real process between two steps.
//!
//! With the `fault-injection` feature, `fault_point(name)`:
//! - aborts the process when `COUNTRIES_CRASH_AT` names that point (a crash:
//!   no destructor, no flush, exactly what a killed Lambda leaves behind);
//! - pauses when `COUNTRIES_PAUSE_AT` names it: the process writes the file
//!   `COUNTRIES_PAUSE_FILE` and waits until the test removes it, so that the
//!   test can take a service down at that exact moment and let the run go on
//!   against the dead service.
//!
//! Without the feature it compiles to nothing, so no Lambda build carries it.

/// The longest a paused process waits: a test that died must not leave a
/// process behind forever.
#[cfg(feature = "fault-injection")]
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(feature = "fault-injection")]
pub fn fault_point(name: &str) {
    if std::env::var("COUNTRIES_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("fault injection: crashing at {name}");
        std::process::abort();
    }
    if std::env::var("COUNTRIES_PAUSE_AT").is_ok_and(|at| at == name) {
        let Ok(file) = std::env::var("COUNTRIES_PAUSE_FILE") else {
            eprintln!("fault injection: COUNTRIES_PAUSE_AT without COUNTRIES_PAUSE_FILE");
            return;
        };
        let file = std::path::PathBuf::from(file);
        if let Err(e) = std::fs::write(&file, name) {
            eprintln!("fault injection: cannot write {}: {e}", file.display());
            return;
        }
        eprintln!("fault injection: paused at {name}");
        let started = std::time::Instant::now();
        // Blocking on purpose: nothing of the run may move while paused.
        while file.exists() && started.elapsed() < MAX_PAUSE {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        eprintln!("fault injection: resumed at {name}");
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fault_point(_name: &str) {}
