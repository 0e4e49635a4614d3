//! What the failure report is made of: a dead letter as taken from the queue,
//! the report entry it becomes, and the digest email sent about them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::model::message::parse_retry_message;

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
        match parse_retry_message(letter.body.as_deref()) {
            Ok(message) => Self {
                message_id: letter.message_id.clone(),
                record_key: Some(message.record_key()),
                country_id: message.record.country_id,
                country: message.record.country.clone(),
                error_class: message.error.class.as_str().to_string(),
                sqlstate: message.error.sqlstate.clone(),
                error_message: message.error.message.clone(),
                attempts: letter.receive_count,
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
                attempts: letter.receive_count,
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

/// The digest email, in its three renderings.
#[derive(Debug, Clone)]
pub struct Digest {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Every record, attached when they do not all fit in the body.
    pub csv: Option<String>,
}
