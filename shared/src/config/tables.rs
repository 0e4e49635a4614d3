//! The tables a deployment replicates, declared in one mapping file (TOML,
//! shipped with the deployment: Lambda's environment holds 4 KB in all),
//! parsed and checked at start with every problem listed ([`parse_tables`]).
//! `TABLES_FILE` names it; the `case` table is still configured by the
//! variables, and the file lists the tables replicated beside it.
//!
//! ```toml
//! [[tables]]
//! name = "countries"            # logs, metrics, the ledger and messages
//! source = { schema = "PUBLIC", table = "COUNTRIES" }  # database: SNOWFLAKE_DATABASE
//! target = { schema = "reference", table = "countries" }
//! key = ["country_id"]          # target columns; default: its primary key
//! columns = ["COUNTRY_ID", "COUNTRY"]  # source columns; default: all the target has
//! consume = "delete"            # required: rows leave Snowflake once safe
//! rules = { country = "country_code" }  # target column = check before the write
//! max_rows_per_run = 1000000
//! ```
//!
//! Deleting source rows is an explicit setting per table: the product's
//! promise (every row read ends in Postgres, the failure report, or still in
//! Snowflake) rests on consuming, so a table that does not say so is refused
//! rather than given a default.

use std::collections::HashSet;

use serde::Deserialize;

use crate::model::ident::Identifier;
pub use crate::model::rules::Rule;

/// The built-in `case` table's name (logs, metrics, the response), which
/// no table of the file may take.
pub const CASE: &str = "case";

/// One replicated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMapping {
    pub name: String,
    /// The Snowflake database (None: `SNOWFLAKE_DATABASE`).
    pub source_database: Option<String>,
    /// The Snowflake schema (None: the session's, `SNOWFLAKE_SCHEMA`, and
    /// the table's name unqualified: the `case` table's, as ever).
    pub source_schema: Option<String>,
    pub source_table: String,
    pub target_schema: Identifier,
    pub target_table: Identifier,
    pub key: Vec<String>,
    pub columns: Option<Vec<String>>,
    /// Source columns that fill a target column of another name: (source
    /// name, target name). The `case` table's (`SNOWFLAKE_ID_COLUMN` fills
    /// `country_id`); the file's tables match by the name rule alone.
    pub renames: Vec<(String, String)>,
    /// Checks before the write: (target column, rule), by column name.
    pub rules: Vec<(String, Rule)>,
    pub max_rows_per_run: Option<u64>,
    /// The `case` table the variables configure
    /// ([`crate::config::ReplicatorConfig::case_table`]): its runs take the
    /// lock stream mode's publisher takes too, and its failed rows go to
    /// the retry queue as version-1 messages, which the failure report,
    /// the digest and `countries replay` show as `case` rows.
    pub is_case: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    database: Option<String>,
    schema: String,
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    schema: String,
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    source: RawSource,
    target: RawTarget,
    #[serde(default)]
    key: Vec<String>,
    columns: Option<Vec<String>>,
    consume: Option<String>,
    #[serde(default)]
    rules: std::collections::BTreeMap<String, String>,
    max_rows_per_run: Option<u64>,
}

/// Parses a mapping file (`origin` names it in the problems); `Err` lists
/// every problem found, each naming the table (by its position and name).
pub fn parse_tables(text: &str, origin: &str) -> Result<Vec<TableMapping>, Vec<String>> {
    let file: toml::Table = toml::from_str(text)
        .map_err(|e| vec![format!("{origin}: not a TOML file: {}", e.message())])?;
    let mut problems = Vec::new();
    for key in file.keys().filter(|k| *k != "tables") {
        problems.push(format!(
            "{origin}: unknown section {key:?} (the file holds [[tables]] entries)"
        ));
    }
    let entries = match file.get("tables") {
        Some(toml::Value::Array(entries)) if !entries.is_empty() => entries.clone(),
        Some(_) => {
            problems.push(format!(
                "{origin}: tables must be one or more [[tables]] entries"
            ));
            Vec::new()
        }
        None => {
            problems.push(format!(
                "{origin}: no [[tables]] entry: a deployment replicates at least one table"
            ));
            Vec::new()
        }
    };
    let mut tables = Vec::new();
    let (mut names, mut targets) = (HashSet::new(), HashSet::new());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("{origin}: table {}", i + 1);
        let raw = match RawTable::deserialize(entry) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(format!("{at}: {}", e.message()));
                continue;
            }
        };
        let at = format!("{at} ({})", raw.name);
        // Checked on every entry that parsed, valid or not, so that a
        // clash is reported along with the entry's other problems.
        if !names.insert(raw.name.clone()) {
            problems.push(format!("{at}: the name is used by another table"));
        }
        let target = format!("{}.{}", raw.target.schema, raw.target.table);
        if !targets.insert(target.clone()) {
            problems.push(format!("{at}: {target} is the target of another table too"));
        }
        if let Some(table) = check(raw, &at, &mut problems) {
            tables.push(table);
        }
    }
    if problems.is_empty() {
        Ok(tables)
    } else {
        Err(problems)
    }
}

/// Where the `case` table the variables configure is read and written.
pub struct CaseTable<'a> {
    /// Its Snowflake database, schema and table (None: not configured here,
    /// as in the retrier).
    pub source: Option<(&'a str, &'a str, &'a str)>,
    /// Its Postgres schema and table, also its name in the ledger.
    pub target: (&'a str, &'a str),
}

/// [`parse_tables`], and then each table of the file that is `case`
/// itself is a problem too ([`case_clashes`]): what the replicator, the
/// retrier, `countries tables` and `countries replay` read.
pub fn parse_tables_beside(
    text: &str,
    origin: &str,
    case: &CaseTable,
) -> Result<Vec<TableMapping>, Vec<String>> {
    let tables = parse_tables(text, origin)?;
    let clashes = case_clashes(&tables, origin, case);
    if clashes.is_empty() {
        Ok(tables)
    } else {
        Err(clashes)
    }
}

/// The tables of the file that are `case` itself, by its name in the
/// ledger, its target or its source: each a problem. Two runs of one table
/// under two locks would each write what the other deletes, and two runs of
/// one source would split its rows between two targets.
fn case_clashes(tables: &[TableMapping], origin: &str, case: &CaseTable) -> Vec<String> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let (case_schema, case_table) = case.target;
    tables
        .iter()
        .filter_map(|t| {
            let reads_case = case.source.is_some_and(|(database, schema, table)| {
                same(t.source_database.as_deref().unwrap_or(database), database)
                    && t.source_schema.as_deref().is_some_and(|s| same(s, schema))
                    && same(&t.source_table, table)
            });
            let why = if t.name == case_table {
                "its name is case's in the ledger"
            } else if t.name == CASE {
                "its name is the built-in table's"
            } else if t.target_schema.as_str() == case_schema && t.target_table.as_str() == case_table {
                "it writes case's Postgres table"
            } else if reads_case {
                "it reads case's Snowflake table"
            } else {
                return None;
            };
            Some(format!(
                "{origin}: table {}: this is the case table ({case_schema}.{case_table}: {why}), which the SNOWFLAKE_* and POSTGRES_* variables configure; the file lists the tables beside it",
                t.name
            ))
        })
        .collect()
}

fn check(raw: RawTable, at: &str, problems: &mut Vec<String>) -> Option<TableMapping> {
    let before = problems.len();
    let name_ok = raw.name.len() <= 63
        && raw.name.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        problems.push(format!(
            "{at}: name must be lower-case letters, digits and _, starting with a letter"
        ));
    }
    match raw.consume.as_deref() {
        Some("delete") => {}
        Some(other) => problems.push(format!(
            "{at}: consume = {other:?} is not supported: \"delete\" is the only way a row is read once"
        )),
        None => problems.push(format!(
            "{at}: consume is required (consume = \"delete\": rows leave Snowflake once safe in Postgres or the failure report)"
        )),
    }
    for (field, value) in [
        ("source.schema", &raw.source.schema),
        ("source.table", &raw.source.table),
    ] {
        if value.trim().is_empty() {
            problems.push(format!("{at}: {field} is empty"));
        }
    }
    let mut ident = |field: &str, value: &str| {
        Identifier::parse(value).unwrap_or_else(|e| {
            problems.push(format!("{at}: {field}: {e}"));
            Identifier::fallback()
        })
    };
    let target_schema = ident("target.schema", &raw.target.schema);
    let target_table = ident("target.table", &raw.target.table);
    let mut rules = Vec::new();
    for (column, name) in &raw.rules {
        match Rule::from_name(name) {
            Some(rule) => rules.push((column.clone(), rule)),
            None => problems.push(format!(
                "{at}: rules.{column}: unknown rule {name:?} (known: {})",
                Rule::CountryCode.name()
            )),
        }
    }
    if raw.columns.as_ref().is_some_and(Vec::is_empty) {
        problems.push(format!(
            "{at}: columns is empty (leave it out to copy every column the target has)"
        ));
    }
    if raw.max_rows_per_run == Some(0) {
        problems.push(format!("{at}: max_rows_per_run must be at least 1"));
    }
    (problems.len() == before).then_some(TableMapping {
        name: raw.name,
        source_database: raw.source.database,
        source_schema: Some(raw.source.schema),
        source_table: raw.source.table,
        target_schema,
        target_table,
        key: raw.key,
        columns: raw.columns,
        renames: Vec::new(),
        rules,
        max_rows_per_run: raw.max_rows_per_run,
        is_case: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = r#"
        [[tables]]
        name = "case"
        source = { schema = "PUBLIC", table = "case" }
        target = { schema = "public", table = "case" }
        key = ["country_id"]
        consume = "delete"
        rules = { country = "country_code" }

        [[tables]]
        name = "orders"
        source = { database = "SALES", schema = "PUBLIC", table = "ORDERS" }
        target = { schema = "sales", table = "orders" }
        columns = ["REGION", "ID", "AMOUNT"]
        consume = "delete"
        max_rows_per_run = 250000
    "#;

    #[test]
    fn two_tables_parse_with_their_settings() {
        let tables = parse_tables(CASE, "tables.toml").expect("valid");
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].rules, vec![("country".into(), Rule::CountryCode)]);
        assert_eq!(tables[0].key, vec!["country_id"]);
        assert_eq!(tables[1].source_database.as_deref(), Some("SALES"));
        assert_eq!(tables[1].target_table.as_str(), "orders");
        assert_eq!(tables[1].max_rows_per_run, Some(250_000));
        assert!(tables[1].key.is_empty(), "the target's primary key");
    }

    #[test]
    fn every_problem_of_every_table_is_listed() {
        let text = r#"
            [settings]
            x = 1

            [[tables]]
            name = "Bad Name"
            source = { schema = "PUBLIC", table = "" }
            target = { schema = "public", table = "a;b" }
            rules = { note = "uppercase" }
            columns = []
            max_rows_per_run = 0

            [[tables]]
            name = "t"
            source = { schema = "PUBLIC", table = "T" }
            target = { schema = "public", table = "t" }
            consume = "copy"

            [[tables]]
            name = "u"
            source = { schema = "PUBLIC", table = "U" }
            target = { schema = "public", table = "u", extra = 1 }
            consume = "delete"

            [[tables]]
            name = "t"
            source = { schema = "PUBLIC", table = "T2" }
            target = { schema = "public", table = "t" }
            consume = "delete"
        "#;
        let problems = parse_tables(text, "tables.toml").expect_err("problems");
        let expected = [
            "tables.toml: unknown section \"settings\"",
            "tables.toml: table 1 (Bad Name): name must be lower-case",
            "tables.toml: table 1 (Bad Name): consume is required",
            "tables.toml: table 1 (Bad Name): source.table is empty",
            "tables.toml: table 1 (Bad Name): target.table: \"a;b\" is not a plain identifier",
            "tables.toml: table 1 (Bad Name): rules.note: unknown rule \"uppercase\"",
            "tables.toml: table 1 (Bad Name): columns is empty",
            "tables.toml: table 1 (Bad Name): max_rows_per_run must be at least 1",
            "tables.toml: table 2 (t): consume = \"copy\" is not supported",
            "tables.toml: table 3: unknown field `extra`",
            "tables.toml: table 4 (t): the name is used by another table",
            "tables.toml: table 4 (t): public.t is the target of another table too",
        ];
        for e in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "{e}\nin {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn a_file_that_is_not_toml_or_has_no_table_says_so() {
        let not_toml = parse_tables("[[tables]\nname =", "t.toml").expect_err("not TOML");
        assert!(
            not_toml[0].starts_with("t.toml: not a TOML file"),
            "{not_toml:?}"
        );
        let empty = parse_tables("", "t.toml").expect_err("no table");
        assert_eq!(
            empty,
            vec!["t.toml: no [[tables]] entry: a deployment replicates at least one table"]
        );
    }
}
