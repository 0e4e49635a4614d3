//! The contract between `template.yaml` and the code: what each function
//! reads is what the template sets, and the settings the code relies on
//! (partial batch responses, the visibility-timeout rule, one replicator at a
//! time) are there. Runs offline; `cfn-lint` checks the template's own rules.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use countries_secrets::resolve;
use countries_secrets::SecretSource;
use countries_shared::config::{
    Env, PublisherConfig, ReplicatorConfig, ReporterConfig, RetrierConfig, WriterConfig,
};
use serde_norway::Value;
use testkit::template::{created_in, get, in_mode, references, template};

/// The name behind `!Ref X`, or the text of a plain scalar.
fn scalar_or_ref(value: &Value) -> (Option<String>, Option<String>) {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            (None, tagged.value.as_str().map(String::from))
        }
        Value::String(s) => (Some(s.clone()), None),
        Value::Number(n) => (Some(n.to_string()), None),
        Value::Bool(b) => (Some(b.to_string()), None),
        other => panic!("unexpected value in an environment: {other:?}"),
    }
}

/// What a parameter would be at deploy time: its default, or a plausible
/// value for the required ones.
fn parameter_value(template: &Value, name: &str) -> String {
    let parameter = get(template, &["Parameters", name]);
    if let Some(default) = parameter.get("Default") {
        return match default {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("{name}: odd default {other:?}"),
        };
    }
    match name {
        n if n.ends_with("SecretArn") => {
            format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{n}")
        }
        "ReportSender" => "replication@example.com".into(),
        "ReportRecipients" => "a@example.com,b@example.com".into(),
        "SnowflakeAccount" => "acme-prod".into(),
        _ => format!("value-of-{name}"),
    }
}

fn resolved_environment(template: &Value, function: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    let globals = get(
        template,
        &["Globals", "Function", "Environment", "Variables"],
    );
    let own = get(
        template,
        &[
            "Resources",
            function,
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    // As deployed with both modes: every variable a function may get.
    let own = in_mode(own, "both");
    for source in [globals, &own] {
        let Some(map) = source.as_mapping() else {
            continue;
        };
        for (key, value) in map {
            let key = key.as_str().expect("variable name").to_string();
            let value = match scalar_or_ref(value) {
                (Some(text), _) => text,
                (None, Some(name)) if template["Parameters"].get(&name).is_some() => {
                    parameter_value(template, &name)
                }
                // !Ref of an SQS queue is its URL.
                (None, Some(name)) => {
                    format!("https://sqs.eu-west-1.amazonaws.com/123456789012/{name}")
                }
                _ => unreachable!(),
            };
            vars.insert(key, value);
        }
    }
    vars
}

struct FakeSecrets;

#[async_trait]
impl SecretSource for FakeSecrets {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        if arn.contains("Postgres") {
            Ok(r#"{"username":"countries_app_user","password":"x"}"#.into())
        } else {
            Ok("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----".into())
        }
    }
}

/// The environment the function would see: template values, secrets
/// resolved, and the CA bundle the layer ships present.
async fn function_environment(
    function: &str,
    ca_file: &std::path::Path,
) -> (HashMap<String, String>, BTreeSet<String>) {
    let template = template();
    let from_template = resolved_environment(&template, function);
    let names: BTreeSet<String> = from_template.keys().cloned().collect();
    let mut vars = from_template;
    assert_eq!(
        vars.get("PGSSLROOTCERT").map(String::as_str),
        Some("/opt/ca/rds-ca-bundle.pem"),
        "the layer's bundle is the default"
    );
    vars.insert("PGSSLROOTCERT".into(), ca_file.display().to_string());
    resolve(&mut vars, &FakeSecrets)
        .await
        .expect("secrets resolve");
    (vars, names)
}

fn ca_file() -> tempfile_path::TempFile {
    tempfile_path::TempFile::new("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
}

mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn new(content: &str) -> Self {
            let path = std::env::temp_dir().join(testkit::unique("ca-bundle"));
            std::fs::write(&path, content).expect("temp file");
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Variables the secrets step or the runtime read, not the config.
const NOT_CONFIG: &[&str] = &[
    "POSTGRES_SECRET_ARN",
    "SNOWFLAKE_PRIVATE_KEY_SECRET_ARN",
    "RUST_LOG",
];

fn assert_every_variable_is_read(function: &str, set: &BTreeSet<String>, read: &[&'static str]) {
    for name in set {
        assert!(
            read.contains(&name.as_str()) || NOT_CONFIG.contains(&name.as_str()),
            "{function}: the template sets {name}, which the code never reads"
        );
    }
}

#[tokio::test]
async fn each_function_starts_with_exactly_what_the_template_gives_it() {
    let ca = ca_file();

    let (vars, set) = function_environment("ReplicatorFunction", &ca.0).await;
    let mut env = Env::from_map(vars);
    let config =
        ReplicatorConfig::read_from(&mut env).expect("replicator config from the template");
    assert_eq!(config.postgres.user, "countries_app_user");
    assert!(matches!(
        config.snowflake.auth,
        countries_shared::config::SnowflakeAuth::PrivateKey(_)
    ));
    assert!(
        config.snowflake.endpoint_url.is_none(),
        "no emulator in the cloud"
    );
    assert_eq!(
        config.postgres.tls,
        countries_shared::config::TlsMode::VerifyFull
    );
    assert_every_variable_is_read("replicator", &set, &env.variables_read());

    let (vars, set) = function_environment("RetrierFunction", &ca.0).await;
    let mut env = Env::from_map(vars);
    RetrierConfig::read_from(&mut env).expect("retrier config from the template");
    assert_every_variable_is_read("retrier", &set, &env.variables_read());

    let (vars, set) = function_environment("DlqReporterFunction", &ca.0).await;
    let mut env = Env::from_map(vars);
    let config =
        ReporterConfig::read_from(&mut env).expect("dlq-reporter config from the template");
    assert_eq!(config.recipients.len(), 2);
    assert_every_variable_is_read("dlq-reporter", &set, &env.variables_read());

    let (vars, set) = function_environment("PublisherFunction", &ca.0).await;
    let mut env = Env::from_map(vars);
    let config = PublisherConfig::read_from(&mut env).expect("publisher config from the template");
    assert!(
        !config.loop_for.is_zero(),
        "the deployed publisher loops between schedules"
    );
    assert!(config.changes_queue_url.contains("ChangesQueue"));
    assert_every_variable_is_read("publisher", &set, &env.variables_read());

    let (vars, set) = function_environment("WriterFunction", &ca.0).await;
    let mut env = Env::from_map(vars);
    let writer = WriterConfig::read_from(&mut env).expect("writer config from the template");
    assert!(writer
        .changes_dead_letter_queue_url
        .contains("ChangesDeadLetterQueue"));
    assert_every_variable_is_read("writer", &set, &env.variables_read());
}

#[test]
fn the_publisher_loop_fits_in_its_timeout() {
    let t = template();
    let timeout = number_default(&t, "PublisherTimeout");
    let loop_seconds = number_default(&t, "PublishLoopSeconds");
    assert!(
        timeout >= loop_seconds + 30,
        "PublisherTimeout {timeout} leaves under 30 s after a {loop_seconds} s loop"
    );
}

fn number_default(template: &Value, parameter: &str) -> u64 {
    parameter_value(template, parameter)
        .parse()
        .expect("a number")
}

#[test]
fn the_retry_queue_settings_follow_the_sqs_event_source_rules() {
    let t = template();
    let retrier_timeout = number_default(&t, "RetrierTimeout");
    let visibility = number_default(&t, "RetryQueueVisibilityTimeout");
    assert!(
        visibility >= 6 * retrier_timeout,
        "visibility timeout {visibility} < 6 × retrier timeout {retrier_timeout}"
    );
    assert!(number_default(&t, "MaxReceiveCount") >= 5);

    let queue = get(&t, &["Resources", "RetryQueue", "Properties"]);
    assert_eq!(
        scalar_or_ref(&queue["VisibilityTimeout"]).1.as_deref(),
        Some("RetryQueueVisibilityTimeout")
    );
    assert_eq!(
        scalar_or_ref(&queue["RedrivePolicy"]["maxReceiveCount"])
            .1
            .as_deref(),
        Some("MaxReceiveCount")
    );
    assert_eq!(queue["SqsManagedSseEnabled"], Value::Bool(true));
    let dlq = get(&t, &["Resources", "DeadLetterQueue", "Properties"]);
    assert_eq!(
        dlq["MessageRetentionPeriod"].as_u64(),
        Some(1_209_600),
        "14 days"
    );

    let event = get(
        &t,
        &[
            "Resources",
            "RetrierFunction",
            "Properties",
            "Events",
            "RetryQueue",
        ],
    );
    assert_eq!(event["Type"].as_str(), Some("SQS"));
    let types: Vec<&str> = event["Properties"]["FunctionResponseTypes"]
        .as_sequence()
        .expect("FunctionResponseTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        types,
        vec!["ReportBatchItemFailures"],
        "partial batch responses"
    );
}

#[test]
fn the_changes_queue_is_fifo_and_its_writers_follow_the_sqs_event_source_rules() {
    let t = template();
    let writer_timeout = number_default(&t, "WriterTimeout");
    let visibility = number_default(&t, "ChangesQueueVisibilityTimeout");
    assert!(
        visibility >= 6 * writer_timeout,
        "visibility timeout {visibility} < 6 × writer timeout {writer_timeout}"
    );
    assert!(number_default(&t, "ChangesMaxReceiveCount") >= 5);
    for queue in ["ChangesQueue", "ChangesDeadLetterQueue"] {
        let properties = get(&t, &["Resources", queue, "Properties"]);
        assert_eq!(properties["FifoQueue"], Value::Bool(true), "{queue}");
        assert_eq!(properties["SqsManagedSseEnabled"], Value::Bool(true));
    }
    let queue = get(&t, &["Resources", "ChangesQueue", "Properties"]);
    assert_eq!(
        queue["ContentBasedDeduplication"],
        Value::Bool(false),
        "the publisher's deduplication ids, not the bodies"
    );
    assert_eq!(
        scalar_or_ref(&queue["VisibilityTimeout"]).1.as_deref(),
        Some("ChangesQueueVisibilityTimeout")
    );
    let event = get(
        &t,
        &[
            "Resources",
            "WriterFunction",
            "Properties",
            "Events",
            "ChangesQueue",
        ],
    );
    assert_eq!(event["Type"].as_str(), Some("SQS"));
    let properties = &event["Properties"];
    assert_eq!(
        serde_norway::to_string(&properties["Queue"])
            .unwrap_or_default()
            .trim(),
        "!GetAtt ChangesQueue.Arn"
    );
    assert_eq!(
        serde_norway::to_string(&properties["FunctionResponseTypes"])
            .unwrap_or_default()
            .trim(),
        "- ReportBatchItemFailures"
    );
    assert_eq!(
        scalar_or_ref(&properties["ScalingConfig"]["MaximumConcurrency"])
            .1
            .as_deref(),
        Some("WriterMaxConcurrency")
    );
    // FIFO event sources take at most 10 messages and no batching window.
    let batch = get(&t, &["Parameters", "WriterBatchSize"]);
    assert!(batch["MaxValue"].as_u64().is_some_and(|m| m <= 10));
    assert!(properties.get("MaximumBatchingWindowInSeconds").is_none());
}

#[test]
fn each_mode_creates_its_functions_and_only_what_they_need() {
    let t = template();
    let modes = get(&t, &["Parameters", "Mode", "AllowedValues"]);
    assert_eq!(
        serde_norway::to_string(modes).unwrap_or_default().trim(),
        "- batch\n- stream\n- both"
    );
    let functions = |created: &BTreeSet<String>| -> Vec<String> {
        created
            .iter()
            .filter(|name| t["Resources"][name.as_str()]["Type"] == "AWS::Serverless::Function")
            .cloned()
            .collect()
    };
    for (mode, expected, absent) in [
        (
            "batch",
            &[
                "DlqReporterFunction",
                "ReplicatorFunction",
                "RetrierFunction",
            ][..],
            &[
                "ChangesQueue",
                "ChangesDeadLetterQueue",
                "StreamDashboard",
                "PublisherRole",
                "WriterRole",
            ][..],
        ),
        (
            "stream",
            &[
                "DlqReporterFunction",
                "PublisherFunction",
                "RetrierFunction",
                "WriterFunction",
            ][..],
            &[
                "ReplicatorRole",
                "Dashboard",
                "ReplicatorErrorsAlarm",
                "ReplicatorTableRunsAlarm",
                "ReplicatorNoDataAlarm",
            ][..],
        ),
        (
            "both",
            &[
                "DlqReporterFunction",
                "PublisherFunction",
                "ReplicatorFunction",
                "RetrierFunction",
                "WriterFunction",
            ][..],
            &[][..],
        ),
    ] {
        let created = created_in(&t, mode);
        assert_eq!(functions(&created), expected, "{mode}");
        for name in absent {
            assert!(!created.contains(*name), "{mode} creates {name}");
        }
        // Nothing created refers to something that is not.
        let parameters = t["Parameters"].as_mapping().expect("parameters");
        for name in &created {
            let mut refs = BTreeSet::new();
            references(&in_mode(&t["Resources"][name.as_str()], mode), &mut refs);
            for target in refs {
                let known = created.contains(&target)
                    || target.starts_with("AWS::")
                    || parameters.contains_key(target.as_str());
                assert!(
                    known,
                    "{mode}: {name} refers to {target}, which is not created"
                );
            }
        }
    }
}

#[test]
fn one_replicator_at_a_time_on_arm64_built_by_cargo_lambda() {
    let t = template();
    let replicator = get(&t, &["Resources", "ReplicatorFunction", "Properties"]);
    assert_eq!(replicator["ReservedConcurrentExecutions"].as_u64(), Some(1));
    let globals = get(&t, &["Globals", "Function"]);
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Handler"].as_str(), Some("bootstrap"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    let publisher = get(&t, &["Resources", "PublisherFunction", "Properties"]);
    assert_eq!(publisher["ReservedConcurrentExecutions"].as_u64(), Some(1));
    for (resource, crate_dir) in [
        ("ReplicatorFunction", "functions/replicator"),
        ("RetrierFunction", "functions/retrier"),
        ("DlqReporterFunction", "functions/dlq-reporter"),
        ("PublisherFunction", "functions/publisher"),
        ("WriterFunction", "functions/writer"),
    ] {
        let function = &t["Resources"][resource];
        assert_eq!(
            function["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        assert_eq!(function["Properties"]["CodeUri"].as_str(), Some(crate_dir));
        let manifest = format!("{}/../{crate_dir}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        assert!(std::path::Path::new(&manifest).is_file(), "{manifest}");
    }
}

/// Every statement of every IAM policy in the template: (owner, statement).
fn policy_statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, resource) in t["Resources"].as_mapping().expect("resources") {
        let name = name.as_str().unwrap_or_default().to_string();
        let Some(policies) = resource["Properties"]["Policies"].as_sequence() else {
            continue;
        };
        for policy in policies {
            // `!If [Condition, policy, !Ref AWS::NoValue]`: the policy inside.
            let policy = match policy {
                Value::Tagged(tagged) if tagged.tag == "If" => tagged.value[1].clone(),
                other => other.clone(),
            };
            let statements = &policy["PolicyDocument"]["Statement"];
            for statement in statements.as_sequence().into_iter().flatten() {
                out.push((name.clone(), statement.clone()));
            }
        }
    }
    out
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The only actions that may be granted on every resource, and why: AWS
/// accepts nothing narrower for them. The README lists them.
const WILDCARD_ALLOWED: &[&str] = &[
    // Lambda in a VPC: the network-interface actions (granted only InVpc).
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
];

#[test]
fn no_policy_grants_a_wildcard_resource_except_where_aws_requires_it() {
    let t = template();
    let statements = policy_statements(&t);
    assert!(
        statements.len() >= 10,
        "found {} statements",
        statements.len()
    );
    for (owner, statement) in &statements {
        let actions = strings(&statement["Action"]);
        assert!(
            actions.iter().all(|a| a != "*" && !a.ends_with(":*")),
            "{owner} grants every action: {statement:?}"
        );
        if strings(&statement["Resource"]).iter().any(|r| r == "*") {
            assert!(
                actions
                    .iter()
                    .all(|a| WILDCARD_ALLOWED.contains(&a.as_str())),
                "{owner} grants {actions:?} on *"
            );
        }
    }
    // The VPC statement is attached only in a VPC.
    for role in [
        "ReplicatorRole",
        "RetrierRole",
        "DlqReporterRole",
        "PublisherRole",
        "WriterRole",
    ] {
        let policies = t["Resources"][role]["Properties"]["Policies"]
            .as_sequence()
            .expect("policies");
        let vpc = policies
            .iter()
            .find(|p| {
                serde_norway::to_string(p)
                    .unwrap_or_default()
                    .contains("ec2:")
            })
            .expect("a VPC policy");
        match vpc {
            Value::Tagged(tagged) => {
                assert_eq!(tagged.tag, "If");
                assert_eq!(tagged.value[0].as_str(), Some("InVpc"), "{role}");
            }
            other => panic!("{role}: the VPC policy is unconditional: {other:?}"),
        }
    }
}

#[test]
fn functions_use_their_own_roles_and_no_managed_policy() {
    let t = template();
    for (function, role) in [
        ("ReplicatorFunction", "ReplicatorRole"),
        ("RetrierFunction", "RetrierRole"),
        ("DlqReporterFunction", "DlqReporterRole"),
        ("PublisherFunction", "PublisherRole"),
        ("WriterFunction", "WriterRole"),
    ] {
        let properties = &t["Resources"][function]["Properties"];
        // With an explicit Role, SAM attaches no AWS managed policy
        // (AWSLambdaBasicExecutionRole, AWSLambdaVPCAccessExecutionRole,
        // AWSLambdaSQSQueueExecutionRole grant on every resource).
        match &properties["Role"] {
            Value::Tagged(tagged) => {
                assert_eq!(tagged.tag, "GetAtt");
                assert_eq!(tagged.value.as_str(), Some(format!("{role}.Arn").as_str()));
            }
            other => panic!("{function} has no role of its own: {other:?}"),
        }
        assert!(properties.get("Policies").is_none(), "{function}: Policies");
        let role = &t["Resources"][role]["Properties"];
        assert!(
            role.get("ManagedPolicyArns").is_none(),
            "{function}: managed policies"
        );
    }
    // The retrier's event source mapping works on the retry queue alone.
    let retrier: Vec<(String, Value)> = policy_statements(&t)
        .into_iter()
        .filter(|(owner, _)| owner == "RetrierRole")
        .collect();
    let receive = retrier
        .iter()
        .find(|(_, s)| strings(&s["Action"]).contains(&"sqs:ReceiveMessage".to_string()))
        .expect("sqs:ReceiveMessage for the event source mapping");
    assert_eq!(
        serde_norway::to_string(&receive.1["Resource"])
            .unwrap_or_default()
            .trim(),
        "!GetAtt RetryQueue.Arn"
    );
    // Each SQS action of a role names its own queues: the writer receives
    // from the changes queue only and sends to the retry queue and the
    // changes dead-letter queue only; the
    // publisher sends to the changes, retry and invocation-failure queues.
    let sqs_grants = |role: &str| -> Vec<(Vec<String>, String)> {
        policy_statements(&t)
            .into_iter()
            .filter(|(owner, s)| {
                owner == role && strings(&s["Action"]).iter().any(|a| a.starts_with("sqs:"))
            })
            .map(|(_, s)| {
                (
                    strings(&s["Action"]),
                    serde_norway::to_string(&s["Resource"]).unwrap_or_default(),
                )
            })
            .collect()
    };
    let writer = sqs_grants("WriterRole");
    assert_eq!(writer.len(), 2, "{writer:?}");
    for (actions, resources) in &writer {
        if actions.contains(&"sqs:ReceiveMessage".to_string()) {
            assert_eq!(resources.trim(), "!GetAtt ChangesQueue.Arn");
        } else {
            // Refused rows to the retry queue; messages that are not
            // batches parked in the changes dead-letter queue.
            assert_eq!(actions, &vec!["sqs:SendMessage".to_string()]);
            assert!(
                resources.contains("RetryQueue.Arn")
                    && resources.contains("ChangesDeadLetterQueue.Arn")
                    && resources.matches(".Arn").count() == 2,
                "{resources}"
            );
        }
    }
    let publisher = sqs_grants("PublisherRole");
    assert_eq!(publisher.len(), 1, "{publisher:?}");
    assert_eq!(publisher[0].0, vec!["sqs:SendMessage".to_string()]);
    for queue in ["ChangesQueue", "RetryQueue", "InvocationFailureQueue"] {
        assert!(publisher[0].1.contains(queue), "{publisher:?}");
    }
    assert!(!publisher[0].1.contains("DeadLetter"), "{publisher:?}");
}

#[test]
fn alarms_can_publish_to_the_encrypted_alarm_topic() {
    let t = template();
    let topic = &t["Resources"]["AlarmTopic"]["Properties"];
    let key = match &topic["KmsMasterKeyId"] {
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            tagged.value.as_str().expect("key name").to_string()
        }
        other => panic!(
            "the alarm topic's key must be a customer managed key of this stack \
             (CloudWatch cannot use alias/aws/sns): {other:?}"
        ),
    };
    let key = &t["Resources"][key.as_str()];
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
    let statements = key["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .expect("a key policy");
    let cloudwatch = statements
        .iter()
        .find(|s| s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
        .expect("a statement for cloudwatch.amazonaws.com");
    let actions = strings(&cloudwatch["Action"]);
    for needed in ["kms:Decrypt", "kms:GenerateDataKey*"] {
        assert!(actions.iter().any(|a| a == needed), "{needed}: {actions:?}");
    }
    // Every alarm notifies that topic.
    for (name, resource) in t["Resources"].as_mapping().expect("resources") {
        if resource["Type"].as_str() == Some("AWS::CloudWatch::Alarm") {
            let actions = serde_norway::to_string(&resource["Properties"]["AlarmActions"])
                .unwrap_or_default();
            assert!(actions.contains("AlarmTopic"), "{name:?} notifies nobody");
        }
    }
}

#[test]
fn scheduled_runs_are_not_retried_asynchronously_and_their_failures_alarm() {
    let t = template();
    for function in [
        "ReplicatorFunction",
        "DlqReporterFunction",
        "PublisherFunction",
    ] {
        let properties = &t["Resources"][function]["Properties"];
        assert_eq!(
            properties["Events"]["Schedule"]["Type"].as_str(),
            Some("ScheduleV2")
        );
        let invoke = &properties["EventInvokeConfig"];
        assert_eq!(
            invoke["MaximumRetryAttempts"].as_u64(),
            Some(0),
            "{function}: the next scheduled run is the retry"
        );
        let destination =
            serde_norway::to_string(&invoke["DestinationConfig"]["OnFailure"]).unwrap_or_default();
        assert!(
            destination.contains("InvocationFailureQueue.Arn"),
            "{function}: {destination}"
        );
    }
    let alarm = &t["Resources"]["InvocationFailureAlarm"]["Properties"];
    let dimension = serde_norway::to_string(&alarm["Dimensions"]).unwrap_or_default();
    assert!(dimension.contains("InvocationFailureQueue"), "{dimension}");
}

#[test]
fn the_queues_that_hold_rows_are_retained() {
    let t = template();
    for queue in [
        "RetryQueue",
        "DeadLetterQueue",
        "ChangesQueue",
        "ChangesDeadLetterQueue",
    ] {
        let resource = &t["Resources"][queue];
        assert_eq!(
            resource["DeletionPolicy"].as_str(),
            Some("Retain"),
            "{queue}"
        );
        assert_eq!(
            resource["UpdateReplacePolicy"].as_str(),
            Some("Retain"),
            "{queue}"
        );
    }
}

#[test]
fn every_scanner_suppression_gives_a_reason() {
    let t = template();
    let mut suppressions = 0;
    for (name, resource) in t["Resources"].as_mapping().expect("resources") {
        for skip in resource["Metadata"]["checkov"]["skip"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            suppressions += 1;
            let id = skip["id"].as_str().unwrap_or_default();
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(id.starts_with("CKV_"), "{name:?}: {skip:?}");
            assert!(
                comment.len() > 20,
                "{name:?} suppresses {id} without a reason"
            );
        }
    }
    assert!(suppressions > 0, "the scan found nothing to read");
}

#[test]
fn the_release_profile_unwinds_so_panics_are_contained() {
    // `cargo lambda build --release` (sam build, infra/deploy/build.sh)
    // sets panic = "abort" unless the release profile names a strategy.
    let manifest: toml_like::Manifest =
        toml_like::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    assert_eq!(manifest.release_panic.as_deref(), Some("unwind"));
}

/// Just enough TOML reading for the workspace manifest's release profile.
mod toml_like {
    pub struct Manifest {
        pub release_panic: Option<String>,
    }

    pub fn read(path: &str) -> Manifest {
        let text = std::fs::read_to_string(path).expect("Cargo.toml");
        let mut section = String::new();
        let mut release_panic = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
            } else if section == "[profile.release]" {
                if let Some(value) = line.strip_prefix("panic") {
                    let value = value.trim_start().trim_start_matches('=').trim();
                    release_panic = Some(value.trim_matches('"').to_string());
                }
            }
        }
        Manifest { release_panic }
    }
}

#[test]
fn the_digest_sender_may_be_verified_as_an_address_or_as_its_domain() {
    let t = template();
    let ses = policy_statements(&t)
        .into_iter()
        .find(|(owner, s)| {
            owner == "DlqReporterRole"
                && strings(&s["Action"])
                    .iter()
                    .any(|a| a == "ses:SendRawEmail")
        })
        .expect("the SES statement");
    let resources = serde_norway::to_string(&ses.1["Resource"]).unwrap_or_default();
    assert!(
        resources.contains("identity/${ReportSender}"),
        "{resources}"
    );
    assert!(resources.contains("identity/${Domain}"), "{resources}");
}

/// The emulator has no roles or grants, so `access.sql` cannot run on the
/// local stack; this keeps it from drifting: the statements the replicator
/// sends to Snowflake need exactly the privileges the file grants.
#[test]
fn the_snowflake_grants_match_the_statements_the_replicator_sends() {
    use countries_shared::ports::IdMatch;
    use countries_snowflake::sql::{
        count_statement, describe_statement, drop_statement, join_delete_statement, page_statement,
        snapshot_name, snapshot_statement, SourceTable,
    };

    let access = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/sql/snowflake/deploy/access.sql"
    ))
    .expect("access.sql");
    let grants: Vec<&str> = access
        .lines()
        .filter(|l| l.starts_with("GRANT") && (l.contains("ON TABLE") || l.contains("ON SCHEMA")))
        .collect();
    assert_eq!(
        grants,
        vec![
            r#"GRANT USAGE ON SCHEMA <database>.<schema> TO ROLE COUNTRIES_REPLICATOR;"#,
            r#"GRANT SELECT, DELETE ON TABLE <database>.<schema>."case" TO ROLE COUNTRIES_REPLICATOR;"#,
        ],
        "usage on the schema, SELECT and DELETE on the one table; a temporary table needs no CREATE TABLE"
    );
    assert!(access.contains("RSA_PUBLIC_KEY"), "key-pair authentication");
    assert!(
        !access.to_uppercase().contains("PASSWORD ="),
        "no password for the service user"
    );

    // Every statement a run sends, and the privilege it needs: the source
    // table is only read (SELECT) and deleted from (DELETE); the one table
    // the role creates is its own temporary snapshot (no privilege needed;
    // it owns what it creates, so it may read and drop it).
    let table = SourceTable::named("case");
    let snapshot = snapshot_name(uuid::Uuid::nil());
    let statements = [
        count_statement(&table),
        snapshot_statement(&table, &snapshot, 10),
        page_statement(&table, &snapshot, &(1..=10)),
        join_delete_statement(&table, &snapshot, &[1..=10], IdMatch::Equal, Some((1, 10))).unwrap(),
        join_delete_statement(&table, &snapshot, &[1..=10], IdMatch::BothNull, None).unwrap(),
        drop_statement(&snapshot),
        describe_statement(&table),
    ];
    let needs: Vec<(String, &str)> = statements
        .iter()
        .map(|sql| {
            let verb: Vec<&str> = sql.split_whitespace().take(4).collect();
            let need = match verb.as_slice() {
                ["SELECT", ..] if sql.contains(r#"FROM "case""#) => "SELECT on case",
                ["SELECT", ..] => "owner of the snapshot",
                // Any role may create a temporary table (no CREATE TABLE).
                ["CREATE", "OR", "REPLACE", "TEMPORARY"] => "a session's temporary table",
                ["DELETE", "FROM", r#""case""#, ..] => "DELETE on case",
                ["DROP", "TABLE", "IF", "EXISTS"] => "owner of the snapshot",
                // Any privilege on the table shows its columns.
                ["DESCRIBE", "TABLE", r#""case""#] => "SELECT on case",
                _ => "unknown",
            };
            (sql.clone(), need)
        })
        .collect();
    for (sql, need) in &needs {
        assert_ne!(
            *need, "unknown",
            "a statement the grants do not cover: {sql}"
        );
    }
    assert!(
        statements[1].contains(&format!("TEMPORARY TABLE {}", snapshot.quoted())),
        "the snapshot is temporary: it dies with the session"
    );

    let role = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/sql/postgres/V3__app_role.sql"
    ))
    .expect("V3__app_role.sql");
    for table in [r#""case""#, "replication_run", "failure_report"] {
        assert!(
            role.contains(&format!(
                "GRANT SELECT, INSERT, UPDATE ON {table} TO countries_app"
            )),
            "countries_app lacks the rights the functions use on {table}"
        );
    }
    assert!(
        role.lines()
            .filter(|l| l.trim_start().starts_with("GRANT"))
            .all(|l| !l.contains("DELETE")),
        "the functions never delete in Postgres"
    );
}
