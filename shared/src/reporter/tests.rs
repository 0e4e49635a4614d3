use super::*;
use crate::deadline::Deadline;
use crate::model::message::{FailureClass, FailureDetail, RetryMessage};
use crate::model::row::SourceRow;
use crate::reporter::digest::{to_csv, DigestRecord};
use crate::testing::{MemoryDeadLetters, MemoryFailureStore, MemoryMailer};

fn letter(id: &str, body: &str) -> DeadLetter {
    DeadLetter {
        message_id: id.into(),
        receipt_handle: format!("rh-{id}"),
        body: Some(body.into()),
        receive_count: Some(5),
    }
}

fn good_body(id: i128, country: &str) -> String {
    serde_json::to_string(&RetryMessage::first_failure(
        SourceRow::new(Some(id), Some(country)),
        FailureDetail {
            class: FailureClass::Rejected,
            sqlstate: Some("23514".into()),
            message: "violates check constraint \"no_atlantis\"".into(),
        },
        Uuid::nil(),
        Utc::now(),
    ))
    .unwrap()
}

fn reporter(dlq: &MemoryDeadLetters, store: &MemoryFailureStore, mail: &MemoryMailer) -> Reporter {
    Reporter {
        dlq: Box::new(dlq.clone()),
        store: Box::new(store.clone()),
        mailer: Box::new(mail.clone()),
        max_messages: 100,
        email_rows: 2,
        deadline_margin: None,
    }
}

fn fill(dlq: &MemoryDeadLetters) {
    dlq.waiting.lock().unwrap().extend([
        letter("m1", &good_body(1, "ATL")),
        letter("m2", &good_body(2, "ATL")),
        letter("m3", "<script>alert(1)</script> not json"),
    ]);
}

#[tokio::test]
async fn a_report_stores_emails_once_and_then_deletes() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    fill(&dlq);
    let s = reporter(&dlq, &store, &mail)
        .run(Uuid::nil(), &Deadline::none())
        .await;
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
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    let s = reporter(&dlq, &store, &mail)
        .run(Uuid::nil(), &Deadline::none())
        .await;
    assert_eq!(s.messages, 0);
    assert!(mail.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn when_postgres_is_down_the_email_says_so_and_nothing_is_deleted() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    *store.down.lock().unwrap() = true;
    fill(&dlq);
    let s = reporter(&dlq, &store, &mail)
        .run(Uuid::nil(), &Deadline::none())
        .await;
    assert!(
        s.emailed && s.deleted == 0 && s.stored_new.is_none(),
        "{s:?}"
    );
    assert!(dlq.deleted.lock().unwrap().is_empty());
    assert!(mail.sent.lock().unwrap()[0].text.contains("NOT stored"));
}

#[tokio::test]
async fn when_ses_fails_nothing_is_deleted() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    *mail.refuse.lock().unwrap() = true;
    fill(&dlq);
    let s = reporter(&dlq, &store, &mail)
        .run(Uuid::nil(), &Deadline::none())
        .await;
    assert!(!s.emailed && s.deleted == 0, "{s:?}");
    assert!(s.error.unwrap().contains("MessageRejected"));
    assert!(dlq.deleted.lock().unwrap().is_empty());
}

#[test]
fn csv_fields_are_quoted_when_needed() {
    let now = Utc::now();
    let mut entry = FailureEntry::from_dead_letter(&letter("m1", "a,b \"quoted\"\nline"), now);
    entry.country = Some("O'B".into());
    let csv = to_csv(&[DigestRecord {
        entry: &entry,
        copies: 1,
    }]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let record = reader.records().next().unwrap().unwrap();
    assert_eq!(&record[0], "m1");
    assert_eq!(&record[2], "O'B");
    assert_eq!(
        &record[8], "a,b \"quoted\"\nline",
        "the raw body survives quoting"
    );
    assert!(csv.contains("\"a,b \"\"quoted\"\"\nline\""), "{csv}");
}

async fn run(r: &Reporter) -> ReportSummary {
    r.run(Uuid::new_v4(), &Deadline::none()).await
}

fn body_with_country(id: i128, country: &str) -> String {
    good_body(id, country)
}

#[tokio::test]
async fn one_unstorable_record_is_stored_escaped_and_the_others_go_through() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    let mut letters: Vec<DeadLetter> = (0..23)
        .map(|i| letter(&format!("m{i}"), &good_body(i, "ATL")))
        .collect();
    letters.push(letter("nul", &body_with_country(99, "U\0S")));
    dlq.waiting.lock().unwrap().extend(letters);
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!(
        (s.messages, s.stored_new, s.stored_escaped),
        (24, Some(24), 1)
    );
    assert_eq!(s.deleted, 24, "the queue drains");
    assert_eq!(mail.sent.lock().unwrap().len(), 1);
    let escaped = store.rows.lock().unwrap()["nul"].clone();
    assert_eq!(escaped.country.as_deref(), Some("U\\u{0}S"));
    assert!(
        escaped.raw_body.as_deref().unwrap_or("").contains("99"),
        "the body is kept"
    );
    let again = run(&reporter(&dlq, &store, &mail)).await;
    assert_eq!(again.messages, 0);
    assert_eq!(mail.sent.lock().unwrap().len(), 1, "no second email");
}

#[tokio::test]
async fn a_message_received_twice_is_deleted_with_its_newest_receipt_handle() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    let mut again = letter("m1", &good_body(1, "ATL"));
    again.receipt_handle = "rh-m1-newer".into();
    dlq.waiting
        .lock()
        .unwrap()
        .extend([letter("m1", &good_body(1, "ATL")), again]);
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert_eq!((s.messages, s.deleted), (1, 1));
    assert_eq!(*dlq.deleted_handles.lock().unwrap(), vec!["rh-m1-newer"]);
}

#[tokio::test]
async fn a_partly_failed_delete_counts_what_was_deleted_and_the_rest_is_not_emailed_again() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    fill(&dlq);
    *dlq.deletes_before_failure.lock().unwrap() = Some(1);
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert_eq!(s.deleted, 1, "{s:?}");
    assert!(
        s.error.as_deref().unwrap_or("").contains("1 of 3 deleted"),
        "{s:?}"
    );
    assert_eq!(mail.sent.lock().unwrap().len(), 1);
    // The two that were not deleted come back: stored already, emailed
    // already, so they are deleted without a second email.
    let not_deleted: Vec<DeadLetter> = ["m2", "m3"]
        .iter()
        .map(|id| {
            let body = if *id == "m2" {
                good_body(2, "ATL")
            } else {
                "<script>alert(1)</script> not json".into()
            };
            letter(id, &body)
        })
        .collect();
    dlq.waiting.lock().unwrap().extend(not_deleted);
    *dlq.deletes_before_failure.lock().unwrap() = None;
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!((s.messages, s.emailed_records, s.deleted), (2, 0, 2));
    assert_eq!(
        mail.sent.lock().unwrap().len(),
        1,
        "each dead letter is emailed once"
    );
}

#[tokio::test]
async fn an_outage_is_announced_once_and_the_report_is_stored_when_postgres_is_back() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    *store.down.lock().unwrap() = true;
    for _ in 0..3 {
        fill(&dlq);
        let s = run(&reporter(&dlq, &store, &mail)).await;
        assert!(
            s.error.as_deref().unwrap_or("").contains("not stored"),
            "{s:?}"
        );
        assert_eq!(s.deleted, 0);
        dlq.waiting.lock().unwrap().clear();
    }
    let sent = mail.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one NOT-stored email for the whole outage");
    assert!(sent[0].text.contains("NOT stored"));
    assert!(dlq.outage_announced.lock().unwrap().is_some());

    *store.down.lock().unwrap() = false;
    fill(&dlq);
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!((s.stored_new, s.deleted), (Some(3), 3));
    assert_eq!(
        mail.sent.lock().unwrap().len(),
        2,
        "the stored report is mailed"
    );
    assert!(
        dlq.outage_announced.lock().unwrap().is_none(),
        "the outage is over"
    );
}

#[tokio::test]
async fn the_digest_lists_each_record_key_once_and_counts_the_copies() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    dlq.waiting.lock().unwrap().extend([
        letter("m1", &good_body(1, "ATL")),
        letter("m1-again", &good_body(1, "ATL")),
        letter("m2", &good_body(2, "ATL")),
    ]);
    let s = run(&reporter(&dlq, &store, &mail)).await;
    assert_eq!((s.messages, s.stored_new, s.deleted), (3, Some(3), 3));
    let sent = mail.sent.lock().unwrap();
    let d = &sent[0];
    assert!(
        d.subject.contains("2 failed records need attention"),
        "{}",
        d.subject
    );
    assert_eq!(d.text.matches("ATL").count(), 2, "{}", d.text);
    assert!(d.text.contains("×2 dead letters"), "{}", d.text);
}

#[tokio::test]
async fn one_record_reads_as_one_record_in_the_subject() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    dlq.waiting
        .lock()
        .unwrap()
        .push(letter("m1", &good_body(1, "ATL")));
    run(&reporter(&dlq, &store, &mail)).await;
    let subject = mail.sent.lock().unwrap()[0].subject.clone();
    assert!(
        subject.contains("1 failed record needs attention"),
        "{subject}"
    );
}

#[tokio::test]
async fn ids_past_64_bits_reach_the_report_and_the_email_with_every_digit() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    let max = 10i128.pow(38) - 1;
    dlq.waiting.lock().unwrap().extend([
        letter("big", &good_body(max, "USA")),
        letter("small", &good_body(-max, "USA")),
    ]);
    run(&reporter(&dlq, &store, &mail)).await;
    let rows = store.rows.lock().unwrap();
    assert_eq!(rows["big"].country_id, Some(max));
    assert_eq!(rows["small"].country_id, Some(-max));
    let text = mail.sent.lock().unwrap()[0].text.clone();
    assert!(
        text.contains(&max.to_string()) && text.contains(&(-max).to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn near_the_deadline_no_dead_letter_is_taken() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    fill(&dlq);
    let near = Deadline::after(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(5),
    );
    let s = reporter(&dlq, &store, &mail).run(Uuid::nil(), &near).await;
    assert_eq!(s.messages, 0);
    assert_eq!(
        dlq.waiting.lock().unwrap().len(),
        3,
        "left for the next run"
    );
    assert!(mail.sent.lock().unwrap().is_empty());
}
