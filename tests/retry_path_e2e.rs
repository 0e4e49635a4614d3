//! The retry path against the real services: replicator → retry queue →
//! retrier (driven like Lambda's event source mapping) → dead-letter queue →
//! dlq-reporter → failure report (Postgres) + digest email (moto SES), and
//! the operator's replay and redrive.

use std::sync::Arc;
use std::time::Duration;

use countries_ops::event_source::LocalEventSource;
use countries_ops::failures::FailureReport;
use countries_ops::redrive::move_messages;
use countries_postgres::mapped_rows::PgMappedRows;
use countries_postgres::sink::pool::PostgresStore;
use countries_shared::deadline::Deadline;
use countries_shared::dlq_reporter::Reporter;
use countries_shared::ledger::RunOutcome;
use countries_shared::model::message::FailureClass;
use countries_shared::model::message::FailureDetail;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::RetryQueue;
use countries_shared::retrier::Retrier;
use countries_sqs::dead_letters::SqsDeadLetterQueue;
use countries_sqs::retry_queue::SqsRetryQueue;
use mail_parser::MimeHeaders;
use testkit::{run_binary, PgCluster, TestEnv};
use uuid::Uuid;

const CHECK: &str = r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#;
const DROP_CHECK: &str = r#"ALTER TABLE "case" DROP CONSTRAINT no_atlantis"#;

fn rows(spec: &[(i128, &str)]) -> Vec<SourceRow> {
    spec.iter()
        .map(|(id, c)| SourceRow::new(Some(*id), Some(c)))
        .collect()
}

fn event_source(env: &TestEnv) -> LocalEventSource {
    LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["RETRY_QUEUE_URL"].clone(),
        batch_size: 10,
    }
}

async fn replicate(env: &TestEnv) {
    let tables = replicator::build(&env.config()).await.expect("replicator");
    let summary = tables.run_all(None, &Deadline::none()).await.remove(0);
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
}

async fn retry_until_empty(env: &TestEnv) -> countries_ops::event_source::DriveSummary {
    let retrier = retrier::build(&env.retrier_config()).await;
    event_source(env)
        .drain(&retrier, Duration::from_secs(60))
        .await
        .expect("the retry queue empties")
}

fn parse_email(raw: &str) -> (String, String, Vec<(String, String)>) {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    let subject = message.subject().unwrap_or_default().to_string();
    let text = message.body_text(0).unwrap_or_default().to_string();
    let attachments = message
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_string(),
                String::from_utf8_lossy(a.contents()).to_string(),
            )
        })
        .collect();
    (subject, text, attachments)
}

#[tokio::test]
async fn a_fixable_failure_is_written_by_the_retrier_once_the_cause_is_gone() {
    let env = TestEnv::new("retry_fixable").await;
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    env.load(&rows(&[(1, "USA"), (2, "ATL"), (3, "ATL"), (4, "FRA")]))
        .await;
    replicate(&env).await;
    assert_eq!(env.depth("RETRY_QUEUE_URL").await, 2);

    env.postgres()
        .await
        .batch_execute(DROP_CHECK)
        .await
        .unwrap();
    let drive = retry_until_empty(&env).await;
    assert_eq!((drive.succeeded, drive.failed), (2, 0), "{drive:?}");
    assert_eq!(env.postgres_rows().await.len(), 4);
    assert_eq!(
        env.depth("DEAD_LETTER_QUEUE_URL").await,
        0,
        "nothing reaches the DLQ"
    );

    let report = dlq_reporter::build(&env.reporter_config())
        .await
        .run(Uuid::new_v4(), &Deadline::none())
        .await;
    assert_eq!(report.messages, 0);
    assert!(
        env.sent_emails().await.is_empty(),
        "an empty DLQ sends no email"
    );
}

#[tokio::test]
async fn a_poison_record_ends_in_the_failure_report_and_one_email_then_replays() {
    let env = TestEnv::new("retry_poison").await;
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    env.load(&rows(&[(1, "USA"), (2, "ATL"), (3, "U1")])).await;
    replicate(&env).await;

    let drive = retry_until_empty(&env).await;
    // Both fail on every one of their maxReceiveCount=5 receives.
    assert_eq!((drive.succeeded, drive.failed), (0, 10), "{drive:?}");
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 2);

    let reporter = dlq_reporter::build(&env.reporter_config()).await;
    let report = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    assert_eq!(
        (report.messages, report.stored_new, report.emailed),
        (2, Some(2), true),
        "{report:?}"
    );
    assert_eq!(report.deleted, 2);
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 0);

    let failures = FailureReport::new(env.config().postgres)
        .unresolved(100)
        .await
        .unwrap();
    assert_eq!(failures.len(), 2);
    let atl = failures
        .iter()
        .find(|f| f.country.as_deref() == Some("ATL"))
        .unwrap();
    assert_eq!(
        (atl.error_class.as_str(), atl.sqlstate.as_deref()),
        ("rejected", Some("23514"))
    );
    let attempts: i32 = env
        .postgres()
        .await
        .query_one("SELECT min(attempts) FROM failure_report", &[])
        .await
        .unwrap()
        .get(0);
    // The test queues redrive after 5 receives; the reporter's own receive
    // is not an attempt.
    assert_eq!(attempts, 5, "the retry path's receives");

    let emails = env.sent_emails().await;
    assert_eq!(emails.len(), 1, "one digest");
    let (subject, text, _) = parse_email(&emails[0]);
    assert!(subject.contains("2 failed records"), "{subject}");
    assert!(
        text.contains("rejected") && text.contains("23514") && text.contains("ATL"),
        "{text}"
    );
    assert!(
        text.contains("invalid") && text.contains("\"U1\""),
        "{text}"
    );
    assert!(text.contains("countries replay"), "{text}");

    // A second report run finds nothing: no second email.
    assert_eq!(
        reporter
            .run(Uuid::new_v4(), &Deadline::none())
            .await
            .messages,
        0
    );
    assert_eq!(env.sent_emails().await.len(), 1);

    // The cause is fixed: replay writes the rejected record; the invalid one
    // cannot be replayed and says why.
    env.postgres()
        .await
        .batch_execute(DROP_CHECK)
        .await
        .unwrap();
    let replay = FailureReport::new(env.config().postgres)
        .replay(
            &PostgresStore::new(env.config().postgres),
            &PgMappedRows::new(env.config().postgres, Vec::new()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(replay.replayed.len(), 1, "{replay:?}");
    assert_eq!(replay.not_replayed.len(), 1, "{replay:?}");
    assert!(
        replay.not_replayed[0].1.contains("three letters"),
        "{replay:?}"
    );
    assert!(env.postgres_rows().await.contains(&(2, "ATL".to_string())));
    let left = FailureReport::new(env.config().postgres)
        .unresolved(100)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the replayed one is resolved");
}

#[tokio::test]
async fn malformed_messages_reach_the_report_with_their_body() {
    let env = TestEnv::new("retry_malformed").await;
    let huge = format!(
        "{{\"schema_version\":1,\"pad\":\"{}\"}}",
        "x".repeat(200_000)
    );
    let bodies = [
        "not json at all".to_string(),
        " ".to_string(),
        r#"{"schema_version": 2, "record": {}}"#.to_string(),
        r#"{"record": {"country_id": 1, "country": "USA"}}"#.to_string(),
        "<b>\u{1}\u{7f}binary junk</b>".to_string(),
        huge,
    ];
    for body in &bodies {
        env.sqs
            .send_message()
            .queue_url(&env.vars["RETRY_QUEUE_URL"])
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let drive = retry_until_empty(&env).await;
    assert_eq!(drive.succeeded, 0);
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, bodies.len());

    let report = dlq_reporter::build(&env.reporter_config())
        .await
        .run(Uuid::new_v4(), &Deadline::none())
        .await;
    assert_eq!(
        (report.messages, report.deleted),
        (bodies.len(), bodies.len()),
        "{report:?}"
    );
    let client = env.postgres().await;
    let stored: Vec<(String, Option<String>)> = client
        .query("SELECT error_class, raw_body FROM failure_report", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored.len(), bodies.len());
    assert!(
        stored.iter().all(|(class, _)| class == "malformed"),
        "{stored:?}"
    );
    assert!(stored
        .iter()
        .any(|(_, raw)| raw.as_deref() == Some("not json at all")));
    assert!(stored
        .iter()
        .all(|(_, raw)| raw.as_ref().is_some_and(|r| r.chars().count() <= 2_000)));

    let emails = env.sent_emails().await;
    assert_eq!(emails.len(), 1);
    let html = &emails[0];
    assert!(
        !html.contains("<b>\u{1}"),
        "raw bodies are escaped in the email"
    );
    let (_, text, _) = parse_email(&emails[0]);
    assert!(text.contains("malformed"), "{text}");
}

#[tokio::test]
async fn duplicate_deliveries_write_once_and_change_nothing() {
    let env = TestEnv::new("retry_duplicates").await;
    let queue = SqsRetryQueue::new(env.sqs.clone(), env.vars["RETRY_QUEUE_URL"].clone());
    let message = rejected(7, "nzl");
    let sent = queue
        .enqueue(&[message.clone(), message.clone(), message])
        .await;
    assert!(sent.iter().all(Result::is_ok));
    let drive = retry_until_empty(&env).await;
    assert_eq!((drive.succeeded, drive.failed), (3, 0), "{drive:?}");
    assert_eq!(env.postgres_rows().await, vec![(7, "NZL".to_string())]);
}

#[tokio::test]
async fn a_postgres_outage_during_retry_lists_everything_and_loses_nothing() {
    let env = TestEnv::new("retry_outage").await;
    let cluster = Arc::new(PgCluster::start(None));
    cluster.create_app_database("countries").await;
    let queue = SqsRetryQueue::new(env.sqs.clone(), env.vars["RETRY_QUEUE_URL"].clone());
    let messages: Vec<RetryMessage> = (1..=4)
        .map(|i| {
            RetryMessage::first_failure(
                SourceRow::new(Some(i), Some("CHL")),
                FailureDetail {
                    class: FailureClass::Rejected,
                    sqlstate: None,
                    message: "x".into(),
                },
                Uuid::new_v4(),
                chrono::Utc::now(),
            )
        })
        .collect();
    assert!(queue.enqueue(&messages).await.iter().all(Result::is_ok));

    let mut config = env.retrier_config();
    config.postgres.port = cluster.port;
    config.postgres.database = "countries".into();
    config.postgres.connect_timeout = Duration::from_secs(2);
    cluster.stop_server();
    let retrier = retrier::build(&config).await;
    let (received, succeeded) = event_source(&env)
        .poll_once(&retrier)
        .await
        .unwrap()
        .expect("messages");
    assert_eq!(
        (received, succeeded),
        (4, 0),
        "every message listed, none written"
    );
    assert_eq!(
        env.depth("RETRY_QUEUE_URL").await,
        4,
        "all still on the queue"
    );

    cluster.start_server();
    let drive = event_source(&env)
        .drain(&retrier, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(drive.succeeded, 4, "{drive:?}");
    let conn = format!(
        "host=127.0.0.1 port={} user=countries password=countries dbname=countries",
        cluster.port
    );
    let (app, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let count: i64 = app
        .query_one("SELECT count(*) FROM \"case\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4);
}

/// A row Postgres refuses, replicated and retried until the redrive policy
/// moved it to the dead-letter queue.
async fn one_poison_record_in_the_dead_letter_queue(env: &TestEnv) {
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    env.load(&rows(&[(2, "ATL")])).await;
    replicate(env).await;
    retry_until_empty(env).await;
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 1);
}

/// The dead-letter queue with a one-second visibility timeout: messages a
/// report run took come back soon for the next run.
fn short_hidden_dlq(env: &TestEnv) -> SqsDeadLetterQueue {
    SqsDeadLetterQueue::new(env.sqs.clone(), env.vars["DEAD_LETTER_QUEUE_URL"].clone())
        .with_visibility_timeout(1)
}

/// Runs the reporter until the messages an earlier run hid are visible again.
async fn run_until_it_sees_messages(
    reporter: &Reporter,
) -> countries_shared::dlq_reporter::ReportSummary {
    let mut report = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    for _ in 0..20 {
        if report.messages > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        report = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    }
    report
}

#[tokio::test]
async fn when_ses_refuses_the_email_the_dead_letters_are_kept_for_the_next_run() {
    let env = TestEnv::new("report_ses_down").await;
    one_poison_record_in_the_dead_letter_queue(&env).await;
    let mut config = env.reporter_config();
    config.sender = "not-verified@example.com".into();
    let mut refusing = dlq_reporter::build(&config).await;
    refusing.dlq = Box::new(short_hidden_dlq(&env));
    let refused = refusing.run(Uuid::new_v4(), &Deadline::none()).await;
    assert!(!refused.emailed, "{refused:?}");
    assert!(
        refused.error.as_deref().unwrap_or("").contains("SES"),
        "{refused:?}"
    );
    assert_eq!(refused.deleted, 0);
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 1, "kept");

    // The next run (with a working sender) reports it once.
    let mut reporter = dlq_reporter::build(&env.reporter_config()).await;
    reporter.dlq = Box::new(short_hidden_dlq(&env));
    let report = run_until_it_sees_messages(&reporter).await;
    assert!(report.emailed && report.deleted == 1, "{report:?}");
    assert_eq!(
        report.stored_new,
        Some(0),
        "already stored by the refused run"
    );
    assert_eq!(env.sent_emails().await.len(), 1);
}

#[tokio::test]
async fn redrive_moves_dead_letters_back_to_the_retry_queue() {
    let env = TestEnv::new("redrive").await;
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    env.load(&rows(&[(2, "ATL"), (3, "ATL")])).await;
    replicate(&env).await;
    retry_until_empty(&env).await;
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 2);

    env.postgres()
        .await
        .batch_execute(DROP_CHECK)
        .await
        .unwrap();
    let out = run_binary("countries", &["redrive"], &env.vars);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("moved 2 messages"), "{stdout}");
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 0);
    let drive = retry_until_empty(&env).await;
    assert_eq!(drive.succeeded, 2, "{drive:?}");
    assert_eq!(env.postgres_rows().await.len(), 2);
    // Nothing left to move.
    let moved = move_messages(
        &env.sqs,
        &env.vars["DEAD_LETTER_QUEUE_URL"],
        &env.vars["RETRY_QUEUE_URL"],
        100,
    )
    .await
    .unwrap()
    .moved;
    assert!(moved.is_empty());
}

#[tokio::test]
async fn the_operator_commands_show_and_replay_the_failure_report() {
    let env = TestEnv::new("operator").await;
    env.postgres().await.batch_execute(CHECK).await.unwrap();
    env.load(&rows(&[(2, "ATL"), (5, "ATL")])).await;
    replicate(&env).await;
    retry_until_empty(&env).await;
    let report = run_binary("countries", &["report"], &env.vars);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );

    let shown = run_binary("countries", &["failures"], &env.vars);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("rejected") && text.contains("23514") && text.contains("\"ATL\""),
        "{text}"
    );

    // Before the fix, replay refuses again and says why (exit code 4).
    let early = run_binary("countries", &["replay"], &env.vars);
    assert_eq!(
        early.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&early.stdout)
    );
    assert!(String::from_utf8_lossy(&early.stdout).contains("no_atlantis"));

    env.postgres()
        .await
        .batch_execute(DROP_CHECK)
        .await
        .unwrap();
    let replay = run_binary("countries", &["replay"], &env.vars);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{text}");
    assert!(text.contains("replayed and resolved: 2"), "{text}");
    let after = run_binary("countries", &["failures"], &env.vars);
    assert!(String::from_utf8_lossy(&after.stdout).contains("no unresolved failures"));
    assert_eq!(env.postgres_rows().await.len(), 2);
}

fn rejected(id: i128, country: &str) -> RetryMessage {
    RetryMessage::first_failure(
        SourceRow::new(Some(id), Some(country)),
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: "was refused".into(),
        },
        Uuid::new_v4(),
        chrono::Utc::now(),
    )
}

/// Hands the retrier one batch, as Lambda's event source mapping would.
async fn deliver(
    retrier: &Retrier,
    messages: &[(&str, &RetryMessage)],
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    for (id, message) in messages {
        let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
        record.message_id = Some(id.to_string());
        record.body = Some(serde_json::to_string(message).unwrap());
        record
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        event.records.push(record);
    }
    countries_shared::lambda::retrier::handle(
        retrier,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .expect("the retrier answers for every batch")
}

#[tokio::test]
async fn reordered_and_repeated_deliveries_end_in_the_same_rows() {
    let a = rejected(1, "chl");
    let b = rejected(2, "PER");
    let c = rejected(-3, " ury");
    let in_order = TestEnv::new("retry_in_order").await;
    let reordered = TestEnv::new("retry_reordered").await;

    let retrier = retrier::build(&in_order.retrier_config()).await;
    let response = deliver(&retrier, &[("a", &a), ("b", &b), ("c", &c)]).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    // The same messages the other way round, split over batches, with a
    // redelivery of each (SQS is at least once and unordered).
    let retrier = retrier::build(&reordered.retrier_config()).await;
    for batch in [
        vec![("c", &c), ("b", &b)],
        vec![("a", &a), ("c", &c)],
        vec![("b", &b), ("a", &a), ("a", &a)],
    ] {
        let response = deliver(&retrier, &batch).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
    }
    let expected = vec![
        (-3, "URY".to_string()),
        (1, "CHL".to_string()),
        (2, "PER".to_string()),
    ];
    assert_eq!(in_order.postgres_rows().await, expected);
    assert_eq!(reordered.postgres_rows().await, expected);
}

#[tokio::test]
async fn when_ses_is_unreachable_the_dead_letters_are_kept_and_reported_later() {
    let env = TestEnv::new("report_ses_gone").await;
    one_poison_record_in_the_dead_letter_queue(&env).await;
    // SES on a port nothing listens on: every attempt of the SDK fails to
    // connect.
    let unreachable_ses = aws_sdk_sesv2::Client::from_conf(
        aws_sdk_sesv2::config::Builder::new()
            .behavior_version(aws_sdk_sesv2::config::BehaviorVersion::latest())
            .region(aws_sdk_sesv2::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", testkit::closed_port()))
            .credentials_provider(aws_sdk_sesv2::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build(),
    );
    let config = env.reporter_config();
    let mut cut_off = dlq_reporter::build(&config).await;
    cut_off.dlq = Box::new(short_hidden_dlq(&env));
    cut_off.mailer = Box::new(countries_ses::SesMailer::new(
        unreachable_ses,
        config.sender.clone(),
        config.recipients.clone(),
    ));
    let failed = cut_off.run(Uuid::new_v4(), &Deadline::none()).await;
    assert!(!failed.emailed, "{failed:?}");
    assert_eq!(failed.stored_new, Some(1), "stored durably first");
    assert_eq!(failed.deleted, 0);
    assert!(failed.error.is_some(), "{failed:?}");
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 1, "kept");
    assert!(env.sent_emails().await.is_empty());

    let mut reporter = dlq_reporter::build(&config).await;
    reporter.dlq = Box::new(short_hidden_dlq(&env));
    let report = run_until_it_sees_messages(&reporter).await;
    assert!(report.emailed && report.deleted == 1, "{report:?}");
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 0);
    assert_eq!(env.sent_emails().await.len(), 1);
    let stored: i64 = env
        .postgres()
        .await
        .query_one("SELECT count(*) FROM failure_report", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "reported once");
}

/// Sends raw bodies straight to a queue (what the redrive policy would
/// have moved there).
async fn send_bodies(env: &TestEnv, queue_var: &str, bodies: &[String]) {
    for body in bodies {
        env.sqs
            .send_message()
            .queue_url(&env.vars[queue_var])
            .message_body(body)
            .send()
            .await
            .expect("sending to the queue");
    }
}

#[tokio::test]
async fn one_unstorable_record_does_not_block_the_failure_report() {
    let env = TestEnv::new("report_nul").await;
    let mut bodies: Vec<String> = (0..23)
        .map(|i| serde_json::to_string(&rejected(i, "ATL")).unwrap())
        .collect();
    // Postgres text cannot hold NUL: this one is stored escaped.
    bodies.push(serde_json::to_string(&rejected(99, "U\u{0}S")).unwrap());
    send_bodies(&env, "DEAD_LETTER_QUEUE_URL", &bodies).await;
    let reporter = dlq_reporter::build(&env.reporter_config()).await;
    let report = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(
        (report.messages, report.stored_escaped, report.deleted),
        (24, 1, 24)
    );
    assert_eq!(
        env.depth("DEAD_LETTER_QUEUE_URL").await,
        0,
        "the queue drains"
    );
    assert_eq!(env.sent_emails().await.len(), 1);
    let row = env
        .postgres()
        .await
        .query_one(
            "SELECT country, raw_body, emailed_at IS NOT NULL FROM failure_report WHERE country_id = 99",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("U\\u{0}S"));
    assert!(row
        .get::<_, Option<String>>(1)
        .unwrap_or_default()
        .contains("\\u0000"));
    assert!(row.get::<_, bool>(2), "marked as emailed");
    // Nothing is left to mail again.
    let again = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    assert_eq!(again.messages, 0);
    assert_eq!(env.sent_emails().await.len(), 1);
}

#[tokio::test]
async fn ids_past_64_bits_keep_every_digit_through_the_retry_path() {
    let env = TestEnv::new("big_ids").await;
    let max = 10i128.pow(38) - 1;
    let bodies: Vec<String> = [max, -max]
        .iter()
        .map(|id| serde_json::to_string(&rejected(*id, "USA")).unwrap())
        .collect();
    send_bodies(&env, "RETRY_QUEUE_URL", &bodies).await;
    // Out of Postgres integer range: invalid every time, so they reach the
    // dead-letter queue as parsed records, not as malformed bodies.
    let drive = retry_until_empty(&env).await;
    assert_eq!(drive.succeeded, 0, "{drive:?}");
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 2);
    let reporter = dlq_reporter::build(&env.reporter_config()).await;
    let report = reporter.run(Uuid::new_v4(), &Deadline::none()).await;
    assert_eq!((report.messages, report.deleted), (2, 2), "{report:?}");
    let stored: Vec<(String, String, String, String)> = env
        .postgres()
        .await
        .query(
            "SELECT country_id::text, error_class, table_name, (row_data->'country_id')::text \
             FROM failure_report ORDER BY country_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    // The row as JSON keeps every digit too, ready for tables other than `case`.
    let row = |id: i128| {
        (
            id.to_string(),
            "rejected".to_string(),
            "case".to_string(),
            id.to_string(),
        )
    };
    assert_eq!(stored, vec![row(-max), row(max)]);
    let email = env.sent_emails().await.join("\n");
    assert!(
        email.contains(&max.to_string()),
        "the email shows every digit"
    );
    let shown = run_binary("countries", &["failures"], &env.vars);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&max.to_string()),
        "{shown:?}"
    );
}

#[tokio::test]
async fn five_versions_of_one_id_in_one_batch_never_reach_the_dead_letter_queue() {
    let env = TestEnv::new("versions").await;
    let bodies: Vec<String> = ["AAA", "BBB", "CCC", "DDD", "EEE"]
        .iter()
        .map(|c| serde_json::to_string(&rejected(7, c)).unwrap())
        .collect();
    send_bodies(&env, "RETRY_QUEUE_URL", &bodies).await;
    // The test queues redrive after 5 receives, as in the template.
    let drive = retry_until_empty(&env).await;
    assert_eq!(
        drive.failed, 0,
        "no version listed because of another: {drive:?}"
    );
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 0);
    let rows = env.postgres_rows().await;
    assert_eq!(rows.len(), 1);
    assert!(["AAA", "BBB", "CCC", "DDD", "EEE"].contains(&rows[0].1.as_str()));
}

#[tokio::test]
async fn a_redrive_that_cannot_move_a_message_keeps_it_and_goes_on() {
    let env = TestEnv::new("redrive_fail").await;
    let bodies: Vec<String> = (0..3)
        .map(|i| serde_json::to_string(&rejected(i, "ATL")).unwrap())
        .collect();
    send_bodies(&env, "DEAD_LETTER_QUEUE_URL", &bodies).await;
    let missing = format!(
        "{}/123456789012/no-such-queue",
        env.vars["AWS_ENDPOINT_URL"]
    );
    let done = move_messages(&env.sqs, &env.vars["DEAD_LETTER_QUEUE_URL"], &missing, 100)
        .await
        .expect("the receives work");
    assert!(done.moved.is_empty());
    assert_eq!(
        done.failed.len(),
        3,
        "each message tried on its own: {done:?}"
    );
    assert!(done.failed.iter().all(|(_, why)| why.contains("not moved")));
    assert_eq!(env.depth("DEAD_LETTER_QUEUE_URL").await, 3, "nothing lost");
}
