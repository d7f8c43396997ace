//! Strategic merge patch for the built-in types, with the list merge keys of the Kubernetes Go
//! types (containers, env, volumes ... by name; ports by port number), and the `$patch`,
//! `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/` directives.

use serde_json::{Map, Value};

/// The merge key of a list field, decided by its name (and, for `ports`, by its elements).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" | "addresses" => "type",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars merged as sets rather than replaced.
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Removes directive keys left in values that are inserted without a counterpart.
fn strip(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
        other => other,
    }
}

/// Applies `patch` to `original`. An error is a malformed patch.
pub(crate) fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            merge_map(o, p).map(|m| m.map_or(Value::Null, Value::Object))
        }
        (_, Value::Object(p)) => {
            merge_map(&Map::new(), p).map(|m| m.map_or(Value::Null, Value::Object))
        }
        _ => Err("strategic merge patch must be a json object".into()),
    }
}

fn merge_map(
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            return match strip(Value::Object(p)) {
                Value::Object(m) => Ok(Some(m)),
                _ => Ok(None),
            };
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive {other:?}")),
    }
    let mut out = orig.clone();
    if let Some(keep) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), pv.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p)?.map(Value::Object),
            (Some(Value::Array(o)), Value::Array(p)) => Some(merge_list(k, o, p)?),
            (None, Value::Object(p)) => merge_map(&Map::new(), p)?.map(Value::Object),
            (None, Value::Array(p)) => Some(merge_list(k, &[], p)?),
            (_, other) => Some(strip(other.clone())),
        };
        match merged {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(list)), Some(order)) = (out.get_mut(&field), order.as_array()) {
            reorder(&field, list, order);
        }
    }
    Ok(Some(out))
}

fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let key = merge_key(field, list.first());
    let pos = |item: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).is_some() && o.get(k) == item.get(k),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    // A stable sort keeps unmentioned items in their relative order, after the ordered ones.
    list.sort_by_key(|item| pos(item));
}

fn merge_list(field: &str, orig: &[Value], patch: &[Value]) -> Result<Value, String> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .map(strip)
            .collect();
        return Ok(Value::Array(rest));
    }
    let sample = patch.first().or(orig.first());
    if let Some(key) = merge_key(field, sample).filter(|_| sample.is_some_and(Value::is_object)) {
        let mut out: Vec<Value> = orig.to_vec();
        for p in patch {
            let Some(pm) = p.as_object() else {
                return Err(format!("list {field} holds a non-object"));
            };
            let id = pm.get(key);
            let idx = id.and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
            if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                if let Some(i) = idx {
                    out.remove(i);
                }
                continue;
            }
            match idx {
                Some(i) => {
                    let merged = match &out[i] {
                        Value::Object(om) => merge_map(om, pm)?,
                        _ => Some(pm.clone()),
                    };
                    match merged {
                        Some(m) => out[i] = Value::Object(m),
                        None => {
                            out.remove(i);
                        }
                    }
                }
                None => out.push(strip(p.clone())),
            }
        }
        return Ok(Value::Array(out));
    }
    if merges_primitives(field) {
        let mut out = orig.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    Ok(Value::Array(patch.iter().cloned().map(strip).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let orig = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "c", "image": "c:1"},
            {"name": "b", "$patch": "delete"}
        ]}});
        let out = strategic_merge(&orig, &patch).expect("merge");
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}
            ]}})
        );
    }

    #[test]
    fn directives() {
        let orig = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                     "ports": [{"port": 80}, {"port": 81}]}});
        let patch = json!({"metadata": {"finalizers": ["b"], "labels": {"y": null}},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                     "$setElementOrder/ports": [{"port": 81}, {"port": 80}],
                     "ports": [{"port": 81, "name": "x"}]}});
        let out = strategic_merge(&orig, &patch).expect("merge");
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}},
            "spec": {"strategy": {"type": "Recreate"},
                     "ports": [{"port": 81, "name": "x"}, {"port": 80}]}})
        );
    }
}
