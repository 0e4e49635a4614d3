//! The changes-queue message of stream mode: valid rows of one bucket of
//! ids, many to a message, in the order they were published. Throughput
//! then does not depend on one message per row.
//!
//! `{"v":2,"run_id":"…","bucket":3,"buckets":16,"block":65536,"seq":0,"rows":[[196615,"USA"],[196616,"FRA"]]}`:
//! about 12 bytes a row, so some 20,000 rows fit SQS's 256 KiB. The bucket
//! is the FIFO message group: ids go by blocks of `block` consecutive ids,
//! block after block round the `buckets` ([`Groups::bucket_of`]), so that a
//! message holds runs of consecutive ids, which Postgres's primary key takes
//! page after page. Version 1 had no `block` (each id its own block: the id
//! modulo the bucket count); batches of version 1 still queued read as
//! block 1. The message names how it was packed, so the writer checks each
//! row against that and needs no setting of its own (a change of
//! `CHANGE_BUCKETS` or `CHANGE_BLOCK_IDS` never makes the batches already
//! queued unreadable): every version of an id travels in the same group, so
//! versions reach Postgres in the order they were published, and the number
//! of buckets bounds how many writers work in parallel.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::row::{validate, CountryRow, SourceRow};
use crate::model::text::{one_line, preview};

/// The version this code writes; it reads this one and version 1.
pub const CHANGE_SCHEMA_VERSION: u32 = 2;

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
    /// The ids a block holds (`CHANGE_BLOCK_IDS`); absent in version 1
    /// (read as 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u32>,
    /// The batch's place in its run's publishing order (ascending within a
    /// bucket): with the run, the version of its rows ([`ChangeMark`]).
    /// Absent in batches published before it existed (read as 0).
    #[serde(default)]
    pub seq: u64,
    pub rows: Vec<ChangedRow>,
}

/// How ids are spread over the changes queue's message groups: blocks of
/// `block` consecutive ids, block after block round `buckets` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Groups {
    /// `CHANGE_BUCKETS`: message groups, the bound of the writers' parallelism.
    pub buckets: u32,
    /// `CHANGE_BLOCK_IDS`: consecutive ids that share a group.
    pub block: u32,
}

impl Groups {
    /// Each id its own block: the id modulo `buckets` (version 1's rule).
    pub const fn by_id(buckets: u32) -> Self {
        Self { buckets, block: 1 }
    }

    /// The FIFO message group of an id: `country_id` divided by `block`
    /// (rounded down), modulo `buckets` (each at least one); never negative.
    pub fn bucket_of(&self, country_id: i32) -> u32 {
        let block = i64::from(self.block.max(1));
        let buckets = i64::from(self.buckets.max(1));
        // div_euclid rounds towards minus infinity, so -1 is in the block
        // before 0's; rem_euclid by a positive u32 is in 0..buckets: it fits.
        u32::try_from(i64::from(country_id).div_euclid(block).rem_euclid(buckets)).unwrap_or(0)
    }
}

/// Which batch of a message group was last given to Postgres: the writer
/// records it before writing, so that `countries replay` can tell whether a
/// parked batch's rows are older than what a later batch of their group
/// may have written. Written before the rows, so that a crash between the
/// two errs towards refusing a replay, never towards overwriting. A group
/// is its bucket of its packing (bucket count and block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    pub buckets: u32,
    pub block: u32,
    pub bucket: u32,
    pub run_id: Uuid,
    pub seq: u64,
}

/// A batch as the writer reads it: everything but its rows, which come
/// validated beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeHeader {
    pub run_id: Uuid,
    pub bucket: u32,
    pub groups: Groups,
    pub seq: u64,
}

impl ChangeHeader {
    pub fn mark(&self) -> ChangeMark {
        ChangeMark {
            buckets: self.groups.buckets,
            block: self.groups.block,
            bucket: self.bucket,
            run_id: self.run_id,
            seq: self.seq,
        }
    }
}

impl ChangeBatch {
    /// What the packing was: version 1's batches are by id.
    pub fn groups(&self) -> Groups {
        Groups {
            buckets: self.buckets,
            block: self.block.unwrap_or(1),
        }
    }

    pub fn header(&self) -> ChangeHeader {
        ChangeHeader {
            run_id: self.run_id,
            bucket: self.bucket,
            groups: self.groups(),
            seq: self.seq,
        }
    }

    pub fn mark(&self) -> ChangeMark {
        self.header().mark()
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

/// The largest block a batch may name (`CHANGE_BLOCK_IDS`' range).
pub const MAX_BLOCK: u32 = 1 << 20;

/// A valid row: `[country_id, "USA"]` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedRow(pub i32, pub String);

impl ChangedRow {
    fn of(row: &CountryRow) -> Self {
        Self(row.country_id, row.country.clone())
    }
}

/// Packs valid rows into messages: grouped by bucket (buckets in ascending
/// order), each bucket's rows in their given order, each message's JSON at
/// most `max_bytes` long (a single row is always sent, whatever its size).
pub fn pack(
    run_id: Uuid,
    rows: &[CountryRow],
    groups: Groups,
    max_bytes: usize,
) -> Vec<ChangeBatch> {
    let mut by_bucket: BTreeMap<u32, Vec<ChangedRow>> = BTreeMap::new();
    for row in rows {
        by_bucket
            .entry(groups.bucket_of(row.country_id))
            .or_default()
            .push(ChangedRow::of(row));
    }
    let mut batches = Vec::new();
    for (bucket, bucket_rows) in by_bucket {
        let empty = ChangeBatch {
            v: CHANGE_SCHEMA_VERSION,
            run_id,
            bucket,
            buckets: groups.buckets.max(1),
            block: Some(groups.block.max(1)),
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
    #[error("the body is not a change batch (version 1 or {CHANGE_SCHEMA_VERSION}): {0}")]
    WrongShape(String),
    #[error("unknown version {0} (this code reads versions 1 and {CHANGE_SCHEMA_VERSION})")]
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
    #[error("block {0} is not a block size (version 1: none; version 2: 1 to {MAX_BLOCK})")]
    WrongBlock(String),
    #[error("row {index} (id {id}) belongs to bucket {expected}, not {bucket}")]
    WrongBucket {
        index: usize,
        id: i32,
        bucket: u32,
        expected: u32,
    },
}

/// A batch as read from a queue: its rows' text borrowed from the body
/// where it can be (the writer reads every row of every batch, and an
/// owned string per row cost as much as the parsing).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingBatch<'a> {
    v: u32,
    run_id: Uuid,
    bucket: u32,
    buckets: u32,
    #[serde(default)]
    block: Option<u32>,
    /// Absent only in version-1 batches published before it existed.
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow)]
    rows: Vec<(i32, IncomingText<'a>)>,
}

/// Borrowed unless the JSON string has escapes.
#[derive(Deserialize)]
struct IncomingText<'a>(#[serde(borrow)] Cow<'a, str>);

/// Parses a changes-queue body and checks every row again (the writer
/// trusts nothing it reads from a queue): each must be valid as the
/// replicator validates, and in the batch's bucket of the batch's own
/// packing.
pub fn parse_change_batch(
    body: Option<&str>,
) -> Result<(ChangeHeader, Vec<CountryRow>), MalformedChange> {
    let body = body
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or(MalformedChange::Empty)?;
    let batch: IncomingBatch<'_> = serde_json::from_str(body)
        .map_err(|e| MalformedChange::WrongShape(one_line(&e.to_string(), 200)))?;
    let block = match (batch.v, batch.block) {
        (1, None) => 1,
        (1, Some(b)) => return Err(MalformedChange::WrongBlock(b.to_string())),
        (CHANGE_SCHEMA_VERSION, Some(b)) if (1..=MAX_BLOCK).contains(&b) => b,
        (CHANGE_SCHEMA_VERSION, b) => {
            return Err(MalformedChange::WrongBlock(
                b.map_or_else(|| "missing".to_string(), |b| b.to_string()),
            ))
        }
        (v, _) => return Err(MalformedChange::UnknownVersion(v)),
    };
    let seq = match (batch.v, batch.seq) {
        (_, Some(seq)) => seq,
        (1, None) => 0,
        (_, None) => return Err(MalformedChange::WrongShape("missing field `seq`".into())),
    };
    if batch.rows.is_empty() {
        return Err(MalformedChange::NoRows);
    }
    if !(1..=MAX_BUCKETS).contains(&batch.buckets) || batch.bucket >= batch.buckets {
        return Err(MalformedChange::WrongBucketCount {
            bucket: batch.bucket,
            buckets: batch.buckets,
        });
    }
    let header = ChangeHeader {
        run_id: batch.run_id,
        bucket: batch.bucket,
        groups: Groups {
            buckets: batch.buckets,
            block,
        },
        seq,
    };
    let mut rows = Vec::with_capacity(batch.rows.len());
    for (index, (id, IncomingText(country))) in batch.rows.iter().enumerate() {
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
        let expected = header.groups.bucket_of(*id);
        if expected != header.bucket {
            return Err(MalformedChange::WrongBucket {
                index,
                id: *id,
                bucket: header.bucket,
                expected,
            });
        }
        // What `validate` returns for it, without its three allocations
        // per row.
        let country = country.to_string();
        rows.push(CountryRow {
            country_id: *id,
            source: SourceRow {
                country_id: Some(i128::from(*id)),
                country: Some(country.clone()),
            },
            country,
        });
    }
    Ok((header, rows))
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
            Groups::by_id(4),
            MAX_CHANGE_BYTES,
        );
        let bodies: Vec<String> = batches
            .iter()
            .map(|b| serde_json::to_string(b).unwrap())
            .collect();
        assert_eq!(
            bodies,
            vec![
                r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":3,"buckets":4,"block":1,"seq":0,"rows":[[7,"USA"],[-1,"FRA"],[3,"DEU"]]}"#
            ],
            "-1 mod 4 is 3, as 7 and 3 are"
        );
        let (batch, rows) = parse_change_batch(Some(&bodies[0])).unwrap();
        assert_eq!(batch, batches[0].header());
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
            (Some("[1,2]"), "not a change batch"),
            (
                Some(
                    r#"{"v":3,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"USA"]]}"#,
                ),
                "unknown version 3",
            ),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"rows":[[4,"USA"]]}"#,
                ),
                "block missing is not a block size",
            ),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"block":0,"rows":[[4,"USA"]]}"#,
                ),
                "block 0 is not a block size",
            ),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"block":1048577,"seq":0,"rows":[[4,"USA"]]}"#,
                ),
                "block 1048577 is not a block size",
            ),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"block":8,"rows":[[4,"USA"]]}"#,
                ),
                "missing field `seq`",
            ),
            (
                Some(
                    r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"block":8,"rows":[[4,"USA"]]}"#,
                ),
                "block 8 is not a block size (version 1: none",
            ),
            (
                Some(
                    r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":4,"block":8,"seq":0,"rows":[[4,"USA"],[8,"FRA"]]}"#,
                ),
                "row 1 (id 8) belongs to bucket 1, not 0",
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
                "not a change batch",
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
        let by_id = |buckets| Groups::by_id(buckets);
        assert_eq!(
            by_id(7).bucket_of(i32::MIN),
            (i64::from(i32::MIN).rem_euclid(7)) as u32
        );
        assert_eq!(by_id(8).bucket_of(-1), 7);
        assert_eq!(by_id(0).bucket_of(12345), 0);
        let blocks = Groups {
            buckets: 3,
            block: 4,
        };
        let of = |ids: std::ops::Range<i32>| ids.map(|id| blocks.bucket_of(id)).collect::<Vec<_>>();
        assert_eq!(of(0..14), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]);
        assert_eq!(
            of(-5..0),
            [1, 2, 2, 2, 2],
            "-4..0 is the block before 0's, -5 in the one before"
        );
        assert_eq!(
            blocks.bucket_of(i32::MIN),
            1,
            "block {} of an exact division",
            i32::MIN / 4
        );
        assert_eq!(
            Groups {
                buckets: 0,
                block: 0
            }
            .bucket_of(99),
            0
        );
    }

    /// A batch of version 1, queued before the upgrade, still reads: its
    /// ids go by id, and its rows come as they were.
    #[test]
    fn a_version_1_batch_reads_as_one_packed_by_id() {
        let body = r#"{"v":1,"run_id":"00000000-0000-0000-0000-000000000000","bucket":1,"buckets":4,"seq":7,"rows":[[5,"FRA"],[-3,"USA"]]}"#;
        let (header, rows) = parse_change_batch(Some(body)).unwrap();
        assert_eq!(header.groups, Groups::by_id(4));
        assert_eq!((header.bucket, header.seq), (1, 7));
        assert_eq!(
            header.mark(),
            ChangeMark {
                buckets: 4,
                block: 1,
                bucket: 1,
                run_id: Uuid::nil(),
                seq: 7
            }
        );
        assert_eq!(
            rows.iter()
                .map(|r| (r.country_id, r.country.as_str()))
                .collect::<Vec<_>>(),
            vec![(5, "FRA"), (-3, "USA")]
        );
        assert_eq!(rows[1].source, SourceRow::new(Some(-3), Some("USA")));
    }

    /// A country written with JSON escapes is the same text: read, not refused.
    #[test]
    fn an_escaped_country_reads_as_its_text() {
        let body = r#"{"v":2,"run_id":"00000000-0000-0000-0000-000000000000","bucket":0,"buckets":1,"block":1,"seq":0,"rows":[[5,"U\u0053A"]]}"#;
        let (_, rows) = parse_change_batch(Some(body)).unwrap();
        assert_eq!(rows[0].country, "USA");
    }

    proptest! {
        /// Every row goes into exactly one message of its bucket, in its
        /// order; every message is within the size limit (unless it holds a
        /// single row) and reads back as sent.
        #[test]
        fn packing_keeps_every_row_once_in_order_within_the_limit(
            spec in prop::collection::vec((any::<i32>(), prop::sample::select(vec!["USA", "FRA", "deu", " NZL "])), 0..300),
            buckets in 1u32..20,
            block in prop::sample::select(vec![1u32, 2, 7, 4096, MAX_BLOCK]),
            max_bytes in 40usize..2_000,
        ) {
            let rows: Vec<CountryRow> = spec.iter().map(|(id, c)| row(*id, c)).collect();
            let groups = Groups { buckets, block };
            let batches = pack(Uuid::new_v4(), &rows, groups, max_bytes);
            let mut seen: BTreeMap<u32, Vec<(i32, String)>> = BTreeMap::new();
            for batch in &batches {
                let body = serde_json::to_string(batch).unwrap();
                prop_assert!(body.len() <= max_bytes || batch.rows.len() == 1, "{} bytes", body.len());
                let (parsed, valid) = parse_change_batch(Some(&body)).unwrap();
                prop_assert_eq!(parsed, batch.header());
                seen.entry(batch.bucket)
                    .or_default()
                    .extend(valid.into_iter().map(|r| (r.country_id, r.country)));
            }
            let mut expected: BTreeMap<u32, Vec<(i32, String)>> = BTreeMap::new();
            for r in &rows {
                expected.entry(groups.bucket_of(r.country_id)).or_default().push((r.country_id, r.country.clone()));
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
