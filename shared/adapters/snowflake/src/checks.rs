//! Checks over arbitrary rows, shared by the fuzz target `row_and_delete`
//! (`fuzz/`, built with the `fuzzing` feature) and the unit tests below,
//! which run them on the bad-input corpus and on random input in every
//! `make test`: validation, the string literal and the join delete.
//!
//! Each check panics when a property does not hold; nothing else may panic.

use countries_shared::model::row::{validate, SourceRow};
use countries_shared::ports::IdMatch;

use crate::sql::{join_delete_statement, snapshot_name, string_literal, SourceTable};

/// Reads back the string literals of a Snowflake statement: `''` is a quote,
/// `\\` a backslash. Panics on an unterminated literal or on any other
/// backslash escape (the formatter must never produce one).
pub fn snowflake_literals(statement: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => panic!("unterminated literal in {statement:?}"),
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                Some('\'') => break,
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    other => panic!("escape \\{other:?} in {statement:?}"),
                },
                Some(c) => value.push(c),
            }
        }
        literals.push(value);
    }
    literals
}

/// A row of any values: validation never panics and accepts only what
/// Postgres can store; the literal of its country reads back as the value
/// itself; the join delete names no literal whatever the range.
pub fn row_and_delete(country_id: Option<i128>, country: Option<&str>) {
    let row = SourceRow::new(country_id, country);
    if let Ok(valid) = validate(&row) {
        assert_eq!(valid.country.len(), 3);
        assert!(valid.country.bytes().all(|b| b.is_ascii_uppercase()));
        assert_eq!(i128::from(valid.country_id), country_id.unwrap_or_default());
    }
    if let Some(country) = country {
        assert_eq!(snowflake_literals(&string_literal(country)), vec![country]);
    }
    // The statements a run sends carry numbers, never a row's content: the
    // join delete for any range names no string literal at all.
    let table = SourceTable::named("case");
    let snapshot = snapshot_name(uuid::Uuid::nil());
    let last =
        u64::try_from(country_id.unwrap_or_default().unsigned_abs() % (1 << 40)).unwrap_or(1);
    for ids in [IdMatch::Equal, IdMatch::BothNull] {
        let statement = join_delete_statement(
            &table,
            &snapshot,
            &[1..=last.max(1)],
            ids,
            Some((-i128::from(last), i128::from(last))),
        )
        .expect("one range");
        assert!(snowflake_literals(&statement).is_empty(), "{statement}");
    }
}

/// Splits fuzz bytes into a row: a flags byte (NULL id, NULL country), 16
/// bytes of id, and the rest as the country.
pub fn row_from_bytes(bytes: &[u8]) {
    let Some((&flags, rest)) = bytes.split_first() else {
        return;
    };
    let (id_bytes, country_bytes) = rest.split_at(rest.len().min(16));
    let mut id = [0u8; 16];
    id[..id_bytes.len()].copy_from_slice(id_bytes);
    // Small ids are the interesting ones: fold most inputs near the 32-bit
    // limits, keep the full 128-bit range for the rest.
    let raw = i128::from_le_bytes(id);
    let country_id = match flags & 0b11 {
        0 => None,
        1 => Some(raw % (1 << 33)),
        _ => Some(raw),
    };
    let country = String::from_utf8_lossy(country_bytes);
    let country = (flags & 0b100 == 0).then_some(country.as_ref());
    row_and_delete(country_id, country);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rows of the README's "Reliability" corpus.
    #[test]
    fn the_bad_input_corpus_passes_every_check() {
        let ten_kb = "Q".repeat(10_240);
        for country in [
            "",
            "US",
            "USAA",
            "usa",
            "U5A",
            " FRA ",
            "F A",
            "ÅLA",
            "U\u{7}A",
            "U\u{0}A",
            "O'B",
            "A\\B",
            "'",
            "\\",
            "''",
            "\\'",
            "x\\' OR 1=1 --",
            "\u{feff}",
            &ten_kb,
        ] {
            for id in [
                None,
                Some(0),
                Some(-1),
                Some(i128::from(i32::MAX) + 1),
                Some(i128::MAX),
            ] {
                row_and_delete(id, Some(country));
            }
        }
        row_and_delete(None, None);
    }

    #[test]
    #[should_panic(expected = "unterminated literal")]
    fn the_literal_reader_catches_an_unescaped_quote() {
        snowflake_literals("DELETE FROM t WHERE c = 'O'B'");
    }

    #[test]
    #[should_panic(expected = "escape")]
    fn the_literal_reader_catches_a_lone_backslash() {
        snowflake_literals(r"DELETE FROM t WHERE c = 'A\'");
    }

    proptest! {
        #[test]
        fn any_row_passes(id in prop::option::of(any::<i128>()), country in prop::option::of(any::<String>())) {
            row_and_delete(id, country.as_deref());
        }

        #[test]
        fn any_bytes_as_a_row_pass(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            row_from_bytes(&bytes);
        }
    }
}
