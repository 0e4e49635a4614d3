//! What a table run does with each row of a page: write it, hold it for the
//! next run (a second row of a key already written in this run: one row per
//! key per run, so that a statement never touches a row twice and an older
//! version never overwrites a newer), or fail it as invalid (a value
//! Snowflake's decoder refused, a NULL key, a value a rule of the mapping
//! refused: [`crate::model::rules`]; a value a rule normalises is written
//! normalised). An identical copy of a row is
//! held back too, and goes anyway: the join delete matches content, so it
//! leaves with its twin once the twin is safe, and stays with it otherwise.
//! The snapshot is ordered by key, so only the last key seen needs keeping
//! between pages ([`Versions`]).

use crate::model::rules::{apply_rules, ColumnRule};
use crate::model::value::{TablePage, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Planned {
    Write(usize),
    /// Another row of a key written in this run: the next run's.
    Later(usize),
    Invalid(usize, String),
}

/// The key last planned for writing.
#[derive(Default)]
pub(super) struct Versions {
    key: Option<Vec<Value>>,
}

/// Plans the rows of one page, in order, applying `rules` to the cells of
/// the rows it writes. `columns` names the cells.
pub(super) fn plan_page(
    page: &mut TablePage,
    columns: &[String],
    key_positions: &[usize],
    rules: &[ColumnRule],
    versions: &mut Versions,
) -> Vec<Planned> {
    (0..page.len())
        .map(|i| {
            let unreadable: Vec<&str> = page.unread(i).map(|(_, why)| why).collect();
            if !unreadable.is_empty() {
                return Planned::Invalid(i, unreadable.join("; "));
            }
            let row = page.row(i);
            let nulls: Vec<&str> = key_positions
                .iter()
                .filter(|&&k| matches!(row.get(k), Some(Value::Null)))
                .filter_map(|&k| columns.get(k).map(String::as_str))
                .collect();
            if !nulls.is_empty() {
                return Planned::Invalid(i, format!("key column {} is NULL", nulls.join(", ")));
            }
            if let Err(why) = apply_rules(rules, page.row_mut(i)) {
                return Planned::Invalid(i, why);
            }
            let row = page.row(i);
            let is_last = versions.key.as_ref().is_some_and(|key| {
                key.len() == key_positions.len()
                    && key_positions
                        .iter()
                        .zip(key)
                        .all(|(&k, v)| row.get(k) == Some(v))
            });
            if is_last {
                Planned::Later(i)
            } else {
                let key = versions.key.get_or_insert_with(Vec::new);
                key.clear();
                key.extend(key_positions.iter().filter_map(|&k| row.get(k).cloned()));
                Planned::Write(i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row<'a> = (Option<i64>, Result<&'a str, &'a str>);

    fn page(first: u64, rows: &[Row]) -> TablePage {
        let mut page = TablePage::new(first, 2, rows.len());
        for (key, note) in rows {
            page.push_row([
                Ok(key.map_or(Value::Null, Value::Int)),
                note.map(|n| Value::Text(n.into())).map_err(String::from),
            ]);
        }
        page
    }

    #[test]
    fn one_row_per_key_and_bad_rows_fail_by_name() {
        let columns = ["ID".to_string(), "NOTE".to_string()];
        let mut versions = Versions::default();
        let mut first = page(
            1,
            &[
                (Some(1), Ok("a")),
                (Some(1), Ok("a")),
                (Some(1), Ok("b")),
                (Some(2), Err("column NOTE: not UTF-8")),
                (Some(2), Ok("c")),
            ],
        );
        assert_eq!(
            plan_page(&mut first, &columns, &[0], &[], &mut versions),
            [
                Planned::Write(0),
                Planned::Later(1),
                Planned::Later(2),
                Planned::Invalid(3, "column NOTE: not UTF-8".into()),
                Planned::Write(4),
            ]
        );
        // The next page goes on from the last key's first version.
        let mut next = page(6, &[(Some(2), Ok("d")), (None, Ok("e"))]);
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &[], &mut versions),
            [
                Planned::Later(0),
                Planned::Invalid(1, "key column ID is NULL".into()),
            ]
        );
    }
}
