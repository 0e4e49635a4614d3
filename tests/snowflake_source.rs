//! The Snowflake source through `snowflake-api` against the fakesnow emulator.

use countries_shared::deadline::Deadline;
use countries_shared::failure::Classify;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::{collect_rows, IdMatch, RowSource, Snapshot};
use testkit::TestEnv;
use uuid::Uuid;

fn sorted(mut rows: Vec<SourceRow>) -> Vec<SourceRow> {
    rows.sort_by(|a, b| (a.country_id, &a.country).cmp(&(b.country_id, &b.country)));
    rows
}

/// Reads a whole snapshot, `page` rows at a time, as the replicator does.
async fn read_all(snapshot: &dyn Snapshot, page: u64) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    let mut first = 1;
    loop {
        let got = collect_rows(snapshot.read(first..=first + page - 1).await.unwrap()).unwrap();
        let n = got.len() as u64;
        rows.extend(got);
        if n < page {
            return rows;
        }
        first += page;
    }
}

#[tokio::test]
async fn a_snapshot_hands_out_rows_exactly_as_stored_in_id_order_a_page_at_a_time() {
    let env = TestEnv::new("sf_read").await;
    let input = vec![
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some(" fra ")),
        SourceRow::new(Some(3), Some("O'B")),
        SourceRow::new(Some(4), Some("a\\b")),
        SourceRow::new(Some(5), None),
        SourceRow::new(None, Some("IND")),
        SourceRow::new(Some(-2_147_483_648), Some("MIN")),
        SourceRow::new(Some(99_999_999_999), Some("BIG")),
    ];
    env.load(&input).await;
    let source = env.source();
    assert_eq!(source.count_rows(None, &Deadline::none()).await.unwrap(), 8);
    let snapshot = source
        .snapshot(Uuid::new_v4(), 100, &Deadline::none())
        .await
        .unwrap();
    // Pages of 3: numbers 1..=3, 4..=6, 7..=9 (short: the end).
    let read = read_all(&*snapshot, 3).await;
    let mut expected = input.clone();
    expected.sort_by(|a, b| {
        (a.country_id.is_none(), a.country_id).cmp(&(b.country_id.is_none(), b.country_id))
    });
    assert_eq!(read, expected, "id order, NULL ids last");
    snapshot.drop_snapshot().await.unwrap();
}

#[tokio::test]
async fn the_snapshot_takes_the_lowest_ids_up_to_the_cap_and_freezes_them() {
    let env = TestEnv::new("sf_cap").await;
    let input: Vec<SourceRow> = (0..50)
        .rev()
        .map(|i| SourceRow::new(Some(i), Some("NOR")))
        .collect();
    env.load(&input).await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 20, &Deadline::none())
        .await
        .unwrap();
    // Rows that arrive after the snapshot are not in it.
    env.load(&[SourceRow::new(Some(-1), Some("NEW"))]).await;
    let read = read_all(&*snapshot, 7).await;
    let ids: Vec<i128> = read.iter().filter_map(|r| r.country_id).collect();
    assert_eq!(ids, (0..20).collect::<Vec<i128>>());
    assert_eq!(
        source.count_rows(None, &Deadline::none()).await.unwrap(),
        51
    );
}

#[tokio::test]
async fn an_empty_table_counts_zero() {
    let env = TestEnv::new("sf_empty").await;
    let source = env.source();
    let before = source.statements_sent();
    assert_eq!(source.count_rows(None, &Deadline::none()).await.unwrap(), 0);
    assert_eq!(source.statements_sent() - before, 1);
}

#[tokio::test]
async fn the_join_delete_removes_exactly_the_safe_ranges_and_spares_a_newer_version() {
    let env = TestEnv::new("sf_delete").await;
    let read_earlier = vec![
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("O'B")),
        SourceRow::new(Some(3), Some("a\\b")),
        SourceRow::new(Some(4), None),
        SourceRow::new(Some(5), Some("KEP")),
        SourceRow::new(None, Some("IND")),
        SourceRow::new(None, None),
    ];
    env.load(&read_earlier).await;
    let source = env.source();
    let snapshot = source
        .snapshot(Uuid::new_v4(), 100, &Deadline::none())
        .await
        .unwrap();
    // A newer version of id 1 arrives after the snapshot, and an unrelated row.
    let newer = vec![
        SourceRow::new(Some(1), Some("CAN")),
        SourceRow::new(Some(9), Some("MEX")),
    ];
    env.load(&newer).await;

    // Numbers 1..=7 in id order: 5 (KEP) is not safe and stays.
    let safe = [1..=4, 6..=7];
    let deleted = snapshot.delete(&safe, IdMatch::Equal).await.unwrap();
    assert_eq!(deleted, 4, "ids 1-4, NULL country included");
    let deleted = snapshot.delete(&safe, IdMatch::BothNull).await.unwrap();
    assert_eq!(deleted, 2, "the NULL-id rows, NULL country included");
    let mut left = newer.clone();
    left.push(SourceRow::new(Some(5), Some("KEP")));
    assert_eq!(env.snowflake_rows().await, sorted(left));
    assert_eq!(
        snapshot.delete(&safe, IdMatch::Equal).await.unwrap(),
        0,
        "safe to run twice"
    );
    snapshot.drop_snapshot().await.unwrap();
    snapshot.drop_snapshot().await.unwrap();
    let gone = snapshot
        .read(1..=10)
        .await
        .err()
        .expect("the snapshot is gone");
    assert!(!gone.is_transient(), "{gone}");
}

#[tokio::test]
async fn an_unreachable_emulator_is_a_transient_error() {
    let env = TestEnv::new("sf_down").await;
    let port = testkit::closed_port();
    let config = env.config_with(&[(
        "SNOWFLAKE_ENDPOINT_URL",
        &format!("http://127.0.0.1:{port}"),
    )]);
    let source = countries_snowflake::SnowflakeSource::connect(&config.snowflake, "test").unwrap();
    let err = source
        .count_rows(None, &Deadline::none())
        .await
        .expect_err("unreachable");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn a_missing_table_is_refused_not_transient() {
    let env = TestEnv::new("sf_missing").await;
    let config = env.config_with(&[("SNOWFLAKE_TABLE", "no_such_table")]);
    let source = countries_snowflake::SnowflakeSource::connect(&config.snowflake, "test").unwrap();
    let err = source
        .count_rows(None, &Deadline::none())
        .await
        .expect_err("refused");
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("no_such_table"),
        "{err}"
    );
}
