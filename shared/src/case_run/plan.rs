//! Planning one chunk of a batch: which rows are valid and written, which go
//! to the queue as invalid, which copies of a row go with it, and which other
//! versions of an id wait for the next run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::message::{FailureClass, FailureDetail, RetryMessage};
use crate::model::row::{validate, CountryRow, SourceRow};

/// A row bound for the retry queue, with the snapshot numbers of the rows
/// its message stands for: the row and its identical copies.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: RetryMessage,
    pub(crate) numbers: Vec<u64>,
}

/// A valid row to write (snapshot number `number`), with the other rows of
/// its chunk that have the same id and the same (normalised) country:
/// written once, deleted together.
#[derive(Debug)]
pub(crate) struct PlannedRow {
    pub(crate) number: u64,
    pub(crate) row: CountryRow,
    pub(crate) also: Vec<(u64, SourceRow)>,
}

/// One chunk of a batch, sorted by what happens to its rows.
#[derive(Debug, Default)]
pub(crate) struct ChunkPlan {
    pub(crate) valid: Vec<PlannedRow>,
    pub(crate) failures: Vec<Failure>,
    /// A different version of an id already seen in this run: written by the
    /// next run, so each version reaches Postgres in turn (in the snapshot's
    /// order, the same in every run) and the one written last wins. Nothing
    /// is dropped silently. They stay in Snowflake.
    pub(crate) conflicting_duplicates: usize,
}

/// Plans one chunk, whose first row has snapshot number `first_number`.
/// `first_version` remembers the country each id had when first seen in
/// this run. The snapshot hands out rows in id order, so only the last id
/// of a chunk can appear again in a later one: the map keeps just that
/// entry between chunks, and memory does not grow with the batch.
pub(crate) fn plan_chunk(
    rows: Vec<SourceRow>,
    first_number: u64,
    first_version: &mut HashMap<i32, [u8; 3]>,
    run_id: Uuid,
    now: DateTime<Utc>,
) -> ChunkPlan {
    let mut plan = ChunkPlan::default();
    let mut in_chunk: HashMap<i32, usize> = HashMap::with_capacity(rows.len());
    let mut last_id = None;
    for (number, raw) in (first_number..).zip(rows) {
        let row = match validate(&raw) {
            Ok(row) => row,
            Err(invalid) => {
                plan.failures.push(Failure {
                    message: RetryMessage::first_failure(
                        raw,
                        FailureDetail {
                            class: FailureClass::Invalid,
                            sqlstate: None,
                            message: invalid.to_string(),
                        },
                        run_id,
                        now,
                    ),
                    numbers: vec![number],
                });
                continue;
            }
        };
        let code = country_code(&row.country);
        last_id = Some(row.country_id);
        match first_version.get(&row.country_id) {
            Some(first) if *first != code => {
                plan.conflicting_duplicates += 1;
                continue;
            }
            Some(_) => {}
            None => {
                first_version.insert(row.country_id, code);
            }
        }
        match in_chunk.get(&row.country_id) {
            // One statement may not touch an id twice: the same row again
            // (or the same country in another spelling) goes with the first.
            Some(&index) => plan.valid[index].also.push((number, row.source)),
            None => {
                in_chunk.insert(row.country_id, plan.valid.len());
                plan.valid.push(PlannedRow {
                    number,
                    row,
                    also: Vec::new(),
                });
            }
        }
    }
    // A chunk of invalid rows only says nothing about the ids to come.
    if let Some(last_id) = last_id {
        first_version.retain(|id, _| *id == last_id);
    }
    plan
}

fn country_code(country: &str) -> [u8; 3] {
    let mut code = [0u8; 3];
    for (slot, byte) in code.iter_mut().zip(country.bytes()) {
        *slot = byte;
    }
    code
}
