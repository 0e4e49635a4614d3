//! What a table run does with each row of a page: write it, hold it for the
//! next run (a second row of a key already written in this run: one row per
//! key per run, so that a statement never touches a row twice and an older
//! version never overwrites a newer), or fail it as invalid (a value
//! Snowflake's decoder refused, a NULL key, an integer past its column's
//! range, a value a rule of the mapping refused: [`crate::model::rules`]; a
//! value a rule normalises is written normalised). An identical copy of a
//! row goes with it, as `case`'s do: the join delete matches content, so
//! the copy leaves Snowflake exactly when its twin does, and is counted as
//! its twin is (written, enqueued in the twin's message, or left). The
//! snapshot is ordered by key, so only the last key seen needs keeping
//! between pages ([`Versions`]).

use crate::model::rules::BoundRules;
use crate::model::value::{TablePage, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Planned {
    Write(usize),
    /// An identical copy of the row this chunk writes at `.1`: it goes
    /// where that row goes.
    Copy(usize, usize),
    /// Another row of a key written in this run: the next run's.
    Later(usize),
    Invalid(usize, String),
}

/// What the chunks before this one leave for it.
#[derive(Default)]
pub(super) struct Versions {
    /// The key last planned for writing.
    key: Option<Vec<Value>>,
    /// The previous chunk's last row as read, when it was planned for
    /// writing: a copy of it opening this chunk is written again (changing
    /// nothing), so that it is not counted as left while the delete takes
    /// it.
    last_written: Option<Vec<Value>>,
}

/// Plans the rows of one chunk, in order, applying `rules` (the mapping's,
/// and the integer columns' ranges) to the cells of the rows it writes.
/// `targets` names each cell's target column: a reason names the target
/// column, as the rules' and `case`'s do.
pub(super) fn plan_page(
    page: &mut TablePage,
    targets: &[String],
    key_positions: &[usize],
    rules: &BoundRules,
    versions: &mut Versions,
) -> Vec<Planned> {
    let n = page.len();
    // Identical copies sit side by side (the snapshot orders a key's rows
    // by their hash): found before the rules rewrite any cell.
    let read_whole = |i: usize| page.unread(i).next().is_none();
    let copies: Vec<bool> = (0..n)
        .map(|i| {
            read_whole(i)
                && match i.checked_sub(1) {
                    Some(p) => read_whole(p) && page.row(p) == page.row(i),
                    None => versions.last_written.as_deref() == Some(page.row(i)),
                }
        })
        .collect();
    let last_read = n.checked_sub(1).map(|last| page.row(last).to_vec());
    let mut planned: Vec<Planned> = Vec::with_capacity(n);
    for (i, copy) in copies.into_iter().enumerate() {
        let twin = copy.then(|| i.checked_sub(1).map(|p| &planned[p]));
        let plan = match twin {
            Some(Some(Planned::Write(t) | Planned::Copy(_, t))) => Planned::Copy(i, *t),
            // Its twin was written by the chunk before: written again.
            Some(None) => match rules.apply(page.row_mut(i)) {
                Ok(()) => Planned::Write(i),
                Err(why) => Planned::Invalid(i, why),
            },
            // Held back or invalid as its twin is.
            _ => plan_row(page, i, targets, key_positions, rules, versions),
        };
        planned.push(plan);
    }
    versions.last_written = match planned.last() {
        Some(Planned::Write(_) | Planned::Copy(..)) => last_read,
        _ => None,
    };
    planned
}

/// Row `i`, not a copy of the row before it.
fn plan_row(
    page: &mut TablePage,
    i: usize,
    targets: &[String],
    key_positions: &[usize],
    rules: &BoundRules,
    versions: &mut Versions,
) -> Planned {
    let unreadable: Vec<&str> = page.unread(i).map(|(_, why)| why).collect();
    if !unreadable.is_empty() {
        return Planned::Invalid(i, unreadable.join("; "));
    }
    let row = page.row(i);
    let nulls: Vec<String> = key_positions
        .iter()
        .filter(|&&k| matches!(row.get(k), Some(Value::Null)))
        .filter_map(|&k| targets.get(k).map(|name| format!("{name} is NULL")))
        .collect();
    if !nulls.is_empty() {
        return Planned::Invalid(i, nulls.join("; "));
    }
    if let Err(why) = rules.apply(page.row_mut(i)) {
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
        let columns = ["id".to_string(), "note".to_string()];
        let rules = BoundRules {
            ranges: vec![(0, "id".into(), crate::model::types::TargetType::Integer)],
            ..BoundRules::default()
        };
        let mut versions = Versions::default();
        let mut first = page(
            1,
            &[
                (Some(1), Ok("a")),
                (Some(1), Ok("a")),
                (Some(1), Ok("b")),
                (Some(2), Err("column NOTE: not UTF-8")),
                (Some(2), Ok("c")),
                (Some(1 << 40), Ok("big")),
            ],
        );
        assert_eq!(
            plan_page(&mut first, &columns, &[0], &rules, &mut versions),
            [
                Planned::Write(0),
                Planned::Copy(1, 0),
                Planned::Later(2),
                Planned::Invalid(3, "column NOTE: not UTF-8".into()),
                Planned::Write(4),
                Planned::Invalid(
                    5,
                    "id 1099511627776 does not fit the Postgres integer column (-2147483648..=2147483647)"
                        .into()
                ),
            ]
        );
        // The next page goes on from the last key's first version.
        let mut next = page(6, &[(Some(2), Ok("d")), (None, Ok("e"))]);
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &rules, &mut versions),
            [Planned::Later(0), Planned::Invalid(1, "id is NULL".into()),]
        );
    }

    #[test]
    fn a_copy_goes_as_its_twin_goes_across_chunks_too() {
        let columns = ["id".to_string(), "note".to_string()];
        let rules = BoundRules::default();
        let mut versions = Versions::default();
        let mut first = page(
            1,
            &[
                (Some(1), Ok("a")),
                (Some(1), Ok("b")),
                (Some(1), Ok("b")),
                (None, Ok("x")),
                (None, Ok("x")),
                (Some(2), Ok("c")),
                (Some(2), Ok("c")),
            ],
        );
        assert_eq!(
            plan_page(&mut first, &columns, &[0], &rules, &mut versions),
            [
                Planned::Write(0),
                Planned::Later(1),
                Planned::Later(2),
                Planned::Invalid(3, "id is NULL".into()),
                Planned::Invalid(4, "id is NULL".into()),
                Planned::Write(5),
                Planned::Copy(6, 5),
            ]
        );
        // The last row's copy opens the next chunk: written again, so that
        // it is not counted as left while the delete takes it with its twin.
        let mut next = page(
            8,
            &[(Some(2), Ok("c")), (Some(2), Ok("c")), (Some(2), Ok("d"))],
        );
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &rules, &mut versions),
            [Planned::Write(0), Planned::Copy(1, 0), Planned::Later(2)]
        );
        // A chunk that ends with a held-back row leaves no twin behind.
        let mut last = page(11, &[(Some(2), Ok("d"))]);
        assert_eq!(
            plan_page(&mut last, &columns, &[0], &rules, &mut versions),
            [Planned::Later(0)]
        );
    }
}
