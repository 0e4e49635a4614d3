use super::*;
use crate::model::message::{FailureClass, FailureDetail, RetryMessage};
use crate::model::row::SourceRow;
use crate::reporter::digest::to_csv;
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
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
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
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    *mail.refuse.lock().unwrap() = true;
    fill(&dlq);
    let s = reporter(&dlq, &store, &mail).run(Uuid::nil()).await;
    assert!(!s.emailed && s.deleted == 0, "{s:?}");
    assert!(s.error.unwrap().contains("MessageRejected"));
    assert!(dlq.deleted.lock().unwrap().is_empty());
}

#[test]
fn csv_fields_are_quoted_when_needed() {
    let now = Utc::now();
    let mut entry = FailureEntry::from_dead_letter(&letter("m1", "a,b \"quoted\"\nline"), now);
    entry.country = Some("O'B".into());
    let csv = to_csv(&[entry]);
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
