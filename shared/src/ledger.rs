//! What a replicator run did, and the accounting rule every run obeys:
//! each row read is written, enqueued or deferred, exactly once.
//!
//! The summary is logged, stored in the `replication_run` ledger
//! (`countries_postgres::sink::pool`) and returned by the Lambda handler.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::vars::Function;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Running,
    /// Every row read is in Postgres or in the retry queue, and was deleted.
    Succeeded,
    /// Some rows were deferred (they stay in Snowflake) or could not be deleted.
    Partial,
    /// The run stopped before it could move rows.
    Failed,
    /// Another run held the lock.
    Skipped,
    /// The source table was empty: the run ended after one metadata
    /// statement, without waking the warehouse.
    Idle,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Idle => "idle",
        }
    }

    /// Whether the invocation counts as a success.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped | Self::Idle)
    }
}

/// Which sink rows go to: Postgres (batch mode's replicator, the retrier,
/// the writers) or the changes queue (stream mode's publisher; a run's
/// `rows_written` then counts rows the queue accepted, and `rows_changed`
/// is 0: the writers count what Postgres changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    #[default]
    Postgres,
    ChangesQueue,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::ChangesQueue => "changes_queue",
        }
    }

    /// What logs and errors call it.
    pub fn target(self) -> &'static str {
        match self {
            Self::Postgres => "Postgres",
            Self::ChangesQueue => "the changes queue",
        }
    }

    /// The function whose runs send rows here.
    pub fn function(self) -> &'static str {
        match self {
            Self::Postgres => Function::Replicator.name(),
            Self::ChangesQueue => Function::Publisher.name(),
        }
    }
}

/// What a run did. `rows_read = rows_written + rows_enqueued + rows_deferred`
/// always holds ([`RunSummary::unaccounted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub trigger_id: Option<String>,
    /// The table run's table: the mapping's name (`case` for `case`'s);
    /// None: `case`'s own run (stream mode's publisher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default)]
    pub sink: SinkKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    pub rows_read: usize,
    /// Taken by the sink: committed in Postgres (including rows a replay
    /// left unchanged), or accepted by the changes queue.
    pub rows_written: usize,
    /// Inserted or updated in Postgres by this run (0 for the changes
    /// queue: the writers change the rows).
    pub rows_changed: usize,
    pub rows_invalid: usize,
    pub rows_rejected: usize,
    /// Accepted by the retry queue (invalid and rejected rows).
    pub rows_enqueued: usize,
    /// Left in Snowflake for a later run.
    pub rows_deferred: usize,
    /// Of those, second versions of an id already in this batch: held back by
    /// design (the next run writes them), so they do not make a run partial.
    pub rows_deferred_duplicates: usize,
    /// Deleted from Snowflake, as Snowflake counted them.
    pub rows_deleted: usize,
    /// Statements sent to Snowflake (retries included): a constant handful
    /// plus one read and usually one delete per page, whatever the rows.
    #[serde(default)]
    pub snowflake_statements: usize,
    pub error: Option<String>,
}

impl RunSummary {
    pub fn new(run_id: Uuid, trigger_id: Option<String>) -> Self {
        Self {
            run_id,
            trigger_id,
            table: None,
            sink: SinkKind::Postgres,
            started_at: Utc::now(),
            finished_at: None,
            outcome: RunOutcome::Running,
            rows_read: 0,
            rows_written: 0,
            rows_changed: 0,
            rows_invalid: 0,
            rows_rejected: 0,
            rows_enqueued: 0,
            rows_deferred: 0,
            rows_deferred_duplicates: 0,
            rows_deleted: 0,
            snowflake_statements: 0,
            error: None,
        }
    }

    /// Adds an error to the run's error text (several can happen in one run).
    pub fn add_error(&mut self, error: impl Into<String>) {
        let error = error.into();
        self.error = Some(match self.error.take() {
            Some(previous) => format!("{previous}; {error}"),
            None => error,
        });
    }

    /// Rows read but neither written, enqueued nor deferred (negative: counted
    /// twice). Zero for every finished run; anything else is a bug.
    pub fn unaccounted(&self) -> i128 {
        let placed = self.rows_written + self.rows_enqueued + self.rows_deferred;
        i128::try_from(self.rows_read).unwrap_or(i128::MAX)
            - i128::try_from(placed).unwrap_or(i128::MAX)
    }

    /// Deferred rows that make the run partial: all but held-back versions.
    pub fn rows_deferred_for_trouble(&self) -> usize {
        self.rows_deferred
            .saturating_sub(self.rows_deferred_duplicates)
    }

    pub fn duration_ms(&self) -> i64 {
        self.finished_at
            .map(|end| (end - self.started_at).num_milliseconds())
            .unwrap_or_default()
    }

    /// One structured log line: `info` for a success, `error` otherwise.
    pub fn log(&self) {
        let s = self;
        macro_rules! summary_event {
            ($level:ident) => {
                tracing::$level!(
                    run_id = %s.run_id,
                    trigger_id = s.trigger_id.as_deref().unwrap_or(""),
                    table = s.table.as_deref().unwrap_or("case"),
                    outcome = s.outcome.as_str(),
                    sink = s.sink.as_str(),
                    rows_read = s.rows_read,
                    rows_written = s.rows_written,
                    rows_changed = s.rows_changed,
                    rows_invalid = s.rows_invalid,
                    rows_rejected = s.rows_rejected,
                    rows_enqueued = s.rows_enqueued,
                    rows_deferred = s.rows_deferred,
                    rows_deferred_duplicates = s.rows_deferred_duplicates,
                    rows_deleted = s.rows_deleted,
                    snowflake_statements = s.snowflake_statements,
                    duration_ms = s.duration_ms(),
                    error = s.error.as_deref().unwrap_or(""),
                    "run finished"
                )
            };
        }
        if s.outcome.is_success() {
            summary_event!(info)
        } else {
            summary_event!(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accounting_rule_sees_a_row_missing_or_counted_twice() {
        let mut s = RunSummary::new(Uuid::nil(), None);
        s.rows_read = 5;
        s.rows_written = 3;
        s.rows_enqueued = 1;
        assert_eq!(s.unaccounted(), 1);
        s.rows_deferred = 1;
        assert_eq!(s.unaccounted(), 0);
        s.rows_written = 4;
        assert_eq!(s.unaccounted(), -1);
    }

    #[test]
    fn errors_accumulate() {
        let mut s = RunSummary::new(Uuid::nil(), None);
        s.add_error("a");
        s.add_error("b");
        assert_eq!(s.error.as_deref(), Some("a; b"));
    }
}
