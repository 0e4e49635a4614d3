use super::*;
use crate::deadline::Deadline;
use crate::dlq_reporter::digest::{to_csv, DigestRecord};
use crate::model::message::{FailureClass, FailureDetail, RetryMessage};
use crate::model::row::SourceRow;
use crate::testing::{MemoryDeadLetters, MemoryFailureStore, MemoryMailer};

fn letter(id: &str, body: &str) -> DeadLetter {
    DeadLetter {
        message_id: id.into(),
        receipt_handle: format!("rh-{id}"),
        body: Some(body.into()),
        receive_count: Some(5),
        attributes: Default::default(),
        queue: Default::default(),
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
        changes_dlq: None,
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

#[test]
fn csv_cells_a_spreadsheet_would_run_are_neutralised() {
    let now = Utc::now();
    for (payload, shown) in [
        (
            "=HYPERLINK(\"http://x\",\"y\")",
            "'=HYPERLINK(\"http://x\",\"y\")",
        ),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tTAB", "'\tTAB"),
        ("\rCR", "'\rCR"),
        ("USA", "USA"),
    ] {
        let mut entry = FailureEntry::from_dead_letter(&letter("m1", payload), now);
        entry.country = Some(payload.into());
        entry.country_id = Some(-5);
        let csv = to_csv(&[DigestRecord {
            entry: &entry,
            copies: 1,
        }]);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[2], shown, "country {payload:?}");
        assert_eq!(&record[8], shown, "raw body {payload:?}");
        assert_eq!(&record[1], "-5", "our own numbers stay numbers");
    }
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
    dlq.expire();
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
    fill(&dlq);
    for _ in 0..3 {
        let s = run(&reporter(&dlq, &store, &mail)).await;
        assert!(
            s.error.as_deref().unwrap_or("").contains("not stored"),
            "{s:?}"
        );
        assert_eq!((s.messages, s.deleted), (3, 0));
        dlq.expire();
    }
    let sent = mail.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one NOT-stored email for the whole outage");
    assert!(sent[0].text.contains("NOT stored"));
    assert!(dlq.outage_announced.lock().unwrap().is_some());

    *store.down.lock().unwrap() = false;
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

/// Property tests: random dead letters (good, unstorable, malformed) and
/// random faults over several runs.
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Fault {
        None,
        StoreDown,
        /// SES refuses after the report was stored.
        MailRefuses,
        DeleteFailsAfter(usize),
        DeliverTwice,
        DeadlineNear,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            2 => Just(Fault::None),
            1 => Just(Fault::StoreDown),
            1 => Just(Fault::MailRefuses),
            1 => (0usize..6).prop_map(Fault::DeleteFailsAfter),
            1 => Just(Fault::DeliverTwice),
            1 => Just(Fault::DeadlineNear),
        ]
    }

    /// A body of each kind; `id` is unique per letter.
    fn body(id: i128, kind: u8) -> String {
        match kind {
            0 => good_body(id, "ATL"),
            1 => good_body(id, "U\0S"),
            _ => format!("not json {id} \u{0}"),
        }
    }

    struct World {
        dlq: MemoryDeadLetters,
        store: MemoryFailureStore,
        mail: MemoryMailer,
    }

    impl World {
        fn apply(&self, fault: &Fault) {
            match fault {
                Fault::StoreDown => *self.store.down.lock().unwrap() = true,
                Fault::MailRefuses => *self.mail.refuse.lock().unwrap() = true,
                Fault::DeleteFailsAfter(n) => {
                    *self.dlq.deletes_before_failure.lock().unwrap() = Some(*n)
                }
                Fault::DeliverTwice => *self.dlq.deliver_twice.lock().unwrap() = true,
                Fault::None | Fault::DeadlineNear => {}
            }
        }

        fn heal(&self) {
            *self.store.down.lock().unwrap() = false;
            *self.mail.refuse.lock().unwrap() = false;
            *self.dlq.deletes_before_failure.lock().unwrap() = None;
            *self.dlq.deliver_twice.lock().unwrap() = false;
            // The visibility timeout passes between runs.
            self.dlq.expire();
        }

        async fn run(&self, fault: &Fault) -> ReportSummary {
            self.apply(fault);
            let r = Reporter {
                dlq: Box::new(self.dlq.clone()),
                changes_dlq: None,
                store: Box::new(self.store.clone()),
                mailer: Box::new(self.mail.clone()),
                max_messages: 7,
                email_rows: 1_000,
                deadline_margin: None,
            };
            let deadline = match fault {
                Fault::DeadlineNear => {
                    Deadline::after(std::time::Duration::ZERO, std::time::Duration::from_secs(1))
                }
                _ => Deadline::none(),
            };
            let summary = r.run(Uuid::new_v4(), &deadline).await;
            self.heal();
            summary
        }

        /// Every letter is still in the queue or stored in the report.
        fn assert_nothing_lost(&self, ids: &[String]) {
            let queued = self.dlq.message_ids();
            let stored = self.store.rows.lock().unwrap();
            for id in ids {
                assert!(
                    queued.contains(id) || stored.contains_key(id),
                    "dead letter {id} lost"
                );
            }
        }

        /// How many digests that announce a stored report list the record
        /// with this country id.
        fn announcements(&self, country_id: i128) -> usize {
            let needle = format!("\n  {country_id:<12} ");
            self.mail
                .sent
                .lock()
                .unwrap()
                .iter()
                .filter(|d| !d.text.contains("NOT stored") && d.text.contains(&needle))
                .count()
        }
    }

    proptest! {
        /// Whatever the dead letters and the faults: no letter is lost (it
        /// is in the queue or in the report after every run); once healed,
        /// the queue drains and every letter is stored; no record is
        /// announced in two digests; at most one NOT-stored email per outage.
        #[test]
        fn no_fault_loses_a_dead_letter_or_emails_a_record_twice(
            kinds in prop::collection::vec(0u8..3, 0..16),
            faults in prop::collection::vec(fault(), 1..5),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let world = World {
                    dlq: MemoryDeadLetters::default(),
                    store: MemoryFailureStore::default(),
                    mail: MemoryMailer::default(),
                };
                let ids: Vec<String> = (0..kinds.len()).map(|i| format!("m{i}")).collect();
                world.dlq.waiting.lock().unwrap().extend(
                    kinds.iter().enumerate().map(|(i, kind)| {
                        letter(&ids[i], &body(1_000 + i as i128, *kind))
                    }),
                );
                let mut outage_emails = 0;
                let mut in_outage = false;
                for fault in &faults {
                    let before = world.mail.sent.lock().unwrap().len();
                    let summary = world.run(fault).await;
                    let sent = &world.mail.sent.lock().unwrap()[before..].to_vec();
                    let down = matches!(fault, Fault::StoreDown);
                    if down && !in_outage {
                        outage_emails = 0;
                    }
                    in_outage = down || (in_outage && summary.messages == 0);
                    outage_emails += sent.iter().filter(|d| d.text.contains("NOT stored")).count();
                    assert!(outage_emails <= 1, "two NOT-stored emails in one outage");
                    world.assert_nothing_lost(&ids);
                }
                let mut runs = 0;
                while !world.dlq.message_ids().is_empty() {
                    runs += 1;
                    assert!(runs <= kinds.len() + 2, "the dead-letter queue does not drain");
                    let summary = world.run(&Fault::None).await;
                    assert!(summary.error.is_none(), "{summary:?}");
                    world.assert_nothing_lost(&ids);
                }
                let stored = world.store.rows.lock().unwrap().clone();
                assert_eq!(stored.len(), ids.len(), "every letter is stored once healed");
                for (i, kind) in kinds.iter().enumerate() {
                    if *kind == 0 {
                        let id = 1_000 + i as i128;
                        assert!(world.announcements(id) <= 1, "record {id} announced twice");
                    }
                }
            });
        }
    }
}

#[tokio::test]
async fn an_announcement_a_day_old_is_made_again() {
    let (dlq, store, mail) = (
        MemoryDeadLetters::default(),
        MemoryFailureStore::default(),
        MemoryMailer::default(),
    );
    *store.down.lock().unwrap() = true;
    // Left behind by an outage whose queue emptied before Postgres was back.
    *dlq.outage_announced.lock().unwrap() = Some(Utc::now() - chrono::Duration::hours(25));
    fill(&dlq);
    run(&reporter(&dlq, &store, &mail)).await;
    assert_eq!(
        mail.sent.lock().unwrap().len(),
        1,
        "the new outage is announced"
    );
}

/// The retry queue's dead letters, the changes queue's, the report, the mail.
type Queues = (
    MemoryDeadLetters,
    MemoryDeadLetters,
    MemoryFailureStore,
    MemoryMailer,
);

/// A reporter reading the changes dead-letter queue too.
fn both_queues(
    dlq: &MemoryDeadLetters,
    changes: &MemoryDeadLetters,
    store: &MemoryFailureStore,
    mail: &MemoryMailer,
) -> Reporter {
    let mut r = reporter(dlq, store, mail);
    r.changes_dlq = Some(Box::new(changes.clone()));
    r
}

fn changes_letter(id: &str, body: &str, error: Option<&str>) -> DeadLetter {
    let mut l = letter(id, body);
    if let Some(error) = error {
        l.attributes.insert(
            crate::model::change::parked_attribute::ERROR.into(),
            error.into(),
        );
        l.attributes.insert(
            crate::model::change::parked_attribute::RECEIVE_COUNT.into(),
            "50".into(),
        );
    }
    l
}

fn changes_body(run: Uuid, spec: &[(i32, &str)]) -> String {
    let rows: Vec<_> = spec
        .iter()
        .map(|(id, c)| {
            crate::model::row::validate(&SourceRow::new(Some(i128::from(*id)), Some(c))).unwrap()
        })
        .collect();
    let batches =
        crate::model::change::pack(run, &rows, crate::model::change::Groups::by_id(1), 256_000);
    serde_json::to_string(&batches[0]).unwrap()
}

#[tokio::test]
async fn a_parked_batch_is_a_record_per_row_with_its_error_and_leaves_its_own_queue() {
    let (dlq, changes, store, mail): Queues = Default::default();
    let run = Uuid::new_v4();
    dlq.waiting
        .lock()
        .unwrap()
        .push(letter("r1", &good_body(9, "ATL")));
    changes.waiting.lock().unwrap().extend([
        changes_letter(
            "c1",
            &changes_body(run, &[(1, "USA"), (2, "FRA")]),
            Some("Postgres unavailable: connection refused"),
        ),
        // Moved by the redrive policy: no error recorded.
        changes_letter("c2", &changes_body(run, &[(3, "DEU")]), None),
        changes_letter("c3", "{not a batch", Some("the body is not a batch")),
    ]);
    let r = both_queues(&dlq, &changes, &store, &mail);
    let s = r.run(Uuid::nil(), &Deadline::none()).await;
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!((s.messages, s.stored_new, s.deleted), (4, Some(5), 4));
    let rows = store.rows.lock().unwrap().clone();
    let keys: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["c1:0", "c1:1", "c2:0", "c3", "r1"]);
    let first = &rows["c1:0"];
    assert_eq!(
        (
            first.country_id,
            first.country.as_deref(),
            first.source_run_id
        ),
        (Some(1), Some("USA"), Some(run))
    );
    assert_eq!(
        first.error_message,
        "Postgres unavailable: connection refused"
    );
    assert_eq!(first.attempts, Some(50));
    assert_eq!(first.change.map(|c| (c.buckets, c.bucket)), Some((1, 0)));
    assert!(
        rows["c2:0"].error_message.contains("redrive policy"),
        "{}",
        rows["c2:0"].error_message
    );
    assert_eq!(rows["c3"].error_class, "malformed");
    assert!(rows["c3"].raw_body.is_some());
    // Each letter is deleted from the queue it came from.
    assert_eq!(*dlq.deleted.lock().unwrap(), vec!["r1"]);
    assert_eq!(*changes.deleted.lock().unwrap(), vec!["c1", "c2", "c3"]);
    assert_eq!(
        mail.sent.lock().unwrap().len(),
        1,
        "one digest for both queues"
    );
}

#[tokio::test]
async fn the_largest_parked_batches_keep_one_email_within_its_bound() {
    let (dlq, changes, store, mail): Queues = Default::default();
    // Batches as full as the publisher makes them (about 20,000 rows).
    let run = Uuid::new_v4();
    for b in 0..4 {
        let spec: Vec<(i32, String)> = (0..20_000)
            .map(|i| (b * 1_000_000 + i, "USA".to_string()))
            .collect();
        let spec: Vec<(i32, &str)> = spec.iter().map(|(i, c)| (*i, c.as_str())).collect();
        let body = changes_body(run, &spec);
        assert!(body.len() < crate::model::change::MAX_CHANGE_BYTES);
        changes.waiting.lock().unwrap().push(changes_letter(
            &format!("c{b}"),
            &body,
            Some(&"a long error ".repeat(100)),
        ));
    }
    let r = both_queues(&dlq, &changes, &store, &mail);
    let s = r.run(Uuid::nil(), &Deadline::none()).await;
    assert!(s.messages >= 1 && s.left_for_next_run >= 1, "{s:?}");
    let sent = mail.sent.lock().unwrap();
    let d = &sent[0];
    let size = d.text.len() + d.html.len() + d.csv.as_ref().map_or(0, String::len);
    assert!(size <= MAX_EMAIL_RECORD_BYTES, "{size} bytes");
    // What did not fit stays in its queue, for the next run.
    assert_eq!(changes.deleted.lock().unwrap().len(), s.messages);
}
