//! The retrier: an SQS-triggered Lambda that writes failed rows again.
//!
//! It answers with a partial batch response (`ReportBatchItemFailures`):
//! exactly the messages listed come back after their visibility timeout;
//! every other message counts as done. A message that keeps failing reaches
//! the dead-letter queue through the queue's redrive policy.
//!
//! - One bad message never fails the others: a body that does not parse, an
//!   unknown schema version or an invalid record is listed, so it reaches the
//!   dead-letter queue with its body intact. A panic is contained.
//! - Postgres unreachable: every message is listed and nothing is written.
//! - Duplicate deliveries are harmless: the upsert is idempotent.
//! - A listed message's visibility timeout is stretched (exponential backoff on
//!   its receive count), so retries do not burn through `maxReceiveCount` in
//!   seconds while Postgres is being fixed.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;

use crate::config::RetrierConfig;
use crate::model::{parse_retry_message, validate, CountryRow, RetryMessage};
use crate::replicator::{write_isolating, Backoff, WritePolicy};
use crate::sink::{PostgresStore, WriterPool};

/// Stretches the visibility timeout of a message that failed again.
#[async_trait]
pub trait RetryDelay: Send + Sync {
    async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), String>;
}

pub struct SqsRetryDelay {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRetryDelay {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl RetryDelay for SqsRetryDelay {
    async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), String> {
        let seconds = i32::try_from(wait.as_secs())
            .unwrap_or(i32::MAX)
            .min(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}

pub struct Retrier {
    pub writers: Box<dyn WriterPool>,
    pub policy: WritePolicy,
    pub delay: Option<Box<dyn RetryDelay>>,
    /// Backoff between receives of a failing message (base, cap).
    pub retry_backoff: Backoff,
}

impl Retrier {
    pub async fn from_config(config: &RetrierConfig) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&crate::aws_config().await);
        let delay: Option<Box<dyn RetryDelay>> = if config.backoff_base.is_zero() {
            None
        } else {
            Some(Box::new(SqsRetryDelay::new(
                sqs,
                config.retry_queue_url.clone(),
            )))
        };
        Self {
            writers: Box::new(PostgresStore::new(config.postgres.clone())),
            policy: WritePolicy {
                attempts: config.write_attempts,
                backoff: Backoff::default(),
            },
            delay,
            retry_backoff: Backoff {
                first: config.backoff_base,
                max: config.backoff_max,
            },
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Written,
    /// Comes back after the visibility timeout; the reason is logged.
    Retry(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetrySummary {
    pub messages: usize,
    pub written: usize,
    pub failed: usize,
    pub malformed: usize,
}

struct Candidate {
    index: usize,
    row: CountryRow,
}

impl Retrier {
    /// Decides every message of a batch; the result is in the batch's order.
    pub async fn process(&self, records: &[SqsMessage]) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; records.len()];
        let mut candidates: Vec<Candidate> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let parsed = std::panic::catch_unwind(|| parse_and_validate(record.body.as_deref()));
            match parsed {
                Ok(Ok((_, row))) => candidates.push(Candidate { index, row }),
                Ok(Err(reason)) => verdicts[index] = Some(Verdict::Retry(reason)),
                Err(_) => verdicts[index] = Some(Verdict::Retry("panic while parsing".into())),
            }
        }

        // One statement cannot touch an id twice. Identical versions share
        // the first one's outcome; a different version waits for a later
        // delivery, so every version is written in turn.
        let mut first_by_id: HashMap<i32, usize> = HashMap::new();
        let mut unique: Vec<&Candidate> = Vec::new();
        let mut followers: Vec<(usize, usize)> = Vec::new(); // (message index, candidate index in unique)
        for candidate in &candidates {
            match first_by_id.get(&candidate.row.country_id) {
                Some(&u) if unique[u].row.country == candidate.row.country => {
                    followers.push((candidate.index, u));
                }
                Some(_) => {
                    verdicts[candidate.index] = Some(Verdict::Retry(
                        "another version of this country_id is in the same batch; retried later"
                            .into(),
                    ));
                }
                None => {
                    first_by_id.insert(candidate.row.country_id, unique.len());
                    unique.push(candidate);
                }
            }
        }

        if !unique.is_empty() {
            let outcomes = self.write(&unique).await;
            for (u, outcome) in outcomes.iter().enumerate() {
                verdicts[unique[u].index] = Some(outcome.clone());
            }
            for (index, u) in followers {
                verdicts[index] = Some(outcomes[u].clone());
            }
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| Verdict::Retry("not processed".into())))
            .collect()
    }

    async fn write(&self, unique: &[&Candidate]) -> Vec<Verdict> {
        let mut writer = match self.writers.writer().await {
            Ok(w) => w,
            Err(e) => {
                return vec![Verdict::Retry(format!("Postgres unavailable: {e}")); unique.len()]
            }
        };
        let rows: Vec<&CountryRow> = unique.iter().map(|c| &c.row).collect();
        let written = AssertUnwindSafe(write_isolating(
            writer.as_mut(),
            &rows,
            usize::MAX,
            self.policy,
        ))
        .catch_unwind()
        .await;
        let result = match written {
            Ok(result) => result,
            Err(_) => return vec![Verdict::Retry("panic while writing".into()); unique.len()],
        };
        let mut outcomes = vec![Verdict::Retry("not written".into()); unique.len()];
        for i in result.written {
            outcomes[i] = Verdict::Written;
        }
        for (i, error) in result.rejected {
            outcomes[i] = Verdict::Retry(error.to_string());
        }
        let deferred_reason = result
            .stop
            .map(|e| e.to_string())
            .unwrap_or_else(|| "not written".into());
        for i in result.deferred {
            outcomes[i] = Verdict::Retry(deferred_reason.clone());
        }
        outcomes
    }
}

fn parse_and_validate(body: Option<&str>) -> Result<(RetryMessage, CountryRow), String> {
    let message = parse_retry_message(body).map_err(|e| format!("malformed message: {e}"))?;
    let row = validate(&message.record).map_err(|e| format!("invalid record: {e}"))?;
    Ok((message, row))
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// The Lambda handler.
pub async fn handle(
    retrier: &Retrier,
    event: lambda_runtime::LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let records = &event.payload.records;
    let verdicts = retrier.process(records).await;
    let mut response = SqsBatchResponse::default();
    let mut summary = RetrySummary {
        messages: records.len(),
        ..RetrySummary::default()
    };
    for (record, verdict) in records.iter().zip(&verdicts) {
        let message_id = record.message_id.as_deref().unwrap_or("");
        let attempt = receive_count(record);
        match verdict {
            Verdict::Written => {
                summary.written += 1;
                tracing::info!(message_id, attempt, "record written");
            }
            Verdict::Retry(reason) => {
                summary.failed += 1;
                if reason.starts_with("malformed") || reason.starts_with("invalid") {
                    summary.malformed += 1;
                }
                tracing::warn!(message_id, attempt, reason = %reason, "record failed; it comes back later");
                response.add_failure(message_id);
                if let (Some(delay), Some(handle)) = (&retrier.delay, &record.receipt_handle) {
                    let wait = retrier.retry_backoff.delay(attempt);
                    if let Err(e) = delay.delay(handle, wait).await {
                        // Best effort: the queue's own visibility timeout applies.
                        tracing::warn!(message_id, error = %e, "could not stretch the visibility timeout");
                    }
                }
            }
        }
    }
    crate::telemetry::emit_metrics(
        "retrier",
        &[
            ("RecordsWritten", summary.written as f64),
            ("RecordsFailed", summary.failed as f64),
        ],
    );
    tracing::info!(
        messages = summary.messages,
        written = summary.written,
        failed = summary.failed,
        malformed = summary.malformed,
        "retrier batch finished"
    );
    Ok(response)
}

/// Drives the retrier the way Lambda's SQS event source mapping does, for
/// the local stack and the tests: receive a batch, invoke the handler with a
/// real `SqsEvent` built from the received messages, delete the messages the
/// response does not list, and leave the listed ones to reappear after their
/// visibility timeout (the queue's redrive policy then moves them to the
/// dead-letter queue).
pub struct LocalEventSource {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub batch_size: i32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriveSummary {
    pub invocations: usize,
    pub messages: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl LocalEventSource {
    /// One poll: at most `batch_size` messages, one handler invocation.
    /// Returns None when nothing was received.
    pub async fn poll_once(&self, retrier: &Retrier) -> Result<Option<(usize, usize)>, String> {
        let sqs_error = |e: &dyn std::error::Error| e.to_string();
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size.clamp(1, 10))
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(None);
        }
        let arn = self.queue_arn().await.unwrap_or_default();
        let mut event = SqsEvent::default();
        for m in &messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.md5_of_body = m.md5_of_body.clone();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(arn.clone());
            if let Some(attributes) = &m.attributes {
                for (k, v) in attributes {
                    record.attributes.insert(k.as_str().to_string(), v.clone());
                }
            }
            event.records.push(record);
        }
        let response = handle(
            retrier,
            lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
        )
        .await
        // An error from the whole handler fails the whole batch, as in Lambda.
        .unwrap_or_else(|_| {
            let mut all = SqsBatchResponse::default();
            for m in &messages {
                all.add_failure(m.message_id.clone().unwrap_or_default());
            }
            all
        });
        let failed: std::collections::HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let mut succeeded = 0;
        for m in &messages {
            if failed.contains(m.message_id.as_deref().unwrap_or("")) {
                continue;
            }
            if let Some(handle) = &m.receipt_handle {
                self.client
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(|e| sqs_error(&e))?;
                succeeded += 1;
            }
        }
        Ok(Some((messages.len(), succeeded)))
    }

    async fn queue_arn(&self) -> Option<String> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .ok()?
            .attributes?
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .cloned()
    }

    /// Messages on the queue, visible or in flight.
    pub async fn depth(&self) -> Result<usize, String> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?
            .attributes
            .unwrap_or_default();
        let count = |a: A| {
            attributes
                .get(&a)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        Ok(count(A::ApproximateNumberOfMessages) + count(A::ApproximateNumberOfMessagesNotVisible))
    }

    /// Polls until the queue is empty (every message written, or moved to
    /// the dead-letter queue), or until `timeout`.
    pub async fn drain(
        &self,
        retrier: &Retrier,
        timeout: Duration,
    ) -> Result<DriveSummary, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut summary = DriveSummary::default();
        loop {
            if let Some((received, succeeded)) = self.poll_once(retrier).await? {
                summary.invocations += 1;
                summary.messages += received;
                summary.succeeded += succeeded;
                summary.failed += received - succeeded;
            } else if self.depth().await? == 0 {
                return Ok(summary);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the retry queue still holds {} messages after {timeout:?}",
                    self.depth().await.unwrap_or(0)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailureClass, FailureDetail, SourceRow};
    use crate::sink::{RowWriter, WriteError, WriteErrorKind};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct State {
        table: HashMap<i32, String>,
        refused: Vec<String>,
        down: bool,
        panic_on: Option<String>,
        statements: usize,
    }

    #[derive(Clone, Default)]
    struct Pool(Arc<Mutex<State>>);

    struct Writer(Arc<Mutex<State>>);

    #[async_trait]
    impl WriterPool for Pool {
        async fn writer(&self) -> Result<Box<dyn RowWriter>, WriteError> {
            if self.0.lock().unwrap().down {
                return Err(WriteError::transient("connection refused"));
            }
            Ok(Box::new(Writer(self.0.clone())))
        }
    }

    #[async_trait]
    impl RowWriter for Writer {
        async fn write_chunk(&mut self, rows: &[CountryRow]) -> Result<u64, WriteError> {
            let mut state = self.0.lock().unwrap();
            state.statements += 1;
            if let Some(p) = &state.panic_on {
                if rows.iter().any(|r| &r.country == p) {
                    panic!("writer bug");
                }
            }
            let mut ids: Vec<i32> = rows.iter().map(|r| r.country_id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), rows.len(), "one statement touched an id twice");
            if rows.iter().any(|r| state.refused.contains(&r.country)) {
                return Err(WriteError {
                    kind: WriteErrorKind::RowLevel,
                    sqlstate: Some("23514".into()),
                    message: "check".into(),
                });
            }
            for r in rows {
                state.table.insert(r.country_id, r.country.clone());
            }
            Ok(rows.len() as u64)
        }
    }

    #[derive(Clone, Default)]
    struct Delays(Arc<Mutex<Vec<(String, Duration)>>>);

    #[async_trait]
    impl RetryDelay for Delays {
        async fn delay(&self, receipt_handle: &str, wait: Duration) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .push((receipt_handle.to_string(), wait));
            Ok(())
        }
    }

    fn retrier(pool: &Pool, delays: &Delays) -> Retrier {
        Retrier {
            writers: Box::new(pool.clone()),
            policy: WritePolicy {
                attempts: 2,
                backoff: Backoff::default(),
            },
            delay: Some(Box::new(delays.clone())),
            retry_backoff: Backoff {
                first: Duration::from_secs(30),
                max: Duration::from_secs(600),
            },
        }
    }

    fn body(id: Option<i128>, country: Option<&str>) -> String {
        serde_json::to_string(&RetryMessage::first_failure(
            SourceRow::new(id, country),
            FailureDetail {
                class: FailureClass::Rejected,
                sqlstate: Some("23514".into()),
                message: "check".into(),
            },
            uuid::Uuid::nil(),
            chrono::Utc::now(),
        ))
        .unwrap()
    }

    fn sqs_message(id: &str, body: Option<String>, receive_count: u32) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_string());
        m.receipt_handle = Some(format!("rh-{id}"));
        m.body = body;
        m.attributes
            .insert("ApproximateReceiveCount".into(), receive_count.to_string());
        m
    }

    async fn run(retrier: &Retrier, messages: Vec<SqsMessage>) -> Vec<String> {
        let mut event = SqsEvent::default();
        event.records = messages;
        let response = handle(
            retrier,
            lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
        )
        .await
        .unwrap();
        let mut ids: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_lists_exactly_the_messages_that_failed() {
        let (pool, delays) = (Pool::default(), Delays::default());
        pool.0.lock().unwrap().refused.push("ATL".into());
        let failed = run(
            &retrier(&pool, &delays),
            vec![
                sqs_message("ok-1", Some(body(Some(1), Some("usa"))), 1),
                sqs_message("refused", Some(body(Some(2), Some("ATL"))), 3),
                sqs_message("not-json", Some("{{{".into()), 1),
                sqs_message("empty", None, 1),
                sqs_message("v2", Some(r#"{"schema_version":2}"#.into()), 1),
                sqs_message("invalid", Some(body(Some(3), Some("U1A"))), 1),
                sqs_message("ok-2", Some(body(Some(4), Some("FRA"))), 1),
            ],
        )
        .await;
        assert_eq!(
            failed,
            vec!["empty", "invalid", "not-json", "refused", "v2"]
        );
        let state = pool.0.lock().unwrap();
        assert_eq!(state.table.get(&1).map(String::as_str), Some("USA"));
        assert_eq!(state.table.get(&4).map(String::as_str), Some("FRA"));
        // Backoff: 30 s doubled per receive; the refused one was received 3 times.
        let delays = delays.0.lock().unwrap();
        assert!(delays.contains(&("rh-refused".into(), Duration::from_secs(120))));
        assert_eq!(delays.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_lists_every_message_and_writes_nothing() {
        let (pool, delays) = (Pool::default(), Delays::default());
        pool.0.lock().unwrap().down = true;
        let failed = run(
            &retrier(&pool, &delays),
            vec![
                sqs_message("a", Some(body(Some(1), Some("USA"))), 1),
                sqs_message("b", Some(body(Some(2), Some("FRA"))), 1),
            ],
        )
        .await;
        assert_eq!(failed, vec!["a", "b"]);
        assert!(pool.0.lock().unwrap().table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_deliveries_are_harmless_and_versions_are_not_mixed() {
        let (pool, delays) = (Pool::default(), Delays::default());
        let failed = run(
            &retrier(&pool, &delays),
            vec![
                sqs_message("first", Some(body(Some(1), Some("USA"))), 1),
                sqs_message("same-again", Some(body(Some(1), Some("USA"))), 2),
                sqs_message("other-version", Some(body(Some(1), Some("CAN"))), 1),
            ],
        )
        .await;
        assert_eq!(failed, vec!["other-version"]);
        assert_eq!(pool.0.lock().unwrap().statements, 1);
        let failed = run(
            &retrier(&pool, &delays),
            vec![sqs_message(
                "other-version",
                Some(body(Some(1), Some("CAN"))),
                2,
            )],
        )
        .await;
        assert!(failed.is_empty());
        assert_eq!(
            pool.0.lock().unwrap().table.get(&1).map(String::as_str),
            Some("CAN")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_contained() {
        let (pool, delays) = (Pool::default(), Delays::default());
        pool.0.lock().unwrap().panic_on = Some("BUG".into());
        let failed = run(
            &retrier(&pool, &delays),
            vec![
                sqs_message("a", Some(body(Some(1), Some("USA"))), 1),
                sqs_message("b", Some(body(Some(2), Some("BUG"))), 1),
            ],
        )
        .await;
        assert_eq!(
            failed,
            vec!["a", "b"],
            "the whole write panicked; both come back"
        );
    }
}
