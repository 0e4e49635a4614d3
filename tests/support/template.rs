//! `template.yaml`, read as the template tests read it.

use std::collections::BTreeSet;

use serde_norway::Value;

/// The SAM template, parsed (the one `countries local queues` reads).
pub fn template() -> Value {
    countries_ops::local_stack::queues::template().expect("template.yaml")
}

pub use countries_ops::local_stack::queues::get;

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
