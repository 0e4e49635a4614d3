//! The bad-row corpus through the real replicator, the Snowflake emulator,
//! Postgres and SQS: each row ends where the README's "Reliability" table
//! says, and the whole-row deletes remove exactly the rows they name (quotes,
//! backslashes, control characters and a 10 KB value included).

use countries_shared::deadline::Deadline;
use countries_shared::ledger::RunOutcome;
use countries_shared::model::message::FailureClass;
use countries_shared::model::row::SourceRow;
use testkit::TestEnv;
use uuid::Uuid;

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
    ]
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

    let replicator = replicator::build(&env.config()).await.expect("replicator");
    let summary = replicator
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.rows_read, input.len());

    let queued = env.drain_retry_queue().await;
    let in_postgres = env.postgres_rows().await;
    let left = env.snowflake_rows().await;
    for (name, row, expect) in &cases {
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
    // The deletes removed exactly the rows they named: only the held-back
    // version is left, byte for byte.
    let held_back: Vec<SourceRow> = cases
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::HeldBack))
        .map(|(_, r, _)| r.clone())
        .collect();
    assert_eq!(left, held_back);
    let invalid = cases
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::Invalid(_)))
        .count();
    assert_eq!(queued.len(), invalid, "one message per invalid row");

    // The next run writes the held-back version; nothing is left anywhere.
    let second = replicator
        .run(Uuid::new_v4(), None, &Deadline::none())
        .await;
    assert_eq!(
        (second.outcome, second.rows_written),
        (RunOutcome::Succeeded, 1),
        "{second:?}"
    );
    assert!(env.snowflake_rows().await.is_empty());
    assert!(env.postgres_rows().await.contains(&(20, "PRT".to_string())));
}
