//! Snowflake's errors, classified once. Snowflake's own code decides where
//! it is known (the README's table of codes is this one), its SQLSTATE class
//! where it is not; an error without an answer (no connection, a timeout, a
//! 5xx after the client's retries) is transient. None is row-level: no
//! statement of a run concerns one row.

use snowflake_api::{ConnectionError, SnowflakeApiError};

use countries_shared::failure::{error_chain, ErrorKind, SourceError};

/// Codes whose meaning decides the kind, with why.
pub const CODES: &[(&str, ErrorKind, &str)] = &[
    ("000604", ErrorKind::Transient, "SQL execution canceled (our abort at the deadline, or an operator)"),
    ("000625", ErrorKind::Transient, "aborted while waiting for the table's lock (another DML on the table)"),
    ("000630", ErrorKind::Transient, "statement reached `STATEMENT_TIMEOUT_IN_SECONDS`"),
    ("390112", ErrorKind::Transient, "session expired, and renewing it failed"),
    ("390113", ErrorKind::Transient, "master token not found, and logging in again failed"),
    ("390114", ErrorKind::Transient, "master token expired, and logging in again failed"),
    ("390115", ErrorKind::Transient, "master token invalid, and logging in again failed"),
    ("000606", ErrorKind::Fatal, "no active warehouse: set `SNOWFLAKE_WAREHOUSE` or the user's default"),
    ("000904", ErrorKind::Fatal, "invalid identifier: a column named in `SNOWFLAKE_ID_COLUMN` / `SNOWFLAKE_COUNTRY_COLUMN` is missing"),
    ("001003", ErrorKind::Fatal, "SQL compilation error"),
    ("002003", ErrorKind::Fatal, "table missing or not visible to the role (`SNOWFLAKE_TABLE`, `_DATABASE`, `_SCHEMA`, `_ROLE`)"),
    ("003001", ErrorKind::Fatal, "insufficient privileges (see the grants in the README)"),
    ("390100", ErrorKind::Fatal, "incorrect user name or password"),
    ("390144", ErrorKind::Fatal, "key-pair JWT refused (wrong key, or the account identifier)"),
    ("390201", ErrorKind::Fatal, "the login's database, schema, warehouse or role does not exist or is not granted"),
];

/// SQLSTATE classes that are transient when the code is not in [`CODES`]:
/// connection exceptions, transaction rollbacks, operator intervention.
const TRANSIENT_CLASSES: [&str; 3] = ["08", "40", "57"];

/// The README's table of codes, made from [`CODES`].
pub fn markdown_table() -> String {
    let mut table = String::from("| code | kind | meaning |\n|---|---|---|\n");
    for (code, kind, meaning) in CODES {
        table.push_str(&format!("| `{code}` | {kind} | {meaning} |\n"));
    }
    table.push_str(&format!(
        "| any other code | transient when its SQLSTATE class is {}, else fatal | |\n",
        TRANSIENT_CLASSES.map(|c| format!("`{c}`")).join(", ")
    ));
    table.push_str(
        "| no answer (connection refused or reset, a timeout, HTTP 408/429/5xx after the client's retries), a statement still running at the deadline (aborted), a chunk that failed or held other than it said | transient | |\n",
    );
    table.push_str(
        "| a reply that is not Snowflake's (not JSON, wrong shape), an Arrow type the product does not read, another HTTP 4xx | fatal | |\n",
    );
    table
}

/// The kind of Snowflake's answer `code` / `sql_state`.
pub fn classify(code: &str, sql_state: &str) -> ErrorKind {
    if let Some((_, kind, _)) = CODES.iter().find(|(c, _, _)| *c == code) {
        return *kind;
    }
    if TRANSIENT_CLASSES
        .iter()
        .any(|class| sql_state.starts_with(class))
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Fatal
    }
}

/// The client's error as a [`SourceError`], keeping Snowflake's code,
/// SQLSTATE, message and query id.
pub fn api_error(operation: &'static str, err: SnowflakeApiError) -> SourceError {
    let detail = error_chain(&err);
    match err {
        SnowflakeApiError::Statement(e) => SourceError::Statement {
            operation,
            kind: classify(&e.code, &e.sql_state),
            code: e.code,
            sql_state: e.sql_state,
            message: e.message,
            query_id: e.query_id,
        },
        SnowflakeApiError::AuthError(snowflake_api::AuthError::AuthFailed(code, message)) => {
            SourceError::Statement {
                operation,
                kind: classify(&code, ""),
                code,
                sql_state: String::new(),
                message,
                query_id: String::new(),
            }
        }
        SnowflakeApiError::AuthError(snowflake_api::AuthError::RequestError(e))
        | SnowflakeApiError::RequestError(e) => connection_error(operation, &e, detail),
        SnowflakeApiError::SessionReplaced { .. } => {
            SourceError::SnapshotLost { operation, detail }
        }
        // No answer in time, a session Snowflake keeps ending, a chunk that
        // could not be fetched or did not hold what it said: a later
        // attempt (with fresh chunk URLs) may work.
        SnowflakeApiError::DeadlineExceeded { .. }
        | SnowflakeApiError::SessionUnstable { .. }
        | SnowflakeApiError::Chunk { .. }
        | SnowflakeApiError::BrokenResult { .. }
        | SnowflakeApiError::LocalIoError(_) => SourceError::Unreachable { operation, detail },
        SnowflakeApiError::ArrowError(_)
        | SnowflakeApiError::ResponseDeserializationError(_)
        | SnowflakeApiError::UnexpectedResponse(_) => {
            SourceError::UnexpectedResult { operation, detail }
        }
        SnowflakeApiError::AuthError(_) => SourceError::Refused { operation, detail },
    }
}

fn connection_error(operation: &'static str, e: &ConnectionError, detail: String) -> SourceError {
    if e.is_transient() {
        SourceError::Unreachable { operation, detail }
    } else {
        SourceError::Refused { operation, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_and_sqlstate_classes_fill_in() {
        assert_eq!(classify("000604", "57014"), ErrorKind::Transient);
        assert_eq!(classify("002003", "42S02"), ErrorKind::Fatal);
        assert_eq!(classify("390114", ""), ErrorKind::Transient);
        assert_eq!(classify("390100", ""), ErrorKind::Fatal);
        assert_eq!(classify("999999", "08001"), ErrorKind::Transient);
        assert_eq!(classify("999999", "40001"), ErrorKind::Transient);
        assert_eq!(classify("999999", "22003"), ErrorKind::Fatal);
    }

    #[test]
    fn a_statement_error_keeps_what_snowflake_said() {
        let err = api_error(
            "read",
            SnowflakeApiError::Statement(snowflake_api::StatementError {
                code: "002003".into(),
                sql_state: "42S02".into(),
                message: "Object 'X' does not exist".into(),
                query_id: "01b0-q".into(),
            }),
        );
        assert_eq!(
            err.to_string(),
            "Snowflake refused read: error 002003 (SQLSTATE 42S02, query id 01b0-q): Object 'X' does not exist"
        );
        assert_eq!(
            countries_shared::failure::Classify::kind(&err),
            ErrorKind::Fatal
        );
    }
}
