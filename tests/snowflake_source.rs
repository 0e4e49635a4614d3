//! The Snowflake source through `snowflake-api` against the fakesnow emulator.

use countries_shared::failure::Classify;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::collect_rows;
use countries_shared::ports::RowSource;
use testkit::TestEnv;

fn sorted(mut rows: Vec<SourceRow>) -> Vec<SourceRow> {
    rows.sort_by(|a, b| (a.country_id, &a.country).cmp(&(b.country_id, &b.country)));
    rows
}

#[tokio::test]
async fn rows_come_back_exactly_as_stored_including_nasty_text_and_nulls() {
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
    let read = collect_rows(env.source().read_batch(100).await.unwrap()).unwrap();
    assert_eq!(sorted(read), sorted(input));
}

#[tokio::test]
async fn the_read_respects_the_cap() {
    let env = TestEnv::new("sf_cap").await;
    let input: Vec<SourceRow> = (0..50)
        .map(|i| SourceRow::new(Some(i), Some("NOR")))
        .collect();
    env.load(&input).await;
    assert_eq!(env.source().read_batch(20).await.unwrap().remaining(), 20);
    assert_eq!(env.source().read_batch(0).await.unwrap().remaining(), 0);
}

#[tokio::test]
async fn an_empty_table_reads_as_no_rows() {
    let env = TestEnv::new("sf_empty").await;
    assert_eq!(env.source().read_batch(10).await.unwrap().remaining(), 0);
}

#[tokio::test]
async fn delete_removes_exactly_the_given_rows_and_spares_a_newer_version() {
    let env = TestEnv::new("sf_delete").await;
    let read_earlier = vec![
        SourceRow::new(Some(1), Some("USA")),
        SourceRow::new(Some(2), Some("O'B")),
        SourceRow::new(Some(3), Some("a\\b")),
        SourceRow::new(Some(4), None),
        SourceRow::new(None, Some("IND")),
    ];
    env.load(&read_earlier).await;
    // A newer version of id 1 arrives after the read, and an unrelated row.
    let newer = vec![
        SourceRow::new(Some(1), Some("CAN")),
        SourceRow::new(Some(9), Some("MEX")),
    ];
    env.load(&newer).await;

    let deleted = env.source().delete_rows(&read_earlier).await.unwrap();
    assert_eq!(deleted, 5);
    assert_eq!(env.snowflake_rows().await, sorted(newer));
    assert_eq!(
        env.source().delete_rows(&read_earlier).await.unwrap(),
        0,
        "idempotent"
    );
}

#[tokio::test]
async fn an_unreachable_emulator_is_a_transient_error() {
    let env = TestEnv::new("sf_down").await;
    let port = testkit::closed_port();
    let config = env.config_with(&[(
        "SNOWFLAKE_ENDPOINT_URL",
        &format!("http://127.0.0.1:{port}"),
    )]);
    let source = countries_shared::snowflake::SnowflakeSource::connect(&config.snowflake).unwrap();
    let err = source.read_batch(10).await.err().expect("unreachable");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn a_missing_table_is_refused_not_transient() {
    let env = TestEnv::new("sf_missing").await;
    let config = env.config_with(&[("SNOWFLAKE_TABLE", "no_such_table")]);
    let source = countries_shared::snowflake::SnowflakeSource::connect(&config.snowflake).unwrap();
    let err = source.read_batch(10).await.err().expect("refused");
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("no_such_table"),
        "{err}"
    );
}
