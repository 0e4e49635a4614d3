//! Every Postgres error is classified once, here, by SQLSTATE:
//! - row-level (class 21 cardinality, 22 data exception, 23 integrity
//!   violation): the row itself is refused; it is isolated and queued;
//! - transient (connection, serialization, deadlock, lock timeout, cancel,
//!   resources, shutdown): retrying later can work;
//! - fatal (everything else: a missing table, a permission, a bad column):
//!   no row can be written, so the run stops and every row stays in Snowflake
//!   instead of flooding the queue.

use tokio_postgres::error::SqlState;

use countries_shared::failure::{ErrorKind, WriteError};

/// The error of a Postgres call, classified by its SQLSTATE.
pub fn write_error(err: &tokio_postgres::Error) -> WriteError {
    let Some(db) = err.as_db_error() else {
        // No SQLSTATE: the connection broke, timed out or was closed.
        return WriteError::transient(err.to_string());
    };
    let code = db.code().code();
    let kind = classify_sqlstate(code);
    let mut message = db.message().to_string();
    if let Some(detail) = db.detail() {
        message.push_str(" (");
        message.push_str(detail);
        message.push(')');
    }
    if let Some(constraint) = db.constraint() {
        message.push_str(&format!(" [constraint {constraint}]"));
    }
    WriteError {
        kind,
        sqlstate: Some(code.to_string()),
        message,
    }
}

pub fn classify_sqlstate(code: &str) -> ErrorKind {
    let class = code.get(..2).unwrap_or("");
    match class {
        // 21: cardinality (one statement touching an id twice); bisection
        // separates the two rows, so it heals like a refused row.
        "21" | "22" | "23" => ErrorKind::RowLevel,
        // connection exception, insufficient resources, system error
        "08" | "53" | "58" => ErrorKind::Transient,
        _ => {
            let transient = [
                SqlState::T_R_SERIALIZATION_FAILURE.code(),
                SqlState::T_R_DEADLOCK_DETECTED.code(),
                SqlState::LOCK_NOT_AVAILABLE.code(),
                SqlState::QUERY_CANCELED.code(),
                SqlState::ADMIN_SHUTDOWN.code(),
                SqlState::CRASH_SHUTDOWN.code(),
                SqlState::CANNOT_CONNECT_NOW.code(),
                SqlState::IDLE_SESSION_TIMEOUT.code(),
            ];
            if transient.contains(&code) {
                ErrorKind::Transient
            } else {
                ErrorKind::Fatal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_fall_into_the_three_classes() {
        for row_level in [
            "23514", "23502", "23505", "23503", "22001", "22P02", "21000",
        ] {
            assert_eq!(
                classify_sqlstate(row_level),
                ErrorKind::RowLevel,
                "{row_level}"
            );
        }
        for transient in [
            "08006", "08001", "40001", "40P01", "55P03", "57014", "57P01", "53300", "58030",
        ] {
            assert_eq!(
                classify_sqlstate(transient),
                ErrorKind::Transient,
                "{transient}"
            );
        }
        for fatal in ["42P01", "42703", "42501", "28P01", "3D000", "25006"] {
            assert_eq!(classify_sqlstate(fatal), ErrorKind::Fatal, "{fatal}");
        }
    }
}
