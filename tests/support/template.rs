//! `template.yaml`, read as the template tests read it.

use std::collections::BTreeSet;

use serde_norway::Value;

/// The SAM template, parsed.
pub fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml");
    serde_norway::from_str(&text).expect("template.yaml is YAML")
}

/// The value at `path` (a missing key gives YAML null).
pub fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| &v[*key])
}

/// The resources a deployment in `mode` creates: those without a
/// condition, and those whose condition holds in that mode.
pub fn created_in(t: &Value, mode: &str) -> BTreeSet<String> {
    t["Resources"]
        .as_mapping()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Condition"].as_str().is_none_or(|c| holds(c, mode)))
        .map(|(name, _)| name.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Whether a template condition holds in a deployment of `mode`.
pub fn holds(condition: &str, mode: &str) -> bool {
    match condition {
        "HasBatch" => mode != "stream",
        "HasStream" => mode != "batch",
        // Conditions that do not depend on the mode: count them as true.
        "HasNoDataAlarm" => mode != "stream",
        _ => true,
    }
}

/// A value as a deployment of `mode` sees it: each `!If [Condition, a, b]`
/// replaced by its branch, and an entry or item that is `!Ref AWS::NoValue`
/// left out.
pub fn in_mode(value: &Value, mode: &str) -> Value {
    fn no_value(value: &Value) -> bool {
        matches!(value, Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some("AWS::NoValue"))
    }
    match value {
        Value::Tagged(tagged) if tagged.tag == "If" => {
            let branches = tagged.value.as_sequence().expect("!If [Condition, a, b]");
            let condition = branches[0].as_str().expect("a condition name");
            in_mode(&branches[if holds(condition, mode) { 1 } else { 2 }], mode)
        }
        Value::Tagged(tagged) => Value::Tagged(Box::new(serde_norway::value::TaggedValue {
            tag: tagged.tag.clone(),
            value: in_mode(&tagged.value, mode),
        })),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|v| in_mode(v, mode))
                .filter(|v| !no_value(v))
                .collect(),
        ),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), in_mode(v, mode)))
                .filter(|(_, v)| !no_value(v))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every resource name a value refers to (`Ref`, `GetAtt`, `${…}` in `Sub`).
pub fn references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Tagged(tagged) => {
            match tagged.tag.to_string().trim_start_matches('!') {
                "Ref" | "GetAtt" => {
                    if let Some(name) = tagged.value.as_str() {
                        out.insert(name.split('.').next().unwrap_or_default().to_string());
                    }
                }
                "Sub" => {
                    // `!Sub [text, {Name: value}]` names its own variables.
                    let (text, local) = match &tagged.value {
                        Value::Sequence(items) => (
                            items.first().and_then(Value::as_str),
                            items.get(1).and_then(Value::as_mapping),
                        ),
                        other => (other.as_str(), None),
                    };
                    for piece in text.unwrap_or_default().split("${").skip(1) {
                        let name = piece.split('}').next().unwrap_or_default();
                        let name = name.split('.').next().unwrap_or_default();
                        if !local.is_some_and(|vars| vars.contains_key(name)) {
                            out.insert(name.to_string());
                        }
                    }
                }
                _ => {}
            }
            references(&tagged.value, out);
        }
        Value::Sequence(items) => items.iter().for_each(|v| references(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The CreateQueue attributes `template.yaml` gives queue resource
/// `logical`: each property under its own name (SQS and CloudFormation name
/// them alike), `!Ref P` from `parameters` or P's default, a redrive
/// target's `!GetAtt X.Arn` from `arns` (logical name → ARN).
pub fn queue_attributes(
    t: &Value,
    logical: &str,
    parameters: &[(&str, &str)],
    arns: &std::collections::HashMap<String, String>,
) -> Vec<(String, String)> {
    fn resolve(
        t: &Value,
        v: &Value,
        parameters: &[(&str, &str)],
        arns: &std::collections::HashMap<String, String>,
    ) -> serde_json::Value {
        match v {
            Value::Tagged(tagged) if tagged.tag == "Ref" => {
                let name = tagged.value.as_str().expect("!Ref names a parameter");
                let given = parameters.iter().find(|(p, _)| *p == name).map(|(_, v)| *v);
                let text = given.map(String::from).unwrap_or_else(|| {
                    match get(t, &["Parameters", name, "Default"]) {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => panic!("parameter {name} has no usable default: {other:?}"),
                    }
                });
                serde_json::Value::String(text)
            }
            Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
                let target = tagged.value.as_str().expect("!GetAtt X.Arn");
                let logical = target.split('.').next().unwrap_or(target);
                serde_json::Value::String(
                    arns.get(logical)
                        .unwrap_or_else(|| panic!("{logical} is created first"))
                        .clone(),
                )
            }
            Value::Bool(b) => serde_json::Value::String(b.to_string()),
            Value::Number(n) => serde_json::Value::String(n.to_string()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Mapping(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let key = k.as_str().expect("string keys").to_string();
                        (key, resolve(t, v, parameters, arns))
                    })
                    .collect(),
            ),
            other => panic!("unexpected value in a queue's properties: {other:?}"),
        }
    }
    let properties = get(t, &["Resources", logical, "Properties"])
        .as_mapping()
        .unwrap_or_else(|| panic!("template.yaml has no queue {logical}"));
    properties
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().expect("property names are strings").to_string();
            let value = match resolve(t, v, parameters, arns) {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (name, value)
        })
        .collect()
}
