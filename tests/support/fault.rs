//! Fault injection for tests that interrupt the real replicator process
//! between two steps: a [`StepHook`] that the `replicate-once` test binary
//! passes to the replicator. No Lambda binary contains it.
//!
//! At a step named by the environment it:
//! - aborts the process when `COUNTRIES_CRASH_AT` names that step (a crash:
//!   no destructor, no flush, exactly what a killed Lambda leaves behind);
//! - pauses when `COUNTRIES_PAUSE_AT` names it: the process writes the file
//!   `COUNTRIES_PAUSE_FILE` and waits until the test removes it, so that the
//!   test can take a service down at that exact moment and let the run go on
//!   against the dead service.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use countries_shared::ports::{Step, StepHook};

/// The longest a paused process waits: a test that died must not leave a
/// process behind forever.
const MAX_PAUSE: Duration = Duration::from_secs(120);

/// Crashes or pauses at the steps the environment names.
#[derive(Debug, Default)]
pub struct FaultInjector {
    crash_at: Option<String>,
    pause_at: Option<String>,
    pause_file: Option<PathBuf>,
}

impl FaultInjector {
    pub fn from_env() -> Self {
        Self {
            crash_at: std::env::var("COUNTRIES_CRASH_AT").ok(),
            pause_at: std::env::var("COUNTRIES_PAUSE_AT").ok(),
            pause_file: std::env::var_os("COUNTRIES_PAUSE_FILE").map(PathBuf::from),
        }
    }
}

impl StepHook for FaultInjector {
    fn reached(&self, step: Step) {
        let name = step.as_str();
        if self.crash_at.as_deref() == Some(name) {
            eprintln!("fault injection: crashing at {name}");
            std::process::abort();
        }
        if self.pause_at.as_deref() != Some(name) {
            return;
        }
        let Some(file) = &self.pause_file else {
            eprintln!("fault injection: COUNTRIES_PAUSE_AT without COUNTRIES_PAUSE_FILE");
            return;
        };
        if let Err(e) = std::fs::write(file, name) {
            eprintln!("fault injection: cannot write {}: {e}", file.display());
            return;
        }
        eprintln!("fault injection: paused at {name}");
        let started = Instant::now();
        // Blocking on purpose: nothing of the run may move while paused.
        while file.exists() && started.elapsed() < MAX_PAUSE {
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("fault injection: resumed at {name}");
    }
}
