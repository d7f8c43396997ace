//! Validation of custom resources against their CRD's structural `openAPIV3Schema`: types,
//! `required`, `enum`, `nullable`, `x-kubernetes-int-or-string`, and unknown fields (pruned,
//! or reported for `fieldValidation=Strict|Warn`) unless `x-kubernetes-preserve-unknown-fields`.

use serde_json::Value;

use crate::objects::Cause;

/// What validation found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Schema violations (422).
    pub(crate) causes: Vec<Cause>,
    /// Paths of fields the schema does not know (pruned from the object).
    pub(crate) unknown: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Validates `obj` (a whole custom resource) and prunes unknown fields in place.
pub(crate) fn validate(schema: &Value, obj: &mut Value) -> Report {
    let mut report = Report::default();
    if let Value::Object(m) = obj {
        let props = schema.get("properties").and_then(Value::as_object);
        let preserve = preserves(schema);
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            // The envelope is not described by CRD schemas.
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.and_then(|p| p.get(&k)) {
                Some(sub) => {
                    if let Some(v) = m.get_mut(&k) {
                        walk(sub, v, &k, &mut report);
                    }
                }
                None if preserve => {}
                None => {
                    report.unknown.push(k.clone());
                    m.remove(&k);
                }
            }
        }
        required(schema, m, "", &mut report);
    }
    report
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn required(schema: &Value, m: &serde_json::Map<String, Value>, path: &str, report: &mut Report) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.contains_key(r) {
            report.causes.push(Cause::required(&join(path, r)));
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, report: &mut Report) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if schema.get("type").is_some() {
            report.causes.push(Cause {
                kind: "FieldValueTypeInvalid",
                field: path.to_owned(),
                message: format!(
                    "Invalid value: \"null\": {path} in body must be of type {}",
                    schema["type"].as_str().unwrap_or("object")
                ),
            });
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            report.causes.push(Cause {
                kind: "FieldValueTypeInvalid",
                field: path.to_owned(),
                message: format!(
                    "Invalid value: \"{}\": {path} in body must be of type integer or string",
                    type_name(v)
                ),
            });
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(v);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            report.causes.push(Cause {
                kind: "FieldValueTypeInvalid",
                field: path.to_owned(),
                message: format!(
                    "Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""
                ),
            });
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            report.causes.push(Cause {
                kind: "FieldValueNotSupported",
                field: path.to_owned(),
                message: format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                ),
            });
        }
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = preserves(schema)
                || additional.and_then(Value::as_bool) == Some(true)
                || (props.is_none() && additional.is_none() && schema.get("type").is_none());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = join(path, &k);
                let sub = props
                    .and_then(|ps| ps.get(&k))
                    .or(additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if let Some(child) = m.get_mut(&k) {
                            walk(sub, child, &p, report);
                        }
                    }
                    None if preserve => {}
                    None => {
                        report.unknown.push(p);
                        m.remove(&k);
                    }
                }
            }
            required(schema, m, path, report);
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(sub, item, &format!("{path}[{i}]"), report);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_required_unknown_and_preserve() {
        let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["model"], "properties": {
            "model": {"type": "string"},
            "replicas": {"type": "integer"},
            "port": {"x-kubernetes-int-or-string": true},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"model": "m", "replicas": "two", "port": "http", "mode": "c", "labels": {"a": "b"},
                     "free": {"anything": 1}, "bogus": true},
            "status": {"x": 1}});
        let r = validate(&schema, &mut obj);
        let fields: Vec<&str> = r.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.mode", "spec.replicas"]);
        assert_eq!(
            r.unknown,
            vec!["spec.bogus".to_owned(), "status".to_owned()]
        );
        assert!(obj["spec"].get("bogus").is_none() && obj["spec"]["free"]["anything"] == 1);
        let mut missing = json!({"spec": {}});
        assert_eq!(
            validate(&schema, &mut missing).causes[0].field,
            "spec.model"
        );
    }
}
