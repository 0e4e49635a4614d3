//! What the fault-schedule tests (batch mode's and stream mode's) share: the
//! seeded datasets, and the Postgres set-up that records every change so
//! that a version written twice shows.

use std::collections::HashMap;

use countries_shared::model::row::SourceRow;

use crate::{SplitMix, TestEnv};

pub const VALID: &[&str] = &["USA", "FRA", "DEU", "NZL", "bra", " MEX ", "Jpn"];
pub const MALFORMED: &[&str] = &[
    "", "US", "USAA", "U2A", "a b", "ÄÖÜ", "O'B", "A\\B", "U\tA", "\u{1}AB", "   ",
];
/// Postgres refuses this country (a CHECK constraint [`record_changes`] adds).
pub const REFUSED: &str = "ATL";

/// A dataset of `count` rows: valid rows, malformed rows, rows Postgres
/// refuses, NULLs and an id out of range, identical copies and other
/// versions of earlier ids. Ids start at -1, 0 or 1 (zero and negative ids
/// are valid).
pub fn draw_rows(rng: &mut SplitMix, count: usize) -> Vec<SourceRow> {
    let mut rows: Vec<SourceRow> = Vec::with_capacity(count);
    let first_id = rng.below(3) as i128 - 1;
    for next_id in (first_id..).take(count) {
        let row = match rng.below(10) {
            0 => SourceRow::new(Some(next_id), Some(MALFORMED[rng.below(MALFORMED.len())])),
            1 => match rng.below(3) {
                0 => SourceRow::new(None, Some("IND")),
                1 => SourceRow::new(Some(next_id), None),
                _ => SourceRow::new(Some(i128::from(i32::MAX) + 1), Some("USA")),
            },
            2 => SourceRow::new(Some(next_id), Some(REFUSED)),
            3 if !rows.is_empty() => {
                // Another version, or an identical copy, of an earlier row.
                let earlier = rows[rng.below(rows.len())].clone();
                if rng.below(2) == 0 {
                    earlier
                } else {
                    SourceRow::new(earlier.country_id, Some(VALID[rng.below(VALID.len())]))
                }
            }
            _ => SourceRow::new(Some(next_id), Some(VALID[rng.below(VALID.len())])),
        };
        rows.push(row);
    }
    rows
}

/// Makes Postgres refuse [`REFUSED`], and record every change it commits to
/// `"case"`, in order, in `case_changes` (an upsert that changes nothing
/// records nothing).
pub async fn record_changes(env: &TestEnv) {
    env.postgres()
        .await
        .batch_execute(&format!(
            r#"
            ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> '{REFUSED}');
            -- Every change Postgres commits to "case", in order: a version
            -- that appears twice for one id was written twice.
            CREATE TABLE case_changes (seq bigserial PRIMARY KEY, country_id int, country text);
            CREATE FUNCTION record_case_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO case_changes (country_id, country) VALUES (NEW.country_id, NEW.country);
                RETURN NEW;
            END $$;
            CREATE TRIGGER record_case_change AFTER INSERT OR UPDATE ON "case"
                FOR EACH ROW EXECUTE FUNCTION record_case_change();
            "#
        ))
        .await
        .expect("schedule set-up in Postgres");
}

/// Versions Postgres committed more than once for an id: written twice, or
/// written again after a later version (out of order).
pub async fn versions_written_twice(env: &TestEnv) -> Vec<String> {
    let changes = env
        .postgres()
        .await
        .query(
            "SELECT country_id, country FROM case_changes ORDER BY seq",
            &[],
        )
        .await
        .expect("reading case_changes");
    let mut seen: HashMap<(i32, String), usize> = HashMap::new();
    for row in changes {
        *seen.entry((row.get(0), row.get(1))).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, c), n)| format!("({id}, {c}) written {n} times"))
        .collect()
}
