//! The template's observability contract: the functions' logging controls,
//! and the dashboards and alarms, which must show only metrics the code
//! emits and everything on-call needs. Runs offline, like
//! `template_contract.rs`.

use serde_norway::Value;
use testkit::template::{created_in, get, template};

#[test]
fn lambdas_logging_controls_set_the_format_and_level() {
    let t = template();
    let logging = get(&t, &["Globals", "Function", "LoggingConfig"]);
    assert_eq!(logging["LogFormat"].as_str(), Some("JSON"));
    assert!(logging["ApplicationLogLevel"].as_str().is_some());
    // RUST_LOG and LOG_FORMAT are local overrides: set in the template they
    // would hide the console's logging controls.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml");
    assert!(!text.contains("RUST_LOG:") && !text.contains("LOG_FORMAT:"));
}

/// A dashboard's body, with `${…}` placeholders filled in, as JSON.
fn dashboard_body(t: &Value, dashboard: &str) -> serde_json::Value {
    let body = match &t["Resources"][dashboard]["Properties"]["DashboardBody"] {
        Value::Tagged(tagged) if tagged.tag == "Sub" => {
            tagged.value.as_str().expect("a Sub string").to_string()
        }
        other => panic!("{dashboard}: DashboardBody is not a !Sub string: {other:?}"),
    };
    let mut filled = String::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').expect("a closed ${…}") + start;
        let name = &rest[start + 2..end];
        let resource = name.split('.').next().unwrap_or_default();
        assert!(
            resource.starts_with("AWS::") || t["Resources"].get(resource).is_some(),
            "{dashboard} names a resource the template does not have: {name}"
        );
        filled.push_str(&rest[..start]);
        filled.push_str(&format!("<{name}>"));
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    serde_json::from_str(&filled).expect("DashboardBody is JSON")
}

/// (namespace, metric, first dimension value) of every metric line.
fn dashboard_metrics(body: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        for line in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let text = |i: usize| line[i].as_str().unwrap_or_default().to_string();
            out.push((text(0), text(1), text(3)));
        }
    }
    out
}

/// Batch mode's dashboard and stream mode's: what each must show.
struct DashboardSpec {
    resource: &'static str,
    mode: &'static str,
    functions: &'static [&'static str],
    lambdas: &'static [&'static str],
    queues: &'static [&'static str],
}

const DASHBOARDS: &[DashboardSpec] = &[
    DashboardSpec {
        resource: "Dashboard",
        mode: "batch",
        functions: &["replicator", "retrier", "dlq-reporter"],
        lambdas: &[
            "ReplicatorFunction",
            "RetrierFunction",
            "DlqReporterFunction",
        ],
        queues: &["RetryQueue.QueueName", "DeadLetterQueue.QueueName"],
    },
    DashboardSpec {
        resource: "StreamDashboard",
        mode: "stream",
        functions: &["publisher", "writer", "retrier", "dlq-reporter"],
        lambdas: &[
            "PublisherFunction",
            "WriterFunction",
            "RetrierFunction",
            "DlqReporterFunction",
        ],
        queues: &[
            "ChangesQueue.QueueName",
            "ChangesDeadLetterQueue.QueueName",
            "RetryQueue.QueueName",
            "DeadLetterQueue.QueueName",
        ],
    },
];

#[test]
fn the_dashboards_show_only_metrics_that_are_emitted_and_everything_on_call_needs() {
    use countries_shared::telemetry::{metric::EMITTED, METRICS_NAMESPACE};
    let t = template();
    let emitted = |function: &str, name: &str| {
        EMITTED
            .iter()
            .any(|(f, names)| *f == function && names.contains(&name))
    };
    for spec in DASHBOARDS {
        let dashboard = spec.resource;
        let body = dashboard_body(&t, dashboard);
        let metrics = dashboard_metrics(&body);
        for (namespace, name, function) in &metrics {
            if namespace == METRICS_NAMESPACE {
                assert!(
                    emitted(function, name),
                    "{dashboard} shows {name} of {function}, which no function emits"
                );
            }
        }
        // Every metric its mode's functions emit is on it.
        for (function, names) in EMITTED {
            if !spec.functions.contains(function) {
                continue;
            }
            for name in *names {
                assert!(
                    metrics
                        .iter()
                        .any(|(ns, n, f)| ns == METRICS_NAMESPACE && n == name && f == function),
                    "{name} of {function} is not on {dashboard}"
                );
            }
        }
        let has = |namespace: &str, name: &str, dimension: &str| {
            metrics
                .iter()
                .any(|(ns, n, d)| ns == namespace && n == name && d.contains(dimension))
        };
        for queue in spec.queues {
            assert!(
                has("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue),
                "{dashboard}: depth of {queue}"
            );
            assert!(
                has("AWS/SQS", "ApproximateAgeOfOldestMessage", queue),
                "{dashboard}: age of {queue}"
            );
        }
        for function in spec.lambdas {
            for name in ["Errors", "Throttles", "Duration"] {
                assert!(
                    has("AWS/Lambda", name, function),
                    "{dashboard}: {name} of {function}"
                );
            }
        }
        // The alarm widget lists every alarm its mode creates (alarms an
        // operator turns on with a parameter of their own aside).
        let listed = body["widgets"]
            .as_array()
            .expect("widgets")
            .iter()
            .find(|w| w["type"] == "alarm")
            .expect("an alarm widget")["properties"]["alarms"]
            .to_string();
        let created = created_in(&t, spec.mode);
        for (name, resource) in t["Resources"].as_mapping().expect("resources") {
            let name = name.as_str().unwrap_or_default();
            let optional = resource["Condition"]
                .as_str()
                .is_some_and(|c| c != "HasBatch" && c != "HasStream");
            if resource["Type"].as_str() == Some("AWS::CloudWatch::Alarm")
                && created.contains(name)
                && !optional
            {
                assert!(
                    listed.contains(name),
                    "{dashboard}'s alarm widget misses {name}"
                );
            }
        }
    }
}

#[test]
fn alarms_on_the_products_metrics_use_emitted_names() {
    use countries_shared::telemetry::{metric::EMITTED, METRICS_NAMESPACE};
    let emitted = |function: &str, metric: &str| {
        EMITTED
            .iter()
            .any(|(f, names)| *f == function && names.contains(&metric))
    };
    let t = template();
    let (mut checked, mut per_table) = (0, 0);
    for (name, resource) in t["Resources"].as_mapping().expect("resources") {
        let properties = &resource["Properties"];
        if properties["Namespace"].as_str() == Some(METRICS_NAMESPACE) {
            checked += 1;
            let metric = properties["MetricName"].as_str().unwrap_or_default();
            let function = properties["Dimensions"][0]["Value"]
                .as_str()
                .unwrap_or_default();
            assert!(
                emitted(function, metric),
                "{name:?} alarms on {metric} of {function}, which no function emits"
            );
        }
        // A Metrics Insights alarm: its query names the metric, the schema
        // and the function; grouped by Table, each table is a contributor.
        for query in properties["Metrics"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|m| m["Expression"].as_str())
            .filter(|e| e.starts_with("SELECT "))
        {
            checked += 1;
            let between = |from: &str, to: &str| {
                let start = query.find(from).map(|i| i + from.len());
                start.and_then(|i| query[i..].find(to).map(|j| query[i..i + j].to_string()))
            };
            let metric = between("(", ")").unwrap_or_default();
            let schema = between("SCHEMA(", ")").unwrap_or_default();
            let function = between("\"Function\" = '", "'").unwrap_or_default();
            assert!(
                schema == format!("{METRICS_NAMESPACE}, \"Function\", \"Table\""),
                "{name:?} queries {schema}, not the metrics with a Table dimension"
            );
            assert!(
                emitted(&function, &metric),
                "{name:?} alarms on {metric} of {function:?}, which no function emits"
            );
            per_table += usize::from(query.ends_with("GROUP BY \"Table\""));
        }
    }
    assert!(checked >= 3, "{checked} alarms checked");
    assert!(
        per_table >= 2,
        "{per_table} alarms with a contributor per table"
    );
}
