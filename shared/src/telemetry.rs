//! Logging: one JSON object per line in Lambda (CloudWatch Logs Insights can
//! query the fields), compact text on a terminal.

use tracing_subscriber::EnvFilter;

/// Sets up logging once per process. `LOG_FORMAT` (`json` or `text`) wins;
/// otherwise JSON inside Lambda and text elsewhere. `RUST_LOG` filters
/// (default `info`).
pub fn init() {
    let json = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if json {
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

/// The CloudWatch namespace of the product's own metrics.
pub const METRICS_NAMESPACE: &str = "CountriesReplication";

/// One CloudWatch Embedded Metric Format document: CloudWatch turns this log
/// line into metrics, with no API call on the hot path. Dimension: Function.
pub fn metrics_document(function: &str, metrics: &[(&str, f64)], timestamp_ms: i64) -> String {
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut document = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": definitions,
            }]
        },
        "Function": function,
    });
    if let Some(object) = document.as_object_mut() {
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
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!(
            "{}",
            metrics_document(function, metrics, chrono::Utc::now().timestamp_millis())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_line_is_valid_embedded_metric_format() {
        let line = metrics_document(
            "replicator",
            &[("RowsRead", 10.0), ("RowsDeferred", 0.0)],
            1,
        );
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(directive["Dimensions"][0][0], "Function");
        assert_eq!(directive["Metrics"][0]["Name"], "RowsRead");
        assert_eq!(doc["Function"], "replicator");
        assert_eq!(doc["RowsRead"], 10.0);
        assert_eq!(doc["RowsDeferred"], 0.0);
    }
}
