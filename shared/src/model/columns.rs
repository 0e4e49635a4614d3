//! Matching a source table's columns to a target table's, checked once
//! before any row moves ([`match_columns`]): every problem is listed, each
//! naming the table and the column.
//!
//! The name rule: a Snowflake name in upper case (an unquoted identifier,
//! which Snowflake upper-cases) matches the Postgres name that is its lower
//! case (an unquoted identifier there, which Postgres lower-cases); any
//! other name (quoted, mixed case) matches only itself.

use crate::model::types::{mapping, Mapping, SourceType, TargetType};

/// A column of the source table, as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub name: String,
    pub ty: SourceType,
}

/// A column of the target table, as its catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// Postgres's type name (`pg_type.typname`), e.g. `int4`.
    pub type_name: String,
    pub not_null: bool,
    /// Part of the primary key.
    pub key: bool,
    /// Has a default (a NOT NULL column with one may be left out).
    pub has_default: bool,
}

/// One copied column: where it comes from, where it goes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    pub source: String,
    pub target: String,
    pub source_type: SourceType,
    pub target_type: TargetType,
    pub mapping: Mapping,
    pub key: bool,
}

/// Whether a Snowflake name and a Postgres name are the same column.
pub fn same_name(snowflake: &str, postgres: &str) -> bool {
    let unquoted = !snowflake.is_empty()
        && snowflake
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if unquoted {
        snowflake.to_ascii_lowercase() == postgres
    } else {
        snowflake == postgres
    }
}

/// Whether source column `source` fills target column `target`: by
/// `renames` (source name, target name) when it names the source column,
/// else by the name rule ([`same_name`]).
fn fills(renames: &[(String, String)], source: &str, target: &str) -> bool {
    match renames.iter().find(|(from, _)| from == source) {
        Some((_, to)) => to == target,
        None => same_name(source, target),
    }
}

/// The source's columns from the types `DESCRIBE TABLE` declares
/// (`(name, declared type)` pairs). A type this product does not read is a
/// problem only for a column that would be copied (the target has it, by
/// name or by `renames`, and `columns` does not leave it out); any other
/// such column is left out.
pub fn declared_columns(
    table: &str,
    described: &[(String, String)],
    target: &[TargetColumn],
    columns: Option<&[String]>,
    renames: &[(String, String)],
) -> (Vec<SourceColumn>, Vec<String>) {
    let (mut known, mut problems) = (Vec::new(), Vec::new());
    for (name, declared) in described {
        match SourceType::from_declared(declared) {
            Ok(ty) => known.push(SourceColumn {
                name: name.clone(),
                ty,
            }),
            Err(why) => {
                let copied = columns.is_none_or(|c| c.contains(name))
                    && target.iter().any(|t| fills(renames, name, &t.name));
                if copied {
                    problems.push(format!("table {table}: column {name}: {why}"));
                }
            }
        }
    }
    (known, problems)
}

/// Plans the copy of `table`: every target column gets the source column of
/// the same name (by the name rule), or the one `renames` (source name,
/// target name) gives it, or none when `columns` (source names) leaves it
/// out. `key` names the key columns (target names; the target's
/// primary key when empty). `Err` lists every problem found.
pub fn match_columns(
    table: &str,
    source: &[SourceColumn],
    target: &[TargetColumn],
    columns: Option<&[String]>,
    key: &[String],
    renames: &[(String, String)],
) -> Result<Vec<ColumnPlan>, Vec<String>> {
    let mut problems = Vec::new();
    if target.is_empty() {
        problems.push(format!("table {table}: the target table does not exist or has no columns (it is never created for you)"));
        return Err(problems);
    }
    let key: Vec<&str> = if key.is_empty() {
        target
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect()
    } else {
        key.iter().map(String::as_str).collect()
    };
    if key.is_empty() {
        problems.push(format!(
            "table {table}: no key (name its key columns, or give the target table a primary key): a table without one cannot be replicated exactly once"
        ));
    }
    for k in &key {
        if !target.iter().any(|c| c.name == *k) {
            problems.push(format!(
                "table {table}: key column {k} is not a column of the target table"
            ));
        }
    }
    if let Some(chosen) = columns {
        for name in chosen {
            if !source.iter().any(|s| &s.name == name) {
                problems.push(format!(
                    "table {table}: column {name} is not a column of the source table"
                ));
            }
        }
    }
    let chosen = |s: &SourceColumn| columns.is_none_or(|c| c.contains(&s.name));
    let mut plan = Vec::new();
    for t in target {
        let from = source
            .iter()
            .filter(|s| chosen(s))
            .find(|s| fills(renames, &s.name, &t.name));
        let Some(s) = from else {
            if key.contains(&t.name.as_str()) {
                problems.push(format!(
                    "table {table}: key column {} has no source column",
                    t.name
                ));
            } else if t.not_null && !t.has_default {
                problems.push(format!(
                    "table {table}: column {} is NOT NULL without a default, and no source column fills it",
                    t.name
                ));
            }
            continue;
        };
        let Some(target_type) = TargetType::from_pg_name(&t.type_name) else {
            problems.push(format!(
                "table {table}: column {} is of type {}, which is not a type this product writes",
                t.name, t.type_name
            ));
            continue;
        };
        match mapping(s.ty, target_type) {
            Ok(m) => plan.push(ColumnPlan {
                source: s.name.clone(),
                target: t.name.clone(),
                source_type: s.ty,
                target_type,
                mapping: m,
                key: key.contains(&t.name.as_str()),
            }),
            Err(why) => problems.push(format!("table {table}: column {}: {why}", t.name)),
        }
    }
    for s in source.iter().filter(|s| chosen(s)) {
        if target.iter().any(|t| fills(renames, &s.name, &t.name)) {
            continue;
        }
        if let Some((_, to)) = renames.iter().find(|(from, _)| *from == s.name) {
            problems.push(format!(
                "table {table}: column {} is renamed to {to}, which is not a column of the target table",
                s.name
            ));
        } else if columns.is_some() {
            problems.push(format!(
                "table {table}: column {} has no column of that name in the target table",
                s.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// How a target table's definition changed since `planned` was read from
/// its catalog, in words naming each column (`None`: it did not). Any
/// change counts, an added nullable column too: the plan is then made
/// again, so that a column added on both sides is copied from the next run
/// on rather than after the next cold start, and a changed type is never
/// written in its old binary form (Postgres would refuse every row).
pub fn target_drift(table: &str, planned: &[TargetColumn], now: &[TargetColumn]) -> Option<String> {
    if now.is_empty() {
        return Some(format!("table {table}: the target table is gone"));
    }
    let mut changes = Vec::new();
    for was in planned {
        match now.iter().find(|c| c.name == was.name) {
            None => changes.push(format!("column {} was dropped", was.name)),
            Some(is) if is != was => changes.push(format!(
                "column {} was {} and is now {}",
                was.name,
                describe(was),
                describe(is)
            )),
            Some(_) => {}
        }
    }
    for is in now {
        if !planned.iter().any(|c| c.name == is.name) {
            changes.push(format!("column {} ({}) was added", is.name, describe(is)));
        }
    }
    (!changes.is_empty()).then(|| format!("table {table}: {}", changes.join("; ")))
}

fn describe(c: &TargetColumn) -> String {
    let mut words = vec![c.type_name.clone()];
    if c.not_null {
        words.push("NOT NULL".into());
    }
    if c.has_default {
        words.push("with a default".into());
    }
    if c.key {
        words.push("in the primary key".into());
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(spec: &[(&str, SourceType)]) -> Vec<SourceColumn> {
        spec.iter()
            .map(|(name, ty)| SourceColumn {
                name: name.to_string(),
                ty: *ty,
            })
            .collect()
    }

    fn target(spec: &[(&str, &str, bool, bool)]) -> Vec<TargetColumn> {
        spec.iter()
            .map(|(name, ty, not_null, key)| TargetColumn {
                name: name.to_string(),
                type_name: ty.to_string(),
                not_null: *not_null,
                key: *key,
                has_default: false,
            })
            .collect()
    }

    const ID: SourceType = SourceType::Fixed {
        precision: 38,
        scale: 0,
    };

    #[test]
    fn the_case_table_maps_by_the_name_rule_with_its_primary_key() {
        let plan = match_columns(
            "case",
            &source(&[("COUNTRY_ID", ID), ("COUNTRY", SourceType::Text)]),
            &target(&[
                ("country_id", "int4", true, true),
                ("country", "text", false, false),
            ]),
            None,
            &[],
            &[],
        )
        .expect("a valid mapping");
        let pairs: Vec<(&str, &str, bool)> = plan
            .iter()
            .map(|p| (p.source.as_str(), p.target.as_str(), p.key))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("COUNTRY_ID", "country_id", true),
                ("COUNTRY", "country", false)
            ]
        );
        assert_eq!(plan[0].mapping.refused, "a value out of the column's range");
    }

    #[test]
    fn a_renamed_source_column_fills_the_target_column_it_names() {
        let renames = vec![
            ("ID".to_string(), "country_id".to_string()),
            ("Code".to_string(), "country".to_string()),
        ];
        let chosen = vec!["ID".to_string(), "Code".to_string()];
        let described = vec![
            ("ID".to_string(), "NUMBER(38,0)".to_string()),
            ("Code".to_string(), "VARCHAR(16777216)".to_string()),
            ("COUNTRY".to_string(), "VARCHAR(16777216)".to_string()),
        ];
        let targets = target(&[
            ("country_id", "int4", true, true),
            ("country", "text", false, false),
        ]);
        let (known, problems) =
            declared_columns("case", &described, &targets, Some(&chosen), &renames);
        assert!(problems.is_empty(), "{problems:?}");
        let plan = match_columns("case", &known, &targets, Some(&chosen), &[], &renames).unwrap();
        let pairs: Vec<(&str, &str)> = plan
            .iter()
            .map(|p| (p.source.as_str(), p.target.as_str()))
            .collect();
        assert_eq!(pairs, vec![("ID", "country_id"), ("Code", "country")]);

        // A rename to a column the target lacks is a problem naming both.
        let renames = vec![
            ("ID".to_string(), "country_id".to_string()),
            ("COUNTRY".to_string(), "region".to_string()),
        ];
        let chosen = vec!["ID".to_string(), "COUNTRY".to_string()];
        let problems =
            match_columns("case", &known, &targets, Some(&chosen), &[], &renames).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "table case: column COUNTRY is renamed to region, which is not a column of the target table"
            ]
        );
    }

    #[test]
    fn a_quoted_or_mixed_case_name_matches_only_itself() {
        assert!(same_name("COUNTRY", "country"));
        assert!(!same_name("country", "COUNTRY"));
        assert!(
            same_name("country", "country"),
            "a quoted lower-case Snowflake name"
        );
        assert!(!same_name("Country", "country"));
        assert!(!same_name("COUNTRY", "Country"));
    }

    #[test]
    fn every_problem_is_listed_with_its_table_and_column() {
        let problems = match_columns(
            "orders",
            &source(&[
                ("ID", SourceType::Text),
                (
                    "AMOUNT",
                    SourceType::Fixed {
                        precision: 10,
                        scale: 2,
                    },
                ),
            ]),
            &target(&[
                ("id", "int8", true, false),
                ("amount", "int4", false, false),
                ("placed_at", "timestamptz", true, false),
                ("shape", "point", false, false),
            ]),
            Some(&[
                "ID".to_string(),
                "AMOUNT".to_string(),
                "SHAPE".to_string(),
                "NOPE".to_string(),
            ]),
            &[],
            &[],
        )
        .expect_err("several problems");
        let expected = [
            "table orders: no key",
            "table orders: column NOPE is not a column of the source table",
            "table orders: column SHAPE is not a column of the source table",
            "table orders: column id: Text cannot go into a column of type bigint",
            "table orders: column amount: a NUMBER with scale 2 has decimals",
            "table orders: column placed_at is NOT NULL without a default",
        ];
        for e in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "{e} in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_missing_target_table_or_key_column_is_named() {
        let none = match_columns("t", &source(&[("ID", ID)]), &[], None, &[], &[]).unwrap_err();
        assert!(none[0].contains("does not exist"), "{none:?}");
        let problems = match_columns(
            "t",
            &source(&[("ID", ID)]),
            &target(&[("id", "int8", true, false), ("k", "int8", true, false)]),
            None,
            &["k".to_string(), "missing".to_string()],
            &[],
        )
        .unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p == "table t: key column missing is not a column of the target table"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "table t: key column k has no source column"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unreadable_type_matters_only_for_a_copied_column() {
        let described = [
            ("ID".to_string(), "NUMBER(38,0)".to_string()),
            ("AREA".to_string(), "GEOGRAPHY".to_string()),
            ("NOTE".to_string(), "GEOGRAPHY".to_string()),
        ];
        let target = target(&[("id", "int8", true, true), ("area", "text", false, false)]);
        let (known, problems) = declared_columns("t", &described, &target, None, &[]);
        assert_eq!(known, source(&[("ID", ID)]));
        assert_eq!(
            problems,
            vec!["table t: column AREA: type GEOGRAPHY is not a type this product reads"]
        );
        let chosen = ["ID".to_string()];
        let (_, problems) = declared_columns("t", &described, &target, Some(&chosen), &[]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_changed_target_is_described_column_by_column() {
        let planned = target(&[("id", "int4", true, true), ("note", "text", false, false)]);
        assert_eq!(target_drift("orders", &planned, &planned), None);
        let now = target(&[("id", "int8", true, true), ("added", "int4", false, false)]);
        let drift = target_drift("orders", &planned, &now).unwrap();
        assert_eq!(
            drift,
            "table orders: column id was int4 NOT NULL in the primary key and is now int8 NOT NULL in the primary key; \
             column note was dropped; column added (int4) was added"
        );
        assert_eq!(
            target_drift("orders", &planned, &[]).as_deref(),
            Some("table orders: the target table is gone")
        );
    }
}
