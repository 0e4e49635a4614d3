//! What the failure report is made of: a dead letter as taken from the queue,
//! the report entry it becomes, and the digest email sent about them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::model::change::{parked_attribute, parse_change_batch};
use serde_json::{Map, Value as Json};

use crate::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
use crate::model::text::{one_line, preview};

/// A message as taken from a dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: Option<String>,
    pub receive_count: Option<u32>,
    /// Its string message attributes (a parked batch's error).
    pub attributes: BTreeMap<String, String>,
    /// Which dead-letter queue it came from.
    pub queue: LetterQueue,
}

/// The two dead-letter queues the reporter reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LetterQueue {
    /// The retry queue's: one retry message, one record.
    #[default]
    Retry,
    /// Stream mode's changes queue's: one batch, a record per row.
    Changes,
}

/// Where a stream-mode record came from: its batch's message group and its
/// place in its run (see [`crate::model::change::ChangeMark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeOrigin {
    pub buckets: u32,
    /// Ids per block of the batch's packing (1: version 1's, by id).
    pub block: u32,
    pub bucket: u32,
    pub seq: u64,
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
    /// Stream mode's records only.
    pub change: Option<ChangeOrigin>,
    /// A mapped table's record (a version-2 message): the mapping's name and
    /// the row, source column name → tagged value. None: the `case` table.
    pub table: Option<String>,
    pub row: Option<Map<String, Json>>,
}

impl FailureEntry {
    /// The records a dead letter carries: one for the retry path's, one per
    /// row for a batch of the changes queue (one for a body that is not a
    /// batch). In the order of the rows.
    pub fn of_dead_letter(letter: &DeadLetter, now: DateTime<Utc>) -> Vec<Self> {
        match letter.queue {
            LetterQueue::Retry => vec![Self::from_dead_letter(letter, now)],
            LetterQueue::Changes => Self::of_parked_batch(letter, now),
        }
    }

    /// One record per row of a parked changes batch, keyed
    /// `<dead letter's message id>:<row index>`, with the batch's run and
    /// its last error (the writer's, or the redrive policy's note).
    fn of_parked_batch(letter: &DeadLetter, now: DateTime<Utc>) -> Vec<Self> {
        let attribute = |name: &str| letter.attributes.get(name).map(String::as_str);
        let receives = attribute(parked_attribute::RECEIVE_COUNT).and_then(|c| c.parse().ok());
        let error = match attribute(parked_attribute::ERROR) {
            Some(error) => one_line(error, 300),
            None => format!(
                "moved to the changes dead-letter queue by its redrive policy after {} receives; the last error was not recorded (see the writer's logs)",
                letter.receive_count.map_or_else(|| "its".to_string(), |c| c.saturating_sub(1).to_string())
            ),
        };
        let (batch, rows) = match parse_change_batch(letter.body.as_deref()) {
            Ok(parsed) => parsed,
            Err(e) => {
                let mut entry = Self::from_dead_letter(letter, now);
                entry.error_class = "malformed".into();
                entry.error_message = format!("not a change batch: {e}");
                entry.attempts = receives.or(entry.attempts);
                return vec![entry];
            }
        };
        let origin = ChangeOrigin {
            buckets: batch.groups.buckets,
            block: batch.groups.block,
            bucket: batch.bucket,
            seq: batch.seq,
        };
        rows.into_iter()
            .enumerate()
            .map(|(index, row)| Self {
                message_id: format!("{}:{index}", letter.message_id),
                record_key: Some(format!("{}:{:?}", row.country_id, row.country)),
                country_id: Some(i128::from(row.country_id)),
                country: Some(row.country),
                error_class: "transient".into(),
                sqlstate: None,
                error_message: error.clone(),
                attempts: receives.or(letter.receive_count.map(|c| c.saturating_sub(1))),
                first_failed_at: None,
                last_failed_at: now,
                source_run_id: Some(batch.run_id),
                raw_body: None,
                change: Some(origin),
                table: None,
                row: None,
            })
            .collect()
    }

    pub fn from_dead_letter(letter: &DeadLetter, now: DateTime<Utc>) -> Self {
        // A dead letter's receive count goes on from the retry queue's and
        // includes the reporter's own receive: the attempts are one fewer.
        let attempts = letter.receive_count.map(|c| c.saturating_sub(1));
        match parse_any_retry_message(letter.body.as_deref()) {
            Ok(AnyRetryMessage::Mapped(message)) => Self {
                message_id: letter.message_id.clone(),
                record_key: Some(message.record_key()),
                country_id: None,
                country: None,
                error_class: message.error.class.as_str().to_string(),
                sqlstate: message.error.sqlstate.clone(),
                error_message: message.error.message.clone(),
                attempts,
                first_failed_at: Some(message.first_failed_at),
                last_failed_at: now,
                source_run_id: Some(message.run_id),
                raw_body: None,
                change: None,
                table: Some(message.table),
                row: Some(message.row),
            },
            Ok(AnyRetryMessage::Case(message)) => Self {
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
                change: None,
                table: None,
                row: None,
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
                change: None,
                table: None,
                row: None,
            },
        }
    }
}

impl FailureEntry {
    /// The record's first column as people see it: the `case` row's id, or
    /// a mapped row's table.
    pub fn id_cell(&self) -> String {
        match (&self.table, self.country_id) {
            (Some(table), _) => format!("[{table}]"),
            (None, Some(id)) => id.to_string(),
            (None, None) => "NULL".into(),
        }
    }

    /// The record's content as people see it, cut to `max` characters: the
    /// `case` row's country, or a mapped row as JSON.
    pub fn row_cell(&self, max: usize) -> String {
        match (&self.row, &self.country) {
            (Some(row), _) => one_line(&Json::Object(row.clone()).to_string(), max),
            (None, Some(country)) => preview(country, max),
            (None, None) => "NULL".into(),
        }
    }

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
            change: self.change,
            table: self.table.as_deref().map(clean),
            // The row's text values are tagged (`text_hex`) when they hold
            // a NUL; its column names are escaped like the rest.
            row: self.row.as_ref().map(|row| {
                row.iter()
                    .map(|(k, v)| (clean(k), escape_json_nul(v)))
                    .collect()
            }),
        }
    }
}

/// A JSON value with every NUL in its strings written as `\u{0}`.
fn escape_json_nul(value: &Json) -> Json {
    match value {
        Json::String(s) => Json::String(escape_nul(s)),
        Json::Array(items) => Json::Array(items.iter().map(escape_json_nul).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (escape_nul(k), escape_json_nul(v)))
                .collect(),
        ),
        other => other.clone(),
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
            attributes: BTreeMap::new(),
            queue: LetterQueue::Retry,
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

    #[test]
    fn a_mapped_row_keeps_its_table_and_row_and_escapes_like_the_rest() {
        use crate::model::mapped_message::MappedRetryMessage;
        use crate::model::message::{FailureClass, FailureDetail};
        use crate::model::value::Value;
        let message = MappedRetryMessage::first_failure(
            "orders",
            &["REGION".to_string(), "AT".to_string()],
            &[
                Ok(Value::Text("eu".into())),
                Err("bad \0 value".to_string()),
            ],
            FailureDetail {
                class: FailureClass::Invalid,
                sqlstate: None,
                message: "unreadable".into(),
            },
            Uuid::nil(),
            Utc::now(),
        );
        let letter = DeadLetter {
            message_id: "m2".into(),
            receipt_handle: "rh".into(),
            body: Some(serde_json::to_string(&message).unwrap()),
            receive_count: Some(6),
            attributes: BTreeMap::new(),
            queue: LetterQueue::Retry,
        };
        let entry = FailureEntry::from_dead_letter(&letter, Utc::now());
        assert_eq!(entry.table.as_deref(), Some("orders"));
        assert_eq!(entry.record_key, Some(message.record_key()));
        assert_eq!((entry.country_id, entry.attempts), (None, Some(5)));
        assert_eq!(entry.id_cell(), "[orders]");
        assert!(
            entry.row_cell(200).contains(r#""REGION":"eu""#),
            "{}",
            entry.row_cell(200)
        );
        let row = entry.row.as_ref().unwrap();
        assert!(row["AT"]["unreadable"].as_str().unwrap().contains('\0'));
        let safe = entry.escaped(letter.body.as_deref(), "invalid byte sequence 0x00");
        let text = serde_json::to_string(&safe.row).unwrap();
        assert!(
            !text.contains("\\u0000") && text.contains("\\\\u{0}"),
            "{text}"
        );
        assert_eq!(safe.table.as_deref(), Some("orders"));
    }
}
