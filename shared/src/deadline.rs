//! The invocation's deadline. Lambda kills an invocation at its timeout, in
//! the middle of whatever it was doing; each handler reads the deadline from
//! the Lambda context instead, and the use cases start no new step when less
//! than a safety margin is left, so that they end on their own terms (rows
//! deferred, messages left for the next run) and record why.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The margin when none is configured: a tenth of the invocation's time,
/// between 2 and 60 seconds.
fn default_margin(total: Duration) -> Duration {
    (total / 10).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

/// Deadlines below this (September 2001 in epoch milliseconds) are read as
/// a duration from now.
const RELATIVE_BELOW_MS: u64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<Instant>,
    margin: Duration,
}

impl Deadline {
    /// No deadline (the command line, tests of other things).
    pub fn none() -> Self {
        Self {
            at: None,
            margin: Duration::ZERO,
        }
    }

    /// From the Lambda context's deadline (milliseconds since the epoch).
    /// `margin`: the configured safety margin, or None for the default.
    pub fn from_epoch_ms(deadline_ms: u64, margin: Option<Duration>) -> Self {
        if deadline_ms == 0 {
            // A context without a deadline (local invocations).
            return Self::none();
        }
        let left = if deadline_ms < RELATIVE_BELOW_MS {
            // No epoch deadline is this early: an emulator that sends the
            // time left instead (cargo lambda watch sends 600000).
            Duration::from_millis(deadline_ms)
        } else {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Duration::from_millis(deadline_ms.saturating_sub(now_ms))
        };
        // A configured margin as long as the whole invocation would stop
        // every run before it starts: at most half of it.
        let margin = margin.map_or_else(|| default_margin(left), |m| m.min(left / 2));
        Self::after(left, margin)
    }

    /// A deadline `left` from now, with a safety margin.
    pub fn after(left: Duration, margin: Duration) -> Self {
        Self {
            at: Some(Instant::now() + left),
            margin,
        }
    }

    /// Less than the margin is left: start nothing new.
    pub fn is_near(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() + self.margin >= at)
    }

    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// When a statement already sent must be given up (and aborted): half
    /// the margin before the deadline, so that the other half is left for
    /// the abort and the run's bookkeeping. None without a deadline.
    pub fn statement_deadline(&self) -> Option<std::time::Instant> {
        self.at
            .map(|at| at.checked_sub(self.margin / 2).unwrap_or(at).into_std())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_near_within_its_margin() {
        assert!(!Deadline::none().is_near());
        assert!(!Deadline::after(Duration::from_secs(60), Duration::from_secs(5)).is_near());
        assert!(Deadline::after(Duration::from_secs(3), Duration::from_secs(5)).is_near());
        let past_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap() - 60_000;
        assert!(
            Deadline::from_epoch_ms(past_ms, None).is_near(),
            "a minute ago"
        );
        assert!(
            !Deadline::from_epoch_ms(600_000, None).is_near(),
            "ten minutes from now, as an emulator sends it"
        );
        assert!(
            Deadline::from_epoch_ms(1_000, None).is_near(),
            "one second left"
        );
        assert!(!Deadline::from_epoch_ms(0, None).is_near(), "no deadline");
        assert_eq!(
            default_margin(Duration::from_secs(900)),
            Duration::from_secs(60)
        );
        assert_eq!(
            default_margin(Duration::from_secs(5)),
            Duration::from_secs(2)
        );
    }
}
