//! The stream writer's use case (the `writer` function): write the batches
//! of the FIFO changes queue, and say exactly which deliveries must come
//! back.
//!
//! - All the batches of an invocation are tried as one COPY first; when
//!   that is refused, or a body is not a batch, each batch goes on its own:
//! - Each batch is written to the Postgres sink as the replicator writes a
//!   chunk: COPY first, the upsert when rows exist, bisection down to the
//!   rows Postgres refuses ([`crate::sink::isolate`]), transient errors
//!   retried.
//! - Rows Postgres refuses go to the retry queue in today's message format,
//!   so the retrier, the dead-letter queue, the failure report and the
//!   email serve both modes unchanged. A batch counts as done only when
//!   every row is written or accepted by the retry queue.
//! - A batch not done is listed as a batch item failure and comes back
//!   (rewriting what was written changes nothing). FIFO order: after the
//!   first listed batch of a message group, every later batch of that group
//!   in the invocation is listed too, unwritten, so a newer version of an id
//!   is never written before an older one that must come back.
//! - A body that is not a valid batch can never be written: it is parked in
//!   the changes dead-letter queue at once, body unchanged, and counts as
//!   done, so it neither holds its group nor drags the group's good batches
//!   (received with it) towards the redrive limit. Only when parking fails
//!   is it listed, holding its group like any batch that comes back.
//! - A batch that comes back on its last receive (`CHANGES_MAX_RECEIVE_COUNT`,
//!   the queue's `maxReceiveCount`) is parked there too, with its last error
//!   as message attributes, which the redrive policy would drop: the
//!   dlq-reporter puts its rows in the failure report with that error.
//! - Before writing a batch, the writer marks it as the last batch of its
//!   group given to Postgres ([`crate::model::change::ChangeMark`]); that is
//!   how `countries replay` tells a parked row from an older version.

#[cfg(test)]
mod tests;

use std::collections::HashSet;

use chrono::Utc;

use crate::deadline::Deadline;
use crate::model::change::{parse_change_batch, ChangeMark, MalformedChange};
use crate::model::message::{FailureDetail, RetryMessage};
use crate::model::row::CountryRow;
use crate::ports::{ChangeParking, Parked, RetryQueue, RowSink, SinkPool, WriteLimits};
use crate::retry::RetryPolicy;

pub struct ChangeWriter {
    pub sinks: Box<dyn SinkPool>,
    pub retry_queue: Box<dyn RetryQueue>,
    pub policy: RetryPolicy,
    /// The changes dead-letter queue, for messages that are not batches
    /// and batches that fail on their last receive.
    pub parking: Box<dyn ChangeParking>,
    /// The changes queue's `maxReceiveCount`: a batch that fails on this
    /// receive is parked with its error (None: left to the redrive policy).
    pub last_receive: Option<u32>,
}

/// One delivery of a changes-queue message.
#[derive(Debug, Clone, Copy)]
pub struct ChangeDelivery<'a> {
    pub message_id: &'a str,
    pub body: Option<&'a str>,
    /// The FIFO message group (the bucket); None outside FIFO.
    pub group: Option<&'a str>,
    /// `ApproximateReceiveCount`, when the event carries it.
    pub receive_count: Option<u32>,
}

/// Why a delivery comes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDone {
    #[error("malformed batch, and parking it failed: {0}")]
    Malformed(MalformedChange),
    #[error("Postgres unavailable: {0}")]
    Unavailable(String),
    #[error("{0} rows not written: {1}")]
    NotWritten(usize, String),
    #[error("{0} refused rows not accepted by the retry queue: {1}")]
    NotQueued(usize, String),
    #[error("an earlier batch of message group {0} comes back, so this one does too")]
    BehindInGroup(String),
    #[error("the invocation's deadline is near; not written in this delivery")]
    DeadlineNear,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamSummary {
    pub messages: usize,
    pub rows_written: usize,
    pub rows_changed: usize,
    pub rows_enqueued: usize,
    /// Not valid batches: parked in the changes dead-letter queue (or, when
    /// that failed, listed).
    pub malformed: usize,
    /// Valid batches that failed on their last receive, parked with their
    /// error.
    pub parked: usize,
    /// The deliveries that must come back (batch item failures).
    pub failed_message_ids: Vec<String>,
}

impl ChangeWriter {
    /// Writes the deliveries in order; returns what must come back.
    pub async fn handle(
        &self,
        deliveries: &[ChangeDelivery<'_>],
        deadline: &Deadline,
    ) -> StreamSummary {
        let mut summary = StreamSummary {
            messages: deliveries.len(),
            ..StreamSummary::default()
        };
        let mut sink: Option<Box<dyn RowSink>> = None;
        if self
            .all_at_once(deliveries, &mut sink, &mut summary, deadline)
            .await
        {
            return summary;
        }
        let mut failed_groups: HashSet<&str> = HashSet::new();
        // Set once Postgres stops answering: the rest is not tried.
        let mut stopped: Option<NotDone> = None;
        for delivery in deliveries {
            let result = match delivery.group.filter(|g| failed_groups.contains(g)) {
                Some(group) => Err(NotDone::BehindInGroup(group.to_string())),
                None => match &stopped {
                    Some(reason) => Err(reason.clone()),
                    None if deadline.is_near() => Err(NotDone::DeadlineNear),
                    None => {
                        self.one(delivery, &mut sink, &mut stopped, &mut summary, deadline)
                            .await
                    }
                },
            };
            let result = match result {
                Err(NotDone::Malformed(why)) => {
                    summary.malformed += 1;
                    self.park(delivery, &why.to_string())
                        .await
                        .map_err(|()| NotDone::Malformed(why))
                }
                Err(reason) if self.is_last_receive(delivery) => {
                    match self.park(delivery, &reason.to_string()).await {
                        Ok(()) => {
                            summary.parked += 1;
                            Ok(())
                        }
                        Err(()) => Err(reason),
                    }
                }
                other => other,
            };
            if let Err(reason) = result {
                if matches!(reason, NotDone::Malformed(_)) {
                    tracing::error!(message_id = delivery.message_id, error = %reason, "a changes-queue message is not a valid batch and could not be parked; it comes back");
                } else {
                    tracing::warn!(message_id = delivery.message_id, error = %reason, "a changes-queue batch comes back");
                }
                if let Some(group) = delivery.group {
                    failed_groups.insert(group);
                }
                summary
                    .failed_message_ids
                    .push(delivery.message_id.to_string());
            }
        }
        summary
    }

    /// The usual case, fast: every delivery is a valid batch and their rows
    /// go in as one COPY (one statement and one commit per invocation instead
    /// of one per message). True when that wrote everything. Anything else
    /// (a malformed body, two versions of an id, a refused row, an error)
    /// writes nothing, and the deliveries go one by one as below, which
    /// isolates what must be isolated.
    async fn all_at_once(
        &self,
        deliveries: &[ChangeDelivery<'_>],
        sink: &mut Option<Box<dyn RowSink>>,
        summary: &mut StreamSummary,
        deadline: &Deadline,
    ) -> bool {
        if deliveries.len() < 2 || deadline.is_near() {
            return false;
        }
        if sink.is_none() {
            match self.sinks.open(None).await {
                Ok(w) => *sink = Some(w),
                Err(_) => return false,
            }
        }
        let Some(w) = sink.as_deref_mut() else {
            return false;
        };
        let mut parsed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match parse_change_batch(delivery.body) {
                Ok(batch) => parsed.push(batch),
                Err(_) => return false,
            }
        }
        // In id order, Postgres adds to its primary key's index page after
        // page instead of all over it. References are sorted, and the rows
        // stay where each batch was parsed: a row is about a hundred bytes,
        // and moving an invocation's rows (megabytes) into one vector or
        // sorting them in place cost more than the parsing (measured). The
        // sort is stable on keys beside the references: it merges the runs
        // a message's blocks already are, and compares without reading each
        // row.
        let mut keyed: Vec<(i32, &CountryRow)> = parsed
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| (r.country_id, r)))
            .collect();
        keyed.sort_by_key(|(id, _)| *id);
        // Two versions of an id (several batches of one group, which blocks
        // make common) never go in one statement: Postgres refuses that only
        // when both change the row (the upsert skips a version equal to what
        // it holds and applies the next), so the order between them would
        // rest on the sort. Each batch then goes on its own, in order.
        if keyed.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return false;
        }
        let marks: Vec<ChangeMark> = parsed.iter().map(|(batch, _)| batch.mark()).collect();
        if let Err(e) = w.mark_changes(&marks).await {
            tracing::debug!(error = %e, "marking the invocation's batches failed; writing them one by one");
            return false;
        }
        let refs: Vec<&CountryRow> = keyed.into_iter().map(|(_, r)| r).collect();
        // One statement, no isolation and no retry: anything but a clean
        // write falls back to the batches one by one, which do both.
        let at_once = WriteLimits {
            failure_budget: 0,
            policy: RetryPolicy::immediate(1),
        };
        let outcome = w.write(&refs, at_once, deadline).await;
        if outcome.written.len() == refs.len() {
            summary.rows_written += refs.len();
            summary.rows_changed += usize::try_from(outcome.changed).unwrap_or(usize::MAX);
            return true;
        }
        tracing::debug!(
            error = outcome.stop.as_ref().map(ToString::to_string),
            "the invocation's batches did not go in as one; writing them one by one"
        );
        false
    }

    /// This delivery is the last the changes queue makes: failing it hands
    /// the batch to the redrive policy, which would drop why.
    fn is_last_receive(&self, delivery: &ChangeDelivery<'_>) -> bool {
        matches!((self.last_receive, delivery.receive_count), (Some(last), Some(n)) if n >= last)
    }

    /// Parks a message in the changes dead-letter queue with why.
    async fn park(&self, delivery: &ChangeDelivery<'_>, why: &str) -> Result<(), ()> {
        let group = delivery.group.unwrap_or("unknown");
        let parked = Parked {
            message_id: delivery.message_id,
            group,
            body: delivery.body.unwrap_or(""),
            error: why,
            receive_count: delivery.receive_count,
        };
        match self.parking.park(&parked).await {
            Ok(()) => {
                tracing::error!(message_id = delivery.message_id, group, receive_count = delivery.receive_count, error = %why, "a changes-queue message is parked in the changes dead-letter queue; the dlq-reporter reports it");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(message_id = delivery.message_id, error = %e, "parking a changes-queue message failed; it comes back");
                Err(())
            }
        }
    }

    async fn one(
        &self,
        delivery: &ChangeDelivery<'_>,
        sink: &mut Option<Box<dyn RowSink>>,
        stopped: &mut Option<NotDone>,
        summary: &mut StreamSummary,
        deadline: &Deadline,
    ) -> Result<(), NotDone> {
        let (batch, rows) = parse_change_batch(delivery.body).map_err(NotDone::Malformed)?;
        if sink.is_none() {
            match self.sinks.open(None).await {
                Ok(w) => *sink = Some(w),
                Err(e) => {
                    let reason = NotDone::Unavailable(e.to_string());
                    *stopped = Some(reason.clone());
                    return Err(reason);
                }
            }
        }
        let Some(w) = sink.as_deref_mut() else {
            return Err(NotDone::Unavailable("no connection".into()));
        };
        if let Err(e) = w.mark_changes(&[batch.mark()]).await {
            let reason = NotDone::Unavailable(e.to_string());
            *stopped = Some(reason.clone());
            return Err(reason);
        }
        let refs: Vec<&CountryRow> = rows.iter().collect();
        let limits = WriteLimits {
            failure_budget: usize::MAX,
            policy: self.policy,
        };
        let result = w.write(&refs, limits, deadline).await;
        summary.rows_written += result.written.len();
        summary.rows_changed += usize::try_from(result.changed).unwrap_or(usize::MAX);
        if let Some(error) = &result.stop {
            // Postgres stopped answering, a fatal error, or the deadline:
            // nothing more is tried in this invocation.
            *stopped = Some(if deadline.is_near() {
                NotDone::DeadlineNear
            } else {
                NotDone::Unavailable(error.to_string())
            });
        }
        let not_written = rows
            .len()
            .saturating_sub(result.written.len() + result.rejected.len());
        if not_written > 0 {
            let why = result
                .stop
                .as_ref()
                .map_or_else(|| "deferred".to_string(), ToString::to_string);
            return Err(NotDone::NotWritten(not_written, why));
        }
        if result.rejected.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let messages: Vec<RetryMessage> = result
            .rejected
            .iter()
            .map(|(i, error)| {
                RetryMessage::first_failure(
                    rows[*i].source.clone(),
                    FailureDetail::of_write(error),
                    batch.run_id,
                    now,
                )
            })
            .collect();
        let sent = self.retry_queue.enqueue(&messages).await;
        let accepted = sent.iter().filter(|r| r.is_ok()).count();
        summary.rows_enqueued += accepted;
        match sent.into_iter().find_map(Result::err) {
            // A short reply leaves the rest unconfirmed: the batch comes back.
            None if accepted == messages.len() => Ok(()),
            None => Err(NotDone::NotQueued(
                messages.len() - accepted,
                "the queue gave no result for some".into(),
            )),
            Some(e) => Err(NotDone::NotQueued(messages.len() - accepted, e.to_string())),
        }
    }
}
