//! What a table run does with each row of a page: write it, hold it for the
//! next run (a second version of a key already written in this run: one
//! row per key per run, so that a statement never touches a row twice and
//! an older version never overwrites a newer), or fail it as invalid (a
//! value Snowflake's decoder refused, a NULL key, an integer past its
//! column's range, a value a rule of the mapping refused:
//! [`crate::model::rules`]; a value a rule normalises is written
//! normalised). Rows that are one row go together, as `case`'s do:
//! - an identical copy ([`Planned::Copy`], [`Planned::Carried`]) goes
//!   wherever the row it copies goes (written, in its message, or left):
//!   the join delete matches the key and the content's hash, so it leaves
//!   Snowflake exactly when that row does;
//! - another spelling of the row written (` usa` for `USA` under `case`'s
//!   rule, [`Planned::Variant`]) is written with it and deleted by its own
//!   content; unless that row is written, it stays for the next run. In a
//!   later chunk it is written again (changing nothing).
//!
//! The snapshot is ordered by key, then by the content's hash, so copies
//! sit side by side and only the last key written and the last row read
//! need keeping between chunks and pages ([`Versions`]).

use crate::model::rules::BoundRules;
use crate::model::value::{TablePage, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Planned {
    Write(usize),
    /// An identical copy of the row at `.1` of this chunk, whatever that
    /// row's plan.
    Copy(usize, usize),
    /// An identical copy of the last row of the chunk before (this page's
    /// or the page before): it goes where that row went.
    Carried(usize),
    /// Another spelling of the row this chunk writes at `.1`.
    Variant(usize, usize),
    /// Another version of a key written in this run: the next run's.
    Later(usize),
    Invalid(usize, String),
}

/// A row as read: its cells, and the values the decoder refused (column,
/// why), whose cells hold NULL.
type ReadRow = (Vec<Value>, Vec<(usize, String)>);

/// What the chunks before this one leave for it.
#[derive(Default)]
pub(super) struct Versions {
    /// The key last planned for writing.
    key: Option<Vec<Value>>,
    /// That row, normalised, when an earlier chunk wrote it.
    written: Option<Vec<Value>>,
    /// The last row of the chunk before, as read.
    tail: Option<ReadRow>,
}

/// How many rows opening this chunk are identical copies of the last row
/// of the chunk before (what [`plan_page`] would plan as
/// [`Planned::Carried`]).
pub(super) fn leading_copies(page: &TablePage, versions: &Versions) -> usize {
    let Some((cells, unread)) = versions.tail.as_ref() else {
        return 0;
    };
    (0..page.len())
        .take_while(|&i| {
            page.is_copy_of(i, cells, unread.iter().map(|(c, why)| (*c, why.as_str())))
        })
        .count()
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
    // Found before the rules rewrite any cell: a copy is the same row as
    // read, as the hash the delete matches is of the row as read. A value
    // the decoder refused is compared by why (its cell holds NULL).
    let same = |p: usize, i: usize| page.is_copy_of(i, page.row(p), page.unread(p));
    let opens_with_copy = leading_copies(page, versions) > 0;
    let copies: Vec<bool> = (0..n)
        .map(|i| match i.checked_sub(1) {
            Some(p) => same(p, i),
            None => opens_with_copy,
        })
        .collect();
    let tail = n.checked_sub(1).map(|last| {
        let unread = page.unread(last).map(|(c, why)| (c, why.to_string()));
        (page.row(last).to_vec(), unread.collect())
    });
    let mut planned: Vec<Planned> = Vec::with_capacity(n);
    let mut last_write = None;
    for (i, copy) in copies.into_iter().enumerate() {
        let before = i.checked_sub(1).and_then(|p| planned.get(p));
        let plan = match (copy, before) {
            (true, None) => Planned::Carried(i),
            (true, Some(Planned::Carried(_))) => Planned::Carried(i),
            (true, Some(Planned::Copy(_, t))) => Planned::Copy(i, *t),
            (true, Some(_)) => Planned::Copy(i, i - 1),
            (false, _) => plan_row(page, i, targets, key_positions, rules, versions, last_write),
        };
        if let Planned::Write(t) = plan {
            last_write = Some(t);
        }
        planned.push(plan);
    }
    if let Some(t) = last_write {
        versions.written = Some(page.row(t).to_vec());
    }
    versions.tail = tail;
    planned
}

/// Row `i`, no copy of the row before it; `last_write` is the row this
/// chunk last planned for writing.
fn plan_row(
    page: &mut TablePage,
    i: usize,
    targets: &[String],
    key_positions: &[usize],
    rules: &BoundRules,
    versions: &mut Versions,
    last_write: Option<usize>,
) -> Planned {
    let unreadable: Vec<&str> = page.unread(i).map(|(_, why)| why).collect();
    if !unreadable.is_empty() {
        return Planned::Invalid(i, unreadable.join("; "));
    }
    let nulls: Vec<String> = page
        .null_keys(i, key_positions)
        .filter_map(|k| targets.get(k).map(|name| format!("{name} is NULL")))
        .collect();
    if !nulls.is_empty() {
        return Planned::Invalid(i, nulls.join("; "));
    }
    // The row as read is kept for its failure, should Postgres refuse the
    // rewritten one: a message carries the row as Snowflake holds it.
    let read = rules.rewrites().then(|| page.row(i).to_vec());
    if let Err(why) = rules.apply(page.row_mut(i)) {
        return Planned::Invalid(i, why);
    }
    if let Some(read) = read {
        page.keep_read(i, read);
    }
    let row = page.row(i);
    let is_last = versions.key.as_ref().is_some_and(|key| {
        key.len() == key_positions.len()
            && key_positions
                .iter()
                .zip(key)
                .all(|(&k, v)| row.get(k) == Some(v))
    });
    if !is_last {
        let key = versions.key.get_or_insert_with(Vec::new);
        key.clear();
        key.extend(key_positions.iter().filter_map(|&k| row.get(k).cloned()));
        return Planned::Write(i);
    }
    match last_write {
        Some(t) if page.row(t) == row => Planned::Variant(i, t),
        // Written by an earlier chunk: written again, changing nothing.
        None if versions.written.as_deref() == Some(row) => Planned::Write(i),
        _ => Planned::Later(i),
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
                Planned::Copy(2, 1),
                Planned::Invalid(3, "id is NULL".into()),
                Planned::Copy(4, 3),
                Planned::Write(5),
                Planned::Copy(6, 5),
            ]
        );
        // The last row's copies open the next chunk: they go where it went.
        let mut next = page(
            8,
            &[(Some(2), Ok("c")), (Some(2), Ok("c")), (Some(2), Ok("d"))],
        );
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &rules, &mut versions),
            [Planned::Carried(0), Planned::Carried(1), Planned::Later(2)]
        );
        // A copy of a held-back version is held back with it; another
        // version is still the next run's.
        let mut last = page(11, &[(Some(2), Ok("d")), (Some(2), Ok("e"))]);
        assert_eq!(
            plan_page(&mut last, &columns, &[0], &rules, &mut versions),
            [Planned::Carried(0), Planned::Later(1)]
        );
    }

    #[test]
    fn unreadable_rows_are_copies_only_when_refused_for_the_same_reason() {
        let columns = ["id".to_string(), "note".to_string()];
        let mut versions = Versions::default();
        let mut rows = page(
            1,
            &[
                (Some(3), Err("column NOTE: not UTF-8")),
                (Some(3), Err("column NOTE: not UTF-8")),
                (Some(3), Err("column NOTE: too long")),
            ],
        );
        let planned = plan_page(
            &mut rows,
            &columns,
            &[0],
            &BoundRules::default(),
            &mut versions,
        );
        assert_eq!(
            planned,
            [
                Planned::Invalid(0, "column NOTE: not UTF-8".into()),
                Planned::Copy(1, 0),
                Planned::Invalid(2, "column NOTE: too long".into()),
            ]
        );
        let mut next = page(4, &[(Some(3), Err("column NOTE: too long"))]);
        assert_eq!(
            plan_page(
                &mut next,
                &columns,
                &[0],
                &BoundRules::default(),
                &mut versions
            ),
            [Planned::Carried(0)]
        );
    }

    #[test]
    fn another_spelling_of_the_written_row_goes_with_it() {
        let columns = ["id".to_string(), "note".to_string()];
        let rules = BoundRules {
            columns: vec![crate::model::rules::ColumnRule {
                position: 1,
                column: "note".into(),
                rule: crate::model::rules::Rule::CountryCode,
            }],
            ..BoundRules::default()
        };
        let mut versions = Versions::default();
        let mut first = page(
            1,
            &[
                (Some(1), Ok(" usa")),
                (Some(1), Ok("FRA")),
                (Some(1), Ok("USA")),
                (Some(1), Ok("USA")),
            ],
        );
        assert_eq!(
            plan_page(&mut first, &columns, &[0], &rules, &mut versions),
            [
                Planned::Write(0),
                Planned::Later(1),
                Planned::Variant(2, 0),
                Planned::Copy(3, 2),
            ]
        );
        assert_eq!(first.row(2), first.row(0), "normalised alike");
        let mut next = page(5, &[(Some(1), Ok("usa\t")), (Some(1), Ok("FRA"))]);
        assert_eq!(
            plan_page(&mut next, &columns, &[0], &rules, &mut versions),
            [Planned::Write(0), Planned::Later(1)]
        );
    }
}
