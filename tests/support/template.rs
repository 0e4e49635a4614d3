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
    let holds = |condition: &str| match condition {
        "HasBatch" => mode != "stream",
        "HasStream" => mode != "batch",
        // Conditions that do not depend on the mode: count them as true.
        "HasNoDataAlarm" => mode != "stream",
        _ => true,
    };
    t["Resources"]
        .as_mapping()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Condition"].as_str().is_none_or(holds))
        .map(|(name, _)| name.as_str().unwrap_or_default().to_string())
        .collect()
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
