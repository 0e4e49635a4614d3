//! The retrier's use case: write failed rows again, and say exactly which
//! deliveries must come back.
//!
//! The event source (Lambda's SQS mapping with `ReportBatchItemFailures`, or
//! the local one in `countries drive-retrier`) redelivers exactly the
//! deliveries listed as failed; every other one counts as done. A message
//! that keeps failing reaches the dead-letter queue through the queue's
//! redrive policy.
//!
//! - One bad message never fails the others: a body that does not parse, an
//!   unknown schema version or an invalid record is listed, so it reaches the
//!   dead-letter queue with its body intact. A panic is contained.
//! - Postgres unreachable: every message is listed and nothing is written.
//! - A mapped table's row (a version-2 message) is written through
//!   [`MappedRows`], table by table.
//! - Duplicate deliveries are harmless: the upsert is idempotent. Several
//!   versions of one id in a batch are written in queue order, the last one
//!   winning, so none is listed because of another.
//! - A listed message's visibility timeout is stretched (exponential backoff
//!   on its receive count), so retries do not burn through `maxReceiveCount`
//!   in seconds while Postgres is being fixed.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::deadline::Deadline;
use crate::failure::{Classify, ErrorKind, SinkError};
use crate::model::mapped_message::{parse_any_retry_message, AnyRetryMessage, MappedRetryMessage};
use crate::model::message::MalformedMessage;
use crate::model::row::{validate, CountryRow, InvalidRow};
use crate::ports::{MappedRows, SinkPool, VisibilityDelay, WriteLimits};
use crate::retry::{Backoff, RetryPolicy};

pub struct Retrier {
    pub sinks: Box<dyn SinkPool>,
    /// Where rows of mapped tables (version-2 messages) are written; None
    /// when the deployment has none.
    pub mapped: Option<Box<dyn MappedRows>>,
    pub policy: RetryPolicy,
    /// Stretches the visibility timeout of a failed delivery; None leaves
    /// the queue's own timeout.
    pub delay: Option<Box<dyn VisibilityDelay>>,
    /// Backoff between receives of a failing message (base, cap).
    pub retry_backoff: Backoff,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<std::time::Duration>,
}

/// One delivery of a retry-queue message.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub message_id: &'a str,
    pub receipt_handle: Option<&'a str>,
    pub body: Option<&'a str>,
    /// How often the queue has delivered it, this time included.
    pub receive_count: u32,
}

/// What happened to one delivery.
#[derive(Debug, Clone)]
pub enum Verdict {
    Written,
    /// Comes back after the visibility timeout.
    Retry(RetryReason),
}

/// Why a delivery comes back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetryReason {
    #[error("malformed message: {0}")]
    Malformed(MalformedMessage),
    #[error("invalid record: {0}")]
    Invalid(InvalidRow),
    #[error("Postgres unavailable: {0}")]
    Unavailable(SinkError),
    /// Postgres refused the row itself, or a transient error outlasted the
    /// retries, or an earlier error stopped the batch (`None`).
    #[error("{}", .0.as_ref().map_or_else(|| "not written".to_string(), ToString::to_string))]
    NotWritten(Option<SinkError>),
    #[error("panic while {0}")]
    Panic(&'static str),
    #[error("the invocation's deadline is near; not written in this delivery")]
    DeadlineNear,
    /// A mapped table's row this retrier cannot write (the table is not in
    /// its mapping file, or its target cannot be read).
    #[error("cannot write the row: {0}")]
    Unwritable(String),
}

impl Classify for RetryReason {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed(_) | Self::Invalid(_) | Self::Unwritable(_) => ErrorKind::RowLevel,
            Self::Unavailable(e) => e.kind(),
            Self::NotWritten(e) => e.as_ref().map_or(ErrorKind::Transient, Classify::kind),
            Self::Panic(_) => ErrorKind::Fatal,
            Self::DeadlineNear => ErrorKind::Transient,
        }
    }
}

impl RetryReason {
    /// The message itself is unusable: no retry can help.
    pub fn is_bad_message(&self) -> bool {
        matches!(self, Self::Malformed(_) | Self::Invalid(_))
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetrySummary {
    pub messages: usize,
    pub written: usize,
    pub failed: usize,
    pub malformed: usize,
}

/// A batch's result: the deliveries that must come back, and the counts.
#[derive(Debug, Default, Clone)]
pub struct BatchOutcome {
    pub failed_message_ids: Vec<String>,
    pub summary: RetrySummary,
}

/// Visibility changes in flight at once (a batch may hold 10,000 messages).
const BACK_OFF_CONCURRENCY: usize = 16;

struct Candidate {
    index: usize,
    row: CountryRow,
}

/// A delivery that parsed: a `case` row, or a mapped table's.
enum Parsed {
    Case(CountryRow),
    Mapped(MappedRetryMessage),
}

impl Retrier {
    /// Decides every delivery of a batch, logs each, stretches the
    /// visibility timeout of the failed ones, and returns them.
    pub async fn handle_batch(
        &self,
        deliveries: &[Delivery<'_>],
        deadline: &Deadline,
    ) -> BatchOutcome {
        let verdicts = self.process(deliveries, deadline).await;
        let mut outcome = BatchOutcome::default();
        outcome.summary.messages = deliveries.len();
        let mut to_back_off: Vec<&Delivery<'_>> = Vec::new();
        for (delivery, verdict) in deliveries.iter().zip(&verdicts) {
            let (message_id, receive_count) = (delivery.message_id, delivery.receive_count);
            match verdict {
                Verdict::Written => {
                    outcome.summary.written += 1;
                    tracing::info!(message_id, receive_count, "record written");
                }
                Verdict::Retry(reason) => {
                    outcome.summary.failed += 1;
                    if reason.is_bad_message() {
                        outcome.summary.malformed += 1;
                    }
                    tracing::warn!(message_id, receive_count, kind = %reason.kind(), reason = %reason, "record failed; it comes back later");
                    outcome.failed_message_ids.push(message_id.to_string());
                    // Not tried at all: no reason to keep it away longer.
                    if !matches!(reason, RetryReason::DeadlineNear) {
                        to_back_off.push(delivery);
                    }
                }
            }
        }
        self.back_off(&to_back_off, deadline).await;
        let s = &outcome.summary;
        tracing::info!(
            messages = s.messages,
            written = s.written,
            failed = s.failed,
            malformed = s.malformed,
            "retrier batch finished"
        );
        outcome
    }

    /// Stretches the visibility timeout of the failed deliveries, several
    /// at a time, and not past the deadline. Best effort: when it cannot, the
    /// queue's own timeout applies.
    async fn back_off(&self, deliveries: &[&Delivery<'_>], deadline: &Deadline) {
        use futures::StreamExt as _;
        let Some(delay) = &self.delay else {
            return;
        };
        futures::stream::iter(deliveries)
            .for_each_concurrent(BACK_OFF_CONCURRENCY, |delivery| async move {
                let Some(handle) = delivery.receipt_handle else {
                    return;
                };
                if deadline.is_near() {
                    return;
                }
                let wait = self.retry_backoff.delay(delivery.receive_count);
                if let Err(e) = delay.delay(handle, wait).await {
                    tracing::warn!(message_id = delivery.message_id, error = %e, "could not stretch the visibility timeout");
                }
            })
            .await;
    }

    /// Decides every delivery of a batch; the result is in the batch's order.
    pub async fn process(&self, deliveries: &[Delivery<'_>], deadline: &Deadline) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; deliveries.len()];
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut mapped: Vec<(usize, MappedRetryMessage)> = Vec::new();
        for (index, delivery) in deliveries.iter().enumerate() {
            let parsed = std::panic::catch_unwind(|| parse_and_validate(delivery.body));
            match parsed {
                Ok(Ok(Parsed::Case(row))) => candidates.push(Candidate { index, row }),
                Ok(Ok(Parsed::Mapped(message))) => mapped.push((index, message)),
                Ok(Err(reason)) => verdicts[index] = Some(Verdict::Retry(reason)),
                Err(_) => verdicts[index] = Some(Verdict::Retry(RetryReason::Panic("parsing"))),
            }
        }

        // One statement cannot touch an id twice, and no delivery may be
        // listed because of another. So the versions of an id are written one
        // after another, in queue order, and the last one wins, as in the
        // replicator: round k holds the k-th version of each id; identical
        // copies of a version share its outcome.
        let mut rounds: Vec<Vec<&Candidate>> = Vec::new();
        let mut copies: Vec<(usize, (usize, usize))> = Vec::new(); // (delivery, (round, slot))
        let mut latest: HashMap<i32, (usize, usize)> = HashMap::new();
        for candidate in &candidates {
            let id = candidate.row.country_id;
            let round = match latest.get(&id) {
                Some(&(r, slot)) if rounds[r][slot].row.country == candidate.row.country => {
                    copies.push((candidate.index, (r, slot)));
                    continue;
                }
                Some(&(r, _)) => r + 1,
                None => 0,
            };
            if rounds.len() == round {
                rounds.push(Vec::new());
            }
            rounds[round].push(candidate);
            latest.insert(id, (round, rounds[round].len() - 1));
        }

        if !rounds.is_empty() {
            let outcomes = self.write_rounds(&rounds, deadline).await;
            for (round, verdicts_of_round) in outcomes.iter().enumerate() {
                for (slot, verdict) in verdicts_of_round.iter().enumerate() {
                    verdicts[rounds[round][slot].index] = Some(verdict.clone());
                }
            }
            for (index, (round, slot)) in copies {
                verdicts[index] = Some(outcomes[round][slot].clone());
            }
        }
        self.write_mapped(&mapped, deadline, &mut verdicts).await;
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Retry(RetryReason::NotWritten(None))))
            .collect()
    }

    /// Writes the mapped tables' rows, table by table, in queue order (two
    /// rows of one key in a batch: the bisection writes them one after the
    /// other, the later winning).
    async fn write_mapped(
        &self,
        mapped: &[(usize, MappedRetryMessage)],
        deadline: &Deadline,
        verdicts: &mut [Option<Verdict>],
    ) {
        let mut tables: std::collections::BTreeMap<&str, Vec<&(usize, MappedRetryMessage)>> =
            Default::default();
        for entry in mapped {
            tables
                .entry(entry.1.table.as_str())
                .or_default()
                .push(entry);
        }
        for (table, entries) in tables {
            let mut decide = |reason: RetryReason| {
                for (index, _) in &entries {
                    verdicts[*index] = Some(Verdict::Retry(reason.clone()));
                }
            };
            let Some(writer) = &self.mapped else {
                decide(RetryReason::Unwritable(format!(
                    "table {table} is a mapped table, and this retrier has none (TABLES_FILE)"
                )));
                continue;
            };
            if deadline.is_near() {
                decide(RetryReason::DeadlineNear);
                continue;
            }
            let rows: Vec<&serde_json::Map<String, serde_json::Value>> =
                entries.iter().map(|(_, m)| &m.row).collect();
            let limits = WriteLimits {
                failure_budget: usize::MAX,
                policy: self.policy,
            };
            let written = AssertUnwindSafe(writer.write_rows(table, &rows, limits, deadline))
                .catch_unwind()
                .await;
            let result = match written {
                Err(_) => {
                    decide(RetryReason::Panic("writing"));
                    continue;
                }
                Ok(Err(why)) => {
                    decide(RetryReason::Unwritable(why));
                    continue;
                }
                Ok(Ok(result)) => result,
            };
            let index = |k: usize| entries[k].0;
            for k in result.written {
                verdicts[index(k)] = Some(Verdict::Written);
            }
            for (k, error) in result.rejected {
                verdicts[index(k)] =
                    Some(Verdict::Retry(RetryReason::NotWritten(Some(error.into()))));
            }
            for k in result.deferred {
                verdicts[index(k)] =
                    Some(Verdict::Retry(RetryReason::NotWritten(result.stop.clone())));
            }
        }
    }

    /// Writes the rounds in order over one connection; one verdict per
    /// candidate of each round.
    async fn write_rounds(
        &self,
        rounds: &[Vec<&Candidate>],
        deadline: &Deadline,
    ) -> Vec<Vec<Verdict>> {
        if deadline.is_near() {
            return rounds
                .iter()
                .map(|r| vec![Verdict::Retry(RetryReason::DeadlineNear); r.len()])
                .collect();
        }
        let mut sink = match self.sinks.open(None).await {
            Ok(w) => w,
            Err(e) => {
                return rounds
                    .iter()
                    .map(|r| vec![Verdict::Retry(RetryReason::Unavailable(e.clone())); r.len()])
                    .collect()
            }
        };
        let mut outcomes = Vec::with_capacity(rounds.len());
        // Set when a round could not finish (a transient or fatal error that
        // outlasted its retries, a panic): later rounds hold newer versions,
        // which must not be written before the older one.
        let mut stopped: Option<RetryReason> = None;
        for round in rounds {
            if let Some(reason) = &stopped {
                outcomes.push(vec![Verdict::Retry(reason.clone()); round.len()]);
                continue;
            }
            if deadline.is_near() {
                outcomes.push(vec![Verdict::Retry(RetryReason::DeadlineNear); round.len()]);
                continue;
            }
            let rows: Vec<&CountryRow> = round.iter().map(|c| &c.row).collect();
            let limits = WriteLimits {
                failure_budget: usize::MAX,
                policy: self.policy,
            };
            let written = AssertUnwindSafe(sink.write(&rows, limits, deadline))
                .catch_unwind()
                .await;
            let result = match written {
                Ok(result) => result,
                Err(_) => {
                    stopped = Some(RetryReason::Panic("writing"));
                    outcomes.push(vec![
                        Verdict::Retry(RetryReason::Panic("writing"));
                        round.len()
                    ]);
                    continue;
                }
            };
            let mut verdicts = vec![Verdict::Retry(RetryReason::NotWritten(None)); round.len()];
            for i in result.written {
                verdicts[i] = Verdict::Written;
            }
            for (i, error) in result.rejected {
                verdicts[i] = Verdict::Retry(RetryReason::NotWritten(Some(error.into())));
            }
            for i in result.deferred {
                verdicts[i] = Verdict::Retry(RetryReason::NotWritten(result.stop.clone()));
            }
            if let Some(error) = result.stop {
                stopped = Some(RetryReason::NotWritten(Some(error)));
            }
            outcomes.push(verdicts);
        }
        supersede(rounds, &mut outcomes);
        outcomes
    }
}

/// A version Postgres refused is done once a newer version of its id was
/// written in the same batch: the newer one wins, as in the replicator, and
/// retrying the older one later would overwrite it.
fn supersede(rounds: &[Vec<&Candidate>], outcomes: &mut [Vec<Verdict>]) {
    let mut newest_written: HashMap<i32, usize> = HashMap::new();
    for (r, round) in rounds.iter().enumerate() {
        for (slot, candidate) in round.iter().enumerate() {
            if matches!(outcomes[r][slot], Verdict::Written) {
                newest_written.insert(candidate.row.country_id, r);
            }
        }
    }
    for (r, round) in rounds.iter().enumerate() {
        for (slot, candidate) in round.iter().enumerate() {
            let refused = matches!(
                &outcomes[r][slot],
                Verdict::Retry(RetryReason::NotWritten(Some(e))) if e.kind() == ErrorKind::RowLevel
            );
            let newer = newest_written
                .get(&candidate.row.country_id)
                .is_some_and(|&w| w > r);
            if refused && newer {
                tracing::info!(
                    country_id = candidate.row.country_id,
                    "a refused version is superseded by a newer one written in the same batch"
                );
                outcomes[r][slot] = Verdict::Written;
            }
        }
    }
}

fn parse_and_validate(body: Option<&str>) -> Result<Parsed, RetryReason> {
    match parse_any_retry_message(body).map_err(RetryReason::Malformed)? {
        AnyRetryMessage::Case(message) => validate(&message.record)
            .map(Parsed::Case)
            .map_err(RetryReason::Invalid),
        AnyRetryMessage::Mapped(message) => Ok(Parsed::Mapped(message)),
    }
}
