//! Checks a table's rows pass before the write, declared per column in the
//! mapping file (`rules = { country = "country_code" }`): today one rule,
//! the `case` table's country code. A value that fails a rule makes its row
//! a row-level failure (`invalid`) with the same message `case` gives; a
//! value that passes may be normalised (trimmed, upper-cased) before it is
//! written. The `case` table's own validation ([`crate::model::row`]) uses
//! the same check, so the rule means one thing wherever it runs. Bound with
//! the rules ([`bind_rules`]), every table's integers are checked against
//! their column's range ([`integer_out_of_range`]), in `case`'s words.

use crate::model::columns::ColumnPlan;
use crate::model::text::preview;
use crate::model::types::TargetType;
use crate::model::value::Value;

/// A check on one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The value trimmed, lower-case letters upper-cased, then exactly three
    /// letters A-Z (`" usa"` is written as `USA`; `"U5A"` is refused).
    CountryCode,
}

impl Rule {
    /// The name the mapping file gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CountryCode => "country_code",
        }
    }

    /// The rule the mapping file names `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::CountryCode].into_iter().find(|r| r.name() == name)
    }

    /// What the rule does, as `countries tables` prints it.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::CountryCode => {
                "trimmed and upper-cased, then three letters A-Z, or the row is refused (invalid)"
            }
        }
    }

    /// Whether the rule can check a column of this target type.
    pub fn fits(self, ty: TargetType) -> bool {
        match self {
            Self::CountryCode => matches!(ty, TargetType::Text | TargetType::Varchar),
        }
    }

    /// The value to write in place of `value`, or why the row is invalid;
    /// `column` names the column in the reason.
    pub fn apply(self, column: &str, value: &Value) -> Result<Option<Value>, String> {
        match (self, value) {
            (Self::CountryCode, Value::Null) => Err(format!("{column} is NULL")),
            (Self::CountryCode, Value::Text(raw)) => match country_code(raw) {
                Some(code) if code == *raw => Ok(None),
                Some(code) => Ok(Some(Value::Text(code.into()))),
                None => Err(format!(
                    "{column} must be exactly three letters A-Z after trimming, got {}",
                    preview(raw, 40)
                )),
            },
            (Self::CountryCode, _) => Err(format!(
                "{column}: the country_code rule checks text, and the value is not text"
            )),
        }
    }
}

/// A rule bound to a copied column: its position among a row's cells and
/// its target name (the reason's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    pub position: usize,
    pub column: String,
    pub rule: Rule,
}

/// A column a rule may bind to: its target name and type, and whether it
/// is a key (the replicator's column plan, or the retrier's row shape).
#[derive(Debug, Clone, Copy)]
pub struct RuleTarget<'a> {
    pub name: &'a str,
    pub ty: TargetType,
    pub key: bool,
}

impl<'a> From<&'a ColumnPlan> for RuleTarget<'a> {
    fn from(c: &'a ColumnPlan) -> Self {
        Self {
            name: &c.target,
            ty: c.target_type,
            key: c.key,
        }
    }
}

/// What a rule whose column is not among the bound columns means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// A plan problem: the table does not copy that column (the replicator).
    Refused,
    /// The row lacks the column, so the rule checks a NULL (the retrier's
    /// rows carry only the columns they were read with).
    ChecksNull,
}

/// A table's rules bound to its columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundRules {
    /// By position among the columns.
    pub columns: Vec<ColumnRule>,
    /// Rules on columns the row lacks ([`Absent::ChecksNull`] only).
    pub on_null: Vec<(String, Rule)>,
    /// Every integer column (position, name, type): not a rule of the
    /// mapping, a check every table has ([`integer_out_of_range`]).
    pub ranges: Vec<(usize, String, TargetType)>,
}

impl BoundRules {
    /// Checks each integer against its column's range, checks and
    /// normalises one row's cells (see [`apply_rules`]), then the rules on
    /// absent columns; `Err` is the first refusal, in that order (a row
    /// that fails a rule on a column it carries and one on a column it
    /// lacks is refused for the column it carries).
    /// Whether [`Self::apply`] may rewrite a cell (a rule normalises;
    /// a range only checks).
    pub fn rewrites(&self) -> bool {
        !self.columns.is_empty()
    }

    pub fn apply(&self, cells: &mut [Value]) -> Result<(), String> {
        for (position, column, ty) in &self.ranges {
            if let Some(why) = cells
                .get(*position)
                .and_then(|value| integer_out_of_range(column, *ty, value))
            {
                return Err(why);
            }
        }
        apply_rules(&self.columns, cells)?;
        for (column, rule) in &self.on_null {
            rule.apply(column, &Value::Null)?;
        }
        Ok(())
    }
}

/// Binds a table's rules (target column, rule) to its columns: each rule's
/// column must be of a type the rule checks and not a key, and, unless
/// `absent` says otherwise, one the table copies. `Err` lists every problem,
/// naming the table and column. The replicator, `countries tables`, the
/// retrier and `countries replay` all bind through here.
pub fn bind_rules<'a>(
    table: &str,
    rules: &[(String, Rule)],
    columns: impl IntoIterator<Item = RuleTarget<'a>>,
    absent: Absent,
) -> Result<BoundRules, Vec<String>> {
    let columns: Vec<RuleTarget> = columns.into_iter().collect();
    let mut bound = BoundRules::default();
    let mut problems = Vec::new();
    for (column, rule) in rules {
        match columns.iter().position(|c| c.name == column) {
            None if absent == Absent::ChecksNull => bound.on_null.push((column.clone(), *rule)),
            None => problems.push(format!(
                "table {table}: rules.{column}: {column} is not a column the table copies"
            )),
            // A normalised key would merge rows Snowflake keeps apart
            // (" usa" and "USA"): the one-row-per-key check sees raw keys.
            Some(i) if columns[i].key => problems.push(format!(
                "table {table}: rules.{column}: {column} is a key column, and a rule may not change a key"
            )),
            Some(i) if !rule.fits(columns[i].ty) => problems.push(format!(
                "table {table}: rules.{column}: the {} rule checks text, and {column} is {}",
                rule.name(),
                columns[i].ty.sql()
            )),
            Some(position) => bound.columns.push(ColumnRule {
                position,
                column: column.clone(),
                rule: *rule,
            }),
        }
    }
    bound.ranges = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| integer_range(c.ty).is_some())
        .map(|(position, c)| (position, c.name.to_string(), c.ty))
        .collect();
    if problems.is_empty() {
        Ok(bound)
    } else {
        Err(problems)
    }
}

/// Why an integer `value` cannot be stored in column `column` of type
/// `ty`: past the range of a smallint, integer or bigint column. Every
/// table's rows are checked before the write, as `case`'s ids always were
/// (the same words): a row-level failure named here, not a refused COPY
/// that the writer must bisect. `None` when it fits, or is no integer bound
/// for an integer column.
pub fn integer_out_of_range(column: &str, ty: TargetType, value: &Value) -> Option<String> {
    let (min, max) = integer_range(ty)?;
    let v = match value {
        Value::Int(v) => i128::from(*v),
        Value::Decimal(d) if { d.scale } == 0 => d.unscaled,
        _ => return None,
    };
    (v < min || v > max).then(|| out_of_range_reason(column, ty, v))
}

/// The values an integer column holds; `None` for any other type.
fn integer_range(ty: TargetType) -> Option<(i128, i128)> {
    match ty {
        TargetType::Smallint => Some((i16::MIN.into(), i16::MAX.into())),
        TargetType::Integer => Some((i32::MIN.into(), i32::MAX.into())),
        TargetType::Bigint => Some((i64::MIN.into(), i64::MAX.into())),
        _ => None,
    }
}

/// The reason for an integer past its column's range (`ty` an integer
/// type).
pub fn out_of_range_reason(column: &str, ty: TargetType, value: i128) -> String {
    let range = integer_range(ty)
        .map(|(min, max)| format!(" ({min}..={max})"))
        .unwrap_or_default();
    format!(
        "{column} {value} does not fit the Postgres {} column{range}",
        ty.sql()
    )
}

/// The country code `raw` stands for: trimmed, ASCII letters upper-cased,
/// exactly three letters A-Z; `None` otherwise (digits, accents, two or four
/// letters, inner spaces).
pub fn country_code(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (trimmed.len() == 3 && trimmed.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| trimmed.to_ascii_uppercase())
}

/// Applies `rules` to one row's cells: every rule checks first, and only a
/// row all of them pass is normalised in place, so a refused row keeps the
/// values it was read with. `Err` is the first refusal.
pub fn apply_rules(rules: &[ColumnRule], cells: &mut [Value]) -> Result<(), String> {
    let mut normalised = Vec::new();
    for rule in rules {
        let Some(value) = cells.get(rule.position) else {
            continue;
        };
        if let Some(value) = rule.rule.apply(&rule.column, value)? {
            normalised.push((rule.position, value));
        }
    }
    for (position, value) in normalised {
        if let Some(cell) = cells.get_mut(position) {
            *cell = value;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn an_integer_past_its_columns_range_is_refused_with_cases_words() {
        let reason = integer_out_of_range("country_id", TargetType::Integer, &Value::Int(1 << 31));
        assert_eq!(
            reason.as_deref(),
            Some("country_id 2147483648 does not fit the Postgres integer column (-2147483648..=2147483647)")
        );
        assert_eq!(
            reason,
            Some(crate::model::row::InvalidRow::IdOutOfRange(1 << 31).to_string()),
            "case's own words"
        );
        let fits = |ty, v: &Value| integer_out_of_range("c", ty, v).is_none();
        assert!(fits(TargetType::Integer, &Value::Int(i64::from(i32::MIN))));
        assert!(!fits(
            TargetType::Integer,
            &Value::Int(i64::from(i32::MIN) - 1)
        ));
        assert!(fits(TargetType::Smallint, &Value::Int(32_767)));
        assert!(!fits(TargetType::Smallint, &Value::Int(32_768)));
        let huge = Value::Decimal(crate::model::value::Decimal::new(1 << 70, 0).unwrap());
        assert!(!fits(TargetType::Bigint, &huge));
        assert!(fits(TargetType::Numeric, &huge), "not an integer column");
        assert!(fits(TargetType::Bigint, &Value::Int(i64::MAX)));
        assert!(fits(TargetType::Integer, &Value::Null));
    }

    #[test]
    fn the_country_code_rule_normalises_or_refuses_like_case() {
        let rule = Rule::CountryCode;
        assert_eq!(rule.apply("country", &text("USA")), Ok(None));
        assert_eq!(
            rule.apply("country", &text(" usa\t")),
            Ok(Some(text("USA")))
        );
        assert_eq!(
            rule.apply("country", &Value::Null),
            Err("country is NULL".into())
        );
        for bad in ["US", "USAA", "U5A", "F A", "ÅLA", "", "U\u{0}A"] {
            let why = rule.apply("country", &text(bad)).expect_err(bad);
            assert!(
                why.starts_with("country must be exactly three letters A-Z after trimming, got "),
                "{why}"
            );
        }
        let long = rule
            .apply("c", &text(&"Q".repeat(10_000)))
            .expect_err("long");
        assert!(long.len() < 200, "the value is cut in the reason: {long}");
        assert!(rule.apply("c", &Value::Int(1)).is_err());
        assert_eq!(Rule::from_name("country_code"), Some(rule));
        assert_eq!(Rule::from_name("uppercase"), None);
        assert!(rule.fits(TargetType::Varchar) && !rule.fits(TargetType::Integer));
    }

    #[test]
    fn a_rule_binds_to_a_copied_text_column_or_names_the_problem() {
        use crate::model::types::{mapping, SourceType};
        let column = |name: &str, source: SourceType, target: TargetType| ColumnPlan {
            source: name.to_ascii_uppercase(),
            target: name.into(),
            source_type: source,
            target_type: target,
            mapping: mapping(source, target).expect("a mapping"),
            key: false,
        };
        let id = SourceType::Fixed {
            precision: 9,
            scale: 0,
        };
        let mut plan = [
            column("id", id, TargetType::Integer),
            column("country", SourceType::Text, TargetType::Varchar),
            column("code", SourceType::Text, TargetType::Text),
        ];
        plan[2].key = true;
        let rule = |c: &str| (c.to_string(), Rule::CountryCode);
        let bind = |rules: &[(String, Rule)], absent| {
            bind_rules("t", rules, plan.iter().map(RuleTarget::from), absent)
        };
        let country = ColumnRule {
            position: 1,
            column: "country".into(),
            rule: Rule::CountryCode,
        };
        assert_eq!(
            bind(&[rule("country")], Absent::Refused),
            Ok(BoundRules {
                columns: vec![country.clone()],
                on_null: vec![],
                ranges: vec![(0, "id".into(), TargetType::Integer)],
            })
        );
        // The retrier's row lacks `gone`: its rule checks a NULL there.
        let bound = bind(&[rule("country"), rule("gone")], Absent::ChecksNull);
        assert_eq!(
            bound,
            Ok(BoundRules {
                columns: vec![country],
                on_null: vec![rule("gone")],
                ranges: vec![(0, "id".into(), TargetType::Integer)],
            })
        );
        let mut cells = vec![Value::Int(1), text("fra")];
        assert_eq!(
            bound.as_ref().map(|b| b.apply(&mut cells)),
            Ok(Err("gone is NULL".to_string()))
        );
        // The range first, then the rules, as `case`'s validation orders
        // its checks.
        let mut cells = vec![Value::Int(1 << 40), text("f")];
        assert_eq!(
            bound.map(|b| b.apply(&mut cells)),
            Ok(Err(
                "id 1099511627776 does not fit the Postgres integer column (-2147483648..=2147483647)"
                    .to_string()
            ))
        );
        assert_eq!(
            bind(
                &[rule("id"), rule("COUNTRY"), rule("gone"), rule("code")],
                Absent::Refused
            ),
            Err(vec![
                "table t: rules.id: the country_code rule checks text, and id is integer".into(),
                "table t: rules.COUNTRY: COUNTRY is not a column the table copies".into(),
                "table t: rules.gone: gone is not a column the table copies".into(),
                "table t: rules.code: code is a key column, and a rule may not change a key".into(),
            ])
        );
    }

    #[test]
    fn rules_rewrite_cells_in_place_only_when_all_pass() {
        let rules = [ColumnRule {
            position: 1,
            column: "country".into(),
            rule: Rule::CountryCode,
        }];
        let mut cells = vec![Value::Int(1), text(" fra ")];
        assert_eq!(apply_rules(&rules, &mut cells), Ok(()));
        assert_eq!(cells[1], text("FRA"));
        let mut bad = vec![Value::Int(1), text("XX")];
        assert!(apply_rules(&rules, &mut bad).is_err());
        assert_eq!(bad[1], text("XX"), "a refused value is kept as read");
        // Two rules: the second refuses, so the first's column is not
        // normalised either: the row stays as read.
        let two = [
            rules[0].clone(),
            ColumnRule {
                position: 2,
                column: "origin".into(),
                rule: Rule::CountryCode,
            },
        ];
        let mut row = vec![Value::Int(1), text(" fra"), text("F5")];
        assert!(apply_rules(&two, &mut row).is_err());
        assert_eq!(row[1], text(" fra"));
    }
}
