//! The changes-queue message of stream mode: valid rows of one bucket of
//! ids, many to a message, in the order they were published. Throughput
//! then does not depend on one message per row.
//!
//! `{"v":1,"run_id":"…","bucket":3,"buckets":16,"seq":0,"rows":[[7,"USA"],[19,"FRA"]]}`:
//! about 12 bytes a row, so some 20,000 rows fit SQS's 256 KiB. The bucket
//! (`country_id` modulo the number of buckets) is the FIFO message group.
//! The message names the bucket count it was packed with, so the writer
//! checks each row against that and needs no setting of its own (a change
//! of `CHANGE_BUCKETS` never makes the batches already queued unreadable):
//! every version of an id travels in the same group, so versions reach
//! Postgres in the order they were published, and the number of buckets
//! bounds how many writers work in parallel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::row::{validate, CountryRow, SourceRow};
use crate::model::text::{one_line, preview};

pub const CHANGE_SCHEMA_VERSION: u32 = 1;

/// The largest body we send: SQS takes 262,144 bytes; the rest is margin.
pub const MAX_CHANGE_BYTES: usize = 256_000;

/// One message of the changes queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    pub v: u32,
    /// The publisher run that sent it.
    pub run_id: Uuid,
    pub bucket: u32,
    /// The bucket count it was packed with (`CHANGE_BUCKETS`).
    pub buckets: u32,
    /// The batch's place in its run's publishing order (ascending within a
    /// bucket): with the run, the version of its rows ([`ChangeMark`]).
    /// Absent in batches published before it existed (read as 0).
    #[serde(default)]
    pub seq: u64,
    pub rows: Vec<ChangedRow>,
}

/// Which batch of a message group was last given to Postgres: the writer
/// records it before writing, so that `countries replay` can tell whether a
/// parked batch's rows are older than what a later batch of their group
/// may have written. Written before the rows, so that a crash between the
/// two errs towards refusing a replay, never towards overwriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    pub buckets: u32,
    pub bucket: u32,
    pub run_id: Uuid,
    pub seq: u64,
}

impl ChangeBatch {
    pub fn mark(&self) -> ChangeMark {
        ChangeMark {
            buckets: self.buckets,
            bucket: self.bucket,
            run_id: self.run_id,
            seq: self.seq,
        }
    }
}

/// The message attributes of a batch the writer parked in the changes
/// dead-letter queue: why, after how many receives, and its id on the
/// changes queue. A batch the redrive policy moved has none of them.
pub mod parked_attribute {
    pub const ERROR: &str = "countries_error";
    pub const RECEIVE_COUNT: &str = "countries_receive_count";
    pub const MESSAGE_ID: &str = "countries_message_id";
    /// The error is cut to this many characters (the body and its
    /// attributes share SQS's 256 KiB).
    pub const ERROR_LIMIT: usize = 1_000;
}

/// The most buckets a batch may name (`CHANGE_BUCKETS`' range).
pub const MAX_BUCKETS: u32 = 10_000;

/// A valid row: `[country_id, "USA"]` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedRow(pub i32, pub String);

impl ChangedRow {
    fn of(row: &CountryRow) -> Self {
        Self(row.country_id, row.country.clone())
    }
}

/// The FIFO message group of an id: `country_id` modulo `buckets` (at
/// least one), never negative.
pub fn bucket_of(country_id: i32, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    // rem_euclid of an i64 by a positive u32 is in 0..buckets: it fits.
    u32::try_from(i64::from(country_id).rem_euclid(buckets)).unwrap_or(0)
}

/// Packs valid rows into messages: grouped by bucket (buckets in ascending
/// order), each bucket's rows in their given order, each message's JSON at
/// most `max_bytes` long (a single row is always sent, whatever its size).
pub fn pack(run_id: Uuid, rows: &[CountryRow], buckets: u32, max_bytes: usize) -> Vec<ChangeBatch> {
    let mut by_bucket: BTreeMap<u32, Vec<ChangedRow>> = BTreeMap::new();
    for row in rows {
        by_bucket
            .entry(bucket_of(row.country_id, buckets))
            .or_default()
            .push(ChangedRow::of(row));
    }
    let mut batches = Vec::new();
    for (bucket, bucket_rows) in by_bucket {
        let empty = ChangeBatch {
            v: CHANGE_SCHEMA_VERSION,
            run_id,
            bucket,
            buckets: buckets.max(1),
            seq: 0,
            rows: Vec::new(),
        };
        // Measured with the longest seq: the batches are numbered after
        // packing (and the publisher numbers them on across its chunks).
        let overhead = json_len(&ChangeBatch {
            seq: u64::MAX,
            ..empty.clone()
        });
        let mut current = empty.clone();
        let mut size = overhead;
        for row in bucket_rows {
            // A row adds its own JSON and, after the first, a comma.
            let added = json_len(&row) + usize::from(!current.rows.is_empty());
            if !current.rows.is_empty() && size + added > max_bytes {
                batches.push(std::mem::replace(&mut current, empty.clone()));
                size = overhead + json_len(&row);
            } else {
                size += added;
            }
            current.rows.push(row);
        }
        if !current.rows.is_empty() {
            batches.push(current);
        }
    }
    for (seq, batch) in (0u64..).zip(batches.iter_mut()) {
        batch.seq = seq;
    }
    batches
}

fn json_len<T: Serialize>(value: &T) -> usize {
    // Serialising these types cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// Why a changes-queue body is not a batch this code can write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedChange {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not a version-{CHANGE_SCHEMA_VERSION} change batch: {0}")]
    WrongShape(String),
    #[error("unknown version {0} (this code reads version {CHANGE_SCHEMA_VERSION})")]
    UnknownVersion(u32),
    #[error("the batch has no rows")]
    NoRows,
    #[error("row {index} ({id}, {country}) is not valid: {reason}")]
    InvalidRow {
        index: usize,
        id: i32,
        /// Quoted and cut for people ([`preview`]).
        country: String,
        reason: String,
    },
    #[error("{buckets} buckets is not a bucket count (1 to {MAX_BUCKETS}), or bucket {bucket} is not one of them")]
    WrongBucketCount { bucket: u32, buckets: u32 },
    #[error("row {index} (id {id}) belongs to bucket {expected}, not {bucket}")]
    WrongBucket {
        index: usize,
        id: i32,
        bucket: u32,
        expected: u32,
    },
}

/// Parses a changes-queue body and checks every row again (the writer
/// trusts nothing it reads from a queue): each must be valid as the
/// replicator validates, and in the batch's bucket of the batch's own
/// bucket count.
pub fn parse_change_batch(
    body: Option<&str>,
) -> Result<(ChangeBatch, Vec<CountryRow>), MalformedChange> {
    let body = body
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or(MalformedChange::Empty)?;
    let batch: ChangeBatch = serde_json::from_str(body)
        .map_err(|e| MalformedChange::WrongShape(one_line(&e.to_string(), 200)))?;
    if batch.v != CHANGE_SCHEMA_VERSION {
        return Err(MalformedChange::UnknownVersion(batch.v));
    }
    if batch.rows.is_empty() {
        return Err(MalformedChange::NoRows);
    }
    if !(1..=MAX_BUCKETS).contains(&batch.buckets) || batch.bucket >= batch.buckets {
        return Err(MalformedChange::WrongBucketCount {
            bucket: batch.bucket,
            buckets: batch.buckets,
        });
    }
    let mut rows = Vec::with_capacity(batch.rows.len());
    for (index, ChangedRow(id, country)) in batch.rows.iter().enumerate() {
        // A valid row is already normalised (three letters A-Z, which is
        // what `validate` makes of any row it accepts): anything else was
        // not sent by `pack` and is refused rather than silently rewritten.
        if !(country.len() == 3 && country.bytes().all(|b| b.is_ascii_uppercase())) {
            let source = SourceRow::new(Some(i128::from(*id)), Some(country));
            let reason = match validate(&source) {
                Err(e) => e.to_string(),
                Ok(_) => "not in its normalised form (three uppercase letters)".into(),
            };
            return Err(MalformedChange::InvalidRow {
                index,
                id: *id,
                country: preview(country, 40),
                reason,
            });
        }
        // What `validate` returns for it, without its three allocations
        // per row (the writer parses every row of every batch).
        let valid = CountryRow {
            country_id: *id,
            country: country.clone(),
            source: SourceRow {
                country_id: Some(i128::from(*id)),
                country: Some(country.clone()),
            },
        };
        let expected = bucket_of(*id, batch.buckets);
        if expected != batch.bucket {
            return Err(MalformedChange::WrongBucket {
                index,
                id: *id,
                bucket: batch.bucket,
                expected,
            });
        }
        rows.push(valid);
    }
    Ok((batch, rows))
}

/// The FIFO deduplication id of a batch: unique within its run (an id
/// appears in one batch of a run at most, so the bucket, the first id and
/// the length name the batch), the same when the SDK sends it again. A
/// later run's batch has another run id and is never dropped as a
/// duplicate of an earlier one.
pub fn deduplication_id(batch: &ChangeBatch) -> String {
    let first = batch.rows.first().map_or(0, |r| r.0);
    format!(
        "{}-{}-{}-{}",
        batch.run_id.simple(),
        batch.bucket,
        first,
        batch.rows.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(id: i32, country: &str) -> CountryRow {
        validate(&SourceRow::new(Some(i128::from(id)), Some(country))).unwrap()
    }

    #[test]
    fn the_wire_form_is_compact_and_reads_back() {
        let run_id = Uuid::nil();
        let batches = pack(
            run_id,
            &[row(7, "USA"), row(-1, "fra"), row(3, "DEU")],
            4,
            MAX_CHANGE_BYTES,
        );
        let bodies: Vec<String> = batches
            .iter()
            .map(|b| serde_json::to_string(b).unwrap())
            .collect();
        assert_eq!(
            bodies,
            vec![
                r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":3,"buckets":4,"seq":0,"rows":[[7,"USA"],[-1,"FRA"],[3,"DEU"]]}"#
            ],
            "-1 mod 4 is 3, as 7 and 3 are"
        );
        let (batch, rows) = parse_change_batch(Some(&bodies[0])).unwrap();
        assert_eq!(batch, batches[0]);
        assert_eq!(
            rows.iter().map(|r| r.country_id).collect::<Vec<_>>(),
            vec![7, -1, 3]
        );
    }

    #[test]
    fn a_bad_body_is_refused_with_what_is_wrong() {
        let cases = [
            (None, "empty"),
            (Some("  "), "empty"),
            (Some("[1,2]"), "not a version-1 change batch"),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"USA"]]}"#,
                ),
                "unknown version 2",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[]}"#,
                ),
                "no rows",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"US"]]}"#,
                ),
                "row 0 (4, \"US\") is not valid",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"usa"]]}"#,
                ),
                "normalised form",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"USA"],[5,"FRA"]]}"#,
                ),
                "row 1 (id 5) belongs to bucket 1, not 0",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"USA"]],"extra":1}"#,
                ),
                "unknown field",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":4,"buckets":4,"rows":[[4,"USA"]]}"#,
                ),
                "bucket 4 is not one of them",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":0,"rows":[[4,"USA"]]}"#,
                ),
                "0 buckets is not a bucket count",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"rows":[[4,"USA"]]}"#,
                ),
                "missing field `buckets`",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4294967296,"USA"]]}"#,
                ),
                "not a version-1",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_change_batch(body).expect_err(expected);
            let text = err.to_string();
            assert!(text.contains(expected), "{body:?}: {text}");
            assert!(!text.contains('\n') && text.len() <= 320, "{text}");
        }
    }

    #[test]
    fn buckets_are_never_negative_and_a_zero_count_means_one() {
        assert_eq!(
            bucket_of(i32::MIN, 7),
            (i64::from(i32::MIN).rem_euclid(7)) as u32
        );
        assert_eq!(bucket_of(-1, 8), 7);
        assert_eq!(bucket_of(12345, 0), 0);
    }

    proptest! {
        /// Every row goes into exactly one message of its bucket, in its
        /// order; every message is within the size limit (unless it holds a
        /// single row) and reads back as sent.
        #[test]
        fn packing_keeps_every_row_once_in_order_within_the_limit(
            spec in prop::collection::vec((any::<i32>(), prop::sample::select(vec!["USA", "FRA", "deu", " NZL "])), 0..300),
            buckets in 1u32..20,
            max_bytes in 40usize..2_000,
        ) {
            let rows: Vec<CountryRow> = spec.iter().map(|(id, c)| row(*id, c)).collect();
            let batches = pack(Uuid::new_v4(), &rows, buckets, max_bytes);
            let mut seen: BTreeMap<u32, Vec<(i32, String)>> = BTreeMap::new();
            for batch in &batches {
                let body = serde_json::to_string(batch).unwrap();
                prop_assert!(body.len() <= max_bytes || batch.rows.len() == 1, "{} bytes", body.len());
                let (parsed, valid) = parse_change_batch(Some(&body)).unwrap();
                prop_assert_eq!(&parsed, batch);
                seen.entry(batch.bucket)
                    .or_default()
                    .extend(valid.into_iter().map(|r| (r.country_id, r.country)));
            }
            let mut expected: BTreeMap<u32, Vec<(i32, String)>> = BTreeMap::new();
            for r in &rows {
                expected.entry(bucket_of(r.country_id, buckets)).or_default().push((r.country_id, r.country.clone()));
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
