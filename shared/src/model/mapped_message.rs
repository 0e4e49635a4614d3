//! The retry-queue message of schema version 2: a failed row of any mapped
//! table (the mapping file's), keyed by column name, each value in the
//! exact tagged JSON of [`crate::model::value_json`]; and the parse of a
//! body of either version ([`parse_any_retry_message`]), so that messages
//! queued in version 1 (the `case` table's) are still read. A table run
//! sends it; the retrier, the dlq-reporter and `countries replay` read it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::model::message::{
    parse_retry_message, FailureDetail, MalformedMessage, RetryMessage,
    RETRY_MESSAGE_SCHEMA_VERSION,
};
use crate::model::row::SourceRow;
use crate::model::text::{one_line, preview};
use crate::model::value::Value;
use crate::model::value_json::{from_json, to_json};

pub const MAPPED_MESSAGE_SCHEMA_VERSION: u32 = 2;

/// The body of a version-2 retry-queue message: one failed row of a mapped
/// table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedRetryMessage {
    pub schema_version: u32,
    /// The mapping's `name`.
    pub table: String,
    /// The row as read from Snowflake: source column name → tagged value.
    /// A value the decoder refused is `{"unreadable": "<why>"}`.
    pub row: Map<String, Json>,
    pub error: FailureDetail,
    /// The replicator run that first failed to write the row.
    pub run_id: Uuid,
    pub first_failed_at: DateTime<Utc>,
    /// Write attempts so far (1 when the replicator enqueues it).
    pub attempt: u32,
}

/// A row's cell for the message: its value, or why it could not be read.
pub fn cell_json(cell: &Result<Value, String>) -> Json {
    match cell {
        Ok(value) => to_json(value),
        Err(why) => serde_json::json!({ "unreadable": why }),
    }
}

impl MappedRetryMessage {
    /// The message for a row of `table` first failing now; `columns` names
    /// the row's cells in order.
    pub fn first_failure(
        table: &str,
        columns: &[String],
        cells: &[Result<Value, String>],
        error: FailureDetail,
        run_id: Uuid,
        at: DateTime<Utc>,
    ) -> Self {
        let row = columns
            .iter()
            .zip(cells)
            .map(|(name, cell)| (name.clone(), cell_json(cell)))
            .collect();
        Self {
            schema_version: MAPPED_MESSAGE_SCHEMA_VERSION,
            table: table.to_string(),
            row,
            error,
            run_id,
            first_failed_at: at,
            attempt: 1,
        }
    }

    /// A stable key for the row's content: `<table>:<64-bit FNV-1a of the
    /// row's JSON, keys in order>`, so that the same row enqueued twice (a
    /// rerun after a crash between enqueue and delete) shares it. FNV is
    /// written out because it must not change with the compiler
    /// (`DefaultHasher` may).
    pub fn record_key(&self) -> String {
        // `Map` keeps its keys sorted (serde_json without `preserve_order`),
        // so equal rows give equal text.
        let text = Json::Object(self.row.clone()).to_string();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{}:{hash:016x}", self.table)
    }
}

impl MappedRetryMessage {
    /// The same failure as a version-1 message: a row of the `case` table
    /// (its key in source column `id`, its code in `country`), as the
    /// failure report, the digest and `countries replay` show `case`'s.
    /// A cell that is not an integer or a text (it cannot be one, as the
    /// column plan checks the types) or that could not be read is NULL
    /// there; the failure's message says why the row failed.
    pub fn to_case(&self, id: &str, country: &str) -> RetryMessage {
        let cell = |column: &str| {
            self.row
                .get(column)
                .and_then(|json| from_json(json).ok())
                .unwrap_or(Value::Null)
        };
        let country_id = match cell(id) {
            Value::Int(i) => Some(i128::from(i)),
            Value::Decimal(d) if d.scale == 0 => Some(d.unscaled),
            _ => None,
        };
        let country = match cell(country) {
            Value::Text(text) => Some(text.to_string()),
            _ => None,
        };
        RetryMessage {
            schema_version: RETRY_MESSAGE_SCHEMA_VERSION,
            record: SourceRow {
                country_id,
                country,
            },
            error: self.error.clone(),
            run_id: self.run_id,
            first_failed_at: self.first_failed_at,
            attempt: self.attempt,
        }
    }
}

/// A retry-queue body of either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyRetryMessage {
    /// Version 1: a row of the `case` table.
    Case(RetryMessage),
    /// Version 2: a row of a mapped table.
    Mapped(MappedRetryMessage),
}

/// Parses a retry-queue body of version 1 or 2; any other version is
/// refused, so that such a message reaches the dead-letter queue intact.
pub fn parse_any_retry_message(body: Option<&str>) -> Result<AnyRetryMessage, MalformedMessage> {
    let trimmed = body.map(str::trim).unwrap_or_default();
    // The version read cheaply first: a version-2 body is read as such, any
    // other goes through version 1's parser and its refusals.
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<Json>,
    }
    let version = serde_json::from_str::<Version>(trimmed)
        .ok()
        .and_then(|v| v.schema_version)
        .and_then(|v| v.as_u64());
    if version == Some(u64::from(MAPPED_MESSAGE_SCHEMA_VERSION)) {
        return serde_json::from_str::<MappedRetryMessage>(trimmed)
            .map(AnyRetryMessage::Mapped)
            .map_err(|e| {
                MalformedMessage::WrongShape(preview(&one_line(&e.to_string(), 240), 240))
            });
    }
    match parse_retry_message(body) {
        Ok(message) => Ok(AnyRetryMessage::Case(message)),
        Err(MalformedMessage::UnknownVersion(version)) => {
            Err(MalformedMessage::UnknownVersionOfAny(version))
        }
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::message::FailureClass;
    use crate::model::value::Decimal;

    fn detail() -> FailureDetail {
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("22001".into()),
            message: "value too long for type character varying(5)".into(),
        }
    }

    #[test]
    fn a_case_row_reads_as_the_version_1_message_of_the_same_failure() {
        let columns = ["COUNTRY_ID", "COUNTRY"].map(String::from).to_vec();
        let at = Utc::now();
        let run_id = Uuid::new_v4();
        let to_case = |cells: Vec<Result<Value, String>>| {
            MappedRetryMessage::first_failure("case", &columns, &cells, detail(), run_id, at)
                .to_case("COUNTRY_ID", "COUNTRY")
        };
        let message = to_case(vec![Ok(Value::Int(7)), Ok(Value::Text(" usa".into()))]);
        assert_eq!(
            message,
            RetryMessage::first_failure(
                SourceRow::new(Some(7), Some(" usa")),
                detail(),
                run_id,
                at
            )
        );
        let wide = Decimal::new(12_345_678_901_234_567_890, 0).unwrap();
        let message = to_case(vec![Ok(Value::Decimal(wide)), Ok(Value::Null)]);
        assert_eq!(
            message.record,
            SourceRow::new(Some(12_345_678_901_234_567_890), None)
        );
        let message = to_case(vec![
            Err("unreadable".into()),
            Ok(Value::Text("USA".into())),
        ]);
        assert_eq!(message.record, SourceRow::new(None, Some("USA")));
        assert_eq!(message.error, detail());
    }

    fn columns() -> Vec<String> {
        ["REGION", "AMOUNT", "NOTE", "RATE"]
            .map(String::from)
            .to_vec()
    }

    fn cells() -> Vec<Result<Value, String>> {
        vec![
            Ok(Value::Text("eu".into())),
            Ok(Value::Decimal(
                Decimal::new(12_345_678_901_234_567_890_123_456_789_012_345_678, 2).unwrap(),
            )),
            Ok(Value::Text("a\0b".into())),
            Err("epoch 1e20 is out of range".into()),
        ]
    }

    #[test]
    fn a_typed_row_goes_through_the_queue_exactly() {
        let at = Utc::now();
        let message = MappedRetryMessage::first_failure(
            "orders",
            &columns(),
            &cells(),
            detail(),
            Uuid::nil(),
            at,
        );
        let body = serde_json::to_string(&message).unwrap();
        assert!(body.contains(r#""schema_version":2"#), "{body}");
        let AnyRetryMessage::Mapped(back) = parse_any_retry_message(Some(&body)).unwrap() else {
            panic!("a version-2 message")
        };
        assert_eq!(back, message);
        let amount = from_json(&back.row["AMOUNT"]).unwrap();
        assert_eq!(amount, cells()[1].clone().unwrap(), "all 38 digits");
        assert_eq!(
            from_json(&back.row["NOTE"]).unwrap(),
            Value::Text("a\0b".into())
        );
        assert_eq!(back.row["RATE"]["unreadable"], "epoch 1e20 is out of range");
        let again = MappedRetryMessage::first_failure(
            "orders",
            &columns(),
            &cells(),
            detail(),
            Uuid::new_v4(),
            Utc::now(),
        );
        assert_eq!(
            again.record_key(),
            message.record_key(),
            "same row, same key"
        );
        assert!(message.record_key().starts_with("orders:"));
        let mut other = cells();
        other[0] = Ok(Value::Text("us".into()));
        let other = MappedRetryMessage::first_failure(
            "orders",
            &columns(),
            &other,
            detail(),
            Uuid::nil(),
            at,
        );
        assert_ne!(other.record_key(), message.record_key());
    }

    #[test]
    fn version_1_is_still_read_and_other_versions_are_named() {
        let v1 = r#"{"schema_version":1,"record":{"country_id":1,"country":"USA"},
            "error":{"class":"rejected","message":"x"},"run_id":"00000000-0000-0000-0000-000000000000",
            "first_failed_at":"2026-11-24T06:00:00Z","attempt":1}"#;
        assert!(matches!(
            parse_any_retry_message(Some(v1)),
            Ok(AnyRetryMessage::Case(m)) if m.record.country_id == Some(1)
        ));
        let err = parse_any_retry_message(Some(r#"{"schema_version":3}"#)).unwrap_err();
        assert!(
            matches!(&err, MalformedMessage::UnknownVersionOfAny(v) if v.contains('3'))
                && err.to_string().contains("versions 1 and 2"),
            "{err}"
        );
        let err = parse_any_retry_message(Some(r#"{"schema_version":2,"table":"t"}"#)).unwrap_err();
        assert!(matches!(err, MalformedMessage::WrongShape(_)), "{err}");
    }
}
