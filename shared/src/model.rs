//! The `case` row as it moves through the pipeline, its validation, and the
//! retry-queue message that carries a failed row.
//!
//! A row is kept in two forms: the raw values exactly as Snowflake returned them
//! ([`SourceRow`]), which identify the row for the delete, and the validated form
//! ([`CountryRow`]) that is written to Postgres.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A row as read from Snowflake, before validation. `NUMBER(38,0)` can exceed
/// every Rust integer but `i128`, so the id is kept at that width until validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceRow {
    pub country_id: Option<i128>,
    pub country: Option<String>,
}

impl SourceRow {
    pub fn new(country_id: Option<i128>, country: Option<&str>) -> Self {
        Self {
            country_id,
            country: country.map(str::to_string),
        }
    }
}

/// A validated row, ready for Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryRow {
    pub country_id: i32,
    /// Exactly three ASCII uppercase letters.
    pub country: String,
    /// The raw row it came from: what the Snowflake delete must match.
    pub source: SourceRow,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRow {
    #[error("country_id is NULL")]
    NullId,
    #[error("country_id {0} does not fit the Postgres integer column (-2147483648..=2147483647)")]
    IdOutOfRange(i128),
    #[error("country is NULL")]
    NullCountry,
    #[error("country must be exactly three letters A-Z after trimming, got {0}")]
    BadCountry(String),
}

/// Validates one row.
///
/// The country code is trimmed and lowercase ASCII letters are upper-cased
/// (`" usa"` becomes `USA`): a lowercase ISO 3166 alpha-3 code names the same
/// country, and refusing it would only send a correct row to the failure report.
/// Anything else that is not three letters A–Z (digits, accents, two or four
/// letters, inner spaces) is rejected.
pub fn validate(row: &SourceRow) -> Result<CountryRow, InvalidRow> {
    let id = row.country_id.ok_or(InvalidRow::NullId)?;
    let country_id = i32::try_from(id).map_err(|_| InvalidRow::IdOutOfRange(id))?;
    let raw = row.country.as_deref().ok_or(InvalidRow::NullCountry)?;
    let trimmed = raw.trim();
    if trimmed.len() != 3 || !trimmed.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(InvalidRow::BadCountry(preview(raw, 40)));
    }
    Ok(CountryRow {
        country_id,
        country: trimmed.to_ascii_uppercase(),
        source: row.clone(),
    })
}

/// A short, printable rendering of a value for error messages and logs: a
/// 10 KB string or control characters must not flood a log line or an email.
pub fn preview(value: &str, max_chars: usize) -> String {
    let mut out: String = value.chars().take(max_chars).collect::<String>();
    if value.chars().count() > max_chars {
        out.push('…');
    }
    format!("{out:?}")
}

/// A value on one line, for messages read by people: control characters are
/// escaped (a newline cannot break a table row or forge a log line) and long
/// values are cut; nothing else is changed or quoted.
pub fn one_line(value: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

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
    serde_json::from_value(value).map_err(|e| MalformedMessage::WrongShape(reason(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Option<i128>, country: Option<&str>) -> SourceRow {
        SourceRow::new(id, country)
    }

    #[test]
    fn accepts_three_letters_and_normalises_case_and_spaces() {
        let ok = validate(&row(Some(7), Some(" usa "))).unwrap();
        assert_eq!(ok.country_id, 7);
        assert_eq!(ok.country, "USA");
        assert_eq!(ok.source.country.as_deref(), Some(" usa "), "raw kept");
    }

    #[test]
    fn rejects_every_malformed_row_with_a_reason() {
        let cases: Vec<(SourceRow, InvalidRow)> = vec![
            (row(None, Some("USA")), InvalidRow::NullId),
            (row(Some(1), None), InvalidRow::NullCountry),
            (
                row(Some(i128::from(i32::MAX) + 1), Some("USA")),
                InvalidRow::IdOutOfRange(i128::from(i32::MAX) + 1),
            ),
            (
                row(Some(i128::from(i32::MIN) - 1), Some("USA")),
                InvalidRow::IdOutOfRange(i128::from(i32::MIN) - 1),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(validate(&input).unwrap_err(), expected, "{input:?}");
        }
        for bad in [
            "", "US", "USAA", "U1A", "U A", "ÉSP", "UŠA", "\u{0}US", "U'S", "   ",
        ] {
            assert!(
                matches!(
                    validate(&row(Some(1), Some(bad))),
                    Err(InvalidRow::BadCountry(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn integer_limits_of_postgres_are_accepted() {
        for id in [0, -1, i128::from(i32::MAX), i128::from(i32::MIN)] {
            assert!(validate(&row(Some(id), Some("FRA"))).is_ok(), "{id}");
        }
    }

    #[test]
    fn one_line_escapes_controls_and_cuts() {
        assert_eq!(one_line("got \"US\"", 50), "got \"US\"");
        assert_eq!(one_line("a\nb\u{0}", 50), "a\\nb\\u{0}");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn a_huge_value_is_cut_in_the_error() {
        let huge = "A".repeat(10_000);
        let err = validate(&row(Some(1), Some(&huge)))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{} chars", err.len());
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
}
