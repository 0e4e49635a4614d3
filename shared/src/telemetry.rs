//! Logging: one JSON object per line in Lambda (CloudWatch Logs Insights can
//! query the fields), compact text on a terminal. Lambda's own logging
//! controls (the function's `LoggingConfig`, which the runtime passes as
//! `AWS_LAMBDA_LOG_FORMAT` and `AWS_LAMBDA_LOG_LEVEL`) decide; `LOG_FORMAT`
//! and `RUST_LOG` are local overrides.

use tracing_subscriber::EnvFilter;

/// How the process logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub json: bool,
    /// An `EnvFilter` directive.
    pub filter: String,
}

/// The settings from the environment: `get` reads one variable.
pub fn log_settings(get: impl Fn(&str) -> Option<String>) -> LogSettings {
    let json = match get("LOG_FORMAT").as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => match get("AWS_LAMBDA_LOG_FORMAT").as_deref() {
            Some(f) if f.eq_ignore_ascii_case("json") => true,
            Some(f) if f.eq_ignore_ascii_case("text") => false,
            _ => get("AWS_LAMBDA_FUNCTION_NAME").is_some(),
        },
    };
    let filter = get("RUST_LOG")
        .filter(|f| !f.trim().is_empty())
        .or_else(|| {
            get("AWS_LAMBDA_LOG_LEVEL").map(|level| {
                match level.to_ascii_lowercase().as_str() {
                    // Lambda's FATAL is the most severe level tracing has.
                    "fatal" => "error".to_string(),
                    other => other.to_string(),
                }
            })
        })
        .unwrap_or_else(|| "info".to_string());
    LogSettings { json, filter }
}

/// Sets up logging once per process.
pub fn init() {
    let settings = log_settings(|name| std::env::var(name).ok());
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if settings.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// The product's own metrics: the function (the `Function` dimension) and
/// the metric names it emits. Alarms and the dashboard in `template.yaml`
/// may only use these (the template contract test checks it).
pub mod metric {
    use crate::config::vars::Function;

    pub const REPLICATOR: &str = Function::Replicator.name();
    pub const RETRIER: &str = Function::Retrier.name();
    pub const REPORTER: &str = Function::Reporter.name();
    pub const PUBLISHER: &str = Function::Publisher.name();
    pub const WRITER: &str = Function::Writer.name();

    pub const ROWS_READ: &str = "RowsRead";
    pub const ROWS_WRITTEN: &str = "RowsWritten";
    pub const ROWS_ENQUEUED: &str = "RowsEnqueued";
    /// Rows left in Snowflake for trouble; second versions of an id held
    /// back by design are not counted.
    pub const ROWS_DEFERRED: &str = "RowsDeferred";
    pub const ROWS_DELETED: &str = "RowsDeleted";
    /// 1 for a run whose outcome fails the invocation (failed or partial,
    /// `RunOutcome::is_success`), 0 otherwise: with the Table dimension,
    /// what the per-table alarm watches.
    pub const RUNS_FAILED_OR_PARTIAL: &str = "RunsFailedOrPartial";
    /// Statements a run sent to Snowflake: a handful plus two per page; a
    /// rise without more rows means retries or scattered trouble.
    pub const SNOWFLAKE_STATEMENTS: &str = "SnowflakeStatements";
    pub const RECORDS_WRITTEN: &str = "RecordsWritten";
    pub const RECORDS_FAILED: &str = "RecordsFailed";
    pub const DEAD_LETTERS_REPORTED: &str = "DeadLettersReported";
    pub const DEAD_LETTERS_DELETED: &str = "DeadLettersDeleted";
    /// Changes-queue batches a writer invocation listed to come back.
    pub const BATCHES_RETURNED: &str = "BatchesReturned";

    /// What every run emits, the replicator's and the publisher's alike
    /// (`crate::lambda::replicator::emit_run_metrics`).
    pub const RUN_METRICS: &[&str] = &[
        ROWS_READ,
        ROWS_WRITTEN,
        ROWS_ENQUEUED,
        ROWS_DEFERRED,
        ROWS_DELETED,
        RUNS_FAILED_OR_PARTIAL,
        SNOWFLAKE_STATEMENTS,
    ];

    /// Every (function, metric) the functions emit.
    pub const EMITTED: &[(&str, &[&str])] = &[
        (REPLICATOR, RUN_METRICS),
        (RETRIER, &[RECORDS_WRITTEN, RECORDS_FAILED]),
        (REPORTER, &[DEAD_LETTERS_REPORTED, DEAD_LETTERS_DELETED]),
        (PUBLISHER, RUN_METRICS),
        (WRITER, &[ROWS_WRITTEN, ROWS_ENQUEUED, BATCHES_RETURNED]),
    ];
}

/// The CloudWatch namespace of the product's own metrics.
pub const METRICS_NAMESPACE: &str = "CountriesReplication";

/// One CloudWatch Embedded Metric Format document: CloudWatch turns this log
/// line into metrics, with no API call on the hot path. Dimensions:
/// Function, and with a `table` also (Function, Table): the alarms on
/// Function see every table's runs summed, and the per-table alarms
/// (Metrics Insights queries grouped by Table) each table on its own.
pub fn metrics_document(
    function: &str,
    table: Option<&str>,
    metrics: &[(&str, f64)],
    timestamp_ms: i64,
) -> String {
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
        .collect();
    let dimensions = match table {
        Some(_) => serde_json::json!([["Function"], ["Function", "Table"]]),
        None => serde_json::json!([["Function"]]),
    };
    let mut document = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": definitions,
            }]
        },
        "Function": function,
    });
    if let Some(object) = document.as_object_mut() {
        if let Some(table) = table {
            object.insert("Table".into(), serde_json::json!(table));
        }
        for (name, value) in metrics {
            object.insert((*name).to_string(), serde_json::json!(value));
        }
    }
    document.to_string()
}

/// Flushes what the process wrote (metrics go to stdout, logs to stderr).
pub fn flush() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// Writes the metrics to stdout when running in Lambda (where CloudWatch
/// Logs picks them up); elsewhere they would only be noise.
pub fn emit_metrics(function: &str, metrics: &[(&str, f64)]) {
    emit(function, None, metrics);
}

/// [`emit_metrics`] for one table's run, with the Table dimension.
pub fn emit_table_metrics(function: &str, table: &str, metrics: &[(&str, f64)]) {
    emit(function, Some(table), metrics);
}

fn emit(function: &str, table: Option<&str>, metrics: &[(&str, f64)]) {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!(
            "{}",
            metrics_document(
                function,
                table,
                metrics,
                chrono::Utc::now().timestamp_millis()
            )
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> LogSettings {
        log_settings(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn lambdas_logging_controls_decide_and_local_variables_override() {
        let lambda = [
            ("AWS_LAMBDA_FUNCTION_NAME", "replicator"),
            ("AWS_LAMBDA_LOG_FORMAT", "Text"),
            ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
        ];
        assert_eq!(
            settings(&lambda),
            LogSettings {
                json: false,
                filter: "warn".into()
            }
        );
        let mut overridden = lambda.to_vec();
        overridden.extend([("LOG_FORMAT", "json"), ("RUST_LOG", "debug")]);
        assert_eq!(
            settings(&overridden),
            LogSettings {
                json: true,
                filter: "debug".into()
            }
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).filter,
            "error"
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_FUNCTION_NAME", "x")]),
            LogSettings {
                json: true,
                filter: "info".into()
            },
            "JSON in Lambda when nothing says otherwise"
        );
        assert!(!settings(&[]).json, "text on a terminal");
    }

    #[test]
    fn the_metrics_line_is_valid_embedded_metric_format() {
        let line = metrics_document(
            "replicator",
            None,
            &[("RowsRead", 10.0), ("RowsDeferred", 0.0)],
            1,
        );
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
        assert_eq!(directive["Metrics"][0]["Name"], "RowsRead");
        assert_eq!(doc["Function"], "replicator");
        assert_eq!(doc["RowsRead"], 10.0);
        assert_eq!(doc["RowsDeferred"], 0.0);
        assert!(doc.get("Table").is_none());
    }

    #[test]
    fn a_tables_metrics_carry_the_table_dimension_beside_the_functions() {
        let line = metrics_document("replicator", Some("orders"), &[("RowsRead", 3.0)], 1);
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        // Function alone still aggregates every table (the alarms use it).
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Function"], ["Function", "Table"]])
        );
        assert_eq!(doc["Table"], "orders");
        assert_eq!(doc["RowsRead"], 3.0);
    }
}
