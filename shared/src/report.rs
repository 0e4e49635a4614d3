//! The dlq-reporter: turns what sits in the dead-letter queue into a durable
//! failure report (Postgres) and one email digest (SES), and the operator's
//! side of that report (list, replay).
//!
//! Order of a run, so that nothing is lost between the queue, the table and
//! the email:
//! 1. take up to `REPORT_MAX_MESSAGES` messages from the DLQ (they stay
//!    invisible, not deleted);
//! 2. store them in `failure_report` (idempotent on the message id);
//! 3. send one digest email; when step 2 failed the email says so;
//! 4. delete the messages only if the report is stored and SES accepted the
//!    email. Otherwise they reappear and the next run tries again.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{PostgresConfig, ReporterConfig};
use crate::model::{one_line, parse_retry_message, preview, validate, CountryRow, FailureClass};
use crate::queue::QueueError;
use crate::replicator::{write_isolating, Backoff, WritePolicy};
use crate::sink::{connect, RowWriter, WriteError, WriterPool};

/// A message as taken from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: Option<String>,
    pub receive_count: Option<u32>,
}

#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Up to `max` (≤ 10) messages, hidden from other readers meanwhile.
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Deletes the messages; returns how many SQS confirmed.
    async fn delete(&self, letters: &[DeadLetter]) -> Result<usize, QueueError>;
}

pub struct SqsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// Seconds a received message stays hidden: long enough for one run.
    visibility_timeout: i32,
}

impl SqsDeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            visibility_timeout: 900,
        }
    }

    /// How long received messages stay hidden (900 s by default: longer than
    /// a run, so that an unfinished run's messages return for the next one).
    pub fn with_visibility_timeout(mut self, seconds: i32) -> Self {
        self.visibility_timeout = seconds;
        self
    }
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let max = i32::try_from(max.clamp(1, 10)).unwrap_or(10);
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .visibility_timeout(self.visibility_timeout)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|c| c.parse().ok());
                Some(DeadLetter {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body,
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, letters: &[DeadLetter]) -> Result<usize, QueueError> {
        let mut deleted = 0;
        for chunk in letters.chunks(10) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&l.receipt_handle)
                        .build()
                })
                .collect();
            let entries = entries.map_err(|e| QueueError(e.to_string()))?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
            deleted += output.successful().len();
            if let Some(failed) = output.failed().first() {
                return Err(QueueError(format!(
                    "{} of {} deletes refused: {}",
                    output.failed().len(),
                    chunk.len(),
                    failed.message().unwrap_or(failed.code())
                )));
            }
        }
        Ok(deleted)
    }
}

/// Raw bodies kept for messages that did not parse.
const RAW_BODY_LIMIT: usize = 2_000;

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
                error_class: class_name(message.error.class).to_string(),
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

fn class_name(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Invalid => "invalid",
        FailureClass::Rejected => "rejected",
        FailureClass::Transient => "transient",
    }
}

#[async_trait]
pub trait FailureStore: Send + Sync {
    /// Stores the entries in one transaction; a message already stored is
    /// left as it is. Returns how many were new.
    async fn store(&self, report_run_id: Uuid, entries: &[FailureEntry])
        -> Result<u64, WriteError>;
}

/// The failure report table in Postgres.
pub struct PostgresFailureReport {
    config: PostgresConfig,
}

/// A stored, unresolved failure, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredFailure {
    pub message_id: String,
    pub country_id: Option<String>,
    pub country: Option<String>,
    pub error_class: String,
    pub sqlstate: Option<String>,
    pub error_message: String,
    pub reported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    pub replayed: Vec<String>,
    /// (message id, why it was not replayed)
    pub not_replayed: Vec<(String, String)>,
}

impl PostgresFailureReport {
    pub fn new(config: PostgresConfig) -> Self {
        Self { config }
    }

    fn table(&self) -> String {
        format!("{}.\"failure_report\"", self.config.schema.quoted())
    }

    /// Unresolved failures, oldest first.
    pub async fn unresolved(&self, limit: i64) -> Result<Vec<StoredFailure>, WriteError> {
        let conn = connect(&self.config).await?;
        let rows = conn
            .client
            .query(
                &format!(
                    "SELECT message_id, country_id::text, country, error_class, sqlstate, error_message, reported_at \
                     FROM {} WHERE resolved_at IS NULL ORDER BY reported_at, message_id LIMIT $1",
                    self.table()
                ),
                &[&limit],
            )
            .await
            .map_err(|e| WriteError::from_postgres(&e))?;
        Ok(rows
            .iter()
            .map(|r| StoredFailure {
                message_id: r.get(0),
                country_id: r.get(1),
                country: r.get(2),
                error_class: r.get(3),
                sqlstate: r.get(4),
                error_message: r.get(5),
                reported_at: r.get(6),
            })
            .collect())
    }

    /// Writes unresolved failures into the replica again (after the cause
    /// was fixed) and marks the ones written as resolved. `only` limits it to
    /// some message ids.
    pub async fn replay(
        &self,
        writers: &dyn WriterPool,
        only: Option<&[String]>,
    ) -> Result<ReplayOutcome, WriteError> {
        let failures = self.unresolved(100_000).await?;
        let mut outcome = ReplayOutcome {
            replayed: Vec::new(),
            not_replayed: Vec::new(),
        };
        let mut rows: Vec<(String, CountryRow)> = Vec::new();
        let mut seen_ids = std::collections::HashSet::new();
        for f in failures {
            if only.is_some_and(|ids| !ids.contains(&f.message_id)) {
                continue;
            }
            let id = f.country_id.as_deref().and_then(|i| i.parse::<i128>().ok());
            let source = crate::model::SourceRow {
                country_id: id,
                country: f.country.clone(),
            };
            match validate(&source) {
                Err(e) => outcome.not_replayed.push((
                    f.message_id,
                    format!("{e}: fix the row at the source, then resolve it by hand"),
                )),
                Ok(row) if !seen_ids.insert(row.country_id) => outcome.not_replayed.push((
                    f.message_id,
                    "another failure of the same country_id is replayed now; replay again for this one"
                        .into(),
                )),
                Ok(row) => rows.push((f.message_id, row)),
            }
        }
        if !rows.is_empty() {
            let mut writer: Box<dyn RowWriter> = writers.writer().await?;
            let refs: Vec<&CountryRow> = rows.iter().map(|(_, r)| r).collect();
            let policy = WritePolicy {
                attempts: 3,
                backoff: Backoff::default(),
            };
            let result = write_isolating(writer.as_mut(), &refs, usize::MAX, policy).await;
            for i in &result.written {
                outcome.replayed.push(rows[*i].0.clone());
            }
            for (i, e) in &result.rejected {
                outcome
                    .not_replayed
                    .push((rows[*i].0.clone(), e.to_string()));
            }
            for i in &result.deferred {
                let why = result
                    .stop
                    .as_ref()
                    .map_or_else(|| "not written".to_string(), ToString::to_string);
                outcome.not_replayed.push((rows[*i].0.clone(), why));
            }
        }
        self.resolve(&outcome.replayed, "replayed").await?;
        Ok(outcome)
    }

    /// Marks failures as resolved, with how.
    pub async fn resolve(
        &self,
        message_ids: &[String],
        resolution: &str,
    ) -> Result<u64, WriteError> {
        if message_ids.is_empty() {
            return Ok(0);
        }
        let conn = connect(&self.config).await?;
        conn.client
            .execute(
                &format!(
                    "UPDATE {} SET resolved_at = now(), resolution = $2 \
                     WHERE message_id = ANY($1) AND resolved_at IS NULL",
                    self.table()
                ),
                &[&message_ids, &resolution],
            )
            .await
            .map_err(|e| WriteError::from_postgres(&e))
    }
}

#[async_trait]
impl FailureStore for PostgresFailureReport {
    async fn store(
        &self,
        report_run_id: Uuid,
        entries: &[FailureEntry],
    ) -> Result<u64, WriteError> {
        let mut conn = connect(&self.config).await?;
        let pg = |e: tokio_postgres::Error| WriteError::from_postgres(&e);
        let tx = conn.client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} (message_id, record_key, country_id, country, error_class, sqlstate, \
                 error_message, attempts, first_failed_at, last_failed_at, source_run_id, report_run_id, raw_body) \
                 VALUES ($1, $2, $3::text::numeric, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (message_id) DO NOTHING",
                self.table()
            ))
            .await
            .map_err(pg)?;
        let mut new = 0;
        for e in entries {
            let country_id = e.country_id.map(|i| i.to_string());
            let attempts = e.attempts.map(|a| i32::try_from(a).unwrap_or(i32::MAX));
            new += tx
                .execute(
                    &insert,
                    &[
                        &e.message_id,
                        &e.record_key,
                        &country_id,
                        &e.country,
                        &e.error_class,
                        &e.sqlstate,
                        &e.error_message,
                        &attempts,
                        &e.first_failed_at,
                        &e.last_failed_at,
                        &e.source_run_id,
                        &report_run_id,
                        &e.raw_body,
                    ],
                )
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(new)
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

pub const RECOVERY_STEPS: &[(&str, &str)] = &[
    (
        "countries failures",
        "list the unresolved failures and their errors",
    ),
    (
        "countries replay [MESSAGE_ID…]",
        "after fixing the cause in Postgres, write the records again and mark them resolved",
    ),
    (
        "countries redrive",
        "move what is still in the dead-letter queue back to the retry queue",
    ),
];

/// Builds the digest. `stored` is the outcome of storing the report.
pub fn compose_digest(
    entries: &[FailureEntry],
    stored: &Result<u64, String>,
    report_run_id: Uuid,
    email_rows: usize,
    now: DateTime<Utc>,
) -> Digest {
    let n = entries.len();
    let since = entries
        .iter()
        .filter_map(|e| e.first_failed_at)
        .min()
        .unwrap_or(now);
    let window = format!(
        "{} – {} UTC",
        since.format("%Y-%m-%d %H:%M"),
        now.format("%Y-%m-%d %H:%M")
    );
    let subject = format!(
        "[countries replication] {n} failed record{} need attention ({window})",
        if n == 1 { "" } else { "s" }
    );

    let mut by_error: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in entries {
        *by_error
            .entry((
                e.error_class.clone(),
                e.sqlstate.clone().unwrap_or_else(|| "-".into()),
            ))
            .or_default() += 1;
    }
    let shown = &entries[..n.min(email_rows)];
    let stored_line = match stored {
        Ok(_) => format!("The failure report is stored in Postgres, table failure_report (report run {report_run_id})."),
        Err(e) => format!(
            "WARNING: the failure report was NOT stored in Postgres ({e}). The records are listed in this \
             email and stay in the dead-letter queue; the next report run stores them."
        ),
    };

    let mut text = String::new();
    let _ = writeln!(
        text,
        "{n} record{} of the countries replication could not be written to Postgres after all retries.\n",
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(text, "{stored_line}\n");
    let _ = writeln!(text, "By error:");
    for ((class, code), count) in &by_error {
        let _ = writeln!(text, "  {class:<10} {code:<8} {count}");
    }
    let _ = writeln!(
        text,
        "\nRecords ({}{}):",
        if shown.len() < n {
            format!("first {} of {n}", shown.len())
        } else {
            format!("all {n}")
        },
        if shown.len() < n {
            "; all of them are in the attached CSV"
        } else {
            ""
        }
    );
    let _ = writeln!(
        text,
        "  {:<12} {:<12} {:<10} {:<8} {:<17} message",
        "country_id", "country", "class", "sqlstate", "first failed"
    );
    for e in shown {
        let _ = writeln!(
            text,
            "  {:<12} {:<12} {:<10} {:<8} {:<17} {}",
            e.country_id.map_or("NULL".into(), |i| i.to_string()),
            e.country
                .as_deref()
                .map_or("NULL".into(), |c| preview(c, 10)),
            e.error_class,
            e.sqlstate.as_deref().unwrap_or("-"),
            e.first_failed_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            message_line(e),
        );
    }
    let _ = writeln!(
        text,
        "\nHow to recover (from a shell with the deployment's environment):"
    );
    for (command, what) in RECOVERY_STEPS {
        let _ = writeln!(text, "  {command:<34} {what}");
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<html><body style=\"font-family:sans-serif\"><h2>{}</h2><p>{}</p><p>{}</p>",
        escape_html(&subject),
        escape_html(&format!(
            "{n} record(s) of the countries replication could not be written to Postgres after all retries."
        )),
        escape_html(&stored_line)
    );
    html.push_str("<h3>By error</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>class</th><th>sqlstate</th><th>records</th></tr>");
    for ((class, code), count) in &by_error {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{count}</td></tr>",
            escape_html(class),
            escape_html(code)
        );
    }
    let _ = write!(
        html,
        "</table><h3>Records ({})</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\
         <tr><th>country_id</th><th>country</th><th>class</th><th>sqlstate</th><th>first failed</th><th>message</th></tr>",
        if shown.len() < n {
            format!("first {} of {n}; all of them are in the attached CSV", shown.len())
        } else {
            format!("all {n}")
        }
    );
    for e in shown {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.country_id.map_or("NULL".into(), |i| i.to_string()),
            escape_html(
                &e.country
                    .as_deref()
                    .map_or("NULL".into(), |c| preview(c, 10))
            ),
            escape_html(&e.error_class),
            escape_html(e.sqlstate.as_deref().unwrap_or("-")),
            e.first_failed_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            escape_html(&message_line(e)),
        );
    }
    html.push_str("</table><h3>How to recover</h3><ul>");
    for (command, what) in RECOVERY_STEPS {
        let _ = write!(
            html,
            "<li><code>{}</code>: {}</li>",
            escape_html(command),
            escape_html(what)
        );
    }
    html.push_str("</ul></body></html>");

    Digest {
        subject,
        text,
        html,
        csv: (shown.len() < n).then(|| to_csv(entries)),
    }
}

fn message_line(e: &FailureEntry) -> String {
    let mut line = one_line(&e.error_message, 160);
    if let Some(raw) = &e.raw_body {
        line.push_str(" | body: ");
        line.push_str(&one_line(raw, 80));
    }
    line
}

pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

pub fn to_csv(entries: &[FailureEntry]) -> String {
    let mut out = String::from(
        "message_id,country_id,country,error_class,sqlstate,error_message,attempts,first_failed_at,raw_body\n",
    );
    for e in entries {
        let fields = [
            e.message_id.clone(),
            e.country_id.map(|i| i.to_string()).unwrap_or_default(),
            e.country.clone().unwrap_or_default(),
            e.error_class.clone(),
            e.sqlstate.clone().unwrap_or_default(),
            e.error_message.clone(),
            e.attempts.map(|a| a.to_string()).unwrap_or_default(),
            e.first_failed_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            e.raw_body.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("SES refused the digest email: {0}")]
pub struct MailError(pub String);

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, digest: &Digest) -> Result<(), MailError>;
}

/// Sends the digest through SES v2 as a raw MIME message (the simple content
/// type has no attachments).
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    sender: String,
    recipients: Vec<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, sender: String, recipients: Vec<String>) -> Self {
        Self {
            client,
            sender,
            recipients,
        }
    }

    pub fn mime(&self, digest: &Digest) -> Result<Vec<u8>, MailError> {
        let mut message = mail_builder::MessageBuilder::new()
            .from(("countries replication", self.sender.as_str()))
            .to(self
                .recipients
                .iter()
                .map(String::as_str)
                .collect::<Vec<&str>>())
            .subject(digest.subject.as_str())
            .text_body(digest.text.as_str())
            .html_body(digest.html.as_str());
        if let Some(csv) = &digest.csv {
            message = message.attachment("text/csv", "failed-records.csv", csv.as_str());
        }
        message
            .write_to_vec()
            .map_err(|e| MailError(format!("building the message: {e}")))
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, digest: &Digest) -> Result<(), MailError> {
        let raw = aws_sdk_sesv2::types::RawMessage::builder()
            .data(aws_sdk_sesv2::primitives::Blob::new(self.mime(digest)?))
            .build()
            .map_err(|e| MailError(e.to_string()))?;
        self.client
            .send_email()
            .from_email_address(&self.sender)
            .destination(
                aws_sdk_sesv2::types::Destination::builder()
                    .set_to_addresses(Some(self.recipients.clone()))
                    .build(),
            )
            .content(
                aws_sdk_sesv2::types::EmailContent::builder()
                    .raw(raw)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| MailError(aws_sdk_sesv2::error::DisplayErrorContext(&e).to_string()))
    }
}

pub struct Reporter {
    pub dlq: Box<dyn DeadLetterQueue>,
    pub store: Box<dyn FailureStore>,
    pub mailer: Box<dyn Mailer>,
    pub max_messages: usize,
    pub email_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    pub report_run_id: Uuid,
    pub messages: usize,
    /// New rows in the failure report; None when storing failed.
    pub stored_new: Option<u64>,
    pub emailed: bool,
    pub deleted: usize,
    pub error: Option<String>,
}

impl Reporter {
    pub async fn from_config(config: &ReporterConfig) -> Self {
        let aws = crate::aws_config().await;
        Self {
            dlq: Box::new(SqsDeadLetterQueue::new(
                aws_sdk_sqs::Client::new(&aws),
                config.dead_letter_queue_url.clone(),
            )),
            store: Box::new(PostgresFailureReport::new(config.postgres.clone())),
            mailer: Box::new(SesMailer::new(
                aws_sdk_sesv2::Client::new(&aws),
                config.sender.clone(),
                config.recipients.clone(),
            )),
            max_messages: config.max_messages,
            email_rows: config.email_rows,
        }
    }

    pub async fn run(&self, report_run_id: Uuid) -> ReportSummary {
        let mut summary = ReportSummary {
            report_run_id,
            messages: 0,
            stored_new: None,
            emailed: false,
            deleted: 0,
            error: None,
        };
        let mut letters: Vec<DeadLetter> = Vec::new();
        while letters.len() < self.max_messages {
            match self
                .dlq
                .receive((self.max_messages - letters.len()).min(10))
                .await
            {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => letters.extend(batch),
                Err(e) => {
                    summary.error = Some(format!("reading the dead-letter queue: {e}"));
                    break;
                }
            }
        }
        // The same message can come twice from a standard queue.
        let mut seen = std::collections::HashSet::new();
        letters.retain(|l| seen.insert(l.message_id.clone()));
        summary.messages = letters.len();
        if letters.is_empty() {
            return summary;
        }

        let now = Utc::now();
        let entries: Vec<FailureEntry> = letters
            .iter()
            .map(|l| FailureEntry::from_dead_letter(l, now))
            .collect();
        let stored = self
            .store
            .store(report_run_id, &entries)
            .await
            .map_err(|e| e.to_string());
        summary.stored_new = stored.as_ref().ok().copied();
        let digest = compose_digest(&entries, &stored, report_run_id, self.email_rows, now);
        match self.mailer.send(&digest).await {
            Ok(()) => summary.emailed = true,
            Err(e) => {
                summary.error = Some(e.to_string());
                return summary;
            }
        }
        match stored {
            Ok(_) => match self.dlq.delete(&letters).await {
                Ok(n) => summary.deleted = n,
                Err(e) => summary.error = Some(format!("deleting from the dead-letter queue: {e}")),
            },
            Err(e) => {
                summary.error = Some(format!(
                    "failure report not stored ({e}); the messages stay in the dead-letter queue"
                ))
            }
        }
        summary
    }
}

/// The Lambda handler: one report per scheduled event. Fails the invocation
/// when anything is left for the next run, so that alarms see it.
pub async fn handle(
    reporter: &Reporter,
    _event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<ReportSummary, lambda_runtime::Error> {
    let summary = reporter.run(Uuid::new_v4()).await;
    crate::telemetry::emit_metrics(
        "dlq-reporter",
        &[
            ("DeadLettersReported", summary.messages as f64),
            ("DeadLettersDeleted", summary.deleted as f64),
        ],
    );
    let fields = (
        summary.messages,
        summary.stored_new.map(|n| n as i64).unwrap_or(-1),
        summary.emailed,
        summary.deleted,
    );
    match &summary.error {
        None => {
            tracing::info!(report_run_id = %summary.report_run_id, messages = fields.0, stored_new = fields.1, emailed = fields.2, deleted = fields.3, "dlq report finished");
            Ok(summary)
        }
        Some(e) => {
            tracing::error!(report_run_id = %summary.report_run_id, messages = fields.0, stored_new = fields.1, emailed = fields.2, deleted = fields.3, error = %e, "dlq report incomplete");
            Err(format!("dlq report {} incomplete: {e}", summary.report_run_id).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn letter(id: &str, body: &str) -> DeadLetter {
        DeadLetter {
            message_id: id.into(),
            receipt_handle: format!("rh-{id}"),
            body: Some(body.into()),
            receive_count: Some(5),
        }
    }

    fn good_body(id: i128, country: &str) -> String {
        serde_json::to_string(&crate::model::RetryMessage::first_failure(
            crate::model::SourceRow::new(Some(id), Some(country)),
            crate::model::FailureDetail {
                class: FailureClass::Rejected,
                sqlstate: Some("23514".into()),
                message: "violates check constraint \"no_atlantis\"".into(),
            },
            Uuid::nil(),
            Utc::now(),
        ))
        .unwrap()
    }

    #[derive(Clone, Default)]
    struct Dlq {
        waiting: Arc<Mutex<Vec<DeadLetter>>>,
        deleted: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl DeadLetterQueue for Dlq {
        async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
            let mut w = self.waiting.lock().unwrap();
            let n = max.min(w.len());
            Ok(w.drain(..n).collect())
        }
        async fn delete(&self, letters: &[DeadLetter]) -> Result<usize, QueueError> {
            self.deleted
                .lock()
                .unwrap()
                .extend(letters.iter().map(|l| l.message_id.clone()));
            Ok(letters.len())
        }
    }

    #[derive(Clone, Default)]
    struct Store {
        rows: Arc<Mutex<BTreeMap<String, FailureEntry>>>,
        down: bool,
    }

    #[async_trait]
    impl FailureStore for Store {
        async fn store(&self, _: Uuid, entries: &[FailureEntry]) -> Result<u64, WriteError> {
            if self.down {
                return Err(WriteError::transient("connection refused"));
            }
            let mut rows = self.rows.lock().unwrap();
            let mut new = 0;
            for e in entries {
                if rows.insert(e.message_id.clone(), e.clone()).is_none() {
                    new += 1;
                }
            }
            Ok(new)
        }
    }

    #[derive(Clone, Default)]
    struct Mail {
        sent: Arc<Mutex<Vec<Digest>>>,
        refuse: bool,
    }

    #[async_trait]
    impl Mailer for Mail {
        async fn send(&self, digest: &Digest) -> Result<(), MailError> {
            if self.refuse {
                return Err(MailError("MessageRejected".into()));
            }
            self.sent.lock().unwrap().push(digest.clone());
            Ok(())
        }
    }

    fn reporter(dlq: &Dlq, store: &Store, mail: &Mail) -> Reporter {
        Reporter {
            dlq: Box::new(dlq.clone()),
            store: Box::new(store.clone()),
            mailer: Box::new(mail.clone()),
            max_messages: 100,
            email_rows: 2,
        }
    }

    fn fill(dlq: &Dlq) {
        dlq.waiting.lock().unwrap().extend([
            letter("m1", &good_body(1, "ATL")),
            letter("m2", &good_body(2, "ATL")),
            letter("m3", "<script>alert(1)</script> not json"),
        ]);
    }

    #[tokio::test]
    async fn a_report_stores_emails_once_and_then_deletes() {
        let (dlq, store, mail) = (Dlq::default(), Store::default(), Mail::default());
        fill(&dlq);
        let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
        assert_eq!(
            (s.messages, s.stored_new, s.emailed, s.deleted),
            (3, Some(3), true, 3)
        );
        assert!(s.error.is_none());
        let sent = mail.sent.lock().unwrap();
        assert_eq!(sent.len(), 1, "one digest");
        let d = &sent[0];
        assert!(d.subject.contains("3 failed records"), "{}", d.subject);
        assert!(d.text.contains("rejected   23514    2"), "{}", d.text);
        assert!(d.text.contains("malformed"), "{}", d.text);
        assert!(d.text.contains("countries replay"), "{}", d.text);
        assert!(!d.html.contains("<script>"), "raw body must be escaped");
        let csv = d.csv.as_ref().expect("3 records, 2 fit: CSV attached");
        assert_eq!(csv.lines().count(), 4);
        let stored = store.rows.lock().unwrap();
        assert_eq!(stored["m3"].error_class, "malformed");
        assert!(stored["m3"]
            .raw_body
            .as_deref()
            .unwrap()
            .contains("not json"));
        assert_eq!(stored["m1"].country.as_deref(), Some("ATL"));
    }

    #[tokio::test]
    async fn an_empty_queue_sends_no_email() {
        let (dlq, store, mail) = (Dlq::default(), Store::default(), Mail::default());
        let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
        assert_eq!(s.messages, 0);
        assert!(mail.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn when_postgres_is_down_the_email_says_so_and_nothing_is_deleted() {
        let (dlq, mail) = (Dlq::default(), Mail::default());
        let store = Store {
            down: true,
            ..Store::default()
        };
        fill(&dlq);
        let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
        assert!(
            s.emailed && s.deleted == 0 && s.stored_new.is_none(),
            "{s:?}"
        );
        assert!(dlq.deleted.lock().unwrap().is_empty());
        assert!(mail.sent.lock().unwrap()[0].text.contains("NOT stored"));
    }

    #[tokio::test]
    async fn when_ses_fails_nothing_is_deleted() {
        let (dlq, store) = (Dlq::default(), Store::default());
        let mail = Mail {
            refuse: true,
            ..Mail::default()
        };
        fill(&dlq);
        let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
        assert!(!s.emailed && s.deleted == 0, "{s:?}");
        assert!(s.error.unwrap().contains("MessageRejected"));
        assert!(dlq.deleted.lock().unwrap().is_empty());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
