//! Discovery: a table's columns and their declared types, as `DESCRIBE
//! TABLE` shows them (answered from metadata, without a warehouse). The
//! start check of the `case` table reads the names; the mapping check
//! (`countries tables`) reads the types too.

use snowflake_api::QueryResult;

use crate::arrow::{decode_texts, owned};
use crate::{Scope, SnowflakeSource};
use countries_shared::deadline::Deadline;
use countries_shared::failure::SourceError;

/// A source table named by the mapping file: quoted as given, so that a
/// mixed-case or reserved name means exactly itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName<'a> {
    /// None: the session's database (`SNOWFLAKE_DATABASE`).
    pub database: Option<&'a str>,
    /// None: the session's schema (`SNOWFLAKE_SCHEMA`), and the database
    /// the session's too: the name is the table's alone.
    pub schema: Option<&'a str>,
    pub table: &'a str,
}

impl TableName<'_> {
    /// `"db"."schema"."table"`, each part quoted (`"` doubled inside), or
    /// `"table"` alone without a schema.
    pub fn quoted(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let Some(schema) = self.schema else {
            return quote(self.table);
        };
        let mut parts: Vec<String> = self.database.map(quote).into_iter().collect();
        parts.push(quote(schema));
        parts.push(quote(self.table));
        parts.join(".")
    }
}

/// One column as `DESCRIBE TABLE` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedColumn {
    pub name: String,
    /// As Snowflake shows it, e.g. `NUMBER(38,0)`; read by
    /// [`countries_shared::model::types::SourceType::from_declared`].
    pub declared: String,
}

impl SnowflakeSource {
    /// The columns of `table`, in their order. A table that does not exist
    /// (or that the role cannot see) is an error naming it.
    pub async fn describe(
        &self,
        table: &TableName<'_>,
        deadline: &Deadline,
    ) -> Result<Vec<DescribedColumn>, SourceError> {
        let scope = Scope {
            run_id: None,
            deadline: deadline.statement_deadline(),
            session: None,
        };
        let name = table.quoted();
        let described = self
            .session
            .send("describe", &format!("DESCRIBE TABLE {name}"), scope)
            .await
            .map_err(|e| not_found(e, &name))?;
        described_columns(&described.result)
    }
}

/// Snowflake's "does not exist or not authorized" (002003), said plainly.
pub(crate) fn not_found(e: SourceError, name: &str) -> SourceError {
    match e {
        SourceError::Statement { code, .. } if code == "002003" => SourceError::Refused {
            operation: "describe",
            detail: format!("table {name} not found, or not visible to the role"),
        },
        other => other,
    }
}

/// The `name` and `type` columns of a `DESCRIBE TABLE` answer, Arrow or
/// JSON (real Snowflake answers metadata commands in JSON).
pub(crate) fn described_columns(result: &QueryResult) -> Result<Vec<DescribedColumn>, SourceError> {
    let mut columns = Vec::new();
    match result {
        QueryResult::Arrow(batches) => {
            for batch in batches {
                if batch.num_columns() < 2 {
                    return Err(SourceError::UnexpectedResult {
                        operation: "describe",
                        detail: format!("{} columns, not name and type", batch.num_columns()),
                    });
                }
                let (mut names, mut types) = (Vec::new(), Vec::new());
                decode_texts(batch.column(0).as_ref(), &mut names, owned)?;
                decode_texts(batch.column(1).as_ref(), &mut types, owned)?;
                columns.extend(names.into_iter().zip(types).filter_map(|(n, t)| {
                    Some(DescribedColumn {
                        name: n?,
                        declared: t.unwrap_or_default(),
                    })
                }));
            }
        }
        QueryResult::Json(json) => {
            for row in json.value.as_array().into_iter().flatten() {
                let text = |i: usize| row.get(i).and_then(|v| v.as_str()).map(str::to_string);
                if let Some(name) = text(0) {
                    columns.push(DescribedColumn {
                        name,
                        declared: text(1).unwrap_or_default(),
                    });
                }
            }
        }
        QueryResult::Empty => {}
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_exactly_as_given() {
        let name = TableName {
            database: Some("Analytics"),
            schema: Some("PUBLIC"),
            table: "odd\"name",
        };
        assert_eq!(name.quoted(), r#""Analytics"."PUBLIC"."odd""name""#);
        let name = TableName {
            database: None,
            schema: Some("S"),
            table: "case",
        };
        assert_eq!(name.quoted(), r#""S"."case""#);
        let name = TableName {
            database: None,
            schema: None,
            table: "case",
        };
        assert_eq!(name.quoted(), r#""case""#, "the session's schema");
    }

    #[test]
    fn a_json_answer_gives_names_and_types() {
        let json = snowflake_api::JsonResult {
            value: serde_json::json!([
                ["ID", "NUMBER(38,0)", "COLUMN"],
                ["AT", "TIMESTAMP_TZ(9)"],
                [null]
            ]),
            schema: Vec::new(),
        };
        let columns = described_columns(&QueryResult::Json(json)).unwrap();
        assert_eq!(
            columns,
            vec![
                DescribedColumn {
                    name: "ID".into(),
                    declared: "NUMBER(38,0)".into()
                },
                DescribedColumn {
                    name: "AT".into(),
                    declared: "TIMESTAMP_TZ(9)".into()
                },
            ]
        );
    }
}
