//! One failure vocabulary for the whole product.
//!
//! Every error an adapter can return is a typed error below, and each maps into
//! one [`ErrorKind`]: the only question the use cases ask of an error is
//! "transient, row-level or fatal?", and they ask it through [`Classify`].
//! The wire-level [`crate::model::message::FailureClass`] that a queue message
//! carries is derived from it.

use std::fmt;

/// What retrying can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A later attempt may work: a connection dropped, a timeout, a throttle,
    /// a serialization failure. Retried with backoff, then deferred.
    Transient,
    /// The item itself is refused (a constraint, a value the service cannot
    /// store). Retrying it unchanged cannot help; the rest of its batch goes on.
    RowLevel,
    /// Nothing will work until someone acts (a missing table, a permission,
    /// bad credentials, an unexpected result shape): stop, keep every row
    /// where it is, and say so.
    Fatal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::RowLevel => "row-level",
            Self::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Classify {
    fn kind(&self) -> ErrorKind;

    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

/// Snowflake, the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Snowflake could not be reached or did not answer; a later attempt may work.
    #[error("Snowflake unreachable during {operation}: {detail}")]
    Unreachable {
        operation: &'static str,
        detail: String,
    },
    /// Snowflake answered with an error (SQL, permissions, authentication).
    #[error("Snowflake refused {operation}: {detail}")]
    Refused {
        operation: &'static str,
        detail: String,
    },
    /// The result does not have the shape of the `case` table.
    #[error("unexpected Snowflake result for {operation}: {detail}")]
    UnexpectedResult {
        operation: &'static str,
        detail: String,
    },
    /// Snowflake answered with an error of its own, classified by its code
    /// (`countries_snowflake::errors`).
    #[error("Snowflake refused {operation}: error {code} (SQLSTATE {sql_state}, query id {query_id}): {message}")]
    Statement {
        operation: &'static str,
        kind: ErrorKind,
        code: String,
        sql_state: String,
        message: String,
        query_id: String,
    },
    /// The session holding the run's snapshot ended and a new one was
    /// started: the snapshot is gone. The run ends partial; the next run
    /// takes a new snapshot.
    #[error("Snowflake {operation}: the run snapshot is gone with its session ({detail})")]
    SnapshotLost {
        operation: &'static str,
        detail: String,
    },
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable { .. } | Self::SnapshotLost { .. } => ErrorKind::Transient,
            Self::Refused { .. } | Self::UnexpectedResult { .. } => ErrorKind::Fatal,
            Self::Statement { kind, .. } => *kind,
        }
    }
}

/// A write to Postgres (the replica, the ledger, the failure report); the
/// kind comes from the SQLSTATE (`countries_postgres::sqlstate`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("Postgres {kind} error{}: {message}", sqlstate.as_ref().map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
pub struct WriteError {
    pub kind: ErrorKind,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl WriteError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            sqlstate: None,
            message: message.into(),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            sqlstate: None,
            message: message.into(),
        }
    }

    pub fn row_level(sqlstate: &str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::RowLevel,
            sqlstate: Some(sqlstate.to_string()),
            message: message.into(),
        }
    }

    /// The same error with what was being done in front of its message.
    pub fn context(mut self, doing: impl fmt::Display) -> Self {
        self.message = format!("{doing}: {}", self.message);
        self
    }
}

/// Why a sink stopped taking rows, in the sink's own terms: Postgres
/// (transient or fatal; a row it refuses is not a stop, it is a refused
/// row), the changes queue (its SQS error), or the invocation's deadline.
/// A changes-queue error is never row-level: a batch SQS refuses is not
/// about one row's content (`pack` keeps every batch within the size
/// limit), so it is transient (retried, then left in Snowflake) unless it
/// is fatal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Postgres(#[from] WriteError),
    #[error("the changes queue did not take a batch: {0}")]
    ChangesQueue(#[from] QueueError),
    #[error("the invocation's deadline is near; the rest is not started")]
    Deadline,
}

impl Classify for SinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Postgres(e) => e.kind,
            Self::ChangesQueue(e) if e.kind == ErrorKind::Fatal => ErrorKind::Fatal,
            Self::ChangesQueue(_) | Self::Deadline => ErrorKind::Transient,
        }
    }
}

impl Classify for WriteError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// SQS: the retry queue, the dead-letter queue.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SQS {operation} failed: {detail}")]
pub struct QueueError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub detail: String,
}

impl QueueError {
    /// The call itself failed (network, throttling, a service error): the
    /// items are still where they were, and a later call may work.
    pub fn call(operation: &'static str, detail: impl Into<String>) -> Self {
        Self {
            operation,
            kind: ErrorKind::Transient,
            detail: detail.into(),
        }
    }

    /// SQS refused one entry of a batch, or it could not be built.
    pub fn entry(operation: &'static str, detail: impl Into<String>) -> Self {
        Self {
            operation,
            kind: ErrorKind::RowLevel,
            detail: detail.into(),
        }
    }
}

impl Classify for QueueError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// SES, the digest email.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SES refused the digest email: {detail}")]
pub struct MailError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl MailError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl Classify for MailError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_adapter_error_has_one_kind() {
        let unreachable = SourceError::Unreachable {
            operation: "read",
            detail: "timeout".into(),
        };
        assert!(unreachable.is_transient());
        let refused = SourceError::Refused {
            operation: "read",
            detail: "no table".into(),
        };
        assert_eq!(refused.kind(), ErrorKind::Fatal);
        assert_eq!(
            WriteError::row_level("23514", "check").kind(),
            ErrorKind::RowLevel
        );
        assert!(QueueError::call("SendMessageBatch", "reset").is_transient());
        assert_eq!(
            QueueError::entry("SendMessageBatch", "too big").kind(),
            ErrorKind::RowLevel
        );
        let shown = WriteError::row_level("23514", "check").to_string();
        assert_eq!(shown, "Postgres row-level error (SQLSTATE 23514): check");
    }
}
