//! What the failure report is made of: a dead letter as taken from the queue,
//! the report entry it becomes, and the digest email sent about them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::model::message::parse_retry_message;
use crate::model::text::one_line;

/// A message as taken from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: Option<String>,
    pub receive_count: Option<u32>,
}

/// Raw bodies kept for messages that did not parse.
pub const RAW_BODY_LIMIT: usize = 2_000;

/// One line of the failure report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureEntry {
    pub message_id: String,
    pub record_key: Option<String>,
    pub country_id: Option<i128>,
    pub country: Option<String>,
    /// `invalid`, `rejected`, `transient`, or `malformed` (the body did not parse).
    pub error_class: String,
    pub sqlstate: Option<String>,
    pub error_message: String,
    pub attempts: Option<u32>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: DateTime<Utc>,
    pub source_run_id: Option<Uuid>,
    pub raw_body: Option<String>,
}

impl FailureEntry {
    pub fn from_dead_letter(letter: &DeadLetter, now: DateTime<Utc>) -> Self {
        // A dead letter's receive count goes on from the retry queue's and
        // includes the reporter's own receive: the attempts are one fewer.
        let attempts = letter.receive_count.map(|c| c.saturating_sub(1));
        match parse_retry_message(letter.body.as_deref()) {
            Ok(message) => Self {
                message_id: letter.message_id.clone(),
                record_key: Some(message.record_key()),
                country_id: message.record.country_id,
                country: message.record.country.clone(),
                error_class: message.error.class.as_str().to_string(),
                sqlstate: message.error.sqlstate.clone(),
                error_message: message.error.message.clone(),
                attempts,
                first_failed_at: Some(message.first_failed_at),
                last_failed_at: now,
                source_run_id: Some(message.run_id),
                raw_body: None,
            },
            Err(e) => Self {
                message_id: letter.message_id.clone(),
                record_key: None,
                country_id: None,
                country: None,
                error_class: "malformed".to_string(),
                sqlstate: None,
                error_message: e.to_string(),
                attempts,
                first_failed_at: None,
                last_failed_at: now,
                source_run_id: None,
                raw_body: letter
                    .body
                    .as_deref()
                    .map(|b| b.chars().take(RAW_BODY_LIMIT).collect()),
            },
        }
    }
}

impl FailureEntry {
    /// The same entry in a form any store can hold, for one the store
    /// refused as it was (Postgres `text` cannot hold a NUL character):
    /// every text field with NUL written as `\u{0}`, the dead letter's body
    /// kept (escaped the same way), and the refusal noted in the message.
    pub fn escaped(&self, body: Option<&str>, refusal: &str) -> Self {
        let clean = |value: &str| escape_nul(value);
        Self {
            message_id: clean(&self.message_id),
            record_key: self.record_key.as_deref().map(clean),
            country_id: self.country_id,
            country: self.country.as_deref().map(clean),
            error_class: clean(&self.error_class),
            sqlstate: self.sqlstate.as_deref().map(clean),
            error_message: format!(
                "{} [stored with NUL characters escaped as \\u{{0}}: {}]",
                clean(&self.error_message),
                one_line(refusal, 200)
            ),
            attempts: self.attempts,
            first_failed_at: self.first_failed_at,
            last_failed_at: self.last_failed_at,
            source_run_id: self.source_run_id,
            raw_body: body
                .or(self.raw_body.as_deref())
                .map(|b| clean(&b.chars().take(RAW_BODY_LIMIT).collect::<String>())),
        }
    }
}

/// `\0` written as `\u{0}`, the rest unchanged.
fn escape_nul(value: &str) -> String {
    value.replace('\0', "\\u{0}")
}

/// The digest email, in its three renderings.
#[derive(Debug, Clone)]
pub struct Digest {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Every record, attached when they do not all fit in the body.
    pub csv: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_entry_has_no_nul_and_keeps_the_body() {
        let letter = DeadLetter {
            message_id: "m1".into(),
            receipt_handle: "rh".into(),
            body: Some("{\"record\":\"\\u0000\"}".into()),
            receive_count: Some(5),
        };
        let mut entry = FailureEntry::from_dead_letter(&letter, Utc::now());
        entry.country = Some("U\0S".into());
        let safe = entry.escaped(letter.body.as_deref(), "invalid byte sequence 0x00");
        assert_eq!(safe.country.as_deref(), Some("U\\u{0}S"));
        assert!(!format!("{safe:?}").contains('\0'));
        assert_eq!(safe.raw_body, letter.body);
        assert!(
            safe.error_message.contains("0x00"),
            "{}",
            safe.error_message
        );
        assert_eq!(safe.message_id, "m1");
    }
}
