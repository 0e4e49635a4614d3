//! The tables' wiring (`case`'s mapping, then `TABLES_FILE`'s): each
//! table's two sides read and matched ([`plan_table`], also `countries
//! tables`' check), and its run built over adapters of its own
//! ([`Planner`]): its own Snowflake session, Postgres connection and lock,
//! so that one table's trouble stays its own.

use std::sync::Arc;

use async_trait::async_trait;

use countries_postgres::catalog::target_columns;
use countries_postgres::connect::connect;
use countries_postgres::mapped::{MappedTarget, PgTableSink};
use countries_postgres::run_guard::PostgresRunGuard;
use countries_postgres::warm::PasswordSource;
use countries_shared::config::tables::TableMapping;
use countries_shared::config::vars::Function;
use countries_shared::config::ReplicatorConfig;
use countries_shared::deadline::Deadline;
use countries_shared::failure::QueueError;
use countries_shared::model::columns::{declared_columns, match_columns, ColumnPlan, TargetColumn};
use countries_shared::model::mapped_message::MappedRetryMessage;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::rules::{bind_rules, Absent, BoundRules, RuleTarget};
use countries_shared::ports::{RetryQueue, RunGuard};
use countries_shared::retry::Backoff;
use countries_shared::table_run::set::TablePlanner;
use countries_shared::table_run::TableReplicator;
use countries_snowflake::discovery::TableName;
use countries_snowflake::mapped::sql::MappedTable;
use countries_snowflake::SnowflakeSource;
use countries_sqs::retry_queue::SqsRetryQueue;

/// The mapping's source table.
pub fn source_name(mapping: &TableMapping) -> TableName<'_> {
    TableName {
        database: mapping.source_database.as_deref(),
        schema: mapping.source_schema.as_deref(),
        table: &mapping.source_table,
    }
}

/// Reads both sides of `mapping` and matches them: the column plan, or
/// every problem, each naming the table (and column).
pub async fn plan_table(
    mapping: &TableMapping,
    snowflake: &SnowflakeSource,
    postgres: &tokio_postgres::Client,
    deadline: &Deadline,
) -> Result<Vec<ColumnPlan>, Vec<String>> {
    plan_and_target(mapping, snowflake, postgres, deadline)
        .await
        .map(|planned| planned.columns)
}

/// A table's column plan, its rules bound to it, and the target's catalog
/// it was made from.
struct Planned {
    columns: Vec<ColumnPlan>,
    rules: BoundRules,
    catalog: Vec<TargetColumn>,
}

/// [`plan_table`], with the rules and the target's catalog.
async fn plan_and_target(
    mapping: &TableMapping,
    snowflake: &SnowflakeSource,
    postgres: &tokio_postgres::Client,
    deadline: &Deadline,
) -> Result<Planned, Vec<String>> {
    let at = format!("table {}", mapping.name);
    let name = source_name(mapping);
    let mut problems = Vec::new();
    let described = snowflake
        .describe(&name, deadline)
        .await
        .map_err(|e| problems.push(format!("{at}: source {}: {e}", name.quoted())))
        .unwrap_or_default();
    let target = target_columns(
        postgres,
        mapping.target_schema.as_str(),
        mapping.target_table.as_str(),
    )
    .await
    .map_err(|e| {
        problems.push(format!(
            "{at}: target {}.{}: {e}",
            mapping.target_schema, mapping.target_table
        ))
    })
    .unwrap_or_default();
    if !problems.is_empty() {
        return Err(problems);
    }
    let pairs: Vec<(String, String)> = described
        .into_iter()
        .map(|c| (c.name, c.declared))
        .collect();
    let columns = mapping.columns.as_deref();
    let renames = &mapping.renames;
    let (source, mut problems) = declared_columns(&mapping.name, &pairs, &target, columns, renames);
    match match_columns(
        &mapping.name,
        &source,
        &target,
        columns,
        &mapping.key,
        renames,
    ) {
        Ok(plan) if problems.is_empty() => {
            let targets = plan.iter().map(RuleTarget::from);
            bind_rules(&mapping.name, &mapping.rules, targets, Absent::Refused).map(|rules| {
                Planned {
                    columns: plan,
                    rules,
                    catalog: target,
                }
            })
        }
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Builds each mapped table's run on its first invocation, and again after
/// a failed attempt, a failed run or a change of its target table. A
/// table's Snowflake client is made once and kept across those: its login,
/// and the snapshots whose drop failed (dropped before its next snapshot),
/// outlive a plan.
pub struct Planner {
    pub config: ReplicatorConfig,
    pub sqs: aws_sdk_sqs::Client,
    /// Each table's Snowflake client, by mapping name.
    pub sources: std::sync::Mutex<std::collections::HashMap<String, Arc<SnowflakeSource>>>,
}

impl Planner {
    /// The table's run lock and ledger rows; `case`'s lock is the one
    /// stream mode's publisher takes too, and its ledger name
    /// `POSTGRES_TABLE`, as ever.
    fn run_guard(&self, mapping: &TableMapping) -> Box<PostgresRunGuard> {
        let postgres = self.config.postgres.clone();
        Box::new(if mapping.is_case {
            PostgresRunGuard::new(postgres)
        } else {
            PostgresRunGuard::for_table(postgres, &mapping.name)
        })
    }

    pub fn new(config: ReplicatorConfig, sqs: aws_sdk_sqs::Client) -> Self {
        Self {
            config,
            sqs,
            sources: Default::default(),
        }
    }

    /// The same, `table`'s Snowflake client already made (the `case`
    /// table's, checked at start).
    pub fn with_source(self, table: &str, source: SnowflakeSource) -> Self {
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(table.to_string(), Arc::new(source));
        self
    }

    /// The table's Snowflake client, made at its first use.
    fn source(&self, table: &str) -> Result<Arc<SnowflakeSource>, String> {
        // A panic while holding this lock loses at most a cached client.
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(source) = sources.get(table) {
            return Ok(Arc::clone(source));
        }
        let source = Arc::new(
            SnowflakeSource::connect(&self.config.snowflake, Function::Replicator.name())
                .map_err(|e| e.to_string())?,
        );
        sources.insert(table.to_string(), Arc::clone(&source));
        Ok(source)
    }
}

#[async_trait]
impl TablePlanner for Planner {
    async fn prepare(
        &self,
        mapping: &TableMapping,
        deadline: &Deadline,
    ) -> Result<TableReplicator, Vec<String>> {
        let at = format!("table {}", mapping.name);
        let config = &self.config;
        let snowflake = self
            .source(&mapping.name)
            .map_err(|e| vec![format!("{at}: Snowflake client: {e}")])?;
        if mapping.is_case {
            // The check at start, if Snowflake could not be reached then
            // (once per process): its error names the variable to change.
            snowflake
                .check(deadline)
                .await
                .map_err(|e| vec![format!("{at}: {e}")])?;
        }
        let postgres = connect(&config.postgres)
            .await
            .map_err(|e| vec![format!("{at}: Postgres: {e}")])?;
        let Planned {
            columns: plan,
            rules,
            catalog,
        } = plan_and_target(mapping, &snowflake, &postgres.client, deadline).await?;
        drop(postgres);
        let columns: Vec<String> = plan.iter().map(|c| c.source.clone()).collect();
        let keys: Vec<String> = plan
            .iter()
            .filter(|c| c.key)
            .map(|c| c.source.clone())
            .collect();
        let key_positions = (0..plan.len()).filter(|&i| plan[i].key).collect();
        let targets = plan.iter().map(|c| c.target.clone()).collect();
        let table = MappedTable::new(&source_name(mapping), &keys, &columns);
        let mut limits = config.limits;
        if let Some(cap) = mapping.max_rows_per_run {
            limits.max_rows_per_run = usize::try_from(cap).unwrap_or(usize::MAX);
        }
        tracing::info!(table = %mapping.name, columns = plan.len(), "table prepared");
        Ok(TableReplicator {
            name: mapping.name.clone(),
            columns,
            targets,
            key_positions,
            rules,
            source: Box::new(snowflake.mapped(table)),
            guard: self.run_guard(mapping),
            sink: Box::new(
                PgTableSink::with_password_source(
                    config.postgres.clone(),
                    MappedTarget::new(&mapping.target_schema, &mapping.target_table, &plan),
                    PasswordSource::from_config(&config.postgres).await,
                )
                .planned_from(
                    &mapping.target_schema,
                    &mapping.target_table,
                    catalog,
                ),
            ),
            queue: {
                let queue = SqsRetryQueue::new(self.sqs.clone(), config.retry_queue_url.clone());
                if mapping.is_case {
                    Box::new(CaseMessages {
                        queue,
                        id: config.snowflake.id_column.as_str().to_string(),
                        country: config.snowflake.country_column.as_str().to_string(),
                    })
                } else {
                    Box::new(queue)
                }
            },
            limits,
            backoff: Backoff::default(),
        })
    }

    fn guard(&self, mapping: &TableMapping) -> Option<Box<dyn RunGuard>> {
        Some(self.run_guard(mapping))
    }
}

/// The `case` table's retry queue: its failed rows go as version-1
/// messages, which the failure report, the digest and `countries replay`
/// show as `case` rows (`id` and `country`: its source columns).
struct CaseMessages {
    queue: SqsRetryQueue,
    id: String,
    country: String,
}

#[async_trait]
impl RetryQueue for CaseMessages {
    async fn enqueue(&self, messages: &[RetryMessage]) -> Vec<Result<(), QueueError>> {
        self.queue.enqueue(messages).await
    }

    async fn enqueue_mapped(&self, messages: &[MappedRetryMessage]) -> Vec<Result<(), QueueError>> {
        let messages: Vec<RetryMessage> = messages
            .iter()
            .map(|m| m.to_case(&self.id, &self.country))
            .collect();
        self.queue.enqueue(&messages).await
    }
}
