//! Rows of mapped tables written again from their JSON (the failure
//! report's `row_data`, a version-2 message's `row`): `countries replay`.
//! Each table's target is read from Postgres's catalog once, and again
//! when it changed since (checked before each write); a row's
//! columns are its source names, matched to the target's by the name rule
//! of the mapping (`same_name`), and its values read back exactly
//! ([`from_json`]), then checked by the mapping's rules as the table run
//! checks them. A row holding a value Snowflake's decoder could not read,
//! one that does not read back, or one a rule refuses, is refused alone.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value as Json};

use crate::catalog::target_columns;
use crate::mapped::{MappedTarget, PgTableSink, TargetColumnType};
use crate::warm::{PasswordSource, WarmConnection};
use countries_shared::config::tables::TableMapping;
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::{ErrorKind, SinkError, WriteError};
use countries_shared::model::columns::{same_name, TargetColumn};
use countries_shared::model::rules::{bind_rules, Absent, BoundRules, RuleTarget};
use countries_shared::model::types::TargetType;
use countries_shared::model::value::Value;
use countries_shared::model::value_json::from_json;
use countries_shared::ports::{MappedRows, SinkOutcome, TableSink, WriteLimits};

/// The mapped tables of `TABLES_FILE`, written again on demand.
pub struct PgMappedRows {
    config: PostgresConfig,
    /// Read again when Postgres refuses the password (a rotated secret).
    refresh: Option<PasswordSource>,
    tables: Vec<TableMapping>,
    /// Per table and set of source columns: the sources in write order,
    /// the mapping's rules over them, and the sink.
    sinks: tokio::sync::Mutex<HashMap<RowShape, PlannedSink>>,
}

/// A row shape's sources in write order, the rules over them, the sink.
type PlannedSink = (Vec<String>, BoundRules, PgTableSink);

/// What [`PgMappedRows::plan`] makes of a table and a set of columns.
struct RowPlan {
    sources: Vec<String>,
    /// The mapping's rules, bound to `sources` (a rule whose column the
    /// rows lack checks a NULL).
    rules: BoundRules,
    target: MappedTarget,
    catalog: Vec<TargetColumn>,
}

/// A table's name and the sorted source columns of its rows.
type RowShape = (String, Vec<String>);

impl PgMappedRows {
    pub fn new(config: PostgresConfig, tables: Vec<TableMapping>) -> Self {
        Self::with_password_source(config, tables, None)
    }

    /// Rows whose sinks read `refresh` again when Postgres refuses the
    /// password (`28P01`).
    pub fn with_password_source(
        config: PostgresConfig,
        tables: Vec<TableMapping>,
        refresh: Option<PasswordSource>,
    ) -> Self {
        Self {
            config,
            refresh,
            tables,
            sinks: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The columns a row with source columns `names` is written as: each
    /// target column that one of them fills, in the target's order.
    async fn plan(&self, mapping: &TableMapping, names: &[String]) -> Result<RowPlan, String> {
        let at = format!("table {}", mapping.name);
        let connection = WarmConnection::new(self.config.clone(), self.refresh.clone())
            .open()
            .await
            .map_err(|e| format!("{at}: Postgres: {e}"))?;
        let target = target_columns(
            &connection.client,
            mapping.target_schema.as_str(),
            mapping.target_table.as_str(),
        )
        .await
        .map_err(|e| format!("{at}: {e}"))?;
        if target.is_empty() {
            return Err(format!(
                "{at}: the target table {}.{} does not exist",
                mapping.target_schema, mapping.target_table
            ));
        }
        let keyed = |name: &str| {
            if mapping.key.is_empty() {
                target.iter().any(|t| t.key && t.name == name)
            } else {
                mapping.key.iter().any(|k| k == name)
            }
        };
        let mut sources = Vec::new();
        let mut columns = Vec::new();
        for t in &target {
            let Some(source) = names.iter().find(|n| same_name(n, &t.name)) else {
                continue;
            };
            let ty = TargetType::from_pg_name(&t.type_name).ok_or_else(|| {
                format!(
                    "{at}: column {} is of type {}, which this product does not write",
                    t.name, t.type_name
                )
            })?;
            sources.push(source.clone());
            columns.push(TargetColumnType {
                name: t.name.clone(),
                ty,
                key: keyed(&t.name),
            });
        }
        if let Some(lost) = names.iter().find(|n| !sources.contains(n)) {
            return Err(format!(
                "{at}: the target has no column for the row's {lost}"
            ));
        }
        if !columns.iter().any(|c| c.key) {
            return Err(format!("{at}: the row has no key column of the target"));
        }
        let targets = columns.iter().map(|c| RuleTarget {
            name: &c.name,
            ty: c.ty,
            key: c.key,
        });
        let rules = bind_rules(&mapping.name, &mapping.rules, targets, Absent::ChecksNull)
            .map_err(|problems| problems.join("; "))?;
        Ok(RowPlan {
            sources,
            rules,
            target: MappedTarget::of_columns(
                &mapping.target_schema,
                &mapping.target_table,
                &columns,
            ),
            catalog: target,
        })
    }
}

/// A row's values in `sources`' order, checked and normalised by `rules`
/// (as the table run does before its write); `Err` says which value is
/// not one, or which rule refused it.
fn values(
    row: &Map<String, Json>,
    sources: &[String],
    rules: &BoundRules,
) -> Result<Vec<Value>, String> {
    let mut values = read_values(row, sources)?;
    rules.apply(&mut values)?;
    Ok(values)
}

/// A row's values in `sources`' order, as read back from JSON.
fn read_values(row: &Map<String, Json>, sources: &[String]) -> Result<Vec<Value>, String> {
    sources
        .iter()
        .map(|name| {
            let json = row.get(name).unwrap_or(&Json::Null);
            if let Some(why) = json.get("unreadable") {
                return Err(format!(
                    "column {name}: Snowflake sent a value that could not be read ({why}); fix it at the source"
                ));
            }
            from_json(json).map_err(|e| format!("column {name}: {e}"))
        })
        .collect()
}

fn refused(message: String) -> WriteError {
    WriteError {
        kind: ErrorKind::RowLevel,
        sqlstate: None,
        message,
    }
}

#[async_trait]
impl MappedRows for PgMappedRows {
    async fn write_rows(
        &self,
        table: &str,
        rows: &[&Map<String, Json>],
        limits: WriteLimits,
        deadline: &Deadline,
    ) -> Result<SinkOutcome, String> {
        let mapping = self
            .tables
            .iter()
            .find(|m| m.name == table)
            .ok_or_else(|| format!("table {table} is not in the mapping file (TABLES_FILE)"))?;
        let mut outcome = SinkOutcome::default();
        // Rows grouped by their set of columns (one, unless the mapping
        // changed between failures).
        let mut groups: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let mut names: Vec<String> = row.keys().cloned().collect();
            names.sort();
            groups.entry(names).or_default().push(i);
        }
        let mut sinks = self.sinks.lock().await;
        for (names, members) in groups {
            let cache_key = (table.to_string(), names.clone());
            if let Some((_, _, sink)) = sinks.get(&cache_key) {
                if let Some(why) = sink.target_drift(deadline).await {
                    tracing::warn!(table, %why, "planning the table again before writing its rows");
                    sinks.remove(&cache_key);
                }
            }
            if !sinks.contains_key(&cache_key) {
                let planned = match self.plan(mapping, &names).await {
                    Ok(planned) => planned,
                    Err(why) => {
                        // This group's rows come back; the groups already
                        // written stay written.
                        outcome.deferred.extend(members);
                        outcome.stop = Some(SinkError::Postgres(WriteError::fatal(why)));
                        continue;
                    }
                };
                let sink = PgTableSink::with_password_source(
                    self.config.clone(),
                    planned.target,
                    self.refresh.clone(),
                )
                .planned_from(
                    &mapping.target_schema,
                    &mapping.target_table,
                    planned.catalog,
                );
                sinks.insert(cache_key.clone(), (planned.sources, planned.rules, sink));
            }
            let Some((sources, rules, sink)) = sinks.get(&cache_key) else {
                continue;
            };
            let mut readable: Vec<(usize, Vec<Value>)> = Vec::new();
            for &i in &members {
                match values(rows[i], sources, rules) {
                    Ok(v) => readable.push((i, v)),
                    Err(why) => outcome.rejected.push((i, refused(why))),
                }
            }
            let refs: Vec<&[Value]> = readable.iter().map(|(_, v)| v.as_slice()).collect();
            let written = sink.write(&refs, limits, deadline).await;
            outcome.changed += written.changed;
            outcome
                .written
                .extend(written.written.iter().map(|&k| readable[k].0));
            outcome.rejected.extend(
                written
                    .rejected
                    .into_iter()
                    .map(|(k, e)| (readable[k].0, e)),
            );
            outcome
                .deferred
                .extend(written.deferred.iter().map(|&k| readable[k].0));
            if written.stop.is_some() {
                outcome.stop = written.stop;
            }
        }
        Ok(outcome)
    }
}
