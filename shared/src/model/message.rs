//! The retry-queue message that carries a failed row, and the failure class
//! it records. Versioned JSON; the README documents it field by field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::failure::{ErrorKind, WriteError};
use crate::model::row::SourceRow;
use crate::model::text::{one_line, preview};

/// Why a row could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The row failed validation; no retry can fix it.
    Invalid,
    /// Postgres refused the row itself (constraint, data error); a retry helps
    /// once the cause is fixed on the Postgres side.
    Rejected,
    /// The write kept failing for a reason outside the row.
    Transient,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetail {
    pub class: FailureClass,
    /// Postgres SQLSTATE, when Postgres refused the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    pub message: String,
}

impl FailureClass {
    /// The class a failed write records: a row-level refusal is `rejected`;
    /// a transient or fatal error that outlasted the retries is `transient`
    /// (the row itself may be fine).
    pub fn of_write(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::RowLevel => Self::Rejected,
            ErrorKind::Transient | ErrorKind::Fatal => Self::Transient,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Rejected => "rejected",
            Self::Transient => "transient",
        }
    }
}

impl FailureDetail {
    /// What the queue message says about a failed write.
    pub fn of_write(error: &WriteError) -> Self {
        Self {
            class: FailureClass::of_write(error.kind),
            sqlstate: error.sqlstate.clone(),
            message: error.message.clone(),
        }
    }
}

pub const RETRY_MESSAGE_SCHEMA_VERSION: u32 = 1;

/// The body of a retry-queue message: one failed row. Versioned JSON; the
/// README documents it field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryMessage {
    pub schema_version: u32,
    /// The row exactly as read from Snowflake.
    pub record: SourceRow,
    pub error: FailureDetail,
    /// The replicator run that first failed to write the row.
    pub run_id: Uuid,
    pub first_failed_at: DateTime<Utc>,
    /// Write attempts so far (1 when the replicator enqueues it).
    pub attempt: u32,
}

impl RetryMessage {
    pub fn first_failure(
        record: SourceRow,
        error: FailureDetail,
        run_id: Uuid,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            schema_version: RETRY_MESSAGE_SCHEMA_VERSION,
            record,
            error,
            run_id,
            first_failed_at: at,
            attempt: 1,
        }
    }

    /// A stable key for the row's content: the same row enqueued twice (a rerun
    /// after a crash between enqueue and delete) gets the same key, so consumers
    /// can recognise the duplicate.
    pub fn record_key(&self) -> String {
        let id = self
            .record
            .country_id
            .map_or_else(|| "null".to_string(), |i| i.to_string());
        let country = self
            .record
            .country
            .as_deref()
            .map_or_else(|| "null".to_string(), |c| format!("{c:?}"));
        format!("{id}:{country}")
    }
}

/// Why a queue message body is not a retry message this code can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedMessage {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body has no schema_version")]
    NoVersion,
    #[error("unknown schema_version {0} (this code reads version {RETRY_MESSAGE_SCHEMA_VERSION})")]
    UnknownVersion(String),
    /// The same, for a reader of both versions
    /// ([`crate::model::mapped_message::parse_any_retry_message`]).
    #[error("unknown schema_version {0} (this code reads versions 1 and 2)")]
    UnknownVersionOfAny(String),
    #[error("the body does not have the shape of a version-1 retry message: {0}")]
    WrongShape(String),
}

/// Parses a retry-queue body. Unknown versions are refused rather than
/// guessed at, so that such a message reaches the dead-letter queue intact;
/// unknown extra fields are ignored (a later minor change may add some).
pub fn parse_retry_message(body: Option<&str>) -> Result<RetryMessage, MalformedMessage> {
    let body = body
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or(MalformedMessage::Empty)?;
    // serde's messages quote the offending input (an unknown enum variant,
    // say), so they are cut and kept on one line: this text goes to logs,
    // the failure report and the email.
    // Escaping can make a line longer than its input, so the escaped line
    // is cut again.
    let reason = |e: serde_json::Error| {
        let line = one_line(&e.to_string(), 200);
        match line.char_indices().nth(240) {
            Some((end, _)) => format!("{}…", &line[..end]),
            None => line,
        }
    };
    // The version is checked on a generic parse, the message itself is then
    // read from the text: a generic `Value` holds integers past 64 bits as
    // floats, and `country_id` is a NUMBER(38,0) that must keep every digit.
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MalformedMessage::NotJson(reason(e)))?;
    let version = value
        .get("schema_version")
        .ok_or(MalformedMessage::NoVersion)?;
    if version.as_u64() != Some(u64::from(RETRY_MESSAGE_SCHEMA_VERSION)) {
        return Err(MalformedMessage::UnknownVersion(preview(
            &version.to_string(),
            20,
        )));
    }
    serde_json::from_str(body).map_err(|e| MalformedMessage::WrongShape(reason(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn row(id: Option<i128>, country: Option<&str>) -> SourceRow {
        SourceRow::new(id, country)
    }

    #[test]
    fn malformed_bodies_are_classified() {
        type Expectation = fn(&MalformedMessage) -> bool;
        let cases: Vec<(Option<&str>, Expectation)> = vec![
            (None, |e| matches!(e, MalformedMessage::Empty)),
            (Some("  "), |e| matches!(e, MalformedMessage::Empty)),
            (Some("not json"), |e| {
                matches!(e, MalformedMessage::NotJson(_))
            }),
            (Some("\u{0}\u{1}binary"), |e| {
                matches!(e, MalformedMessage::NotJson(_))
            }),
            (Some("[1,2]"), |e| matches!(e, MalformedMessage::NoVersion)),
            (Some(r#"{"record":{}}"#), |e| {
                matches!(e, MalformedMessage::NoVersion)
            }),
            (Some(r#"{"schema_version":2}"#), |e| {
                matches!(e, MalformedMessage::UnknownVersion(_))
            }),
            (Some(r#"{"schema_version":"1"}"#), |e| {
                matches!(e, MalformedMessage::UnknownVersion(_))
            }),
            (
                Some(r#"{"schema_version":1,"record":{"country_id":1}}"#),
                |e| matches!(e, MalformedMessage::WrongShape(_)),
            ),
        ];
        for (body, expected) in cases {
            let err = parse_retry_message(body).unwrap_err();
            assert!(expected(&err), "{body:?} gave {err:?}");
        }
    }

    #[test]
    fn extra_fields_are_ignored() {
        let body = r#"{"schema_version":1,"record":{"country_id":1,"country":"USA"},
            "error":{"class":"rejected","message":"x"},"run_id":"00000000-0000-0000-0000-000000000000",
            "first_failed_at":"2026-11-24T06:00:00Z","attempt":1,"added_later":true}"#;
        assert_eq!(
            parse_retry_message(Some(body)).unwrap().record.country_id,
            Some(1)
        );
    }

    #[test]
    fn message_round_trips_and_has_a_stable_record_key() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let msg = RetryMessage::first_failure(
            row(Some(5), Some("X'Y")),
            FailureDetail {
                class: FailureClass::Rejected,
                sqlstate: Some("23514".into()),
                message: "violates check constraint".into(),
            },
            Uuid::nil(),
            at,
        );
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains(r#""schema_version":1"#), "{json}");
        assert!(json.contains(r#""class":"rejected""#), "{json}");
        let back: RetryMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, msg);
        assert_eq!(msg.record_key(), r#"5:"X'Y""#);
        let other = RetryMessage::first_failure(
            row(Some(5), Some("X'Y")),
            msg.error.clone(),
            Uuid::new_v4(),
            Utc::now(),
        );
        assert_eq!(other.record_key(), msg.record_key());
    }

    #[test]
    fn ids_of_any_snowflake_width_keep_every_digit() {
        let max = 10i128.pow(38) - 1;
        for id in [max, -max, i128::from(i64::MAX) + 1, 0] {
            let msg = RetryMessage::first_failure(
                row(Some(id), Some("USA")),
                FailureDetail {
                    class: FailureClass::Invalid,
                    sqlstate: None,
                    message: "out of range".into(),
                },
                Uuid::nil(),
                Utc::now(),
            );
            let json = serde_json::to_string(&msg).unwrap();
            assert!(json.contains(&format!("\"country_id\":{id}")), "{json}");
            let back = parse_retry_message(Some(&json)).unwrap();
            assert_eq!(back.record.country_id, Some(id), "{json}");
            assert!(back.record_key().starts_with(&id.to_string()));
        }
    }
}
