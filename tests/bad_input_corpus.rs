//! The bad-row corpus through the real replicator, the Snowflake emulator,
//! Postgres and SQS: each row ends where the README's "Reliability" table
//! says, and the whole-row deletes remove exactly the rows they name (quotes,
//! backslashes, control characters and a 10 KB value included). The same
//! corpus also goes through the general table run, as a table of the
//! mapping file with `case`'s rule as configuration (`rules = { country =
//! "country_code" }`): each row ends in the same place, in the same class,
//! with the same reason word for word.

use countries_ops::snowflake_admin::SnowflakeAdmin;
use countries_shared::deadline::Deadline;
use countries_shared::ledger::RunOutcome;
use countries_shared::model::message::FailureClass;
use countries_shared::model::row::SourceRow;
use testkit::TestEnv;

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Written to Postgres as this country.
    Written(&'static str),
    /// Queued as invalid; the reason contains this.
    Invalid(&'static str),
    /// A second version of an id: left in Snowflake for the next run.
    HeldBack,
}

fn corpus() -> Vec<(&'static str, SourceRow, Expect)> {
    use Expect::*;
    let row = |id: i128, country: &str| SourceRow::new(Some(id), Some(country));
    let ten_kb: &'static str = Box::leak("Q".repeat(10_240).into_boxed_str());
    vec![
        (
            "NULL country",
            SourceRow::new(Some(1), None),
            Invalid("country is NULL"),
        ),
        ("empty", row(2, ""), Invalid("exactly three letters")),
        ("2 letters", row(3, "US"), Invalid("exactly three letters")),
        (
            "4 letters",
            row(4, "USAA"),
            Invalid("exactly three letters"),
        ),
        ("lowercase", row(5, "usa"), Written("USA")),
        ("mixed case", row(6, "uSa"), Written("USA")),
        ("digits", row(7, "U5A"), Invalid("exactly three letters")),
        ("surrounding spaces", row(8, "  FRA "), Written("FRA")),
        (
            "inner space",
            row(9, "F A"),
            Invalid("exactly three letters"),
        ),
        (
            "only spaces",
            row(10, "   "),
            Invalid("exactly three letters"),
        ),
        (
            "non-ASCII letters",
            row(11, "ÅLA"),
            Invalid("exactly three letters"),
        ),
        (
            "non-ASCII, 3 chars",
            row(12, "ÉSP"),
            Invalid("exactly three letters"),
        ),
        (
            "10 KB string",
            row(13, ten_kb),
            Invalid("exactly three letters"),
        ),
        (
            "control character inside",
            row(14, "U\u{7}A"),
            Invalid("exactly three letters"),
        ),
        (
            "NUL character",
            row(22, "U\u{0}A"),
            Invalid("exactly three letters"),
        ),
        ("tab and newline around", row(15, "\tDEU\n"), Written("DEU")),
        ("quote", row(16, "O'B"), Invalid("exactly three letters")),
        (
            "backslash",
            row(17, "A\\B"),
            Invalid("exactly three letters"),
        ),
        (
            "quote, backslash and SQL",
            row(18, "x\\' OR 1=1 --"),
            Invalid("exactly three letters"),
        ),
        ("id 0", row(0, "NOR"), Written("NOR")),
        ("negative id", row(-19, "SWE"), Written("SWE")),
        (
            "32-bit maximum",
            row(i128::from(i32::MAX), "FIN"),
            Written("FIN"),
        ),
        (
            "32-bit minimum",
            row(i128::from(i32::MIN), "DNK"),
            Written("DNK"),
        ),
        (
            "above the 32-bit maximum",
            row(i128::from(i32::MAX) + 1, "ISL"),
            Invalid("does not fit"),
        ),
        (
            "below the 32-bit minimum",
            row(i128::from(i32::MIN) - 1, "ISL"),
            Invalid("does not fit"),
        ),
        (
            "NULL id",
            SourceRow::new(None, Some("IRL")),
            Invalid("country_id is NULL"),
        ),
        (
            "NULL id and country",
            SourceRow::new(None, None),
            Invalid("country_id is NULL"),
        ),
        (
            "same id twice: first version",
            row(20, "ESP"),
            Written("ESP"),
        ),
        ("same id twice: other version", row(20, "PRT"), HeldBack),
        ("identical copy", row(21, "ITA"), Written("ITA")),
        ("identical copy, again", row(21, "ITA"), Written("ITA")),
        ("another spelling of it", row(21, " ita"), Written("ITA")),
    ]
}

/// The version of id 20 left in Snowflake (`left` must hold it alone)
/// once the other was written (`in_postgres`): which goes first is the
/// snapshot's order (the key, then the row hash).
fn one_version_of_20_left(left: &[SourceRow], in_postgres: &[(i32, String)]) -> SourceRow {
    let [held] = left else {
        panic!("one version of id 20 left, not {left:?}")
    };
    let written_20 = in_postgres
        .iter()
        .find(|(id, _)| *id == 20)
        .map(|(_, c)| c.as_str());
    let versions = [Some("ESP"), Some("PRT")];
    assert!(
        held.country_id == Some(20)
            && versions.contains(&held.country.as_deref())
            && versions.contains(&written_20)
            && held.country.as_deref() != written_20,
        "{held:?} held, {written_20:?} written"
    );
    held.clone()
}

#[tokio::test]
async fn every_bad_row_is_classified_and_none_is_lost() {
    let env = TestEnv::new("bad_rows").await;
    let cases = corpus();
    let input: Vec<SourceRow> = cases.iter().map(|(_, row, _)| row.clone()).collect();
    env.load(&input).await;
    assert_eq!(
        env.snowflake_rows().await.len(),
        input.len(),
        "the emulator took every row"
    );

    // The function's wiring: `case` is its first table.
    let tables = replicator::build(&env.config()).await.expect("replicator");
    let summary = tables.run_all(None, &Deadline::none()).await.remove(0);
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.table.as_deref(), Some("case"));
    assert_eq!(summary.rows_read, input.len());

    let queued = env.drain_retry_queue().await;
    let in_postgres = env.postgres_rows().await;
    let left = env.snowflake_rows().await;
    for (name, row, expect) in &cases {
        if row.country_id == Some(20) {
            // Two versions of one id: which goes first is the snapshot's
            // order (the key, then the row hash), checked below.
            continue;
        }
        match expect {
            Expect::Written(country) => {
                let id = i32::try_from(row.country_id.unwrap()).unwrap();
                assert!(
                    in_postgres.contains(&(id, country.to_string())),
                    "{name}: {row:?} not written as {country}"
                );
                assert!(!left.contains(row), "{name}: still in Snowflake");
            }
            Expect::Invalid(reason) => {
                let message = queued
                    .iter()
                    .find(|m| &m.record == row)
                    .unwrap_or_else(|| panic!("{name}: {row:?} was not queued"));
                assert_eq!(message.error.class, FailureClass::Invalid, "{name}");
                assert!(
                    message.error.message.contains(reason),
                    "{name}: {}",
                    message.error.message
                );
                // A 10 KB value is named, not copied, in the reason.
                assert!(message.error.message.len() < 200, "{name}: reason too long");
                assert!(!left.contains(row), "{name}: queued but not deleted");
            }
            Expect::HeldBack => assert!(left.contains(row), "{name}: not held back"),
        }
    }
    // The deletes removed exactly the rows they named: only one version
    // of id 20 is left, byte for byte, and the other is written.
    let held = one_version_of_20_left(&left, &in_postgres);
    let invalid = cases
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::Invalid(_)))
        .count();
    assert_eq!(queued.len(), invalid, "one message per invalid row");

    // The next run (of the same warm process) writes the held-back
    // version; nothing is left anywhere.
    let second = tables.run_all(None, &Deadline::none()).await.remove(0);
    assert_eq!(
        (second.outcome, second.rows_written),
        (RunOutcome::Succeeded, 1),
        "{second:?}"
    );
    assert!(env.snowflake_rows().await.is_empty());
    let last = (20, held.country.clone().unwrap_or_default());
    assert!(env.postgres_rows().await.contains(&last));
}

/// Where a row of the corpus ends when the general table run moves it, as
/// (class, reason) for a queued row: where `case` puts it.
fn through_a_mapping(expect: Expect) -> Option<(FailureClass, &'static str)> {
    match expect {
        Expect::Invalid(reason) => Some((FailureClass::Invalid, reason)),
        Expect::Written(_) | Expect::HeldBack => None,
    }
}

/// A queued version-2 row as the corpus's (id, country).
fn as_source_row(row: &serde_json::Map<String, serde_json::Value>) -> SourceRow {
    use countries_shared::model::value::Value;
    use countries_shared::model::value_json::from_json;
    let cell = |name: &str| from_json(row.get(name).unwrap_or(&serde_json::Value::Null));
    let id = match cell("COUNTRY_ID") {
        Ok(Value::Int(id)) => Some(i128::from(id)),
        Ok(Value::Decimal(d)) if d.scale == 0 => Some(d.unscaled),
        other => {
            assert_eq!(other, Ok(Value::Null), "an id");
            None
        }
    };
    let country = match cell("COUNTRY") {
        Ok(Value::Text(c)) => Some(c.into()),
        other => {
            assert_eq!(other, Ok(Value::Null), "a country");
            None
        }
    };
    SourceRow {
        country_id: id,
        country,
    }
}

#[tokio::test]
async fn the_corpus_ends_where_case_puts_it_through_a_mapping_with_its_rule() {
    use countries_shared::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
    let env = TestEnv::new("bad_rows_mapped").await;
    let cases = corpus();
    let input: Vec<SourceRow> = cases.iter().map(|(_, row, _)| row.clone()).collect();
    // `case`'s shape under another name on both sides: the file may not
    // hold `case` itself, which the variables configure.
    let countries = SnowflakeAdmin::connect(
        &env.config_with(&[("SNOWFLAKE_TABLE", "countries")])
            .snowflake,
    )
    .expect("Snowflake client");
    countries
        .execute("CREATE TABLE \"countries\" (COUNTRY_ID NUMBER(38,0), COUNTRY VARCHAR)")
        .await
        .expect("the Snowflake table");
    countries.insert_rows(&input).await.expect("the rows");
    let snowflake_rows = async || {
        let mut rows = countries.all_rows(10_000).await.expect("reading Snowflake");
        rows.sort_by(|a, b| (a.country_id, &a.country).cmp(&(b.country_id, &b.country)));
        rows
    };
    env.postgres()
        .await
        .batch_execute(
            "CREATE TABLE countries (country_id integer PRIMARY KEY, country varchar(3) NOT NULL)",
        )
        .await
        .expect("the Postgres table");
    let file = std::env::temp_dir().join(format!("{}-tables.toml", env.name));
    std::fs::write(
        &file,
        "[[tables]]\nname = \"countries\"\nsource = { schema = \"PUBLIC\", table = \"countries\" }\n\
         target = { schema = \"public\", table = \"countries\" }\nconsume = \"delete\"\n\
         rules = { country = \"country_code\" }\n",
    )
    .expect("the mapping file");
    let config = env.config_with(&[("TABLES_FILE", file.to_str().expect("a path"))]);
    let tables = replicator::build(&config).await.expect("replicator");

    // `case` (empty: idle) first, then the file's table.
    let summary = tables.run_all(None, &Deadline::none()).await.remove(1);
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.table.as_deref(), Some("countries"));
    assert_eq!((summary.rows_read, summary.unaccounted()), (input.len(), 0));

    let queued: Vec<(SourceRow, FailureClass, String)> =
        testkit::drain(&env.sqs, &env.vars["RETRY_QUEUE_URL"])
            .await
            .iter()
            .map(|body| match parse_any_retry_message(Some(body)) {
                Ok(AnyRetryMessage::Mapped(m)) => {
                    assert_eq!(m.table, "countries");
                    (as_source_row(&m.row), m.error.class, m.error.message)
                }
                other => panic!("a version-2 message: {other:?}"),
            })
            .collect();
    let pg = env.postgres().await;
    let in_postgres: Vec<(i32, String)> = pg
        .query("SELECT country_id, country::text FROM countries", &[])
        .await
        .expect("the rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let left = snowflake_rows().await;
    for (name, row, expect) in &cases {
        if row.country_id == Some(20) {
            // Two versions of one id: which goes first is the snapshot's
            // order (the key, then the row hash), checked below.
            continue;
        }
        match (expect, through_a_mapping(*expect)) {
            (Expect::Written(country), _) => {
                let id = i32::try_from(row.country_id.unwrap()).unwrap();
                assert!(
                    in_postgres.contains(&(id, country.to_string())),
                    "{name}: {row:?} not written as {country}"
                );
                assert!(!left.contains(row), "{name}: still in Snowflake");
            }
            (_, Some((class, reason))) => {
                let (_, got, message) = queued
                    .iter()
                    .find(|(r, _, _)| r == row)
                    .unwrap_or_else(|| panic!("{name}: {row:?} was not queued in {queued:?}"));
                assert_eq!((got, name), (&class, name));
                assert!(message.contains(reason), "{name}: {message}");
                // Word for word what `case`'s own validation says.
                let case_says = countries_shared::model::row::validate(row)
                    .err()
                    .map(|e| e.to_string());
                assert_eq!(message, &case_says.unwrap_or_default(), "{name}");
                assert!(message.len() < 200, "{name}: reason too long");
                assert!(!left.contains(row), "{name}: queued but not deleted");
            }
            _ => assert!(left.contains(row), "{name}: not held back"),
        }
    }
    let queued_expected = cases
        .iter()
        .filter(|(_, _, e)| through_a_mapping(*e).is_some())
        .count();
    assert_eq!(queued.len(), queued_expected, "one message per failed row");
    // One version of id 20 written, the other left for the next run.
    let held = one_version_of_20_left(&left, &in_postgres);

    // The next run writes the held-back version, as `case`'s does.
    let second = tables.run_all(None, &Deadline::none()).await.remove(1);
    assert_eq!(
        (second.outcome, second.rows_written),
        (RunOutcome::Succeeded, 1),
        "{second:?}"
    );
    assert!(snowflake_rows().await.is_empty());
    let now: i64 = pg
        .query_one(
            "SELECT count(*) FROM countries WHERE country_id = 20 AND country = $1",
            &[&held.country],
        )
        .await
        .expect("the row")
        .get(0);
    assert_eq!(now, 1, "the held-back version is the one written last");
}
