//! Stream mode's dead letters, end to end on the real services: a batch the
//! writer cannot write on its last receive is parked in the changes
//! dead-letter queue (moto) with its error; the dlq-reporter stores a record
//! per row in the failure report (Postgres) and emails the digest (moto
//! SES); `countries replay` writes them, except a row a later batch of its
//! message group has written over since.

use std::time::Duration;

use countries_ops::event_source::LocalEventSource;
use countries_ops::failures::{bucket_sql, FailureReport};
use countries_postgres::mapped_rows::PgMappedRows;
use countries_postgres::sink::pool::PostgresStore;
use countries_shared::deadline::Deadline;
use countries_shared::model::change::{pack, ChangeBatch, Groups, MAX_CHANGE_BYTES};
use countries_shared::model::row::{validate, CountryRow, SourceRow};
use countries_shared::ports::ChangeQueue;
use countries_sqs::changes_queue::SqsChangesQueue;
use testkit::TestEnv;
use uuid::Uuid;

const BUCKETS: Groups = Groups::by_id(4);

fn rows(spec: &[(i32, &str)]) -> Vec<CountryRow> {
    spec.iter()
        .map(|(id, c)| validate(&SourceRow::new(Some(i128::from(*id)), Some(c))).expect("valid"))
        .collect()
}

async fn publish(env: &TestEnv, batches: &[ChangeBatch]) {
    let queue = SqsChangesQueue::new(env.sqs.clone(), env.vars["CHANGES_QUEUE_URL"].clone());
    for result in queue.publish(batches).await {
        result.expect("the changes queue takes the batch");
    }
}

fn changes_source(env: &TestEnv) -> LocalEventSource {
    LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["CHANGES_QUEUE_URL"].clone(),
        batch_size: 10,
    }
}

#[tokio::test]
async fn a_batch_that_keeps_failing_is_reported_row_by_row_and_replayed_unless_overtaken() {
    let mut env = TestEnv::new("stream_dlq").await;
    // Visible again after a second; the second receive is the last.
    env.add_changes_queue(1, 2).await;
    let pg = env.postgres().await;
    pg.execute(r#"INSERT INTO "case" VALUES (9, 'DEU')"#, &[])
        .await
        .expect("an older version of id 9");

    // One run, packed by id: bucket 0 holds ids 4 and 12, bucket 1 ids 9 and 17.
    let run = Uuid::new_v4();
    let first = pack(
        run,
        &rows(&[(4, "USA"), (12, "NLD"), (9, "FRA"), (17, "ESP")]),
        BUCKETS,
        MAX_CHANGE_BYTES,
    );
    assert_eq!(first.len(), 2);
    publish(&env, &first).await;

    // Postgres unreachable for the writer: both batches come back once,
    // then are parked with the error on their last receive.
    let mut down = env.writer_config();
    down.postgres.port = testkit::closed_port();
    down.postgres.connect_timeout = Duration::from_secs(2);
    let writer = writer::build(&down).await;
    let drove = changes_source(&env)
        .drain(&writer, Duration::from_secs(60))
        .await
        .expect("the changes queue empties");
    assert_eq!(
        drove.failed, 2,
        "listed once before the last receive: {drove:?}"
    );
    assert_eq!(env.depth("CHANGES_QUEUE_URL").await, 0);
    assert_eq!(env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await, 2);

    // Meanwhile a later batch of bucket 0 (the same run, numbered on) brings
    // a newer version of id 12, and Postgres is back.
    let mut later = pack(run, &rows(&[(12, "BEL")]), BUCKETS, MAX_CHANGE_BYTES);
    later[0].seq = 2;
    publish(&env, &later).await;
    // And a later run, packed by blocks of 8 ids (after a change of
    // CHANGE_BLOCK_IDS), brings a newer version of id 17 in another group
    // (bucket 2 of blocks of 8); 17's own group went no further.
    let blocks = Groups {
        buckets: BUCKETS.buckets,
        block: 8,
    };
    let other_packing = pack(
        Uuid::new_v4(),
        &rows(&[(17, "ITA")]),
        blocks,
        MAX_CHANGE_BYTES,
    );
    assert_ne!(other_packing[0].bucket, BUCKETS.bucket_of(17));
    publish(&env, &other_packing).await;
    let writer = writer::build(&env.writer_config()).await;
    changes_source(&env)
        .drain(&writer, Duration::from_secs(60))
        .await
        .expect("the changes queue empties");

    // The report: one record per row, with the writer's error.
    let report = dlq_reporter::build(&env.reporter_config())
        .await
        .run(Uuid::new_v4(), &Deadline::none())
        .await;
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(
        (report.messages, report.stored_new, report.deleted),
        (2, Some(4), 2)
    );
    assert_eq!(env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await, 0);
    let failures = FailureReport::new(env.config().postgres)
        .unresolved(100)
        .await
        .expect("the report");
    assert_eq!(failures.len(), 4, "{failures:?}");
    for f in &failures {
        assert!(
            f.error_message.contains("Postgres unavailable"),
            "{}",
            f.error_message
        );
        assert_eq!(f.source_run_id, Some(run));
        assert!(f.message_id.contains(':'), "{}", f.message_id);
    }
    let emails = env.sent_emails().await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0].contains("NLD"), "the digest lists the rows");

    // Replay: 4 (Postgres has none) and 9 (its group went no further than
    // its batch: DEU is older) are written; 12 is not, BEL came later; nor
    // is 17, though ITA came in a group of another packing.
    let replay = FailureReport::new(env.config().postgres)
        .replay(
            &PostgresStore::new(env.config().postgres),
            &PgMappedRows::new(env.config().postgres, Vec::new()),
            None,
        )
        .await
        .expect("replay");
    let id_of = |message_id: &str| {
        failures
            .iter()
            .find(|f| f.message_id == message_id)
            .and_then(|f| f.country_id.clone())
            .unwrap_or_default()
    };
    let mut replayed: Vec<String> = replay.replayed.iter().map(|m| id_of(m)).collect();
    replayed.sort();
    assert_eq!(replayed, vec!["4", "9"], "{replay:?}");
    let mut refused: Vec<(String, &String)> = replay
        .not_replayed
        .iter()
        .map(|(m, why)| (id_of(m), why))
        .collect();
    refused.sort();
    assert_eq!(refused.len(), 2, "{replay:?}");
    assert_eq!(refused[0].0, "12");
    assert!(
        refused[0].1.contains("later batch") && refused[0].1.contains("\"BEL\""),
        "{}",
        refused[0].1
    );
    assert_eq!(refused[1].0, "17");
    assert!(
        refused[1].1.contains("\"ITA\"") && refused[1].1.contains("blocks of 8"),
        "{}",
        refused[1].1
    );
    assert_eq!(
        env.postgres_rows().await,
        vec![
            (4, "USA".to_string()),
            (9, "FRA".to_string()),
            (12, "BEL".to_string()),
            (17, "ITA".to_string())
        ]
    );
    // The refused row stays unresolved, for `countries resolve`.
    let left = FailureReport::new(env.config().postgres)
        .unresolved(100)
        .await
        .expect("the report");
    assert_eq!(left.len(), 2);
}

/// `countries replay` finds a row's group in every packing with SQL that
/// must agree with the writer's `Groups::bucket_of`: negative ids (rounded
/// towards minus infinity) and the extremes included.
#[tokio::test]
async fn the_replay_bucket_sql_agrees_with_the_packing() {
    let env = TestEnv::new("bucket_sql").await;
    let pg = env.postgres().await;
    let statement = pg
        .prepare(&format!(
            "SELECT {}",
            bucket_sql("$1::int8", "$2::int4", "$3::int4")
        ))
        .await
        .expect("prepare");
    let ids = [
        i32::MIN,
        i32::MIN + 1,
        -65_537,
        -65_536,
        -65_535,
        -9,
        -8,
        -1,
        0,
        1,
        7,
        8,
        65_535,
        65_536,
        i32::MAX,
    ];
    for id in ids {
        for block in [1u32, 8, 65_536, 1 << 20] {
            for buckets in [1u32, 3, 4, 16, 10_000] {
                let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&i64::from(id), &(block as i32), &(buckets as i32)];
                let got: i64 = pg
                    .query_one(&statement, &args)
                    .await
                    .expect("the bucket")
                    .get(0);
                assert_eq!(
                    got,
                    i64::from(Groups { buckets, block }.bucket_of(id)),
                    "id {id}, blocks of {block}, {buckets} buckets"
                );
            }
        }
    }
}
