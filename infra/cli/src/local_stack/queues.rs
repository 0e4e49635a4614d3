//! `template.yaml`'s queues in the AWS emulator, made from the template's
//! own definitions: each property of a queue resource becomes the queue
//! attribute of the same name, a parameter at its default unless given, so
//! that the local stack and the tests have the queues the cloud has. Only
//! the names, and the parameters given, differ.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_norway::Value;

/// The SAM template, as built into this command.
pub const TEMPLATE: &str = include_str!("../../../../template.yaml");

/// The template, parsed.
pub fn template() -> Result<Value> {
    serde_norway::from_str(TEMPLATE).context("template.yaml is not YAML")
}

/// The value at `path` (a missing key gives YAML null).
pub fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| &v[*key])
}

/// A queue of the template and its dead-letter queue: logical names, the
/// suffixes of their names here, and the parameters that set the queue's
/// redrive count and visibility timeout.
#[derive(Debug, Clone, Copy)]
pub struct QueuePair {
    pub dlq: (&'static str, &'static str),
    pub queue: (&'static str, &'static str),
    pub max_receive_count: &'static str,
    pub visibility_timeout: &'static str,
}

/// The retry queue and its dead-letter queue.
pub const RETRY: QueuePair = QueuePair {
    dlq: ("DeadLetterQueue", "retry-dlq"),
    queue: ("RetryQueue", "retry"),
    max_receive_count: "MaxReceiveCount",
    visibility_timeout: "RetryQueueVisibilityTimeout",
};

/// Stream mode's FIFO changes queue and its FIFO dead-letter queue.
pub const CHANGES: QueuePair = QueuePair {
    dlq: ("ChangesDeadLetterQueue", "changes-dlq.fifo"),
    queue: ("ChangesQueue", "changes.fifo"),
    max_receive_count: "ChangesMaxReceiveCount",
    visibility_timeout: "ChangesQueueVisibilityTimeout",
};

/// The CreateQueue attributes the template gives queue resource `logical`:
/// `!Ref P` from `parameters` or P's default, a redrive target's
/// `!GetAtt X.Arn` from `arns` (logical name → ARN).
pub fn queue_attributes(
    t: &Value,
    logical: &str,
    parameters: &[(&str, &str)],
    arns: &HashMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let properties = get(t, &["Resources", logical, "Properties"])
        .as_mapping()
        .ok_or_else(|| anyhow!("template.yaml has no queue {logical}"))?;
    properties
        .iter()
        .map(|(k, v)| {
            let name = k
                .as_str()
                .ok_or_else(|| anyhow!("{logical}: a property name is not text"))?;
            let value = match resolve(t, v, parameters, arns)? {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((name.to_string(), value))
        })
        .collect()
}

fn resolve(
    t: &Value,
    v: &Value,
    parameters: &[(&str, &str)],
    arns: &HashMap<String, String>,
) -> Result<serde_json::Value> {
    Ok(match v {
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            let name = tagged
                .value
                .as_str()
                .ok_or_else(|| anyhow!("a !Ref without a name"))?;
            let text = match parameters.iter().find(|(p, _)| *p == name) {
                Some((_, given)) => (*given).to_string(),
                None => match get(t, &["Parameters", name, "Default"]) {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(anyhow!("parameter {name} has no default: {other:?}")),
                },
            };
            serde_json::Value::String(text)
        }
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
            let target = tagged.value.as_str().unwrap_or_default();
            let logical = target.split('.').next().unwrap_or(target);
            let arn = arns
                .get(logical)
                .ok_or_else(|| anyhow!("{logical} must be made first (a redrive names it)"))?;
            serde_json::Value::String(arn.clone())
        }
        Value::Bool(b) => serde_json::Value::String(b.to_string()),
        Value::Number(n) => serde_json::Value::String(n.to_string()),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Mapping(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k.as_str().unwrap_or_default().to_string();
                    resolve(t, v, parameters, arns).map(|value| (key, value))
                })
                .collect::<Result<_>>()?,
        ),
        other => {
            return Err(anyhow!(
                "unexpected value in a queue's properties: {other:?}"
            ))
        }
    })
}

/// Makes queue resource `logical` as `name`; returns its URL and records
/// its ARN in `arns`, for the queues whose redrive names it.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    t: &Value,
    logical: &str,
    name: &str,
    parameters: &[(&str, &str)],
    arns: &mut HashMap<String, String>,
) -> Result<String> {
    let mut create = sqs.create_queue().queue_name(name);
    for (attribute, value) in queue_attributes(t, logical, parameters, arns)? {
        create = create.attributes(QueueAttributeName::from(attribute.as_str()), value);
    }
    let url = create
        .send()
        .await
        .with_context(|| format!("creating {logical} as {name}"))?
        .queue_url
        .ok_or_else(|| anyhow!("{name} has no URL"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading {name}'s ARN"))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("{name} has no ARN"))?;
    arns.insert(logical.to_string(), arn);
    Ok(url)
}

/// Makes `pair` as `<prefix>-<suffix>`, the dead-letter queue first (the
/// queue's redrive names it), with `parameters` instead of the template's
/// defaults; returns the queue's URL and its dead-letter queue's.
pub async fn create_pair(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    pair: QueuePair,
    parameters: &[(&str, &str)],
) -> Result<(String, String)> {
    let t = template()?;
    let mut arns = HashMap::new();
    let (dlq_logical, dlq_suffix) = pair.dlq;
    let (logical, suffix) = pair.queue;
    let dlq = create_queue(
        sqs,
        &t,
        dlq_logical,
        &format!("{prefix}-{dlq_suffix}"),
        parameters,
        &mut arns,
    )
    .await?;
    let queue = create_queue(
        sqs,
        &t,
        logical,
        &format!("{prefix}-{suffix}"),
        parameters,
        &mut arns,
    )
    .await?;
    Ok((queue, dlq))
}
