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
use crate::model::value::{TableRow, Value};

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
    rows: &mut [TableRow],
    columns: &[String],
    key_positions: &[usize],
    rules: &[ColumnRule],
    versions: &mut Versions,
) -> Vec<Planned> {
    rows.iter_mut()
        .enumerate()
        .map(|(i, row)| {
            let unreadable: Vec<&str> = row
                .cells
                .iter()
                .filter_map(|c| c.as_ref().err().map(String::as_str))
                .collect();
            if !unreadable.is_empty() {
                return Planned::Invalid(i, unreadable.join("; "));
            }
            let key: Vec<Value> = key_positions
                .iter()
                .filter_map(|&k| row.cells.get(k)?.as_ref().ok().cloned())
                .collect();
            if row.key_null || key.contains(&Value::Null) {
                let names: Vec<&str> = key_positions
                    .iter()
                    .filter(|&&k| matches!(row.cells.get(k), Some(Ok(Value::Null))))
                    .filter_map(|&k| columns.get(k).map(String::as_str))
                    .collect();
                return Planned::Invalid(i, format!("key column {} is NULL", names.join(", ")));
            }
            if let Err(why) = apply_rules(rules, &mut row.cells) {
                return Planned::Invalid(i, why);
            }
            if versions.key.as_ref() == Some(&key) {
                Planned::Later(i)
            } else {
                versions.key = Some(key);
                Planned::Write(i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: u64, key: Option<i64>, note: Result<&str, &str>) -> TableRow {
        TableRow {
            number,
            cells: vec![
                Ok(key.map_or(Value::Null, Value::Int)),
                note.map(|n| Value::Text(n.into())).map_err(String::from),
            ],
            key_null: key.is_none(),
        }
    }

    #[test]
    fn one_row_per_key_and_bad_rows_fail_by_name() {
        let columns = ["ID".to_string(), "NOTE".to_string()];
        let mut versions = Versions::default();
        let mut first = [
            row(1, Some(1), Ok("a")),
            row(2, Some(1), Ok("a")),
            row(3, Some(1), Ok("b")),
            row(4, Some(2), Err("column NOTE: not UTF-8")),
            row(5, Some(2), Ok("c")),
        ];
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
        let mut next = [row(6, Some(2), Ok("d")), row(7, None, Ok("e"))];
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &[], &mut versions),
            [
                Planned::Later(0),
                Planned::Invalid(1, "key column ID is NULL".into()),
            ]
        );
    }
}
