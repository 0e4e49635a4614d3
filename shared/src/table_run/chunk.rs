//! One chunk of a page (`BATCH_SIZE` rows, decoded): planned ([`plan`]),
//! its rows to write written, and every row's fate settled: written
//! (marked safe to delete), failed (into the page's failures, enqueued at
//! the page's end), or left in Snowflake. A row that goes with another (a
//! copy, another spelling) is settled by that row's fate, and the fate of
//! the chunk's last row is carried to the next chunk, whose first row may
//! be its copy.
//!
//! [`plan`]: super::plan

use super::plan::{plan_page, Planned};
use super::{Failure, TableReplicator, TableRun};
use crate::model::message::{FailureClass, FailureDetail};
use crate::model::value::{TablePage, Value};
use crate::page::Page;
use crate::ports::{Step, WriteLimits};

/// Where a row went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Written to the target (marked safe to delete).
    Written,
    /// In this page's failures, at this index (enqueued at the page's end).
    Failed(usize),
    /// Enqueued with an earlier page, and deleted with it.
    Enqueued,
    /// Left in Snowflake: another version held back for the next run
    /// (`duplicate`), or a row the run could not place.
    Left { duplicate: bool },
}

/// A chunk being moved: its rows, the page they belong to, and the page's
/// failures so far.
pub(super) struct Chunk<'p> {
    pub(super) rows: TablePage,
    pub(super) page: &'p mut Page,
    pub(super) failures: &'p mut Vec<Failure>,
}

impl TableReplicator {
    /// Plans and writes one decoded chunk, settling each row's fate.
    /// `stopped` says the writes have stopped (and is set when they stop
    /// here): the chunk's rows to write are then left, but its invalid rows
    /// still go to the failures.
    pub(super) async fn move_chunk(
        &self,
        chunk: &mut Chunk<'_>,
        stopped: &mut bool,
        run: &mut TableRun<'_>,
    ) {
        let planned = plan_page(
            &mut chunk.rows,
            &self.targets,
            &self.key_positions,
            &self.rules,
            &mut run.versions,
        );
        let mut fates: Vec<Option<Fate>> = vec![None; planned.len()];
        let mut valid = Vec::new();
        for item in &planned {
            match item {
                Planned::Later(i) => {
                    fates[*i] = Some(Fate::Left { duplicate: true });
                    run.summary.rows_deferred += 1;
                    run.summary.rows_deferred_duplicates += 1;
                }
                Planned::Invalid(i, why) => {
                    run.summary.rows_invalid += 1;
                    let error = FailureDetail {
                        class: FailureClass::Invalid,
                        sqlstate: None,
                        message: why.clone(),
                    };
                    fates[*i] = Some(Fate::Failed(chunk.failures.len()));
                    let failure = self.failure(&chunk.rows, *i, error, run.summary.run_id);
                    chunk.failures.push(failure);
                }
                Planned::Write(i) => valid.push(*i),
                Planned::Copy(..) | Planned::Carried(_) | Planned::Variant(..) => {}
            }
        }
        if !valid.is_empty() {
            if !*stopped && run.deadline.is_near() {
                run.summary
                    .add_error("deadline: rows not written stay in Snowflake");
                *stopped = true;
            }
            if *stopped {
                run.summary.rows_deferred += valid.len();
                for &i in &valid {
                    fates[i] = Some(Fate::Left { duplicate: false });
                }
            } else {
                self.write(chunk, &valid, &mut fates, stopped, run).await;
            }
            // Once per run: after the run's first write (done or not).
            run.reached(Step::MidWrite);
        }
        // In order: the row a copy or a spelling goes with comes first.
        for item in &planned {
            let (i, fate) = match *item {
                Planned::Copy(i, of) => (i, fates[of].unwrap_or(Fate::Left { duplicate: false })),
                // Another spelling is not the row a message carries, nor
                // deleted with it: unless written, it stays.
                Planned::Variant(i, of) => match fates[of] {
                    Some(Fate::Written) => (i, Fate::Written),
                    _ => (i, Fate::Left { duplicate: false }),
                },
                Planned::Carried(i) => (i, run.carried.unwrap_or(Fate::Left { duplicate: false })),
                _ => continue,
            };
            fates[i] = Some(fate);
            match fate {
                Fate::Written => {
                    run.summary.rows_written += 1;
                    let key_null = chunk.rows.key_null(i, &self.key_positions);
                    chunk.page.mark_safe_keyed(chunk.rows.number(i), key_null);
                }
                // In the message of the row it copies: the delete takes it
                // when it takes that row.
                Fate::Failed(f) => match chunk.failures.get_mut(f) {
                    Some(failure) => failure.numbers.push(chunk.rows.number(i)),
                    // Not reached: a failure's index is this page's. Left
                    // rather than lost from the count.
                    None => run.summary.rows_deferred += 1,
                },
                Fate::Enqueued => run.summary.rows_enqueued += 1,
                Fate::Left { duplicate } => {
                    run.summary.rows_deferred += 1;
                    run.summary.rows_deferred_duplicates += usize::from(duplicate);
                }
            }
        }
        if let Some(last) = fates.last() {
            run.carried = *last;
        }
    }

    /// Writes the chunk's rows `valid` and records where each went.
    async fn write(
        &self,
        chunk: &mut Chunk<'_>,
        valid: &[usize],
        fates: &mut [Option<Fate>],
        stopped: &mut bool,
        run: &mut TableRun<'_>,
    ) {
        // Rows, not messages: a message may carry copies.
        let failed: usize = chunk.failures.iter().map(|f| f.numbers.len()).sum();
        let limits = WriteLimits {
            failure_budget: self
                .limits
                .max_failures_per_run
                .saturating_sub(run.summary.rows_enqueued + failed),
            policy: self.policy(),
        };
        // The rows as slices of the chunk (never copied).
        let refs: Vec<&[Value]> = valid.iter().map(|&i| chunk.rows.row(i)).collect();
        let outcome = self.sink.write(&refs, limits, run.deadline).await;
        run.summary.rows_changed += usize::try_from(outcome.changed).unwrap_or(usize::MAX);
        for &i in valid {
            fates[i] = Some(Fate::Left { duplicate: false });
        }
        for &k in &outcome.written {
            let i = valid[k];
            fates[i] = Some(Fate::Written);
            run.summary.rows_written += 1;
            let key_null = chunk.rows.key_null(i, &self.key_positions);
            chunk.page.mark_safe_keyed(chunk.rows.number(i), key_null);
        }
        for (k, e) in &outcome.rejected {
            let i = valid[*k];
            run.summary.rows_rejected += 1;
            fates[i] = Some(Fate::Failed(chunk.failures.len()));
            let failure = self.failure(
                &chunk.rows,
                i,
                FailureDetail::of_write(e),
                run.summary.run_id,
            );
            chunk.failures.push(failure);
        }
        run.summary.rows_deferred += outcome.deferred.len();
        if let Some(stop) = outcome.stop {
            run.summary
                .add_error(format!("writing table {} stopped: {stop}", self.name));
            *stopped = true;
        }
    }
}
